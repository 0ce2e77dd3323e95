"""The optional C accelerators, or None each: `wirebeat._speedups` (beat/_speedups.c,
the per-packet path) and `wirebeat._nfcore` (beat/_nfcore.c, NetFlow/IPFIX data sets).

None when it was not built (no C compiler at install time) or when
`WIREBEAT_PURE_PYTHON=1` is set; then the pure-Python code, which is the
reference the C functions are tested against (tests/beat/test_speedups.py,
tests/beat/test_nfcore.py), does the same work and writes the same documents.
"""
from __future__ import annotations

import os
from types import ModuleType

__all__ = ["nfcore", "speedups"]

speedups: ModuleType | None
nfcore: ModuleType | None
if os.environ.get("WIREBEAT_PURE_PYTHON", "") not in ("", "0"):
    speedups = None
    nfcore = None
else:
    try:
        from wirebeat import _speedups as speedups
    except ImportError:     # built without a C compiler: the pure-Python path does it all
        speedups = None
    try:
        from wirebeat import _nfcore as nfcore
    except ImportError:
        nfcore = None
