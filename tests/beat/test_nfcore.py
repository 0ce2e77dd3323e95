"""wirebeat._nfcore (beat/_nfcore.c) against the Python path it stands in for.

The reference is the NetFlow decoder as it was before the extension: data sets
decoded into one Transaction per record (Template.records, _transaction) and
each built by the DocumentBuilder (whole_text, document_id_from). Every test
decodes the same export packets twice, once that way (`record_sets` off) and
once the engine's way (`record_sets` on: a data set of a covered template
comes as one RecordSet, made into documents by sources.netflow.publish_set in
C), and requires the same `_id`s and byte-identical JSON in the same order:
on fixed exports of every covered element type and of what the C code leaves
to Python (ICMP, protocol numbers past 255, mixed address families, times past
year 9999), on hostile templates and data sets (set lengths that do not
divide, zero-length and variable-length fields, unknown, float, string and
NTP-time elements, repeated elements) and on Hypothesis-generated templates
and records. The CLI test does the same end to end. Under CI=true the
extension must have been built.
"""
from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from running import CONSOLE_WITH_IDS, needs_extension
from wirebeat.decoders.api import Datagram, DecodeError, FlowKey
from wirebeat.decoders.netflow import DECODER, NetflowDecoder, RecordSet, Template
from wirebeat.document import DocumentBuilder
from wirebeat.sources.netflow import publish_set

try:
    from wirebeat import _nfcore
except ImportError:
    _nfcore = None

ROOT = Path(__file__).resolve().parents[2]
needs_c = needs_extension(_nfcore)
SECS = 1_700_000_000
FLOW = FlowKey("udp", "192.0.2.10", 40000, "192.0.2.1", 2055, "netflow:test")
AGENT = {"type": "wirebeat", "version": "test", "name": "test"}


def test_extension_is_built_under_ci():
    if os.environ.get("CI") == "true":
        assert _nfcore is not None, "wirebeat._nfcore was not built (C compiler / Python headers?)"


# -- export packets ----------------------------------------------------------------


def v9(template_id: int, fields: list[tuple[int, int]], rows: bytes, *, uptime: int = 3_600_000,
       secs: int = SECS, sequence: int = 1, trailing: bytes = b"", extra: bytes = b"") -> bytes:
    body = struct.pack("!HH", template_id, len(fields)) + b"".join(struct.pack("!HH", *f) for f in fields)
    template = struct.pack("!HH", 0, 4 + len(body)) + body
    data = struct.pack("!HH", template_id, 4 + len(rows) + len(trailing)) + rows + trailing
    return struct.pack("!HHIIII", 9, 2, uptime, secs, sequence, 7) + template + extra + data


def ipfix(template_id: int, fields: list[tuple], rows: bytes, *, secs: int = SECS,
          sequence: int = 0, trailing: bytes = b"", extra: bytes = b"") -> bytes:
    body = struct.pack("!HH", template_id, len(fields))
    for f in fields:
        body += struct.pack("!HHI", f[0] | 0x8000, f[1], f[2]) if len(f) == 3 else struct.pack("!HH", *f)
    sets = (struct.pack("!HH", 2, 4 + len(body)) + body + extra
            + struct.pack("!HH", template_id, 4 + len(rows) + len(trailing)) + rows + trailing)
    return struct.pack("!HHIII", 10, 16 + len(sets), secs, sequence, 3) + sets


def v5(rows: bytes, *, count: int, sampling: int = 0, uptime: int = 3_600_000) -> bytes:
    return struct.pack("!HHIIIIBBH", 5, count, uptime, SECS, 500_000_000, 9, 1, 2, sampling) + rows


def v9_sampling_options(interval: int) -> bytes:
    """A v9 options template (scope: system) with samplingInterval (34), and its record."""
    template = struct.pack("!HH", 1, 20) + struct.pack("!HHHHHHH", 300, 4, 4, 1, 4, 34, 4) + b"\0\0"
    return template + struct.pack("!HHII", 300, 12, 1, interval)


def ip4(text: str) -> bytes:
    return socket.inet_aton(text)


def ip6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


# -- both paths --------------------------------------------------------------------


