"""The optional C accelerator `wirebeat._speedups` (beat/_speedups.c), or None.

None when it was not built (no C compiler at install time) or when
`WIREBEAT_PURE_PYTHON=1` is set; then the pure-Python code, which is the
reference the C functions are tested against (tests/beat/test_speedups.py),
does the same work and writes the same documents.
"""
from __future__ import annotations

import os
from types import ModuleType

__all__ = ["flowcore", "speedups"]

speedups: ModuleType | None
if os.environ.get("WIREBEAT_PURE_PYTHON", "") not in ("", "0"):
    speedups = None
else:
    try:
        from wirebeat import _speedups as speedups
    except ImportError:     # built without a C compiler: the pure-Python path does it all
        speedups = None

# The flow table's per-packet and per-report work (beat/_flowcore.c; reference:
# beat/flows.py, tested in tests/beat/test_flowcore.py), None in the same cases.
flowcore: ModuleType | None
if os.environ.get("WIREBEAT_PURE_PYTHON", "") not in ("", "0"):
    flowcore = None
else:
    try:
        from wirebeat import _flowcore as flowcore
    except ImportError:
        flowcore = None
