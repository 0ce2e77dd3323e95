"""read_name's two shortcuts against the plain reading they replace.

- A message's names kept by offset (`names`): an owner that is only a pointer to a
  name read before is taken from there. For every offset of random and hostile
  messages (pointer chains, loops, forward pointers, truncation, extended label
  types, over-long names, escapes), reading with the memo must give what reading
  without it gives: the same name and offset, or the same error at the same place.
- The name's text made at once: it must equal the per-label text (`_label_text`
  joined by dots) for labels holding every byte value.
"""
from __future__ import annotations

import random
import struct

import pytest

from wirebeat.decoders.api import DecodeError
from wirebeat.decoders.dns import _label_text, decode_message, read_name


def _outcome(call):
    try:
        return "ok", call()
    except DecodeError as err:
        return "error", (type(err), err.reason, err.offset)


def _random_message(rng: random.Random) -> bytes:
    """A header, then names, pointers and junk in random order."""
    out = bytearray(struct.pack("!HHHHHH", rng.randrange(65536), 0x8180, 1, 1, 0, 0))
    while len(out) < rng.randrange(20, 300):
        choice = rng.random()
        if choice < 0.45:                       # a label
            size = rng.choice((1, 3, 7, 63, rng.randrange(64)))
            out.append(size)
            out += bytes(rng.choice((0x61, 0x2E, 0x5C, 0x20, 0x00, 0xFF, rng.randrange(256)))
                         for _ in range(size))
        elif choice < 0.65:                     # the root
            out.append(0)
        elif choice < 0.85:                     # a pointer, mostly backwards
            target = rng.randrange(max(1, len(out) + 4))
            out += bytes((0xC0 | (target >> 8) & 0x3F, target & 0xFF))
        elif choice < 0.9:                      # an extended or reserved label type
            out.append(rng.choice((0x40, 0x80, 0x41)))
        else:                                   # record fixed fields
            out += struct.pack("!HHIH", 1, 1, 300, rng.randrange(8))
    return bytes(out)


@pytest.mark.parametrize("seed", range(40))
def test_memo_reads_what_the_plain_reading_reads(seed: int) -> None:
    rng = random.Random(seed)
    compared = 0
    for _ in range(60):
        data = _random_message(rng)
        names: dict[int, str] = {}
        for offset in range(12, len(data)):     # in message order, as decode_message reads
            end = rng.choice((len(data), len(data), max(offset, len(data) - rng.randrange(8))))
            plain = _outcome(lambda: read_name(data, offset, end))
            memo = _outcome(lambda: read_name(data, offset, end, names))
            assert memo == plain, (data.hex(), offset, end)
            compared += 1
    assert compared > 1000


def test_memo_is_used_for_an_owner_pointing_at_the_question() -> None:
    question = b"\x04host\x07example\x03com\x00"
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + bytes((192, 0, 2, 1))
    data = struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0) + question + struct.pack("!HH", 1, 1) + record
    names: dict[int, str] = {}
    assert read_name(data, 12, len(data), names) == ("host.example.com", 12 + len(question))
    assert names == {12: "host.example.com"}
    owner_at = 12 + len(question) + 4
    assert read_name(data, owner_at, len(data), names) == ("host.example.com", owner_at + 2)
    msg = decode_message(data)
    assert msg.answers[0].name == msg.questions[0].name == "host.example.com"
    assert msg.answers[0].data == "192.0.2.1"


def test_a_name_read_under_a_shorter_limit_is_not_kept() -> None:
    data = struct.pack("!HHHHHH", 0, 0, 0, 0, 0, 0) + b"\x01a\x00" + b"\xc0\x0c"
    names: dict[int, str] = {}
    assert read_name(data, 12, 15, names) == ("a", 15)
    assert names == {}          # read with an end before the message's: not what a pointer reads
    assert read_name(data, 15, len(data), names) == ("a", 17)


@pytest.mark.parametrize("seed", range(10))
def test_text_at_once_is_the_per_label_text(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = [0x61, 0x41, 0x2D, 0x2E, 0x5C, 0x20, 0x7F, 0x00, 0x09, 0x80, 0xE9, 0xFF, 0x21, 0x7E]
    for _ in range(500):
        labels = [bytes(rng.choice(alphabet) if rng.random() < 0.3 else rng.randrange(0x61, 0x7B)
                        for _ in range(rng.randrange(1, 12))) for _ in range(rng.randrange(1, 5))]
        wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
        assert read_name(wire, 0) == (".".join(_label_text(label) for label in labels), len(wire))
    every = bytes(range(256))
    wire = b"".join(bytes((63,)) + every[i:i + 63] for i in range(0, 189, 63)) + b"\x00"
    assert read_name(wire, 0)[0] == ".".join(_label_text(every[i:i + 63]) for i in range(0, 189, 63))


def _psl_names() -> list[str]:
    """Names around every rule of the shipped list: the rule, one and two labels under it,
    wildcards and exceptions filled in, each in its Unicode and its ACE (xn--) form; with a
    trailing dot; deeper than any rule; with a "*" or "!" label above or inside the rule;
    and the rule's inner tails (Suffixes walks a name from its last label up and stops at
    the first tail no rule ends with)."""
    from publicsuffixlist import PSLFILE
    names = ["", ".", "com", "example.com", "a.example.com", "xn--", "xn--abc", "a.xn--zz", "XN--P1AI",
             "shop.XN--CIQPN.hk", "abcxn--d.com", "..", "a..b", "-.com"]
    with open(PSLFILE, encoding="utf-8") as lines:
        for line in lines:
            rule = line.strip().split(" ")[0]
            if not rule or rule.startswith("//"):
                continue
            bare = rule.lstrip("!").replace("*.", "w.")
            forms = [bare]
            try:
                forms.append(bare.encode("idna").decode("ascii"))
            except UnicodeError:
                pass
            for form in forms:
                names += [form, "a." + form, "b.a." + form, "Sub.A." + form, form + ".", "a." + form + ".",
                          "h.g.f.e.d.c.b.a." + form, "*." + form, "a.*." + form]
                inner = form.split(".")
                names += [".".join(inner[i:]) for i in range(1, len(inner))]
                names += ["a." + ".".join(inner[:i] + ["*"] + inner[i + 1:]) for i in range(len(inner))]
            names += [rule, "a." + rule, rule + ".", "b.a." + rule]    # a "*" or "!" label (wildcard queries)
    return names


def test_the_split_lists_answer_as_the_full_list() -> None:
    """dns_suffixes' two lists (ACE rules only for names with "xn--") against the
    publicsuffixlist package's default list, which holds both forms of every rule."""
    from publicsuffixlist import PublicSuffixList
    from wirebeat.decoders.dns_suffixes import SUFFIXES, suffixes_for
    full = PublicSuffixList()
    names = _psl_names()
    ace = 0
    for name in names:
        lowered = name.lower()
        assert suffixes_for(lowered).privatesuffix(lowered) == full.privatesuffix(lowered), name
        ace += suffixes_for(lowered) is not SUFFIXES
    assert len(names) > 100000 and ace > 1000
    # the list without ACE rules would get these wrong: the split is what makes them right
    assert SUFFIXES.privatesuffix("shop.xn--ciqpn.hk") == "xn--ciqpn.hk"
    assert suffixes_for("shop.xn--ciqpn.hk").privatesuffix("shop.xn--ciqpn.hk") == "shop.xn--ciqpn.hk"
