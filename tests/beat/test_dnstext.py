"""DNS's part of a transaction document written in C (wirebeat._dnscore.document_text,
through decoders/dns.py document_text) against decoders/dns.py document(), the reference.

For every transaction it writes, the C text must be the bytes orjson.dumps makes of
document(txn) without "related", and its related text those of document()'s related
(None when document() sets none); for anything it does not write exactly so it must
decline (None), never answer differently. Inputs: transactions (query and response,
either alone, every section option) of the messages of test_dnscore.py (every shape the
C reading takes and declines, cut, changed and random hostile ones, read by the Python
reading too: MX, SOA, TXT... with their own keys, EDNS options), hand-made messages of
what the text path must get right or decline (escapes, unknown numbers, resolved
addresses repeated or too many, a record key document() would overwrite, values of other
types), and every DNS transaction of the bundled captures and of the mixed benchmark
capture as the engine makes them. The question's domain parts, which C works out on the
Public Suffix List too, are compared with domain_parts on names around every rule of the
list. The documents built with it are compared with the dict path by
tests/beat/test_doctext.py; WIREBEAT_PURE_PYTHON=1 runs those without it.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from running import needs_extension
from test_dnscore import _message, _name, _random_message, _record, _well_formed
from test_doctext import mixed_capture  # noqa: F401  (a fixture)
from wirebeat.decoders import dns
from wirebeat.decoders.api import FlowKey, Transaction
from wirebeat.document import DocumentBuilder

try:
    from wirebeat import _dnscore
except ImportError:
    _dnscore = None

pytestmark = needs_extension(_dnscore)

SETTINGS = [dns._Settings(10.0, 100, authorities, additionals, False, False)
            for authorities in (False, True) for additionals in (False, True)]
FLOWS = [FlowKey("udp", "10.0.0.1", 5353, "192.0.2.53", 53),
         FlowKey("udp", "192.0.2.1", 5353, "192.0.2.1", 53),       # the same address twice
         FlowKey("udp", "2001:db8::1", 5353, "2001:db8::35", 53)]


def _compare(txn: Transaction) -> bool:
    """True when C wrote the transaction's part (document()'s bytes); False when it declined."""
    got = dns.document_text(txn)
    want = dns.document(txn)
    if got is None:
        return False
    related = want.pop("related", None)
    event, own, related_text = got
    assert event is None
    assert own == orjson.dumps(want), (own, orjson.dumps(want))
    assert related_text == (None if related is None else orjson.dumps(related).decode())
    return True


def _transactions(request: dns.DNSMessage | None, response: dns.DNSMessage | None) -> list[Transaction]:
    return [Transaction(flow, 1.5, None if response is None or request is None else 1.6,
                        "OK", dns.DNSExchange(request, response, settings), 30, 40)
            for flow in FLOWS for settings in SETTINGS]


def _messages(data: bytes) -> list[dns.DNSMessage]:
    """The message as both readings give it (C's when it reads it, Python's always)."""
    out = []
    try:
        out.append(dns.decode_message_python(data))
    except dns.DecodeError:
        pass
    read = _dnscore.decode(data)
    if read is not None:
        out.append(read)
    return out


def _compare_all(messages: list[dns.DNSMessage]) -> tuple[int, int]:
    """Each message alone as query and as response, and with the next one: (written, declined)."""
    written = declined = 0
    for i, msg in enumerate(messages):
        other = messages[(i + 1) % len(messages)]
        for request, response in ((msg, None), (None, msg), (msg, other)):
            for txn in _transactions(request, response):
                if _compare(txn):
                    written += 1
                else:
                    declined += 1
    return written, declined


def test_well_formed_cut_and_changed_messages() -> None:
    messages = []
    for data in _well_formed():
        messages += _messages(data)
        for cut in range(12, len(data), 5):
            messages += _messages(data[:cut])
        for at in range(0, len(data), 3):
            messages += _messages(data[:at] + bytes((data[at] ^ 0x41,)) + data[at + 1:])
    written, declined = _compare_all(messages)
    assert written > 5000, (written, declined)


@pytest.mark.parametrize("seed", range(5))
def test_random_hostile_messages(seed: int) -> None:
    rng = random.Random(seed)
    messages = [m for _ in range(400) for m in _messages(_random_message(rng))]
    written, _ = _compare_all(messages)
    assert written > 100


def _python_message(data: bytes, **changes: Any) -> dns.DNSMessage:
    msg = dns.decode_message_python(data)
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


Q = _name("host.example.com") + b"\0\1\0\1"
A = _record(b"\xc0\x0c", 1, bytes((192, 0, 2, 7)))


def _rr(data: str, rrtype: int = 1, **extra: Any) -> dns.ResourceRecord:
    return dns.ResourceRecord("host.example.com", rrtype, 1, 300, data, extra)


def test_written_exactly() -> None:
    """What the text must get right: escapes, numbers without names, every flag,
    resolved addresses already in related or repeated, own keys of other types, EDNS."""
    odd = _name('q"uo\\te.ex\x01ample.org') + b"\x7f\x00\x00\x09"
    cases = [
        _python_message(_message(0xFFFF, [odd], [[], [], []])),       # every flag, opcode 15, rcode 15
        _python_message(_message(0x8180, [Q], [[A], [], []]), rcode=99, opcode=3),
        _python_message(_message(0x8180, [Q], [[A], [], []]),
                        answers=(_rr("192.0.2.53"), _rr("10.0.0.1"), _rr("192.0.2.7"), _rr("192.0.2.7"),
                                 _rr("2001:db8::35", 28), _rr("0a0b", 1), _rr("x.example", 5))),
        _python_message(_message(0x8180, [Q], [[A], [A], [A]]),
                        authorities=(_rr("ns.example", 2, preference=10, rname="a\tb"),),
                        additionals=(_rr("192.0.2.9", 9999, note="\u00e9\u4e2d", n=-1),)),
        _python_message(_message(0x8183, [Q], [[A], [], [_record(b"\0", 41, b"", 1232, 0x05018000)]])),
        _python_message(_message(0x8183, [Q], [[A], [], [_record(b"\0", 41, b"", 1232, 0xFF008000)]])),
        _python_message(_message(0x8180, [Q], [[A], [], [_record(
            b"\0", 41, b"\0\x0a\0\x08" + bytes(8) + b"\0\x03\0\x02ns", 512, 0)]])),
        _python_message(_message(0x8180, [], [[A], [], []])),
        _python_message(_message(0x8180, [_name(".")[1:] + b"\0\2\0\xfe"], [[], [], []])),
    ]
    for msg in cases:
        for request, response in ((msg, None), (None, msg), (msg, msg), (cases[0], msg)):
            for txn in _transactions(request, response):
                assert _compare(txn)


def test_declined() -> None:
    """What it leaves to document(): more resolved addresses than it keeps, a record key
    document() would overwrite, values of another type, text that is no UTF-8, the
    messages' text (send_request / send_response), another class of message."""
    many = tuple(_rr(f"192.0.2.{i}") for i in range(40))
    base = _message(0x8180, [Q], [[A], [], []])
    cases = [
        _python_message(base, answers=many),
        _python_message(base, answers=(_rr("192.0.2.1", ttl="x"),)),
        _python_message(base, answers=(_rr("192.0.2.1", flag=True),)),
        _python_message(base, answers=(_rr("192.0.2.1", data_list=[1]),)),
        _python_message(base, answers=(_rr("\udc80"),)),
        _python_message(base, id=2 ** 70),
        _python_message(base, authoritative=1),
        _python_message(base, answers=[_rr("192.0.2.1")]),
    ]
    for msg in cases:
        assert not any(_compare(txn) for txn in _transactions(msg, msg))
    msg = _python_message(base)
    assert _compare(_transactions(msg, msg)[0])
    for send in ((True, False), (False, True)):
        txn = _transactions(msg, msg)[0]
        txn.detail.settings = dns._Settings(10.0, 100, False, False, *send)
        assert dns.document_text(txn) is None
    # many resolved addresses: below the cap written, past it declined
    assert _compare(_transactions(_python_message(base, answers=many[:30]), None)[0])


