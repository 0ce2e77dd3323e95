"""The Public Suffix List of dns.py's registered_domain, loaded when this module is imported.

dns.py imports it at the first domain name it shows, so a run without one does
not pay for parsing the list. `run --user` imports it before switching user
(DNS's `DecoderSpec.lazy_imports`): loading reads the list that ships inside the
publicsuffixlist package and encodes its IDN rules with the idna and punycode
codecs, files the user switched to may not be able to read (a Python under /root).
"""
from __future__ import annotations

from publicsuffixlist import PublicSuffixList

__all__ = ["SUFFIXES"]

SUFFIXES = PublicSuffixList()
