"""The flow table's C core (beat/_flowcore.c) against its pure-Python twin (beat/flows.py).

beat/flows.py is the reference: every test here runs the same packets through a
flow table with the extension and one without it (`flows._flowcore = None` when
the table is built) and requires the same documents byte for byte, the same
`_id`s, the same counters and the same records in the table (halfway, at the
last packet and after the end of input), and the same flow.id for a
transaction's FlowKey. The traffic is
built to hit every branch the C code has and its edges: TCP with and without
a handshake, FIN, RST, a new SYN on a closed flow, retransmissions, sequence
numbers wrapping at 2**32, TCP headers cut short or with a data offset past
the segment, UDP and ICMP cut short, ICMP with and without identifiers, IPv6,
VLAN tags, VXLAN and GRE tunnels, raw IP links (no MACs), one MAC order both
ways (table aliases), a full table (evictions), packets out of time order,
several report periods; then seeded random truncations and byte flips of
those frames. Negative counts, timestamps that are not floats or lie past
the year 2255, and arguments of other types are fed to the table and the
reporter directly: the C code must hand them to Python and still agree.
The C core's records are `_flowcore.Record` objects (numbers inline); the
Python path's are lists: they are compared as lists (`_plain`), item by item.
Under CI=true the extension must have been built.
"""
from __future__ import annotations

import os
import random
import socket
import struct
import sys
from typing import Any

import orjson
import pytest

import pcapgen as g
import tunnelgen as tg
from wirebeat import flows
from wirebeat.document import DocumentBuilder
from wirebeat.flows import (R_BODY, R_BYTES, R_KEY, R_LAST_TS, R_PACKETS, R_REV_KEY, R_TCP, R_TEXT, T_RETRANS, FlowReporter,
                            FlowTable)
from wirebeat.registry import discover
from wirebeat.testing import make_engine
from test_flows import JsonOutput       # (_id, the document as orjson writes it) of every document
from running import needs_extension, require

try:
    from wirebeat import _flowcore
except ImportError:
    _flowcore = None

needs_c = needs_extension(_flowcore)
SPECS = [r.spec for r in discover()]
T0 = 1_700_000_000.125
A4, B4, C4 = "192.0.2.10", "198.51.100.20", "203.0.113.5"
A6, B6 = "2001:db8::10", "2001:db8:1::20"
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def test_extension_is_built_under_ci():
    if os.environ.get("CI") == "true":
        assert _flowcore is not None, "wirebeat._flowcore was not built (C compiler / Python headers?)"
        if os.environ.get("WIREBEAT_PURE_PYTHON") in (None, "", "0"):
            assert flows._flowcore is not None, "flows.py refused the extension (record layout differs?)"


def _plain(rec: Any) -> list:
    """A record as the Python path's list: a C Record's items, its TCP part as a list too."""
    out = list(rec)
    if out[R_TCP] is not None:
        out[R_TCP] = list(out[R_TCP])
    return out


def _records_of(table: FlowTable, c: bool) -> list:
    """The table's records as lists, after checking each is the kind its path makes."""
    records = table._records()
    assert all(type(rec) is (_flowcore.Record if c else list) for rec in records)
    return [_plain(rec) for rec in records]


def _run(c: bool, frames: list[tuple[float, int, bytes]], as_text: bool = True,
         **overrides: Any) -> tuple[list[tuple[str, bytes]], dict[str, int], list]:
    """(documents, counters, the table's records) of `frames` through one engine."""
    saved = flows._flowcore
    if not c:
        flows._flowcore = None
    try:
        values = {"wirebeat.flows.enabled": True}
        values.update({k.replace("__", "."): v for k, v in overrides.items()})
        engine, pipeline, _, stats = make_engine(SPECS, strict=False, overrides=values)
    finally:
        flows._flowcore = saved
    assert (engine.flow_reporter.core is not None) == c
    engine.flow_reporter.as_text = as_text
    output = pipeline.output = JsonOutput()
    records = []
    for i, (ts, linktype, frame) in enumerate(frames):
        engine.on_frame(ts, linktype, frame, "test")
        if i % 10 == 0:         # counters (open flows, MAC-order aliases) all along
            records.append(engine.sources["test"].flows.counters())
        if i in (len(frames) // 2, len(frames) - 1):     # the table halfway and at the end, as plain values
            table = engine.sources["test"].flows
            records.append((sorted(repr(rec[:R_TEXT]) for rec in _records_of(table, c)),
                            sorted((repr(k), repr(_plain(rec)[:R_TEXT])) for k, rec in table.by_endpoints.items()),
                            _state(table),
                            list(table.ended.items()), table.counters(), table.next_sweep, table.next_report))
    table = engine.sources["test"].flows
    engine.finish()
    # After the end of input (FlowTable.finish, in C finish_records): the same table left,
    # the same ended flows in the same order (max_flows 16: the oldest forgotten), counters.
    records.append((_records_of(table, c), dict(table.by_endpoints), _state(table), list(table.ended.items()),
                    table.counters()))
    assert pipeline.close() == 0
    return output.lines, stats.snapshot(), records


def _same(frames: list[tuple[float, int, bytes]], **overrides: Any) -> int:
    """Both paths, text and dict reports; the number of flow documents."""
    reference = _run(False, frames, **overrides)
    assert _run(True, frames, **overrides) == reference
    assert _run(True, frames, as_text=False, **overrides) == _run(False, frames, as_text=False, **overrides)
    return sum(1 for _, line in reference[0] if b'"type":"flow"' in line)


def _eth(packet: bytes, forward: bool = True, vlans: tuple = ()) -> bytes:
    src, dst = (MAC_A, MAC_B) if forward else (MAC_B, MAC_A)
    return g.ethernet(packet, src=src, dst=dst, vlans=vlans)


def _tcp(a: str, b: str, pa: int, pb: int, seq: int, flags: str, data: bytes = b"", ack: int = 0) -> bytes:
    return g.ip_packet(a, b, 6, g.tcp(a, b, pa, pb, data, seq=seq, ack=ack, flags=flags))


def _traffic() -> list[tuple[float, int, bytes]]:
    """Every kind of packet the C code has a branch for (see the module docstring)."""
    out: list[tuple[float, bytes]] = []
    t = T0

    def add(frame: bytes, step: float = 0.25) -> None:
        nonlocal t
        out.append((t, frame))
        t += step

    # A handshake, data both ways, a retransmission, FIN both ways, the last ACK.
    for a, b, pa, pb, vl in ((A4, B4, 40000, 443, ()), (A6, B6, 40001, 80, (5,)), (A4, C4, 40002, 22, (7, 8))):
        fwd = lambda p, vl=vl: _eth(p, True, vl)        # noqa: E731
        back = lambda p, vl=vl: _eth(p, False, vl)      # noqa: E731
        add(fwd(_tcp(a, b, pa, pb, 100, "S")))
        add(back(_tcp(b, a, pb, pa, 900, "SA", ack=101)))
        add(fwd(_tcp(a, b, pa, pb, 101, "A", ack=901)))
        add(fwd(_tcp(a, b, pa, pb, 101, "PA", b"x" * 50)))
        add(fwd(_tcp(a, b, pa, pb, 101, "PA", b"x" * 50)))              # whole retransmission
        add(fwd(_tcp(a, b, pa, pb, 131, "PA", b"y" * 40)))              # partly retransmitted
        add(back(_tcp(b, a, pb, pa, 901, "PA", b"z" * 300)))
        add(back(_tcp(b, a, pb, pa, (1201 - 1400) % 2**32, "PA", b"L" * 1400)))     # a full-size segment, retransmitted
        add(fwd(_tcp(a, b, pa, pb, 400, "PA", b"w" * 10)))              # after a hole
        add(fwd(_tcp(a, b, pa, pb, 410, "FA")))
        add(back(_tcp(b, a, pb, pa, 1201, "FA")))
        add(fwd(_tcp(a, b, pa, pb, 411, "A")))
    # A new SYN on a closed flow's ports, within the linger time: a new flow.
    add(_eth(_tcp(A4, B4, 40000, 443, 5000, "S")))
    add(_eth(_tcp(A4, B4, 40000, 443, 5001, "R")))
    add(_eth(_tcp(A4, B4, 40000, 443, 5001, "PA", b"after rst")))
    # Sequence numbers wrapping at 2**32, with and without a retransmission across the wrap.
    top = 2**32 - 20
    add(_eth(_tcp(A4, B4, 41000, 8080, top, "PA", b"a" * 30)))
    add(_eth(_tcp(A4, B4, 41000, 8080, (top + 30) % 2**32, "PA", b"b" * 30)))
    add(_eth(_tcp(A4, B4, 41000, 8080, top + 10, "PA", b"c" * 30)))        # across the wrap again
    add(_eth(_tcp(A4, B4, 41000, 8080, 2**31 + 5, "PA", b"d" * 5)))         # half the space away
    add(_eth(_tcp(A4, B4, 41000, 8080, 0, "PA", b"e" * 5)))
    add(_eth(_tcp(B4, A4, 8080, 41000, 2**32 - 1, "PA", b"f" * 2), False))
    # TCP headers cut short, or with a data offset past the segment, or empty.
    seg = g.tcp(A4, B4, 42000, 9000, b"payload", seq=7, flags="PA")
    for cut in (0, 1, 4, 12, 13, 19, 20, 21):
        add(_eth(g.ipv4(A4, B4, 6, seg[:cut])))
    add(_eth(g.ipv4(A4, B4, 6, seg[:12] + b"\xf0" + seg[13:])))                # offset 60 > segment
    add(_eth(g.ipv4(A4, B4, 6, seg[:12] + b"\x00" + seg[13:])))                # offset 0
    # UDP and ICMP, whole and cut short; ICMP with and without identifiers; IPv6.
    for cut in (0, 3, 4, 8):
        add(_eth(g.ipv4(A4, B4, 17, g.udp(A4, B4, 5000, 53, b"q")[:cut])))
    add(_eth(g.ipv4(A4, B4, 17, g.udp(A4, B4, 5000, 53, b"q"))))
    add(_eth(g.ipv4(B4, A4, 17, g.udp(B4, A4, 53, 5000, b"answer")), False))
    for icmp in (g.icmp_echo(77, 1), g.icmp_echo(77, 1, reply=True), g.icmp(13, 0, b"\0\x09\0\0"),
                 g.icmp(3, 1), g.icmp(8, 0)[:5], g.icmp(8, 0)[:1]):
        add(_eth(g.ipv4(A4, B4, 1, icmp)))
    for icmp6 in (g.icmpv6_echo(A6, B6, 5, 6), g.icmpv6_echo(B6, A6, 5, 6, reply=True)):
        add(_eth(g.ipv6(A6, B6, 58, icmp6)))
    add(_eth(g.ipv6(A6, B6, 58, b"\x87\0\0\0")))
    add(_eth(g.ipv6(A6, B6, 17, g.udp(A6, B6, 1, 2, b"six"))))
    add(_eth(g.ipv4(A4, B4, 50, b"\0" * 16)))                                   # ESP: no ports
    # Tunnels: VXLAN (outer addresses in the key) and GRE.
    inner = g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 7000, 8000, b"i" * 10)))
    add(g.ethernet(tg.vxlan(inner, 42)))
    add(g.ethernet(tg.gre(g.ipv4(A4, B4, 6, g.tcp(A4, B4, 1, 2, b"g", flags="S")), 0x0800)))
    # One MAC order both ways: the reply finds its flow through an alias.
    same = lambda p: g.ethernet(p, src=MAC_A, dst=MAC_B)     # noqa: E731
    add(same(g.ipv4(A4, C4, 17, g.udp(A4, C4, 6000, 6001, b"ask"))))
    add(same(g.ipv4(C4, A4, 17, g.udp(C4, A4, 6001, 6000, b"back"))))
    add(same(g.ipv4(C4, A4, 17, g.udp(C4, A4, 6001, 6000, b"again"))))
    add(g.ethernet(g.ipv4(A4, C4, 17, g.udp(A4, C4, 6002, 6003, b"m")), src=MAC_A, dst=MAC_A))
    # A packet earlier than its flow's last one (capture order is not time order).
    add(_eth(g.ipv4(A4, B4, 17, g.udp(A4, B4, 5000, 53, b"late"))), -3.0)
    # Many small flows (a full table with max_flows 16), then quiet periods and a busy flow.
    for i in range(40):
        add(_eth(g.ipv4(A4, B4, 17, g.udp(A4, B4, 10000 + i, 53, b"n"))), 0.5)
    for i in range(120):
        add(_eth(g.ipv4(A4, C4, 17, g.udp(A4, C4, 3000, 3001, b"busy"))), 0.7)
    frames = [(ts, 1, f) for ts, f in out]
    # Raw IP (no MACs): the Ethernet frames' IP packets.
    frames += [(ts + 200, 101, f[14:]) for ts, f in out if f[12:14] in (b"\x08\x00", b"\x86\xdd")]
    return frames


