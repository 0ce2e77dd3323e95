"""DNS messages read in C (wirebeat._dnscore.decode) against decoders/dns.py's Python
reading (decode_message_python), the reference.

The C reading takes the common messages (questions; A, AAAA, CNAME, NS, PTR, DNAME
records; an OPT without options) and must give the very message the Python one gives
(same names, escapes, offsets, counts, flags, types, values, EDNS, extended rcode); for
anything else it must decline (None), never answer differently. Inputs: the messages of
every bundled capture and of the mixed benchmark capture as the engine reads them,
well-formed messages of every shape it takes (compression, escapes, every flag bit,
0/1/many questions and records, addresses and names in every section, trailing bytes)
and of shapes it declines, each cut at every length and with every single byte changed,
and random hostile messages (pointer loops and chains, forward pointers, extended label
types, names past 255 octets, records past the end, names short of their record, other
record types, OPTs with options, twice, or outside the additional section). Under
CI=true the extension must have been built.
"""
from __future__ import annotations

import dataclasses
import random
import struct
from pathlib import Path

import pytest

from running import needs_extension
from test_doctext import mixed_capture  # noqa: F401  (a fixture)
from wirebeat.decoders import dns

try:
    from wirebeat import _dnscore
except ImportError:
    _dnscore = None

pytestmark = needs_extension(_dnscore)
ROOT = Path(__file__).resolve().parents[2]


def _compare(data: bytes, through_decode_message: bool = True) -> bool:
    """True when C read the message (the reference's message); False when it declined."""
    got = _dnscore.decode(data)
    try:
        want = dns.decode_message_python(data)
    except dns.DecodeError:
        want = None
    if got is None:
        return False
    assert want is not None, data.hex()
    assert got == want, data.hex()
    assert [type(rr.extra) for rr in got.answers] == [dict] * len(got.answers)
    if through_decode_message:
        assert dns.decode_message(data) == want
    return True


def _name(text: str) -> bytes:
    return b"".join(bytes((len(label),)) + label.encode("latin-1") for label in text.split(".")) + b"\0"


def _message(flags: int, questions: list[bytes], sections: list[list[bytes]], ident: int = 0x1234,
             tail: bytes = b"") -> bytes:
    return (struct.pack("!HHHHHH", ident, flags, len(questions), *(len(s) for s in sections))
            + b"".join(questions) + b"".join(b"".join(s) for s in sections) + tail)


def _record(owner: bytes, rrtype: int, rdata: bytes, rrclass: int = 1, ttl: int = 300) -> bytes:
    return owner + struct.pack("!HHIH", rrtype, rrclass, ttl, len(rdata)) + rdata


