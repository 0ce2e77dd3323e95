"""Build of the optional C accelerators: `wirebeat._speedups` (beat/_speedups.c,
the per-packet path), `wirebeat._nfcore` (beat/_nfcore.c, NetFlow/IPFIX data
sets), `wirebeat._flowcore` (beat/_flowcore.c, flow accounting and reports),
`wirebeat._workcore` (beat/_workcore.c, the worker pool's reader),
`wirebeat._doctext` (beat/_doctext.c, transaction documents' common JSON text) and
`wirebeat._dnscore` (beat/_dnscore.c, common DNS messages).

beat/_blake2b.h is shared by _nfcore, _flowcore and _doctext, beat/_flowapi.h by
_flowcore and _speedups, beat/_cid.h (SHA-1, Community ID) and beat/_isotime.h (date
text) by _speedups, _flowcore and _doctext, beat/_iptext.h (address text) by _speedups,
_flowcore and _doctext, beat/_direction.h (network.direction from address ranges) by _flowcore and _doctext, beat/_jsontext.h (JSON text writing) by _doctext and _dnscore (MANIFEST.in ships them in the sdist). Everything else is declared in pyproject.toml. `optional=True`: on a machine
without a C compiler or Python headers the build of an extension fails
quietly and wirebeat installs as pure Python (the same documents, slower).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension(f"wirebeat.{name}", [f"beat/{name}.c"],
                             depends=["beat/_blake2b.h", "beat/_flowapi.h", "beat/_cid.h", "beat/_isotime.h", "beat/_jsontext.h",
                                      "beat/_iptext.h", "beat/_direction.h"], optional=True,
                             extra_compile_args=["-O2", "-std=c99", "-Wall"])
                   for name in ("_speedups", "_nfcore", "_flowcore", "_workcore", "_doctext", "_dnscore")])