@needs_c
@pytest.mark.parametrize("options", [{}, {"wirebeat__flows__report_all": False},
                                     {"wirebeat__flows__max_flows": 16},
                                     {"wirebeat__flows__period": -1},
                                     {"wirebeat__flows__timeout": 3.0, "wirebeat__flows__period": 2.0}])
def test_every_kind_of_packet_gives_the_same_documents_and_tables(options):
    assert _same(_traffic(), **options) > 50


@needs_c
@pytest.mark.parametrize("seed", range(4))
def test_mutated_frames_give_the_same_documents(seed):
    rng = random.Random(seed)
    frames = []
    for ts, linktype, frame in _traffic():
        for _ in range(2):
            data = bytearray(frame)
            if rng.random() < 0.5:
                del data[rng.randrange(len(data) + 1):]
            for _ in range(rng.randrange(4)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            frames.append((ts + rng.random(), linktype, bytes(data)))
    _same(frames)


def _tables(max_flows: int = 100) -> tuple[FlowTable, FlowTable, list, list]:
    """A C table and a Python table, each with a reporter publishing (id, text) into a list."""
    out_c: list = []
    out_py: list = []
    made = []
    for c, out in ((True, out_c), (False, out_py)):
        saved = flows._flowcore
        if not c:
            flows._flowcore = None
        try:
            builder = DocumentBuilder({"type": "wirebeat"}, [], {}, False, [])
            reporter = FlowReporter(builder, lambda i, d, out=out: out.append((i, orjson.dumps(d))),
                                    30.0, 10.0, max_flows, fragments=True)
            made.append(FlowTable("src", reporter))
        finally:
            flows._flowcore = saved
    assert made[0].core is not None and made[1].core is None
    return made[0], made[1], out_c, out_py


def _state(table: FlowTable) -> list:
    """Every table entry: key, record (as a list) and the key's direction on it."""
    return sorted((repr(k), repr(_plain(rec)[:R_TEXT]), 0 if k == rec[R_KEY] else 1) for k, rec in table.flows.items())


@needs_c
def test_large_counts_and_odd_arguments_take_the_python_path_with_the_same_result():
    c, py, out_c, out_py = _tables()
    frame = g.ethernet(g.ipv4(A4, B4, 6, g.tcp(A4, B4, 1, 2, b"d" * 20, seq=10, flags="PA")))
    src, dst, payload = frame[26:30], frame[30:34], frame[34:]
    for table in (c, py):
        table.account(T0, 1, frame, (), src, dst, 6, payload)
        [rec] = table._records()
        rec[R_PACKETS] = 2**62                      # counts near the 64 bits a C record holds
        rec[R_BYTES] = 2**63 - 1 - 4 * len(frame)
        rec[R_TCP][T_RETRANS] = 2**63 - 1 - 4 * 20
        table.account(T0 + 1, 1, frame, (), src, dst, 6, payload)      # retransmitted
        table.account(T0 + 2, 1, frame, (), src, dst, 6, bytearray(payload))      # not bytes
        table.account(T0 + 3, 1, memoryview(frame).tobytes(), (), src, dst, 6, payload, outer=())
        table.account(T0 + 4, 1, frame, (), src, dst, 6, payload, ())
        table.reporter.report("src", rec, False, None, T0 + 5)
        table.reporter.report("src", rec, True, "idle", T0 + 6)
    assert _state(c) == _state(py)
    assert out_c == out_py and len(out_c) == 2
    assert f'"source":{{"mac":"02-00-00-00-00-01","ip":"{A4}","port":1,"packets":{2**62 + 4},'.encode() in out_c[0][1]
    assert f'"bytes":{2**63 - 1}'.encode() in out_c[0][1]
    assert f'"source_retransmitted_bytes":{2**63 - 1}'.encode() in out_c[0][1]


@needs_c
def test_a_c_record_holds_64_bit_counts_and_float_times_and_refuses_other_values():
    """The C core's records keep counts as 64-bit ints and times as doubles: a value they cannot
    hold is refused when set (never wrapped or rounded silently), a count accounting would carry
    past 2**63 - 1 raises OverflowError, and an int time becomes float(ts), as account_python
    converts it at the door."""
    c, py, _, _ = _tables()
    frame = g.ethernet(g.ipv4(A4, B4, 6, g.tcp(A4, B4, 1, 2, b"d" * 20, seq=10, flags="PA")))
    src, dst, payload = frame[26:30], frame[30:34], frame[34:]
    for table in (c, py):
        table.account(1_700_000_000, 1, frame, (), src, dst, 6, payload)
        [rec] = table._records()
        assert rec[R_LAST_TS] == 1_700_000_000 and rec[R_LAST_TS].__class__ is float
    [rec] = c._records()
    for index, value, error in ((R_PACKETS, 2**63, OverflowError), (R_BYTES, -(2**63) - 1, OverflowError),
                                (R_PACKETS, 1.0, TypeError), (R_LAST_TS, "1", TypeError), (R_LAST_TS, None, TypeError),
                                (R_LAST_TS, 10**400, OverflowError), (17, 0, IndexError)):
        with pytest.raises(error):
            rec[index] = value
    with pytest.raises(OverflowError):
        rec[R_TCP][T_RETRANS] = 2**64
    with pytest.raises(TypeError):
        del rec[R_PACKETS]
    assert _plain(rec) == _plain(py._records()[0])          # nothing refused was stored
    rec[R_BYTES] = 2**63 - 1
    with pytest.raises(OverflowError):
        c.account(T0, 1, frame, (), src, dst, 6, payload)
    assert rec[R_BYTES] == 2**63 - 1 and rec[R_PACKETS] == 1
    rec[R_TCP] = None
    assert rec[R_TCP] is None
    rec[R_TCP] = list(range(13))
    assert list(rec[R_TCP]) == [0, 1, 2, 3, 4, 5, 6, 7, 8.0, 9, 10.0, 11.0, 12]
    assert _plain(_flowcore.Record(_plain(rec))) == _plain(rec)
    assert rec[-1] is None and rec[R_KEY][5] == 6 and len(rec) == 17
    udp = _flowcore.Record(_plain(rec)[:R_TCP] + [None] + _plain(rec)[R_TCP + 1:])
    with pytest.raises(ValueError):         # a UDP flow's record has no room for a TCP part
        udp[R_TCP] = list(range(13))
    assert udp[R_TCP] is None and sys.getsizeof(udp) + 13 * 8 == sys.getsizeof(rec)


@needs_c
@pytest.mark.parametrize("ts", [T0, 1_700_000_000, 9e9, 3e10, 0.0, 1e-7])
def test_timestamps_of_every_kind_report_the_same(ts):
    """Integer times, times past the C iso_time's range, the epoch, a negative duration."""
    c, py, out_c, out_py = _tables()
    frame = g.ethernet(g.ipv4(A4, B4, 6, g.tcp(A4, B4, 1, 2, b"", seq=10, flags="S")))
    back = g.ethernet(g.ipv4(B4, A4, 6, g.tcp(B4, A4, 2, 1, b"", seq=50, ack=11, flags="SA")))
    ack = g.ethernet(g.ipv4(A4, B4, 6, g.tcp(A4, B4, 1, 2, b"", seq=11, ack=51, flags="A")))
    for table in (c, py):
        table.account(ts, 1, frame, (), frame[26:30], frame[30:34], 6, frame[34:])
        table.account(ts + 0.0015, 1, back, (), back[26:30], back[30:34], 6, back[34:])
        table.account(ts + 0.003, 1, ack, (), ack[26:30], ack[30:34], 6, ack[34:])
        table.account(ts - 0.5, 1, ack, (), ack[26:30], ack[30:34], 6, ack[34:])     # earlier than the first
        [rec] = table._records()
        for n, report_ts in enumerate((ts + 10, ts + 10, ts - 0.5, ts + 20)):
            table.reporter.report("src", rec, n == 3, "fin" if n == 3 else None, report_ts)
    assert _state(c) == _state(py)
    assert out_c == out_py and len(out_c) == 4


@needs_c
def test_reports_of_a_quiet_flow_reuse_the_cached_text_and_follow_new_packets():
    c, py, out_c, out_py = _tables()
    frame = g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 1, 2, b"u")))
    for table in (c, py):
        args = (1, frame, (3,), frame[26:30], frame[30:34], 17, frame[34:])
        table.account(T0, *args)
        [rec] = table._records()
        table.reporter.report("src", rec, False, None, T0 + 10)
        body, parts = rec[R_BODY], rec[R_TEXT]
        table.reporter.report("src", rec, False, None, T0 + 20)
        assert rec[R_BODY] is body and rec[R_TEXT] is parts     # no packet since: the same text
        table.account(T0 + 21, *args)
        table.reporter.report("src", rec, False, None, T0 + 30)
        assert rec[R_LAST_TS] == T0 + 21 and rec[R_BYTES] == 2 * len(frame)
        assert rec[R_TEXT] is parts                 # what never changes is made once
        if table is py:         # Python caches the text around the counts too; C writes it anew
            assert rec[R_BODY] is not body
        else:
            assert body is None and rec[R_BODY] is None and parts.__class__ is bytes
        table.reporter.report("src", rec, True, "", T0 + 21)       # empty reason: none written
    assert out_c == out_py and len(out_c) == 4
    assert b"end_reason" not in out_c[3][1] and out_c[3][1].startswith(b'{"@timestamp":"2023-11-14T22:13:41.125000Z"')


