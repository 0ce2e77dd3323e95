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

import re

from publicsuffixlist import PSLFILE

__all__ = ["SUFFIXES", "Suffixes", "suffixes_for"]

# What holds at a tail of a name (Suffixes.tails), in the order one wins over another.
_NONE, _EXACT, _WILDCARD, _EXCEPTION = 0, 1, 2, 3


class Suffixes:
    """Public Suffix List rules (publicsuffix.org format), unknown TLDs public ("*").

    A name's public suffix is its longest tail that is a rule; `*.tail` makes every
    label under `tail` public (and `tail` itself), `!label.tail` takes `label.tail`
    back out of such a wildcard. Of the tails where one of these three holds, the
    longest decides; at one tail an exception comes before a wildcard, a wildcard
    before a plain rule.
    """

    __slots__ = ("tails",)

    def __init__(self, rules: list[str]) -> None:
        # Every rule as written is a tail that matches exactly: a name can hold the
        # label "*" (wildcard queries) or a "!", and then matches the rule's own text.
        kinds = dict.fromkeys(rules, _EXACT)
        kinds.update((rule[2:], _WILDCARD) for rule in rules if rule[0] == "*" and rule[1:2] == ".")
        kinds.update((rule[1:], _EXCEPTION) for rule in rules if rule[0] == "!")
        # tail -> what holds there; 0 for a tail that is only the end of longer ones. A name
        # is looked at from its last label up and the walk stops at the first tail not in
        # here: no rule ends with it, so no longer tail can hold anything either.
        tails = dict(kinds)
        parents = {text.partition(".")[2] for text in kinds}
        while parents:
            parents.difference_update(tails)
            parents.discard("")
            tails.update(dict.fromkeys(parents, _NONE))
            parents = {text.partition(".")[2] for text in parents}
        self.tails = tails

    def privatesuffix(self, lowered_name: str) -> str | None:
        """The public suffix and the label before it (the registered domain), None when
        the name is a public suffix itself or has an empty label. One trailing dot is
        ignored; the name must be lower case already."""
        if lowered_name.endswith("."):
            lowered_name = lowered_name[:-1]
        labels = lowered_name.split(".")
        count = len(labels)
        if count == 1 or "" in labels:
            return None
        # How many trailing labels are public: 1 unless a rule says otherwise.
        tails = self.tails
        public = 1
        size = 1
        tail = labels[-1]
        while True:
            kind = tails.get(tail)
            if kind is None:
                break
            if kind:
                public = (size if kind == _EXACT else size - 1 if kind == _EXCEPTION
                          else size + (size < count))   # a wildcard: the label under it too
            if size == count:
                break
            size += 1
            tail = labels[-size] + "." + tail
        if count <= public:
            return None
        return ".".join(labels[-public - 1:])


def _rules_by_line(text: str) -> list[str]:
    """The rules of a list file: the first word of each line that is not a comment."""
    rules = []
    for line in text.splitlines():
        rule = line.split(" ", 1)[0].rstrip().lower()
        if rule and not rule.startswith("//"):
            rules.append(rule)
    return rules


# Comment lines: ~60% of the file. The pattern starts with a literal, so the regex
# engine skips from one "\n//" to the next in C.
_COMMENT_LINES = re.compile(rb"\n//[^\n]*")
# Where line ends other than "\n" (str.splitlines splits at these too) appear anywhere,
# or a space, a tab or "//" in what is left, only _rules_by_line reads the file as
# the format has it.
_LINE_ENDS = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9")
_IN_RULE_LINES = (b" ", b"\t", b"//")


def _rules(data: bytes) -> list[str]:
    """The rules of a list file (UTF-8): the first word of each line that is not a
    comment, lower case. The same list as _rules_by_line (a Python step per line: ~48 M
    instructions on the shipped file, ~20 M this way): comment lines are removed in one
    pass over the bytes; what is left, when it has one word per line and nothing else,
    is lowered and split as one text."""
    text = _COMMENT_LINES.sub(b"", b"\n" + data)
    if any(mark in data for mark in _LINE_ENDS) or any(mark in text for mark in _IN_RULE_LINES):
        return _rules_by_line(data.decode("utf-8"))
    return list(filter(None, map(str.rstrip, text.decode("utf-8").lower().splitlines())))


def _with_ace(rules: list[str]) -> list[str]:
    """The rules and, for each with a non-ASCII label, its ACE (idna) form as well."""
    ace = []
    for rule in rules:
        if not rule.isascii():
            bang = "!" if rule[0] == "!" else ""
            ace.append(bang + rule.lstrip("!").encode("idna").decode("ascii"))
    return rules + ace


with open(PSLFILE, "rb") as _file:
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