def _well_formed() -> list[bytes]:
    q = _name("host.example.com") + struct.pack("!HH", 1, 1)
    a = _record(b"\xc0\x0c", 1, bytes((192, 0, 2, 1)))
    aaaa = _record(b"\xc0\x0c", 28, bytes(range(16)), ttl=0xFFFFFFFF)
    odd = _name("a.b\\c d\x00\x7f\xff.\x21\x7e") + struct.pack("!HH", 28, 255)
    out = [_message(0x0100, [q], [[], [], []]),
           _message(0x8180, [q], [[a], [], []]),
           _message(0x8180, [q], [[a, aaaa, a], [aaaa], [a, aaaa]], tail=b"\x00junk"),
           _message(0x8580 | 0x0020 | 0x0010 | 0x0200 | 0x000F, [q, odd], [[a], [], []]),
           _message(0xFFFF, [], [[], [], []]),
           _message(0x7800, [_name(".")[1:] + struct.pack("!HH", 2, 3)], [[], [], []]),
           _message(0x8180, [q], [[_record(_name("other.example"), 1, b"\x0a\x00\x00\x01", rrclass=3)],
                                   [], []]),
           # an owner pointing into the question's middle ("example.com"), one pointing to a pointer
           _message(0x8180, [q], [[_record(b"\xc0\x11", 1, b"\x01\x02\x03\x04")], [], []]),
           _message(0x8180, [q, b"\x03www\xc0\x0c" + struct.pack("!HH", 1, 1)],
                    [[_record(b"\xc0\x22", 1, b"\x01\x02\x03\x04")], [], []]),
           # 127 one-octet labels (the most there can be) and a 63-octet label
           _message(0, [_name(".".join("x" * 127)) + b"\0\1\0\1"[1:]], [[], [], []]),
           _message(0, [_name("y" * 63 + ".z") + struct.pack("!HH", 1, 1)], [[], [], []])]
    # names in record data, an OPT without options (the extended rcode and DO bit)
    cname = _record(b"\xc0\x0c", 5, _name("cname.example"))
    out += [_message(0x8180, [q], [[cname, _record(b"\xc0\x0c", 2, b"\x02ns\xc0\x11"),
                                    _record(b"\xc0\x0c", 12, b"\xc0\x0c"), _record(b"\xc0\x0c", 39, b"\0")],
                                   [], []]),
            _message(0x8183, [q], [[a], [], [_record(b"\0", 41, b"", rrclass=1232, ttl=0x01008000)]]),
            _message(0x0120, [q], [[], [], [_record(b"\0", 41, b"", rrclass=512, ttl=0)]])]
    # declined: other types, OPT options, a second OPT, an OPT elsewhere, a name short of its
    # record's data, wrong A/AAAA lengths
    out += [_message(0x8180, [q], [[_record(b"\xc0\x0c", 15, b"\0\x0a\xc0\x0c")], [], []]),
            _message(0x8180, [q], [[], [], [_record(b"\0", 41, b"\0\x0a\0\x02ab")]]),
            _message(0x8180, [q], [[], [], [_record(b"\0", 41, b""), _record(b"\0", 41, b"")]]),
            _message(0x8180, [q], [[_record(b"\0", 41, b"")], [], []]),
            _message(0x8180, [q], [[_record(b"\xc0\x0c", 5, _name("cname.example") + b"\0")], [], []]),
            _message(0x8180, [q], [[_record(b"\xc0\x0c", 1, b"\1\2\3")], [], []]),
            _message(0x8180, [q], [[_record(b"\xc0\x0c", 28, bytes(4))], [], []])]
    return out


def test_well_formed_messages() -> None:
    read = sum(_compare(m) for m in _well_formed())
    assert read >= 10


def test_cut_and_changed_messages() -> None:
    read = declined = 0
    for message in _well_formed():
        for cut in range(len(message) + 1):
            if _compare(message[:cut]):
                read += 1
            else:
                declined += 1
        for at in range(len(message)):
            for value in (0x00, 0x3F, 0x40, 0x80, 0xC0, 0xFF, message[at] ^ 0x01):
                changed = message[:at] + bytes((value,)) + message[at + 1:]
                read += _compare(changed)
    assert read > 1000 and declined > 100


def _random_message(rng: random.Random) -> bytes:
    out = bytearray(struct.pack("!HHHHHH", rng.randrange(65536), rng.randrange(65536),
                                *(rng.choice((0, 1, 1, 2, 3, 70)) for _ in range(4))))
    while len(out) < rng.randrange(12, 400):
        choice = rng.random()
        if choice < 0.35:
            size = rng.choice((1, 3, 63, rng.randrange(64)))
            out.append(size)
            out += bytes(rng.randrange(256) for _ in range(size))
        elif choice < 0.5:
            out.append(0)
        elif choice < 0.65:
            target = rng.randrange(max(1, len(out) + 4))
            out += bytes((0xC0 | (target >> 8) & 0x3F, target & 0xFF))
        elif choice < 0.9:
            rrtype = rng.choice((1, 1, 28, 28, 5, 2, 12, 39, 41, 41, 15, 0))
            size = rng.choice((4, 16, 4, 16, 0, 0, 3, 2, 6, 300))
            out += struct.pack("!HHIH", rrtype, rng.randrange(65536), rng.randrange(2 ** 32), size)
            out += bytes(rng.randrange(256) for _ in range(min(size, 20)))
        else:
            out.append(rng.choice((0x40, 0x80, 0x41, 0xBF)))
    return bytes(out)