@needs_c
def test_a_reports_id_comes_with_the_cached_text_and_a_new_flow_id_makes_it_anew():
    """The C core keeps flow.id's text with the static parts (a report's _id does not read the
    id object); setting R_ID lets go of them, so the next report's _id and flow.id both name the
    new id, and every report's _id is its flow.id and its report number."""
    c, _, out, _ = _tables()
    frame = g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 1, 2, b"u")))
    c.account(T0, 1, frame, (), frame[14 + 12:14 + 16], frame[14 + 16:14 + 20], 17, frame[34:])
    [rec] = c._records()
    c.reporter.report("src", rec, False, None, T0 + 10)
    c.reporter.report("src", rec, False, None, T0 + 20)
    first = rec[flows.R_ID]
    assert rec[R_TEXT].endswith(first.encode())
    rec[flows.R_ID] = "renamed"
    assert rec[R_TEXT] is None
    c.reporter.report("src", rec, False, None, T0 + 30)
    long_id = "é" * 150         # (an id longer than the C _id's stack buffer, not ASCII)
    rec[flows.R_ID] = long_id
    c.reporter.report("src", rec, True, "idle", T0 + 40)
    ids = [doc_id for doc_id, _ in out]
    names = [orjson.loads(text)["flow"]["id"] for _, text in out]
    assert ids == [f"{first}-0", f"{first}-1", "renamed-2", f"{long_id}-3"]
    assert names == [first, first, "renamed", long_id]


# -- flow.id in C, and a sweep's reports handed over in one call ------------------------

def _record(key: tuple, first: Any) -> list:
    rec = [first, first, 0, 0, 0, 0, key, key, 0, None, None, None, None, None, None, None, None]
    assert len(rec) == len(flows._flowcore.LAYOUT[0]) if flows._flowcore else True
    return rec


def _flow_id_cases() -> list[tuple[str, tuple, Any]]:
    """(source, key, first packet time): the common key, VLAN ids, tunnels, raw IP, odd sources
    (a collector client, non-ASCII, a lone surrogate), times and numbers at and past the edges
    of struct "!BHHq", and values of other types."""
    mac = bytes.fromhex("02000000000b02000000000a")
    a4, b4 = bytes((192, 0, 2, 10)), bytes((198, 51, 100, 20))
    a6 = bytes(range(16))
    cases = []
    for source in ("src", "client\0collector:2055", "café", "\udcff", ""):
        cases.append((source, (mac, (), (), a4, b4, 6, 40000, 443), T0))
    for key in ((mac, (5,), (), a4, b4, 17, 1, 2), (mac, (7, 8), (), a4, b4, 17, 0, 65535),
                (mac, (-1, 2**40), (), a4, b4, 17, 0, 0), (mac, tuple(range(9)), (), a4, b4, 17, 0, 0),
                (mac, (), (b"\x0a\0\0\x01", b"\x0a\0\0\x02"), a4, b4, 17, 7000, 8000),
                (mac, (3,), (a6, a6[::-1]), a6, a6[::-1], 58, 5, 5), (mac, (), (a4,), a4, b4, 1, 0, 0),
                (mac, (), (b"x" * 300, a4), a4, b4, 6, 1, 2), (b"", (), (), a4, b4, 50, 0, 0),
                (mac[:5], (), (), a4, b4, 6, 1, 2), (mac, (), (), a4, b4, 255, 65535, 65535),
                (mac, (), (), a4, b4, 256, 1, 2), (mac, (), (), a4, b4, 6, -1, 2), (mac, (), (), a4, b4, 6, 1, 65536),
                (mac, (True,), (), a4, b4, 6, 1, 2), (mac, (), (), "a", b4, 6, 1, 2), (mac, (), (), a4, b4, 6.0, 1, 2),
                (mac, [], (), a4, b4, 6, 1, 2), (mac, (), (), a4, b4, 6, 1)):
        cases.append(("src", key, T0))
    key = (mac, (), (), a4, b4, 6, 40000, 443)
    for first in (0.0, -1.5, 1e-7, 0.5e-6, 1.5e-6, 2.5e-6, 8.9e12, 9e12, 9.2e12, 9.3e12, 1e300, float("inf"),
                  float("nan"), 1_700_000_000, 2**80, "x"):
        cases.append(("src", key, first))
    return cases


