"""dns_suffixes reads the list's rules in one pass over the text (`_rules`) where the
file allows it; the answer must be the line-by-line reading's (`_rules_by_line`, the
format as publicsuffixlist reads it) on the shipped list and on files that take the
other way: a space or tab after a rule, a line that starts with blanks, "//" inside a
line, line ends other than "\\n" (in a comment they start a new line: its rest is a rule).
"""
from __future__ import annotations

import pytest
from publicsuffixlist import PSLFILE

from wirebeat.decoders.dns_suffixes import _RULES, _rules, _rules_by_line

ODD_FILES = [
    b"// c\nCom\n\n*.Ck\n!www.ck\n\xc3\x9c.example\n",          # upper case, Unicode upper case
    b"a b\nc\n",                                            # a word after the rule
    b"a\t// note\nb\n",                                     # a tab, then a comment
    b"  x\n//y\nz\n",                                       # blanks first: no rule
    b"a//b\n",                                              # "//" inside a rule
    b"// one\rtwo\nthree\r\n",                               # carriage returns
    b"// one\x0btwo\n", b"// one\x0ctwo\n", b"// one\x1ctwo\n",
    b"// one\xc2\x85two\n", b"// one\xe2\x80\xa8two\n", b"// one\xe2\x80\xa9two\n",
    b"\xef\xbb\xbf// a BOM\nb\n",                            # the BOM is text before "//"
    b"\xce\xa3\xce\xa3\nx\xc2\xa0\n",                        # final sigma; a trailing no-break space
    b"", b"\n", b"//\n", b"com",
]


@pytest.mark.parametrize("data", ODD_FILES)
def test_rules_in_one_pass_are_the_rules_line_by_line(data: bytes) -> None:
    assert _rules(data) == _rules_by_line(data.decode("utf-8"))


def test_the_shipped_list_reads_the_same_and_takes_the_one_pass() -> None:
    with open(PSLFILE, "rb") as file:
        data = file.read()
    assert _RULES == _rules(data) == _rules_by_line(data.decode("utf-8"))
    assert len(_RULES) > 5000


def test_the_odd_files_hold_rules_the_one_pass_would_get_wrong() -> None:
    """Without the checks for odd lines the one-pass reading differs on these (so the
    parametrized test above can fail)."""
    naive = [line for line in b"\n".join(ODD_FILES[1:4]).decode().lower().split("\n") if line]
    assert naive != _rules_by_line(b"\n".join(ODD_FILES[1:4]).decode())
    assert "two" in _rules_by_line("// one\u2028two\n")
