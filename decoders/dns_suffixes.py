"""The Public Suffix List of dns.py's registered_domain, loaded when this module is imported.

dns.py imports it at the first domain name it shows, so a run without one does
not pay for parsing the list. `run --user` imports it before switching user
(DNS's `DecoderSpec.lazy_imports`): loading reads the list that ships inside the
publicsuffixlist package and encodes its IDN rules with the punycode codec,
files the user switched to may not be able to read (a Python under /root).

The package's own loader gives each of the list's ~10,400 rules to the `idna`
codec (nameprep, then punycode) so that names in their ASCII form match too: 48
ms of CPU at the first DNS document. Here only the ~460 rules with non-ASCII
labels are encoded, each label with the punycode codec alone (the list's labels
are already lower case and normalised, so nameprep leaves them as they are), and
the package is handed the rules and their encodings with its own encoding turned
off: the same rule set (tests/decoders/test_dns_suffixes.py compares it with the
package's default load) in about half the time.
"""
from __future__ import annotations

from publicsuffixlist import PSLFILE, PublicSuffixList, encode_idn

__all__ = ["SUFFIXES", "rules"]


def _ascii_form(rule: str) -> str:
    """A rule's ASCII (IDNA) form: each non-ASCII label as "xn--" + its punycode."""
    try:
        labels = [label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
                  for label in rule.split(".")]
    except UnicodeError:
        return encode_idn(rule)
    if any(len(label) > 63 for label in labels):        # IDNA's limit: let the codec decide
        return encode_idn(rule)
    return ".".join(labels)


def rules(text: str) -> list[str]:
    """The list's rules (first word of each line that is not blank or a comment, in
    lower case), followed by the ASCII form of each rule with a non-ASCII label."""
    out = [line.split(" ", 1)[0].rstrip().lower() for line in text.splitlines()]
    out = [rule for rule in out if rule and not rule.startswith("//")]
    out += ["!" + _ascii_form(rule[1:]) if rule[0] == "!" else _ascii_form(rule)
            for rule in out if not rule.isascii()]
    return out


with open(PSLFILE, encoding="utf-8") as _file:
    SUFFIXES = PublicSuffixList(rules(_file.read()), accept_encoded_idn=False)