@needs_c
@pytest.mark.parametrize("case", range(len(_flow_id_cases())))
def test_flow_id_in_c_is_the_python_one(case):
    source, key, first = _flow_id_cases()[case]
    c, py, _, _ = _tables()
    results = []
    try:
        c_rec = _flowcore.Record(_record(key, first))
    except TypeError:                   # a time that is no number: no C record holds it
        with pytest.raises(TypeError):
            flows._assign_id(source, _record(key, first))
        return
    for assign, rec in ((c.assign_id, c_rec), (flows._assign_id, _record(key, float(first)))):
        try:
            results.append((assign(source, rec), rec[flows.R_ID]))
        except Exception as err:        # the same error either way (the C code asks Python)
            results.append((type(err), str(err)))
    assert results[0] == results[1]
    assert c.assign_id is not flows._assign_id and py.assign_id is flows._assign_id


@needs_c
def test_flow_id_of_a_record_that_has_one_is_kept():
    c, _, _, _ = _tables()
    rec = _flowcore.Record(_record((b"", (), (), b"\1\2\3\4", b"\4\3\2\1", 17, 1, 2), T0))
    rec[flows.R_ID] = "given"
    assert c.assign_id("src", rec) == "given"


def test_flow_id_matches_an_independent_blake2b():
    """The id as documented: BLAKE2b-120 of the joined key, urlsafe base64 (hashlib, by hand)."""
    import base64
    import hashlib
    import struct
    mac = bytes.fromhex("02000000000b02000000000a")
    a4, b4 = bytes((192, 0, 2, 10)), bytes((198, 51, 100, 20))
    outer = (b"\x0a\0\0\x01", b"\x0a\0\0\x02")
    for vlans, tunnel in (((), ()), ((5, 6), ()), ((), outer)):
        rec = _record((mac, vlans, tunnel, a4, b4, 17, 7000, 8000), T0)
        numbers = struct.pack("!BHHq", 17, 7000, 8000, 1_700_000_000_125_000)
        joined = (b"site|" + mac + b"|" + bytes(len(o) for o in tunnel) + b"|" + b"".join(o + b"|" for o in tunnel)
                  + a4 + b"|" + b4 + b"|" + numbers + b"|" + ",".join(map(str, vlans)).encode())
        expected = base64.urlsafe_b64encode(hashlib.blake2b(joined, digest_size=15).digest()).decode()
        table = _tables()[0] if flows._flowcore is not None else None
        assert flows._assign_id("site", list(rec)) == expected
        if table is not None:
            assert table.assign_id("site", _flowcore.Record(rec)) == expected


class _Transport(str):
    """A transport that is a str subclass: the C lookup hands it to Python."""


@needs_c
def test_a_transactions_flow_id_in_c_is_the_python_one():
    """FlowTable.flow_id (C) and flow_id_python on both tables after the same packets: live
    flows either way round, flows that ended (idle, then a new flow on the same ports), ICMP
    (no ports), transports without flows, odd transports, and addresses that are no address
    (empty, a NUL, a non-ASCII digit, out of range) or are one in another spelling."""
    from wirebeat.decoders.api import FlowKey
    c, py, _, _ = _tables()
    frames = []
    for i in range(6):
        frames.append((T0 + i, g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 5000 + i, 53, b"q")))))
    frames.append((T0 + 6, g.ethernet(g.ipv4(A4, B4, 6, g.tcp(A4, B4, 40000, 443, b"", flags="S")))))
    frames.append((T0 + 7, g.ethernet(g.ipv4(A4, C4, 1, g.icmp_echo(77, 1)))))
    frames.append((T0 + 8, g.ethernet(g.ipv6(A6, B6, 17, g.udp(A6, B6, 1234, 53, b"q")))))
    for table in (c, py):
        for ts, frame in frames:
            ip = 14 if frame[12:14] == b"\x08\x00" else None
            if ip is not None:
                table.account(ts, 1, frame, (), frame[26:30], frame[30:34], frame[23], frame[34:])
            else:
                table.account(ts, 1, frame, (), frame[22:38], frame[38:54], frame[20], frame[54:])
        table.sweep(T0 + 9)
        table.sweep(T0 + 35)        # the UDP flows of the first seconds end idle
        frame = frames[0][1]        # then a new flow on the first one's ports
        table.account(T0 + 36, 1, frame, (), frame[26:30], frame[30:34], 17, frame[34:])
    keys = [FlowKey("udp", A4, 5000, B4, 53, "src"), FlowKey("udp", B4, 53, A4, 5000, "src"),
            FlowKey("udp", A4, 5003, B4, 53, "src"), FlowKey("udp", B4, 53, A4, 5004, "src"),
            FlowKey("udp", A4, 9, B4, 9, "src"), FlowKey("tcp", B4, 443, A4, 40000, "src"),
            FlowKey("icmp", A4, 0, C4, 0, "src"), FlowKey("icmp", C4, 5, A4, 6, "src"),
            FlowKey("udp", A6, 1234, B6, 53, "src"), FlowKey("sctp", A4, 1, B4, 2, "src"),
            FlowKey(_Transport("udp"), A4, 5001, B4, 53, "src"), FlowKey(None, A4, 1, B4, 2, "src"),
            FlowKey("udp", "no address", 1, B4, 2, "src"), FlowKey("udp", "", 1, B4, 2, "src"),
            FlowKey("udp", "10.0.0.1\x00", 1, B4, 2, "src"), FlowKey("udp", "１0.0.0.1", 1, B4, 2, "src"),
            FlowKey("udp", "10.0.0.256", 1, B4, 2, "src"), FlowKey("udp", "::ffff:10.0.0.1:", 1, B4, 2, "src"),
            FlowKey("udp", A6.upper(), 1234, B6, 53, "src"), FlowKey("udp", "::ffff:" + A4, 1, B4, 2, "src")]
    found = 0
    for key in keys:
        results = []
        for table in (c, py):
            try:
                results.append(table.flow_id(key))
            except Exception as err:        # the same error either way
                results.append((type(err), str(err)))
        assert results[0] == results[1], key
        found += isinstance(results[0], str)
    assert found == 10          # (the IPv6 flow twice: its address in capitals too)
    assert c.flow_id != c.flow_id_python and py.flow_id == py.flow_id_python
    assert _state(c) == _state(py) and list(c.ended.items()) == list(py.ended.items())


