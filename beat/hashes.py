"""BLAKE2b for document, flow and event ids, without importing hashlib.

hashlib loads OpenSSL's libcrypto for the hashes it takes from there (~11 M
instructions, ~3 ms, of every start-up); its blake2b is CPython's own `_blake2`
in any case, which is what this module hands out. Code that needs SHA-1, SHA-256
or MD5 imports hashlib where it computes one (the Community ID without the C
accelerator, TLS fingerprints).
"""
from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:     # a Python built without its own BLAKE2: hashlib has one from OpenSSL
    from hashlib import blake2b

__all__ = ["blake2b"]
