"""wirebeat.decoders.dns_suffixes loads the Public Suffix List its own faster way.

The oracle is the publicsuffixlist package's default load (its own parser, every
rule through the `idna` codec): the same rules, and the same answers for names
built from every rule, in Unicode and in ASCII (punycode) form."""
from __future__ import annotations

from publicsuffixlist import PublicSuffixList, encode_idn

from wirebeat.decoders.dns_suffixes import SUFFIXES, rules

REFERENCE = PublicSuffixList()


def test_the_same_rule_set_as_the_packages_own_load():
    # The package keeps its rules in a private frozenset: compared here, because an answer
    # test can only reach the rules someone thought of.
    assert SUFFIXES._publicsuffix == REFERENCE._publicsuffix
    assert SUFFIXES._maxlabel == REFERENCE._maxlabel


def test_the_same_private_suffix_for_names_made_from_every_rule():
    names = set()
    for rule in REFERENCE._publicsuffix:
        base = rule.lstrip("!")
        if base.startswith("*."):
            base = base[2:]
        for name in (base, "a." + base, "b.a." + base, "www.b.a." + base, "x-y.a." + base):
            names.add(name)
            names.add(encode_idn(name) if not name.isascii() else name.upper())
    names.update({"com", "unknowntld", "a.unknowntld", "b.a.unknowntld", "example.com.", ".com", "a..com"})
    assert len(names) > 40_000
    differ = [n for n in names if SUFFIXES.privatesuffix(n) != REFERENCE.privatesuffix(n)]
    assert differ == []


def test_rules_reads_the_list_format():
    text = ("// a comment\n\n// ===BEGIN ICANN DOMAINS===\ncom\n*.ck\n!www.ck\nCOM.Example trailing words\n"
            "個人.香港\n!例.jp\n")
    assert rules(text) == ["com", "*.ck", "!www.ck", "com.example", "個人.香港", "!例.jp",
                           encode_idn("個人.香港"), "!" + encode_idn("例.jp")]