class _Recorder:
    """A pipeline's two entry points, recording how documents arrived."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def publish(self, doc_id: str, doc: Any) -> None:
        self.calls.append(("one", (doc_id, orjson.dumps(doc))))

    def publish_many(self, docs: list) -> None:
        self.calls.append(("many", [(doc_id, orjson.dumps(doc)) for doc_id, doc in docs]))


def _c_and_python_tables(max_flows: int, many: bool = True):
    """(recorder, table) for a table on the C core, then one on the Python path, both
    reporting into their own _Recorder (publish_many too when `many`)."""
    for c in (True, False):
        saved = flows._flowcore
        if not c:
            flows._flowcore = None
        try:
            rec = _Recorder()
            builder = DocumentBuilder({"type": "wirebeat"}, [], {}, False, [])
            reporter = FlowReporter(builder, rec.publish, 30.0, 10.0, max_flows, fragments=True,
                                    publish_many=rec.publish_many if many else None)
            table = FlowTable("src", reporter)
        finally:
            flows._flowcore = saved
        yield rec, table


def _sweeping_tables(many: bool, n: int = 30) -> tuple[list, list]:
    """A C and a Python table with `n` UDP flows, one of them with a negative count (the
    C reporter hands that one to Python mid-sweep), swept twice and finished."""
    runs = []
    for rec, table in _c_and_python_tables(max(100, n), many):
        for i in range(n):
            frame = g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 1000 + i, 53, b"q")))
            table.account(T0 + i * 3 / n, 1, frame, (), frame[26:30], frame[30:34], 17, frame[34:])
        table._records()[7][R_BYTES] = -5      # a count the C reporter hands to Python
        table.sweep(T0 + 5)         # the first sweep only sets the clock
        table.sweep(T0 + 15)
        table.sweep(T0 + 25)
        table.finish()
        runs.append(rec.calls)
    return runs[0], runs[1]


@needs_c
def test_a_sweeps_reports_arrive_in_one_call_in_the_same_order():
    c_calls, py_calls = _sweeping_tables(many=True)
    flat = lambda calls: [doc for kind, docs in calls for doc in (docs if kind == "many" else [docs])]  # noqa: E731
    assert flat(c_calls) == flat(py_calls) and len(flat(py_calls)) == 90     # 2 periodic + 1 final each
    assert {kind for kind, _ in py_calls} == {"one"}
    # C: per sweep, the reports before the one Python makes, that one, then the rest.
    assert [(kind, len(docs) if kind == "many" else 1) for kind, docs in c_calls] == \
        [("many", 7), ("one", 1), ("many", 22)] * 3


@needs_c
def test_a_big_sweep_is_handed_over_in_bounded_chunks():
    """A sweep reporting 2,500 flows holds at most 1,024 reports (MAX_COLLECTED in
    _flowcore.c) before handing them over, in order: memory stays bounded by the chunk,
    not by the number of live flows (max_flows)."""
    c_calls, py_calls = _sweeping_tables(many=True, n=2500)
    flat = lambda calls: [doc for kind, docs in calls for doc in (docs if kind == "many" else [docs])]  # noqa: E731
    assert flat(c_calls) == flat(py_calls) and len(flat(py_calls)) == 7500
    sizes = [len(docs) for kind, docs in c_calls if kind == "many"]
    assert max(sizes) == 1024 and sizes.count(1024) == 6    # two full chunks in each of 3 sweeps


@needs_c
def test_without_publish_many_each_report_is_published_alone():
    c_calls, py_calls = _sweeping_tables(many=False)
    assert c_calls == py_calls and len(c_calls) == 90


def test_publish_many_makes_the_batches_publish_makes():
    from wirebeat.pipeline import Pipeline

    class Batches:
        name = "batches"
        accepts_fragments = True

        def __init__(self) -> None:
            self.batches: list[list] = []

        def send(self, batch, stopping):
            self.batches.append([doc_id for doc_id, _ in batch])
            return 0

        def close(self) -> None:
            pass

    docs = [(str(i), orjson.Fragment(b"{}")) for i in range(2500)]
    results = []
    for many in (False, True):
        output = Batches()
        pipeline = Pipeline(output, max_events=100000, batch_size=1000, flush_timeout_s=3600)
        pipeline.publish("first", {"a": 1})
        if many:
            pipeline.publish_many(docs[:10])
            pipeline.publish_many([])
            pipeline.publish_many(docs[10:])
        else:
            for doc_id, doc in docs:
                pipeline.publish(doc_id, doc)
        published = pipeline.published
        assert pipeline.close() == 0
        results.append((published, output.batches))
    assert results[0] == results[1]
    assert [len(b) for b in results[0][1]] == [1000, 1000, 501]


def _source_tables(source: str) -> tuple[FlowTable, FlowTable, list, list]:
    """As _tables, for a capture source named `source`."""
    c, py, out_c, out_py = _tables()
    for table in (c, py):
        table.source = source
        if table.core is not None:      # the C table read its source when it was made
            saved = table.core
            table.core = _flowcore.Table(table, table.reporter.core, table.account_python, table.flow_id_python,
                                         flows.ip_packed)
            assert saved is not table.core
    return c, py, out_c, out_py


_ADDRESSES_4 = ["0.0.0.0", "9.9.9.9", "10.10.10.10", "99.99.99.99", "100.100.100.100", "255.255.255.255",
                "1.20.255.0", "200.9.10.199", "127.0.0.1", "169.254.1.2"]
_ADDRESSES_6 = ["::", "::1", "::ffff:10.0.0.1", "::ffff:1.2.3.4", "::1.2.3.4", "fe80::1", "2001:db8::",
                "2001:db8:0:0:1:0:0:1", "1:2:3:4:5:6:7:8", "ff02::fb", "64:ff9b::c000:221", "1::", "0:1::"]


@needs_c
@pytest.mark.parametrize("source", ["src", "capture é ✓.pcap", "tcp://collector:5555\0client-ü"])
def test_report_text_of_every_address_shape_vlans_icmp_and_non_ascii_sources(source):
    """The C core writes address text itself (IPv4) and keeps a flow's static parts as UTF-8:
    every octet width, IPv6 forms (compressed, mapped, embedded IPv4), VLAN stacks, ICMP and
    ICMPv6 with identifiers, UDP, TCP, and sources whose text is not ASCII must give the
    Python path's bytes, for first, periodic and final reports."""
    c, py, out_c, out_py = _source_tables(source)
    frames = []
    pairs = list(zip(_ADDRESSES_4, _ADDRESSES_4[1:] + _ADDRESSES_4[:1]))
    pairs += list(zip(_ADDRESSES_6, _ADDRESSES_6[1:] + _ADDRESSES_6[:1]))
    for i, (a, b) in enumerate(pairs):
        vlans = ((), (1,), (4095, 7), (0, 100, 200))[i % 4]
        six = ":" in a
        frames.append(g.ethernet(g.ip_packet(a, b, 17, g.udp(a, b, 1000 + i, 53, b"u" * i)), vlans=vlans))
        frames.append(g.ethernet(g.ip_packet(a, b, 6, g.tcp(a, b, 2000 + i, 443, b"t", seq=i, flags="S"))))
        if six:
            frames.append(g.ethernet(g.ipv6(a, b, 58, g.icmpv6_echo(a, b, 300 + i, 1))))
        else:
            frames.append(g.ethernet(g.ipv4(a, b, 1, g.icmp_echo(300 + i, 1)), vlans=vlans))
    for table in (c, py):
        for n, frame in enumerate(frames):
            link = _link(frame)
            table.account(T0 + n / 100, 1, frame, *link)
        table.sweep(T0 + 1)                 # the first sweep sets the clock
        table.sweep(T0 + 12)                # every flow's first (periodic) report
        table.sweep(T0 + 23)                # again: the cached parts
        table.finish()                      # final reports
    assert _state(c) == _state(py)
    assert out_c == out_py and len(out_c) == 3 * len(frames)
    # network.community_id against the pure-Python reference (the C one is shared with _speedups)
    import ipaddress
    from wirebeat.document import community_id_packed_python
    for _, line in out_c:
        doc = orjson.loads(line)
        src, dst = (ipaddress.ip_address(doc[side]["ip"]).packed for side in ("source", "destination"))
        proto = {"udp": 17, "tcp": 6, "icmp": 1, "ipv6-icmp": 58}[doc["network"]["transport"]]
        if proto in (6, 17):
            ports = doc["source"]["port"], doc["destination"]["port"]
        else:
            ports = (8, 0) if proto == 1 else (128, 0)      # echo requests (type, code)
        assert doc["network"]["community_id"] == community_id_packed_python(proto, src, ports[0], dst, ports[1])


@needs_c
def test_ipv6_text_written_in_c_is_inet_ntops_for_every_run_of_zero_groups():
    """The C core writes IPv6 text itself (glibc's inet_ntop rules): every pattern of zero
    groups (the longest run, the first of equal ones, single zeros kept), leading zeros
    dropped, and the embedded IPv4 forms (six zero groups, or five and ffff) and their near
    misses must give the Python path's bytes (socket.inet_ntop)."""
    import socket
    c, py, out_c, out_py = _tables()
    addresses = []
    for pattern in range(256):
        value = (0x1, 0xFFFF, 0xABC, 0x10, 0x100, 0xF00D)[pattern % 6]
        addresses.append([value if pattern >> i & 1 else 0 for i in range(8)])
    for fifth in (0xFFFF, 0xFFFE, 0, 1):
        for tail in ([0, 0], [0, 1], [1, 0], [0x0102, 0x0304], [0xFFFF, 0xFFFF]):
            addresses += [[0, 0, 0, 0, 0, fifth] + tail, [0, 0, 0, 0, 1, fifth] + tail]
    texts = list(dict.fromkeys(socket.inet_ntop(socket.AF_INET6, b"".join(w.to_bytes(2, "big") for w in words))
                               for words in addresses))
    frames = [g.ethernet(g.ipv6(a, b, 17, g.udp(a, b, 1000 + i, 53, b"u")))
              for i, (a, b) in enumerate(zip(texts, texts[1:] + texts[:1]))]
    for table in (c, py):
        for n, frame in enumerate(frames):
            table.account(T0 + n / 1000, 1, frame, *_link(frame))
        table.sweep(T0 + 1)
        table.finish()
    assert out_c == out_py and len(out_c) == len(frames)
    assert {orjson.loads(line)["source"]["ip"] for _, line in out_c} == set(texts)