class _Both:
    """The same packets through the Python path and the C path; each gives [(_id, JSON)]."""

    def __init__(self, fields: dict | None = None, under_root: bool = False,
                 tags: list[str] | None = None) -> None:
        self.builders = []
        for _ in range(2):
            builder = DocumentBuilder(AGENT, [], fields or {}, under_root, tags or [])
            builder.text_ok = True
            self.builders.append(builder)
        self.reference = NetflowDecoder({})
        self.fast = NetflowDecoder({})
        self.fast.record_sets = True
        self.python: list[tuple[str, bytes]] = []
        self.c: list[tuple[str, bytes]] = []
        self.in_c = 0           # documents the C code made
        self.sets = 0           # RecordSets seen

    def send(self, payload: bytes, ts: float = SECS + 0.25, flow: FlowKey = FLOW) -> None:
        outcomes = []
        for decoder in (self.reference, self.fast):
            try:
                outcomes.append(decoder.on_datagram(Datagram(ts, flow, True, payload)))
            except DecodeError as err:
                outcomes.append(err.reason)
        reference, fast = outcomes
        if isinstance(reference, str) or isinstance(fast, str):
            assert reference == fast
            return
        for txn in reference:
            self.python.append(self._built(self.builders[0], txn))
        for item in fast:
            if isinstance(item, RecordSet):
                self.sets += 1
                self.in_c += publish_set(item, DECODER, self.builders[1], self._publish, self._emit)
            else:
                self.c.append(self._built(self.builders[1], item))

    @staticmethod
    def _built(builder: DocumentBuilder, txn) -> tuple[str, bytes]:
        doc_id, doc = builder.build(DECODER, txn)
        return doc_id, orjson.dumps(doc)

    def _publish(self, doc_id: str, doc) -> None:
        self.c.append((doc_id, orjson.dumps(doc)))

    def _emit(self, spec, txns) -> None:
        for txn in txns:
            self.c.append(self._built(self.builders[1], txn))

    def check(self) -> None:
        assert len(self.c) == len(self.python)
        for (c_id, c_doc), (py_id, py_doc) in zip(self.c, self.python):
            assert c_doc == py_doc
            assert c_id == py_id
        assert self.fast.counters == self.reference.counters


ROW_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (2, 4), (1, 4), (22, 4), (21, 4),
              (10, 2), (14, 2)]


def row(src: str, dst: str, sport: int, dport: int, proto: int, first: int = 3_000_000,
        last: int = 3_500_000) -> bytes:
    return struct.pack("!4s4sHHBBIIIIHH", ip4(src), ip4(dst), sport, dport, proto, 0x1B, 10, 1500,
                       first, last, 1, 2)


@needs_c
def test_v9_records_give_the_same_documents_and_ids() -> None:
    both = _Both()
    rows = (row("10.0.0.1", "10.0.0.2", 51000, 443, 6) + row("10.0.0.2", "10.0.0.1", 443, 51000, 6)
            + row("10.0.0.3", "10.0.0.3", 53, 53, 17)          # related: one address
            + row("10.0.0.3", "10.0.0.4", 65535, 0, 17)        # the highest port, and port 0
            + row("10.0.0.4", "10.0.0.5", 0, 0x0303, 1)        # ICMP: the Python path
            + row("10.0.0.6", "10.0.0.7", 7, 8, 47)            # GRE: no ports, no community id
            + row("10.0.0.8", "10.0.0.9", 7, 8, 200)           # a number without a keyword
            + row("10.0.0.1", "10.0.0.2", 1, 2, 6, first=3_700_000, last=10)    # wrapped uptime
            + row("10.0.0.1", "10.0.0.2", 1, 2, 6, first=3_600_000, last=3_600_000))   # ends at export
    both.send(v9(256, ROW_FIELDS, rows))
    both.send(v9(256, ROW_FIELDS, rows, uptime=5, sequence=2))       # times before the export
    both.check()
    assert both.sets == 2 and both.in_c == 16      # ICMP left to Python