def _engine_transactions(paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every DNS transaction the engine documents from these captures through both."""
    from test_doctext import _run
    seen = {"written": 0, "declined": 0}
    original = DocumentBuilder.build

    def spy(self: DocumentBuilder, spec: Any, txn: Transaction, *args: Any) -> Any:
        if spec.name == "dns":
            seen["written" if _compare(txn) else "declined"] += 1
        return original(self, spec, txn, *args)

    monkeypatch.setattr(DocumentBuilder, "build", spy)
    for path in paths:
        _run(path, True, {}, {}, [])
    return seen


def test_bundled_captures(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_doctext import CAPTURES
    seen = _engine_transactions(CAPTURES, monkeypatch)
    assert seen["written"] > 40, seen


def test_mixed_capture(mixed_capture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the benchmark's DNS (A and AAAA, VLAN, QinQ): every transaction written in C
    seen = _engine_transactions([mixed_capture], monkeypatch)
    assert seen["written"] > 300 and seen["declined"] == 0, seen


def test_configuration() -> None:
    with pytest.raises(TypeError):
        _dnscore.document_text(None, None, False, False, "a")
    with pytest.raises(TypeError):
        _dnscore.configure_text([], {}, {}, {}, len)


def _names() -> list[str]:
    """Names around every rule of the list (as written, under it, above it, in other case,
    with a trailing dot), and the odd ones domain_parts takes apart or leaves alone."""
    from wirebeat.decoders.dns_suffixes import _RULES
    names = ["", ".", "com", "com.", "example", "example.", ".example.com", "a..example.com",
             "a.example.com..", "x\\.y.example.com", 'q"uote.example.com', "a.b.c.d.e.example.co.uk",
             "WWW.Example.CO.UK", "xn--p1ai", "a.xn--p1ai", "b.a.xn--80ao21a", "bücher.de", "a.b.\u00e9",
             "foo.bar", "foo.bar.", "foo.", "a.b", "*.example.com", "!x.example.com", "a.*.ck", "ck", "www.ck",
             "a.www.ck", "a.b.kawasaki.jp", "city.kawasaki.jp", "a.city.kawasaki.jp", "x" * 63 + ".com"]
    for rule in _RULES:
        bare = rule.lstrip("!").removeprefix("*.")
        if not bare.isascii():
            continue
        for name in (bare, rule, "a." + bare, "b.a." + bare, "c.b.a." + bare, bare.upper(), "a." + bare + "."):
            names.append(name)
    return names


def test_domain_parts_in_c() -> None:
    """The question's domain parts written in C against domain_parts (the list loaded): every
    rule of the list; names C leaves to Python (non-ASCII, "xn--") give None there."""
    dns.domain_parts("example.com")         # loads the list, which configures the C walk
    written = 0
    for name in _names():
        got = _dnscore.domain_parts_text(name)
        parts = dns.domain_parts.__wrapped__(name)
        if got is None:
            assert not name.isascii() or "xn--" in name.lower(), name
            continue
        written += 1
        assert got == ("," + orjson.dumps(parts).decode()[1:-1] if parts else ""), name
        assert dns._domain_parts_text(name) == got
    assert written > 20000, written


def test_domain_parts_before_the_list_is_loaded() -> None:
    """Until dns.py loads the list (at its first name) the C walk has none and declines;
    document_text then asks Python, which loads it: the same text either way."""
    import subprocess
    import sys
    code = ("from wirebeat import _dnscore\n"
            "from wirebeat.decoders import dns\n"
            "assert _dnscore.domain_parts_text('a.example.com') is None\n"
            "assert _dnscore.domain_parts_text('.x') == ''\n"
            "text = dns._domain_parts_text('a.example.com')\n"
            "assert _dnscore.domain_parts_text('a.example.com') == text != ''\n")
    subprocess.run([sys.executable, "-c", code], check=True)