class _LongDirection:
    """A direction object of another shape than NetworkDirection, with a long verdict."""

    def of_packed(self, src: bytes, dst: bytes) -> str:
        return "far-" * 500 + str(len(src))


@needs_c
def test_static_parts_longer_than_the_c_cores_stack_buffer_are_the_same():
    """A flow's static parts are written on the stack when they fit (they always do with
    NetworkDirection's words), else in memory of their size: a 2,000-character direction."""
    c, py, out_c, out_py = _tables()
    frames = [g.ethernet(g.ip_packet(a, b, 17, g.udp(a, b, 1000, 53, b"x"))) for a, b in ((A4, B4), (A6, B6))]
    for table in (c, py):
        table.reporter.builder.direction = _LongDirection()
        for n, frame in enumerate(frames):
            table.account(T0 + n, 1, frame, *_link(frame))
        table.sweep(T0 + 2)
        table.sweep(T0 + 13)        # first (periodic) reports
        table.finish()
    assert out_c == out_py and len(out_c) == 4
    assert orjson.loads(out_c[0][1])["network"]["direction"].startswith("far-far-")


def _link(frame: bytes) -> tuple:
    """(vlans, src, dst, proto, payload) of an Ethernet frame as the engine hands them to account."""
    at, vlans = 12, []
    while frame[at:at + 2] in (b"\x81\x00", b"\x88\xa8"):
        vlans.append(int.from_bytes(frame[at + 2:at + 4], "big") & 0x0FFF)
        at += 4
    ip = frame[at + 2:]
    if frame[at:at + 2] == b"\x86\xdd":
        return tuple(vlans), ip[8:24], ip[24:40], ip[6], ip[40:]
    return tuple(vlans), ip[12:16], ip[16:20], ip[9], ip[(ip[0] & 15) * 4:]


@needs_c
def test_a_source_without_utf8_fails_alike():
    """A capture source with a lone surrogate has no JSON text: both paths raise the same error."""
    c, py, out_c, out_py = _source_tables("bad\udcff")
    frame = g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 1, 2, b"u")))
    errors = []
    for table in (c, py):
        table.account(T0, 1, frame, (), frame[26:30], frame[30:34], 17, frame[34:])
        [rec] = table._records()
        with pytest.raises(Exception) as caught:
            table.reporter.report(table.source, rec, False, None, T0 + 10)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1] and out_c == out_py == []


@needs_c
def test_event_times_written_in_c_are_iso_time_at_day_and_rounding_edges():
    """event.end and @timestamp are formatted by the C core (dates kept per day, times per
    second): random times over the whole range, midnights, the last microsecond of a day,
    times that round up into the next second, day and year changes between reports."""
    rng = random.Random(5)
    times = [0.0, 0.5, 86399.9999996, 86400.0, 951782399.9999995, 951782400.0, 7999999999.999999, 8e9 - 1e-3,
             1_700_000_000.0000004, 1_700_006_399.9999996]
    times += [rng.uniform(0, 8e9) for _ in range(200)]
    times += [86400 * rng.randrange(1, 90000) + rng.choice((-0.0000004, 0.0, 0.9999996)) for _ in range(100)]
    c, py, out_c, out_py = _tables()
    frame = g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 1, 2, b"u")))
    for table in (c, py):
        table.account(1.0, 1, frame, (), frame[26:30], frame[30:34], 17, frame[34:])
        [rec] = table._records()
        for t in times:
            rec[R_LAST_TS] = t              # event.end, and @timestamp when reported at it
            rec[R_PACKETS] += 1             # (a packet came: Python's cached text is redone)
            table.reporter.report("src", rec, False, None, t)
            table.reporter.report("src", rec, False, None, t + 1.25)
    assert out_c == out_py and len(out_c) == 2 * len(times)


@needs_c
def test_numbers_at_every_digit_count_and_sign_are_written_as_python_writes_them():
    """Counts, TCP counts and durations are written by the C core: every power of ten and
    its neighbours up to 64 bits, zero, negative values of the TCP counts (only Python's own
    code sets them, but the text must still agree), and the extremes of a long long."""
    from wirebeat.flows import R_FIRST_TS, T_FIN, T_RST, T_SYN
    values = [0, 1, 9, 10, 11, 99, 100, 101, 2**63 - 1]
    for k in range(2, 19):
        values += [10**k - 1, 10**k, 10**k + 1]
    tcp_values = values + [-1, -9, -10, -99, -100, -(10**18), -(2**63)]
    c, py, out_c, out_py = _tables()
    frame = g.ethernet(g.ipv4(A4, B4, 6, g.tcp(A4, B4, 1, 2, b"d", seq=10, flags="PA")))
    for table in (c, py):
        table.account(T0, 1, frame, (), frame[26:30], frame[30:34], 6, frame[34:])
        [rec] = table._records()
        for n, v in enumerate(values):
            half = v // 2                   # the totals (sums) stay within 64 bits
            rec[R_PACKETS], rec[R_BYTES], rec[R_PACKETS + 1], rec[R_BYTES + 1] = half, v - half, n, v // 3
            t = tcp_values[n % len(tcp_values)]
            for i, field in enumerate((T_SYN, T_FIN, T_RST, T_RETRANS, T_RETRANS + 1)):
                rec[R_TCP][field] = tcp_values[(n + 7 * i) % len(tcp_values)] if i else t
            rec[R_FIRST_TS] = T0 - (v % 10**9) / 1e3       # durations of every length
            table.reporter.report("src", rec, n % 2 == 1, "fin" if n % 4 == 1 else None, T0 + 10 + n)
    assert _state(c) == _state(py)
    assert out_c == out_py and len(out_c) == len(values)


@needs_c
@pytest.mark.parametrize("networks", [["private"], [], ["198.51.100.0/24", "fd00::/8"], ["public"]])
def test_flow_direction_answered_in_c_is_of_packed(networks):
    """network.direction of flows: with CIDR ranges only (packed_ranges) the C core works it out
    from the ranges (beat/_direction.h) and never asks Python (the address cache stays empty);
    else ("public") it answers from NetworkDirection's address cache (both addresses known) and
    asks of_packed otherwise; every verdict (ingress, egress, internal, outbound, inbound,
    external, unknown) must be of_packed's, first and later flows between the same addresses
    alike."""
    from wirebeat.direction import NetworkDirection
    addresses = ["10.0.0.1", "10.9.9.9", "198.51.100.7", "203.0.113.9", "127.0.0.1", "169.254.3.4",
                 "224.0.0.251", "fd00::5", "2001:db8::7", "fe80::1", "::1"]
    pairs = [(a, b) for a in addresses for b in addresses if a != b and (":" in a) == (":" in b)]
    c, py, out_c, out_py = _tables()
    for table in (c, py):
        table.reporter.builder.direction = NetworkDirection(networks)
        for rounds in range(2):             # the second round's addresses are all cached
            for i, (a, b) in enumerate(pairs):
                frame = g.ethernet(g.ip_packet(a, b, 17, g.udp(a, b, 1000 + i, 2000 + rounds, b"x")))
                table.account(T0 + rounds * 50 + i / 1000, 1, frame, *_link(frame))
            table.sweep(T0 + rounds * 50 + 1)
            table.sweep(T0 + rounds * 50 + 12)
    assert out_c == out_py and len(out_c) >= 2 * len(pairs)
    direction_c = c.reporter.builder.direction
    assert (direction_c.kinds == {}) == (direction_c.packed_ranges is not None)
    reference = NetworkDirection(networks)
    verdicts = set()
    for _, line in out_c:
        doc = orjson.loads(line)
        import ipaddress
        want = reference.of_packed(*(ipaddress.ip_address(doc[s]["ip"]).packed for s in ("source", "destination")))
        assert doc["network"]["direction"] == want
        verdicts.add(want)
    assert len(verdicts) >= (2 if not networks else 5)