@needs_c
def test_v5_with_sampling_and_v9_after_a_sampling_options_record() -> None:
    both = _Both()
    record = struct.pack("!4s4s4sHHIIIIHHBBBBHHBBH", ip4("10.1.0.1"), ip4("10.1.0.2"), ip4("10.1.0.254"),
                         3, 4, 10, 1000, 3_000_000, 3_500_000, 5000, 80, 0, 0x12, 6, 0, 65001, 65002, 24,
                         16, 0)
    both.send(v5(record * 3, count=3, sampling=(1 << 14) | 100))
    both.send(v5(record, count=1))
    both.send(v9(256, ROW_FIELDS, row("10.0.0.1", "10.0.0.2", 1, 2, 17),
                 extra=v9_sampling_options(512)))
    both.check()
    assert both.in_c == 5


@needs_c
def test_ipfix_every_covered_type_v6_and_times() -> None:
    both = _Both(fields={"site": "x"}, tags=["t"])
    fields = [(27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (56, 6), (80, 6), (70, 3), (276, 1),
              (434, 4), (85, 8), (86, 8), (152, 8), (153, 8), (150, 4), (14, 4), (1, 5, 29305),
              (210, 3), (2, 3)]

    def record(src: str, dst: str, proto: int, start_ms: int, end_ms: int) -> bytes:
        return (ip6(src) + ip6(dst) + struct.pack("!HHB", 5353, 53, proto) + bytes.fromhex("0a0b0c0d0e0f")
                + bytes.fromhex("a0b0c0d0e0f0") + b"\x01\x02\x03" + b"\x02" + struct.pack("!i", -5)
                + struct.pack("!QQQQI", 7000, 70, start_ms, end_ms, SECS - 3) + struct.pack("!I", 9)
                + b"\0\0\0\0\x09" + b"\0\0\0" + b"\x01\x00\x00")
    rows = (record("2001:db8::1", "2001:db8::2", 17, 1_700_000_000_123, 1_700_000_005_999)
            + record("::ffff:10.0.0.1", "fe80::1", 6, 1_700_000_005_000, 1_700_000_000_000)    # end < start
            + record("2001:db8::1", "2001:db8::1", 58, 1, 2)                                  # ICMPv6
            + record("::", "::1", 6, (1 << 63), 5))                                           # year > 9999
    both.send(ipfix(300, fields, rows, trailing=b"\0" * 7))
    both.send(ipfix(300, fields, rows, sequence=9))          # a gap: lost_records on the documents
    both.check()
    assert both.in_c == 4


@needs_c
def test_templates_the_c_code_does_not_cover_stay_in_python() -> None:
    covered = Template.compile(256, tuple((e, 0, n) for e, n in ROW_FIELDS))
    assert covered.c_plan is not None
    for fields in ([(82, 65535)], [(82, 8)], [(320, 8)], [(154, 8)], [(600, 4)], [(8, 4), (8, 4)],
                   [(7, 16)], [(160, 8)], [(34, 4)], [(291, 8)], [(152, 3)], [(8, 3)]):
        template = Template.compile(256, tuple((e, 0, n) for e, n in fields))
        assert template.c_plan is None, fields
    assert Template.compile(256, ((8, 0, 4),), scope_fields=1).c_plan is None    # options
    assert Template.compile(256, ((10, 0, 1),) * 512).c_plan is None             # repeated
    both = _Both()
    both.send(ipfix(400, [(8, 4), (82, 65535), (12, 4)], ip4("1.2.3.4") + b"\x02ab" + ip4("5.6.7.8")))
    both.send(ipfix(401, [(8, 4), (12, 4), (320, 8)], ip4("1.2.3.4") + ip4("5.6.7.8") + struct.pack("!d", 0.5)))
    both.send(ipfix(402, [(8, 4), (12, 4), (0, 4)], ip4("1.2.3.4") + ip4("5.6.7.8") + b"\0\0\0\0"))   # element 0: unknown
    both.check()
    assert both.sets == 0


@needs_c
def test_hostile_sets_and_templates_give_the_same_documents_and_counters() -> None:
    both = _Both()
    # A zero-length field: the template is refused, its data held, then expired alike.
    both.send(v9(256, [(8, 4), (12, 0)], ip4("1.2.3.4")))
    # Set lengths that do not divide by the record length: the rest is padding.
    for trailing in (b"", b"\0", b"\xff" * 11):
        both.send(v9(257, ROW_FIELDS, row("10.0.0.1", "10.0.0.2", 1, 2, 6) * 2, trailing=trailing))
    # A set shorter than one record, and an empty one.
    both.send(v9(258, ROW_FIELDS, b"", trailing=b"\0" * 5))
    # Ports and protocol sent longer than their type, values past what a port can be.
    long_fields = [(8, 4), (12, 4), (7, 4), (11, 8), (4, 2), (2, 8), (1, 8)]
    both.send(ipfix(310, long_fields, ip4("1.1.1.1") + ip4("2.2.2.2") + struct.pack("!IQHQQ", 70000, 65535, 6, 1, 2)
                    + ip4("1.1.1.1") + ip4("2.2.2.2") + struct.pack("!IQHQQ", 80, 2 ** 64 - 1, 300, 2 ** 64 - 1, 0)))
    # Mixed families, one address missing, no address at all.
    both.send(ipfix(311, [(8, 4), (28, 16), (4, 1)], ip4("1.1.1.1") + ip6("::2") + b"\x06"))
    both.send(ipfix(312, [(8, 4), (4, 1), (1, 4)], ip4("1.1.1.1") + b"\x06" + b"\0\0\0\1"))
    both.send(ipfix(313, [(1, 4)], b"\0\0\0\1" * 3))
    both.send(ipfix(314, [(210, 4)], b"\0" * 8))              # padding only: empty records
    # More fields than the C plan takes (513 one-byte fields): Python.
    wide = [(element, 1, pen) for pen in (0, 29305) for element in range(1, 600)
            if Template.compile(256, ((element, pen, 1),)).c_plan not in (None, ())][:513]
    assert len(wide) == 513 and Template.compile(256, tuple((e, p, n) for e, n, p in wide)).c_plan is None
    both.send(ipfix(315, wide, bytes(range(256)) * 2 + b"\1"))
    # Seconds and milliseconds at the edges: 0, 2^31, past 9999.
    edge = [(8, 4), (12, 4), (150, 8), (151, 8), (152, 8), (153, 8)]
    for start, end in ((0, 0), (2 ** 31 - 1, 2 ** 31), (253402300799, 253402300800), (2 ** 64 - 1, 1)):
        rows = ip4("1.1.1.1") + ip4("2.2.2.2") + struct.pack("!QQQQ", start, end, start * 1000 % 2 ** 64,
                                                             end * 1000 % 2 ** 64 + 999)
        both.send(ipfix(320, edge, rows))
    both.send(v9(259, ROW_FIELDS, row("10.0.0.1", "10.0.0.2", 1, 2, 6), secs=0, uptime=0))   # before 1970
    both.reference.expire(SECS + 3600)
    both.fast.expire(SECS + 3600)
    both.check()
    assert both.in_c > 5


@needs_c
def test_builders_that_edit_documents_get_the_python_path() -> None:
    for kwargs in ({"fields": {"a": 1}, "under_root": True}, {"fields": {"a": 1}}, {"tags": ["x"]}):
        both = _Both(**kwargs)
        both.send(v9(256, ROW_FIELDS, row("10.0.0.1", "10.0.0.2", 1, 2, 6)))
        both.check()
        assert both.in_c == (0 if kwargs.get("under_root") else 1)


@needs_c
def test_bad_arguments_raise_never_crash() -> None:
    plan = ((0, 4, 2, 1, b'"a":'),)
    consts = (1.0, -1, 0, b"{", b"", b"}", b"", b"|1|", b"1.2.3.4", tuple(str(n).encode() for n in range(256)))
    assert len(_nfcore.records(b"\0" * 8, 0, 2, 4, plan, consts)) == 2
    for args in ((b"\0" * 8, 0, 3, 4, plan, consts), (b"\0" * 8, 6, 1, 4, plan, consts),
                 (b"\0" * 8, 0, 1, 0, plan, consts), (b"\0" * 8, -1, 1, 4, plan, consts),
                 (b"\0" * 8, 0, 1, 4, ((2, 4, 2, 1, b'"a":'),), consts),
                 (b"\0" * 8, 0, 1, 4, ((0, 4, 3, 1, b'"a":'),), consts),
                 (b"\0" * 8, 0, 1, 4, ((0, 4, 99, 1, b'"a":'),), consts),
                 (b"\0" * 8, 0, 1, 4, ((0, 4, 0, 99, b'"a":'),), consts),
                 (b"\0" * 8, 0, 1, 4, ((0, 4, 0, 0, "a"),), consts),
                 (b"\0" * 8, 0, 1, 4, plan, consts[:-1] + ((b"x",) * 3,)),
                 (b"\0" * 8, 0, 1, 4, plan, consts[:8] + (b"1.2\0",) + consts[9:]),
                 (b"\0" * 8, 0, 1, 4, plan, consts[:-1] + ((b"x",) * 255 + ("y",),))):
        with pytest.raises((ValueError, TypeError)):
            _nfcore.records(*args)



@needs_c
def test_blake2b_ids_and_times_match_the_python_ones() -> None:
    import binascii
    import hashlib

    from wirebeat.decoders.api import iso_time_python
    rng = random.Random(7)
    for n in (0, 1, 127, 128, 129, 255, 256, 257, 1000):
        key = bytes(rng.randrange(256) for _ in range(n))
        expected = binascii.b2a_base64(hashlib.blake2b(key, digest_size=15).digest(), newline=False)
        assert _nfcore.blake2b_id(key) == expected.translate(bytes.maketrans(b"+/", b"-_")).decode()
    for ts in [0.0, 0.9999995, 1.0000005, 2 ** 31 - 0.5e-6, 253402300799.5]:
        assert _nfcore.iso_time(ts) == iso_time_python(ts)
    for _ in range(20000):
        ts = rng.choice([rng.random() * 2e9, rng.randrange(2 ** 41) / 1000, rng.random() * 253402300799])
        assert _nfcore.iso_time(ts) == iso_time_python(ts), ts
    assert _nfcore.iso_time(-0.5) is None and _nfcore.iso_time(253402300800.0) is None


# -- generated templates and records --------------------------------------------------

# (element, length, enterprise): covered types, role fields at odd lengths, and fields
# that keep a template in Python.
POOL = [(8, 4, 0), (12, 4, 0), (27, 16, 0), (28, 16, 0), (7, 2, 0), (7, 1, 0), (7, 4, 0), (11, 2, 0),
        (11, 3, 0), (4, 1, 0), (4, 2, 0), (2, 4, 0), (2, 8, 0), (2, 3, 0), (1, 8, 0), (1, 5, 0),
        (86, 8, 0), (85, 4, 0), (22, 4, 0), (21, 4, 0), (22, 2, 0), (152, 8, 0), (153, 8, 0),
        (152, 4, 0), (150, 4, 0), (151, 8, 0), (151, 1, 0), (56, 6, 0), (80, 6, 0), (6, 1, 0),
        (70, 3, 0), (276, 1, 0), (276, 4, 0), (434, 4, 0), (434, 3, 0), (210, 2, 0), (32, 2, 0),
        (1, 8, 29305), (8, 4, 29305), (15, 4, 0), (62, 16, 0),
        (82, 6, 0), (320, 8, 0), (154, 8, 0), (600, 2, 0), (34, 4, 0), (160, 8, 0)]


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_generated_templates_and_records(data) -> None:
    fields = data.draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=14))
    size = sum(f[1] for f in fields)
    count = data.draw(st.integers(0, 6))
    rows = data.draw(st.binary(min_size=size * count, max_size=size * count))
    trailing = data.draw(st.binary(max_size=size - 1 if size > 1 else 0))
    # Realistic bytes for the role fields most of the time: real protocols, addresses.
    if count and data.draw(st.booleans()):
        rows = bytearray(rows)
        offset = 0
        for element, length, _ in fields:
            if element == 4 and length == 1:
                for i in range(count):
                    rows[i * size + offset] = data.draw(st.sampled_from([1, 6, 17, 47, 58, 132, 255]))
            offset += length
        rows = bytes(rows)
    secs = data.draw(st.sampled_from([SECS, 0, 5, 2 ** 31, 2 ** 32 - 1]))
    version = data.draw(st.sampled_from([9, 10]))
    both = _Both()
    if version == 9:
        v9_fields = [(e, n) for e, n, pen in fields if pen == 0]
        size = sum(n for _, n in v9_fields)
        rows = rows[:size * count]
        extra = v9_sampling_options(data.draw(st.integers(0, 2 ** 32 - 1))) if data.draw(st.booleans()) else b""
        both.send(v9(256, v9_fields, rows, uptime=data.draw(st.integers(0, 2 ** 32 - 1)), secs=secs,
                     trailing=trailing, extra=extra))
    else:
        both.send(ipfix(256, [(e, n, pen) if pen else (e, n) for e, n, pen in fields], rows, secs=secs,
                        trailing=trailing))
    both.check()