@pytest.mark.parametrize("seed", range(20))
def test_random_hostile_messages(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        _compare(_random_message(rng))


def _probe_captures(paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every DNS message the engine reads from these captures (UDP and TCP) through the
    C reading and the Python one: those C reads must match."""
    from test_doctext import _run
    seen = {"read": 0, "declined": 0}

    def probe(data: bytes) -> dns.DNSMessage | None:
        key = "read" if _compare(data, through_decode_message=False) else "declined"
        seen[key] += 1
        return _dnscore.decode(data)

    monkeypatch.setattr(dns, "_decode_common", probe)
    for path in paths:
        _run(path, True, {}, {}, [])
    return seen


def test_bundled_captures(monkeypatch: pytest.MonkeyPatch) -> None:
    # About half declined: dig's and the resolvers' messages carry EDNS options (cookies),
    # SOAs, MX, TXT... (49 read and 67 declined when this was written)
    from test_doctext import CAPTURES
    seen = _probe_captures(CAPTURES, monkeypatch)
    assert seen["read"] > 40 and seen["declined"] > 40, seen


def test_mixed_capture(mixed_capture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the benchmark's DNS: A and AAAA questions and answers (VLAN, QinQ), all read in C
    seen = _probe_captures([mixed_capture], monkeypatch)
    assert seen["read"] > 500 and seen["declined"] == 0, seen


def test_not_bytes_and_configuration() -> None:
    assert _dnscore.decode(bytearray(_well_formed()[1])) is None
    assert _dnscore.decode(memoryview(_well_formed()[1])) is None
    assert dns.decode_message(bytearray(_well_formed()[1])) == dns.decode_message_python(_well_formed()[1])
    with pytest.raises(ValueError):
        _dnscore.configure(dns.Question, dns.ResourceRecord, dns.EDNS, dns.DNSMessage, 127, 256, 127)


def _classes(namespace: dict) -> tuple[type, ...]:
    """Slotted dataclasses with the fields of dns.py's four records, and `namespace`."""
    return tuple(dataclasses.make_dataclass(cls.__name__, [f.name for f in dataclasses.fields(cls)],
                                            slots=True, init="__init__" not in namespace,
                                            namespace=dict(namespace))
                 for cls in (dns.Question, dns.ResourceRecord, dns.EDNS, dns.DNSMessage))


def _decoded_with(classes: tuple[type, ...]) -> list:
    try:
        _dnscore.configure(*classes, dns.MAX_POINTER_HOPS, dns.MAX_NAME_OCTETS, dns.MAX_LABELS)
        return [_dnscore.decode(data) for data in _well_formed()]
    finally:
        _dnscore.configure(dns.Question, dns.ResourceRecord, dns.EDNS, dns.DNSMessage,
                           dns.MAX_POINTER_HOPS, dns.MAX_NAME_OCTETS, dns.MAX_LABELS)


def _fields(value: object) -> object:
    """A record's field values, nested records and tuples of records included."""
    if dataclasses.is_dataclass(value):
        return (type(value).__name__, *(_fields(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, tuple):
        return tuple(_fields(item) for item in value)
    return value


def test_records_are_made_without_their_init() -> None:
    """The records' slots are filled in C: classes whose __init__ raises still come out whole,
    field for field the reference's."""
    def refuse(self: object, *args: object) -> None:
        raise AssertionError("__init__ called")
    made = _decoded_with(_classes({"__init__": refuse}))
    assert sum(m is not None for m in made) > 5
    for got, data in zip(made, _well_formed()):
        if got is not None:
            assert _fields(got) == _fields(dns.decode_message_python(data))


def test_records_of_another_shape_are_made_by_calling_the_class() -> None:
    """A class with a __post_init__ is called (its __post_init__ runs for every record)."""
    calls = []
    made = _decoded_with(_classes({"__post_init__": lambda self: calls.append(type(self).__name__)}))
    assert sum(m is not None for m in made) > 5
    assert "DNSMessage" in calls and "Question" in calls and "ResourceRecord" in calls
    assert calls.count("DNSMessage") == sum(m is not None for m in made)