@needs_c
def test_the_key_cache_lets_go_of_an_ended_flows_record_and_keeps_the_others():
    """Frames through the C frame loop (key cache): a flow that ends at a sweep is freed (no
    cache slot keeps its record), a new flow under the same key gets a new record, and the
    flows that stay keep being found through the cache."""
    import sys
    from test_packets_batch import FragmentOutput
    engine, pipeline, _output, _stats = make_engine(
        [], overrides={"wirebeat.flows.enabled": True, "wirebeat.flows.timeout": 5.0, "wirebeat.flows.period": 2.0},
        output=FragmentOutput())
    quiet = g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 1, 2, b"q")))
    busy = [g.ethernet(g.ipv4(A4, C4, 17, g.udp(A4, C4, 100 + i, 200, b"b"))) for i in range(50)]
    engine.on_batch([(T0, 1, f, len(f)) for f in busy] + [(T0, 1, quiet, len(quiet))], "test")
    table = engine.sources["test"].flows
    [rec] = [r for r in table._records() if r[R_KEY][4] == bytes((198, 51, 100, 20))]
    for k in range(1, 8):           # the busy flows stay; the quiet one ends idle at T0 + 5 or later
        engine.on_batch([(T0 + k, 1, f, len(f)) for f in busy], "test")
    assert rec not in table._records() and sys.getrefcount(rec) == 2       # here and getrefcount's argument
    _slots, hits, misses = table.core.key_cache()
    assert misses <= 51 and hits >= 7 * 49         # (a batch's first frame may take the Python path)
    engine.on_batch([(T0 + 8, 1, f, len(f)) for f in busy] + [(T0 + 8, 1, quiet, len(quiet))], "test")  # a new flow
    [new] = [r for r in table._records() if r[R_KEY][4] == bytes((198, 51, 100, 20))]
    assert new is not rec and new[R_PACKETS] == 1 and rec[R_PACKETS] == 1
    engine.finish()
    pipeline.close()


def _churn(seed: int, n: int = 2500) -> list[tuple[float, int, bytes]]:
    """Flows opening, ending and coming back on a small set of ports: UDP both ways, TCP
    SYNs, RSTs (closed flows end at a sweep) and new SYNs on closed flows (the old flow
    ends there and then), so that a table of max_flows 16 is full most of the time and
    ended flows leave holes all over its dict."""
    rng = random.Random(seed)
    frames = []
    t = T0
    for _ in range(n):
        t += rng.random() * 0.05
        port = rng.randrange(2000, 2014)
        r = rng.random()
        if r < 0.45:
            packet = g.ipv4(A4, B4, 17, g.udp(A4, B4, port, 53, b"q"))
        elif r < 0.6:
            packet = g.ipv4(B4, A4, 17, g.udp(B4, A4, 53, port, b"a"))
        elif r < 0.8:
            packet = _tcp(A4, C4, port, 443, port * 1000, "S")
        elif r < 0.95:
            packet = _tcp(C4, A4, 443, port, 7, "R")
        else:
            packet = _tcp(A4, C4, port, 443, 9, "PA", b"d")
        frames.append((t, 1, _eth(packet, rng.random() < 0.9)))
    return frames


CHURN = {"wirebeat__flows__max_flows": 16, "wirebeat__flows__timeout": 4.0, "wirebeat__flows__period": -1}


@needs_c
@pytest.mark.parametrize("seed", range(3))
def test_evictions_among_ended_flows_give_the_same_documents_and_tables(seed):
    frames = _churn(seed)
    _same(frames, **CHURN)
    _, counters, records = _run(True, frames, **CHURN)
    assert records[-1][-1]["flows.table.evicted"] > 200


def _order(table):
    """The table's open order, oldest first: the C core's (linked through its records) or
    the Python path's `order` (id(record) -> record)."""
    if table.core is not None:
        assert table.order is None
        return table.core.order()
    assert all(i == id(rec) for i, rec in table.order.items())
    return list(table.order.values())


def _in_order(table, rec):
    return any(r is rec for r in _order(table))


@pytest.mark.parametrize("c", [pytest.param(True, marks=needs_c), False])
def test_a_full_table_evicts_the_idlest_of_the_oldest_flows_however_many_ended_before(c):
    """The policy, checked frame by frame against its definition (the idlest of the first
    EVICTION_WINDOW flows in the order of their keys in `flows`), on both paths; `order`
    holds exactly the table's records, in that order; the counter counts the evictions."""
    saved = flows._flowcore
    if not c:
        flows._flowcore = None
    try:
        values = {k.replace("__", "."): v for k, v in CHURN.items()}
        engine, pipeline, _, _stats = make_engine(SPECS, strict=False,
                                                  overrides={"wirebeat.flows.enabled": True, **values})
    finally:
        flows._flowcore = saved
    output = pipeline.output = JsonOutput()
    checked = 0
    for ts, linktype, frame in _churn(7):
        table = engine.sources["test"].flows if "test" in engine.sources else None
        expected = None
        if table is not None:
            oldest = [rec for key, rec in table.flows.items() if key == rec[R_KEY]][:flows.EVICTION_WINDOW]
            expected = min(oldest, key=lambda r: r[R_LAST_TS]) if oldest else None
            evicted, finals, sweep, before = table.evicted, table.final_reports, table.next_sweep, table._records()
        engine.on_frame(ts, linktype, frame, "test")
        table = engine.sources["test"].flows
        records = table._records()
        assert list(map(id, _order(table))) == list(map(id, records))
        if table.core is None:
            assert all(table.order[id(rec)] is rec for rec in records)
        # (a frame whose new SYN ended a closed flow, or that came with a sweep, changed the
        # table before its eviction: not checked)
        if expected is not None and table.evicted != evicted and table.next_sweep == sweep \
                and table.final_reports == finals + 1:
            assert table.evicted == evicted + 1
            live = set(map(id, records))
            assert [rec for rec in before if id(rec) not in live] == [expected]
            checked += 1
    assert checked > 200
    engine.finish()
    assert pipeline.close() == 0
    reasons = [orjson.loads(line)["flow"].get("end_reason") for _, line in output.lines if b'"type":"flow"' in line]
    assert reasons.count("evicted") == table.evicted == table.counters()["flows.table.evicted"]
    assert not _order(table) and not table.flows


def _take_over(table: FlowTable, lost: Any, other: Any) -> None:
    """The state a reverse key that was no involution made (before they were): `other`'s entry
    under `lost`'s own key, in place of `other`'s reverse key entry."""
    del table.flows[other[R_REV_KEY]]
    table.flows[lost[R_KEY]] = other
    if table.core is not None:
        table.core.invalidate()     # entries changed behind the C key cache


@needs_c
def test_a_flow_whose_own_key_another_flows_reverse_took_is_no_longer_among_the_oldest():
    """A flow whose own key another flow's entry took in `flows` (no captured frame makes one
    since reverse keys are involutions: test_a_short_mac_pairs_reverse_key_never_takes_another_flows_entry;
    made here by hand) is none of the table's records; an eviction passes over it and drops it
    from `order`, on both paths alike."""
    import socket
    c, py, out_c, out_py = _tables(max_flows=4)
    a, b = socket.inet_aton(A4), socket.inet_aton(B4)
    m8 = b"ABCDEFGH"                        # macs = frame[:12] of an 8-byte frame
    x8 = m8[2:] + m8[:2]
    for table in (c, py):
        table.account(T0, 1, m8, (), a, b, 17, bytes(g.udp(A4, B4, 1000, 53, b"")))     # A
        lost = table.flows[(m8, (), (), a, b, 17, 1000, 53)]
        table.account(T0 + 1, 1, x8, (), b, a, 17, bytes(g.udp(B4, A4, 53, 1000, b"")))  # X
        _take_over(table, lost, table.flows[(x8, (), (), b, a, 17, 53, 1000)])     # X takes A's key
        assert lost not in table._records() and _in_order(table, lost)
        for i in range(3):
            frame = _eth(g.ipv4(A4, C4, 17, g.udp(A4, C4, 2000 + i, 53, b"f")))
            table.account(T0 + 2 + i, 1, frame, (), a, socket.inet_aton(C4), 17,
                          bytes(g.udp(A4, C4, 2000 + i, 53, b"f")))
        assert table.evicted == 0
        frame = _eth(g.ipv4(A4, C4, 17, g.udp(A4, C4, 3000, 53, b"f")))
        table.account(T0 + 9, 1, frame, (), a, socket.inet_aton(C4), 17, bytes(g.udp(A4, C4, 3000, 53, b"f")))
        assert table.evicted == 1
        assert not _in_order(table, lost)
        assert list(map(id, _order(table))) == list(map(id, table._records()))
        assert list(table.ended) == [(17, b, 53, a, 1000)]      # X went
    assert out_c == out_py and len(out_c) == 1
    assert _state(c) == _state(py)


