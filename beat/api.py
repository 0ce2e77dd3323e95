"""The decoder API, as plug-in packages import it: `from wirebeat.api import ...`.

It is `wirebeat.decoders.api` under a short, stable name; docs/decoders.md
walks through writing a decoder against it, and `wirebeat.testing` runs one
in an engine for tests.
"""
from wirebeat.decoders.api import *  # noqa: F401,F403  (the public names, re-exported)
from wirebeat.decoders.api import __all__  # noqa: F401