# -- end to end ----------------------------------------------------------------------------


@needs_c
def test_cli_writes_the_same_documents_with_and_without_the_extension(tmp_path: Path) -> None:
    """`wirebeat run -I` of v5, v9 and IPFIX exports (the bench's generator, and the
    hostile exports above) with the extension and with WIREBEAT_PURE_PYTHON=1: same
    documents, same ids, same order."""
    sys.path.insert(0, str(ROOT / "tests" / "bench"))
    import netflow as bench
    payloads = bench.datagrams_v5(900) + bench.datagrams(900) + bench.datagrams_ipfix(900)
    payloads.append(v9(260, ROW_FIELDS, row("10.0.0.4", "10.0.0.5", 0, 0x0303, 1) + row("1.1.1.1", "2.2.2.2", 3, 4, 6)))
    pcap = tmp_path / "exports.pcap"
    bench.write_pcap(pcap, payloads)
    outputs = []
    for pure in ("0", "1"):
        env = dict(os.environ, WIREBEAT_PURE_PYTHON=pure)
        run = subprocess.run([sys.executable, "-c", CONSOLE_WITH_IDS, "run", "-I", str(pcap), "--console",
                              "-E", "logging.metrics.period=0"], capture_output=True, env=env, cwd=ROOT,
                             check=True)
        outputs.append(run.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0].count(b'"type":"netflow"') == 3 * 900 + 2