def test_an_eviction_with_only_taken_over_flows_in_order_ends_nothing():
    """When every record left in `order` is one whose own key another flow took (made by hand:
    see _take_over), an eviction finds no victim and ends nothing, rather than failing on an
    empty window. (Also where the C core is not built: the Python path alone.)"""
    import socket
    if flows._flowcore is not None:
        c, py, out_c, out_py = _tables(max_flows=4)
    else:
        (py, out_py), c, out_c = _py_table(), None, []
    a, b = socket.inet_aton(A4), socket.inet_aton(B4)
    m8 = b"ABCDEFGH"
    x8 = m8[2:] + m8[:2]
    for table in (c, py) if c is not None else (py,):
        table.account(T0, 1, m8, (), a, b, 17, bytes(g.udp(A4, B4, 1000, 53, b"")))      # A
        table.account(T0 + 1, 1, x8, (), b, a, 17, bytes(g.udp(B4, A4, 53, 1000, b"")))  # X
        _take_over(table, table.flows[(m8, (), (), a, b, 17, 1000, 53)], table.flows[(x8, (), (), b, a, 17, 53, 1000)])
        [x] = table._records()
        table._end(x, "idle", T0 + 2)
        assert len(_order(table)) == 1 and not table._records()
        table._evict()
        assert table.evicted == 0 and not _order(table)
    assert out_c == out_py or c is None


@needs_c
def test_the_c_cores_open_order_holds_its_own_tables_records_once():
    """The C core's open order is linked through the records: a record is in one table's order
    at most, once (linking it again keeps its place; another table neither takes it nor unlinks
    it), the order holds a reference to it while it is in it, and a table that goes lets go."""
    import gc
    import socket
    import sys

    one, _py, _out_c, _out_py = _tables()
    other, _py2, _out_c2, _out_py2 = _tables()
    a, b = socket.inet_aton(A4), socket.inet_aton(B4)
    for port in (1000, 1001):
        one.account(T0, 1, _eth(g.ipv4(A4, B4, 17, g.udp(A4, B4, port, 53, b"q"))), (), a, b, 17,
                    bytes(g.udp(A4, B4, port, 53, b"q")))
    first, second = one._records()
    assert one.core.order() == [first, second]
    refs = sys.getrefcount(first)
    other.core.unlink(first)                # not its record: nothing changes
    other.core.link(first)                  # in another table's order: stays there
    one.core.link(first)                    # already in: keeps its place
    assert sys.getrefcount(first) == refs
    assert one.core.order() == [first, second] and other.core.order() == []
    one.core.unlink(first)
    one.core.unlink(first)                  # twice: nothing more
    assert one.core.order() == [second] and sys.getrefcount(first) == refs - 1
    one.core.link(first)                    # back in, as the newest
    now = sys.getrefcount(first)            # (before lists holding it are made)
    assert one.core.order() == [second, first] and now == refs
    with pytest.raises(TypeError):
        one.core.link([0] * 17)             # only Records are linked
    one.core.unlink([0] * 17)               # (anything else is in no order)
    del one, _py
    gc.collect()
    assert sys.getrefcount(first) < refs   # the table's order let go of it


@pytest.mark.parametrize("c", [True, False], ids=["c", "python"])
def test_a_short_mac_pairs_reverse_key_never_takes_another_flows_entry(c):
    """A key whose MACs are not 12 bytes (an Ethernet frame shorter than 12 bytes) keeps them as
    they are in its reverse key: swapping halves of another length is no involution, so a new
    flow's reverse key could be another flow's own key, take its entry, and that flow would never
    be reported. Frames "ABCDEFGH" (A -> B) then "CDEFGHAB" (B -> A): two flows, both reported."""
    if c:
        require(flows._flowcore is not None, "the C flow core (wirebeat._flowcore)")
    table, out = _tables()[::2] if c else _py_table()
    a, b = socket.inet_aton(A4), socket.inet_aton(B4)
    query, answer = struct.pack("!HHHH", 1000, 53, 9, 0) + b"q", struct.pack("!HHHH", 53, 1000, 9, 0) + b"r"
    table.account(T0, 1, b"ABCDEFGH", (), a, b, 17, query)
    table.account(T0 + 1, 1, b"CDEFGHAB", (), b, a, 17, answer)
    assert all(table.flows[rec[R_KEY]] is rec for rec in table.flows.values())
    assert len(table._records()) == 2
    table.finish()
    assert len(out) == 2
    assert sorted(orjson.loads(doc)["source"]["ip"] for _, doc in out) == [A4, B4]


def _py_table() -> tuple[FlowTable, list]:
    """A table of the pure-Python path (whether or not the C core is built)."""
    out: list = []
    saved, flows._flowcore = flows._flowcore, None
    try:
        builder = DocumentBuilder({"type": "wirebeat"}, [], {}, False, [])
        reporter = FlowReporter(builder, lambda i, d: out.append((i, orjson.dumps(d))), 30.0, 10.0, 100,
                                fragments=True)
        table = FlowTable("src", reporter)
    finally:
        flows._flowcore = saved
    assert table.core is None
    return table, out


@needs_c
def test_a_sweep_that_ends_flows_between_live_ones_reports_as_the_python_path():
    """The C sweep walks `flows` itself and deletes the ended flows' entries as it goes: idle
    flows between live ones, and a closed one, end in the same order, with the same documents,
    as the Python path's loop over a list of the records."""
    runs = []
    for rec, table in _c_and_python_tables(1000):
        for i in range(200):
            frame = g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 1000 + i, 53, b"q")))
            table.account(T0 + i / 100, 1, frame, (), frame[26:30], frame[30:34], 17, frame[34:])
        for i in range(0, 200, 3):      # every third flow stays alive
            frame = g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 1000 + i, 53, b"again")))
            table.account(T0 + 30 + i / 100, 1, frame, (), frame[26:30], frame[30:34], 17, frame[34:])
        frame = _eth(_tcp(A4, B4, 5, 6, 1, "R"))
        table.account(T0 + 31, 1, frame, (), frame[26:30], frame[30:34], 6, frame[34:])     # closed
        for now in (T0 + 5, T0 + 15, T0 + 35, T0 + 45):
            table.sweep(now)
        assert len(table._records()) == 67 and len(table.flows) == 2 * 67
        table.finish()
        assert not table.flows and not table.by_endpoints
        runs.append([doc for kind, docs in rec.calls for doc in (docs if kind == "many" else [docs])])
    assert runs[0] == runs[1]
    reasons = [orjson.loads(doc)["flow"].get("end_reason") for _, doc in runs[0]]
    assert reasons.count("idle") == 133 and reasons.count("rst") == 1 and reasons.count("end_of_input") == 67


@needs_c
def test_a_flow_added_to_the_table_during_its_sweep_fails_the_sweep():
    """The C sweep walks `flows` itself (or the open order, while it matches `flows`):
    something adding entries to it meanwhile (a report's Python code) fails the sweep with an
    error instead of passing over flows unseen, whichever way it walks."""
    builder = DocumentBuilder({"type": "wirebeat"}, [], {}, False, [])
    added: list = []

    def publish(doc_id: str, doc: Any) -> None:
        table.flows[("added", len(added))] = table._records()[0]
        added.append(doc_id)

    table = FlowTable("src", FlowReporter(builder, publish, 30.0, 10.0, 100))     # dict reports: Python
    assert table.core is not None
    for i in range(3):
        frame = g.ethernet(g.ipv4(A4, B4, 17, g.udp(A4, B4, 1000 + i, 53, b"q")))
        table.account(T0, 1, frame, (), frame[26:30], frame[30:34], 17, frame[34:])
    table.sweep(T0 + 5)
    with pytest.raises(RuntimeError, match="during its sweep"):
        table.sweep(T0 + 15)        # the open order's walk
    assert len(added) == 1
    table.core.invalidate()         # (Python code that changed `flows` says so): the dict's walk
    with pytest.raises(RuntimeError, match="added to the table during its sweep"):
        table.sweep(T0 + 25)
    assert len(added) == 2
