"""The Public Suffix List of dns.py's registered_domain, loaded when this module is imported.

dns.py imports it at the first domain name it shows, so a run without one does
not pay for parsing the list. `run --user` imports it before switching user
(DNS's `DecoderSpec.lazy_imports`): loading reads the list that ships inside the
publicsuffixlist package, a file the user switched to may not be able to read
(a Python under /root).

Two lists, because most of the loading time went to one thing few names need:
- `SUFFIXES`, the rules as written (Unicode rules stay Unicode), parsed at import;
- `suffixes_for("xn--...")`, the same plus every Unicode rule in its ACE form
  (punycode, what publicsuffixlist's default list holds too), parsed at the first
  name with an "xn--" label from the text read at import. The ACE forms are two
  thirds of the parsing time (the idna codec per rule); a name without "xn--" can
  never match one (each has an "xn--" label), so both lists answer it alike.
  The idna and punycode codecs are imported before a user switch too
  (wirebeat.privileges).
"""
from __future__ import annotations

from publicsuffixlist import PSLFILE, PublicSuffixList

__all__ = ["SUFFIXES", "suffixes_for"]

with open(PSLFILE, "rb") as _file:
    _SOURCE = _file.read()

SUFFIXES = PublicSuffixList(_SOURCE, accept_encoded_idn=False)
_WITH_ACE: list[PublicSuffixList] = []


def suffixes_for(lowered_name: str) -> PublicSuffixList:
    """The list to look a lower-case name up in: with the ACE rules when it has an "xn--" label."""
    if "xn--" not in lowered_name:
        return SUFFIXES
    if not _WITH_ACE:
        _WITH_ACE.append(PublicSuffixList(_SOURCE))
    return _WITH_ACE[0]