@needs_c     # publish_set is the C path's
def test_a_data_set_that_cannot_be_published_is_counted_and_the_run_goes_on(monkeypatch) -> None:
    """publish_set raising (a bug in it or in the C module) is a crashed document,
    counted per decoder like a crash in document(); the next export is decoded as
    usual, and strict mode (the tests' engines) raises it instead."""
    import pcapgen
    import wirebeat.sources.netflow     # the engine takes publish_set from here at each data set
    from wirebeat.testing import make_engine

    real = wirebeat.sources.netflow.publish_set
    calls = []

    def fails_once(*args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("planted")
        return real(*args)

    monkeypatch.setattr(wirebeat.sources.netflow, "publish_set", fails_once)
    payload = v9(256, ROW_FIELDS, row("10.0.0.1", "10.0.0.2", 51000, 443, 6))
    frame = pcapgen.ethernet(pcapgen.ipv4("192.0.2.10", "192.0.2.1", 17,
                                          pcapgen.udp("192.0.2.10", "192.0.2.1", 40000, 2055, payload)))
    engine, pipeline, output, stats = make_engine([DECODER], strict=False)
    engine.on_frame(SECS, 1, frame, "test")
    engine.on_frame(SECS + 1, 1, frame, "test")
    pipeline.close()
    assert stats.counters["decoder.crashed.netflow"] == 1
    assert len(calls) == 2 and len(output.docs) == 1
    assert output.docs[0]["netflow"]["type"] == "netflow_flow"

    calls.clear()
    engine, pipeline, output, stats = make_engine([DECODER], strict=True)
    with pytest.raises(RuntimeError, match="planted"):
        engine.on_frame(SECS, 1, frame, "test")
    pipeline.close()
