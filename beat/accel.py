"""The optional C accelerators, or None each:

- `speedups` (beat/_speedups.c): the per-packet path (link and IP headers, the
  pcap reader, dedup, per-packet documents, community id, ISO times);
- `nfcore` (beat/_nfcore.c): NetFlow/IPFIX data sets made into documents;
- `flowcore` (beat/_flowcore.c): flow accounting, report text and the sweep
  loop, on beat/flows.py's own records;
- `workcore` (beat/_workcore.c): the worker pool's reader, frames handed to the
  workers' batches (beat/workers.py, `--workers N`);
- `doctext` (beat/_doctext.c): the common JSON text of transaction documents
  (beat/document.py, DocumentBuilder._build_text_c);
- `dnscore` (beat/_dnscore.c): common DNS messages (address and name records, EDNS
  without options; decoders/dns.py decode_message) and DNS's part of transaction
  documents as JSON text (decoders/dns.py document_text).

Each is None when it was not built (no C compiler at install time) or when
`WIREBEAT_PURE_PYTHON=1` is set; then the pure-Python code, which is the
reference the C functions are tested against (tests/beat/test_speedups.py,
tests/beat/test_nfcore.py, tests/beat/test_flowcore.py, tests/beat/test_workcore.py,
tests/beat/test_doctext_c.py, tests/beat/test_dnscore.py), does the same work and
writes the same documents.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["dnscore", "doctext", "flowcore", "nfcore", "speedups", "workcore"]

PURE_PYTHON = os.environ.get("WIREBEAT_PURE_PYTHON", "") not in ("", "0")


def _load(name: str) -> ModuleType | None:
    if PURE_PYTHON:
        return None
    try:
        return importlib.import_module(f"wirebeat.{name}")
    except ImportError:     # built without a C compiler: the pure-Python path does it all
        return None


speedups = _load("_speedups")
nfcore = _load("_nfcore")
flowcore = _load("_flowcore")
workcore = _load("_workcore")
doctext = _load("_doctext")
dnscore = _load("_dnscore")
