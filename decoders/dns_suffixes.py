"""The Public Suffix List of dns.py's registered_domain, loaded when this module is imported.

dns.py imports it at the first domain name it shows, so a run without one does
not pay for parsing the list. `run --user` imports it before switching user
(DNS's `DecoderSpec.lazy_imports`): loading reads the list that ships inside the
publicsuffixlist package, a file the user switched to may not be able to read
(a Python under /root).

The list is the package's file; the rules are read and applied here (`Suffixes`),
because the package's own parser spent ~30 ms of every run with a DNS name on
per-line Python work (one `str` conversion, `lower`, `split`, `max` a line) and its
lookups built one candidate string per rule kind and label. The answers are the
package's, name for name: tests/decoders/test_dns_names.py holds them to its
default list on every rule of the shipped file.

Two lists, because most of the loading time went to one thing few names need:
- `SUFFIXES`, the rules as written (Unicode rules stay Unicode), parsed at import;
- `suffixes_for("xn--...")`, the same plus every Unicode rule in its ACE form
  (punycode, what publicsuffixlist's default list holds too), made at the first
  name with an "xn--" label. The ACE forms cost the idna codec per Unicode rule;
  a name without "xn--" can never match one (each has an "xn--" label), so both
  lists answer it alike. The idna and punycode codecs are imported before a user
  switch too (wirebeat.privileges).
"""
from __future__ import annotations

from itertools import repeat

from publicsuffixlist import PSLFILE

__all__ = ["SUFFIXES", "Suffixes", "suffixes_for"]


class Suffixes:
    """Public Suffix List rules (publicsuffix.org format), unknown TLDs public ("*").

    A name's public suffix is its longest tail that is a rule; `*.tail` makes every
    label under `tail` public (and `tail` itself), `!label.tail` takes `label.tail`
    back out of such a wildcard. Looked at from the longest tail down, the first of
    these three that holds at a tail decides.
    """

    __slots__ = ("exact", "wildcard_parents", "exceptions", "most_labels")

    def __init__(self, rules: list[str]) -> None:
        # Every rule as written is a tail that matches exactly: a name can hold the
        # label "*" (wildcard queries) or a "!", and then matches the rule's own text.
        self.exact = frozenset(rules)
        self.wildcard_parents = frozenset([rule[2:] for rule in rules if rule[0] == "*" and rule[1:2] == "."])
        self.exceptions = frozenset([rule[1:] for rule in rules if rule[0] == "!"])
        self.most_labels = max(map(str.count, rules, repeat(".")), default=-1) + 1

    def public_labels(self, labels: list[str]) -> int:
        """How many of the trailing labels are the public suffix."""
        count = len(labels)
        if count == 1:
            return 1
        exact, wildcard_parents, exceptions = self.exact, self.wildcard_parents, self.exceptions
        for start in range(max(0, count - self.most_labels - 1), count):
            tail = ".".join(labels[start:])
            if tail in exceptions:
                return count - start - 1
            if tail in wildcard_parents:
                return count - start + (start > 0)
            if tail in exact:
                return count - start
        return 1

    def privatesuffix(self, lowered_name: str) -> str | None:
        """The public suffix and the label before it (the registered domain), None when
        the name is a public suffix itself or has an empty label. One trailing dot is
        ignored; the name must be lower case already."""
        if lowered_name.endswith("."):
            lowered_name = lowered_name[:-1]
        labels = lowered_name.split(".")
        if "" in labels:
            return None
        public = self.public_labels(labels)
        if len(labels) <= public:
            return None
        return ".".join(labels[-public - 1:])


def _rules(text: str) -> list[str]:
    """The rules of a list file: the first word of each line that is not a comment."""
    rules = []
    for line in text.splitlines():
        rule = line.split(" ", 1)[0].rstrip().lower()
        if rule and not rule.startswith("//"):
            rules.append(rule)
    return rules


def _with_ace(rules: list[str]) -> list[str]:
    """The rules and, for each with a non-ASCII label, its ACE (idna) form as well."""
    ace = []
    for rule in rules:
        if not rule.isascii():
            bang = "!" if rule[0] == "!" else ""
            ace.append(bang + rule.lstrip("!").encode("idna").decode("ascii"))
    return rules + ace


with open(PSLFILE, encoding="utf-8") as _file:
    _RULES = _rules(_file.read())

SUFFIXES = Suffixes(_RULES)
_WITH_ACE: list[Suffixes] = []


def suffixes_for(lowered_name: str) -> Suffixes:
    """The list to look a lower-case name up in: with the ACE rules when it has an "xn--" label."""
    if "xn--" not in lowered_name:
        return SUFFIXES
    if not _WITH_ACE:
        _WITH_ACE.append(Suffixes(_with_ace(_RULES)))
    return _WITH_ACE[0]
