"""TCP reassembly (beat/tcp.py) and its wiring into the engine.

Expectations are computed from the original byte string and the segments a
test chose to send, drop or repeat, never from the reassembler's own output.
"""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wirebeat.testing as engine_harness
import pcapgen
from wirebeat.testing import ListOutput
from wirebeat.engine import Engine
from wirebeat.pipeline import Pipeline
from wirebeat.sources.pcapfile import open_capture
from wirebeat.stats import Stats
from wirebeat.tcp import ACK, FIN, HELD_SEGMENT_OVERHEAD, RST, SYN, TCPTable
from wirebeat.decoders.api import DecodeError, DecoderSpec, FlowKey, Transaction

MASK = 0xFFFFFFFF
KEY = ("client", 1, "server", 2)
ISN = st.one_of(st.integers(0, MASK), st.integers(MASK - 2100, MASK))   # near the wrap, often


class Recorder:
    """A sink that records events, and checks the promises every event keeps."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_data(self, from_client: bool, data: bytes, ts: float) -> None:
        assert data, "never an empty on_data"
        assert not any(e[0] == "close" for e in self.events), "data after close"
        self.events.append(("data", from_client, bytes(data), ts))

    def on_gap(self, from_client: bool, missing: int, ts: float) -> None:
        assert missing > 0, "never an empty gap"
        assert not any(e[0] == "close" for e in self.events), "gap after close"
        self.events.append(("gap", from_client, missing, ts))

    def on_close(self, ts: float) -> None:
        assert not any(e[0] == "close" for e in self.events), "closed twice"
        self.events.append(("close", ts))

    def stream(self, from_client: bool = True) -> list[bytes | int]:
        """One direction as alternating runs: bytes delivered, int = bytes missing."""
        out: list[bytes | int] = []
        for event in self.events:
            if event[0] == "close" or event[1] != from_client:
                continue
            value = event[2]
            if out and type(out[-1]) is type(value):
                out[-1] += value
            else:
                out.append(value)
        return out

    def closes(self) -> list[float]:
        return [e[1] for e in self.events if e[0] == "close"]


def new_conn(**limits: Any) -> tuple[TCPTable, Any, Recorder]:
    table = TCPTable(**limits)
    rec = Recorder()
    return table, table.open(KEY, rec, 0.0), rec


def runs(original: bytes, covered: bytearray, end: int) -> list[bytes | int]:
    """The expected stream: covered bytes as data, uncovered as gap sizes, up to `end`."""
    out: list[bytes | int] = []
    i = 0
    while i < end:
        j = i
        while j < end and covered[j] == covered[i]:
            j += 1
        out.append(original[i:j] if covered[i] else j - i)
        i = j
    return out


@st.composite
def segmented(draw: Any, min_size: int = 0, max_size: int = 2000) -> tuple[bytes, list[tuple[int, int]]]:
    """A byte string and a partition of it into segments (start, end)."""
    data = draw(st.binary(min_size=min_size, max_size=max_size))
    cuts = draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=24))
    bounds = sorted({0, len(data), *(c for c in cuts if 0 < c < len(data))})
    return data, list(zip(bounds, bounds[1:]))


def send(conn: Any, isn: int, data: bytes, start: int, end: int, *, from_client: bool = True,
         fin_at: int | None = None, ack: int = 0, flags: int = ACK, ts: float = 1.0,
         payload: bytes | None = None) -> None:
    """Send bytes [start, end) of a direction whose SYN had sequence number `isn`."""
    if fin_at is not None and end == fin_at:
        flags |= FIN
    conn.segment(from_client, (isn + 1 + start) & MASK, ack & MASK, flags,
                 data[start:end] if payload is None else payload, ts)


# -- properties -------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(segmented(), ISN, st.data())
def test_any_reordering_and_duplication_yields_exactly_the_original_bytes(case, isn, draw):
    data, segments = case
    n = len(data)
    resent = draw.draw(st.lists(st.sampled_from(segments), max_size=6)) if segments else []
    ranges = draw.draw(st.lists(st.tuples(st.integers(0, n), st.integers(0, n)), max_size=6))
    resegmented = [(min(a, b), max(a, b)) for a, b in ranges if a != b]
    arrivals = draw.draw(st.permutations(segments + resent + resegmented))
    table, conn, rec = new_conn()
    conn.segment(True, isn, 0, SYN, b"", 0.5)
    for start, end in arrivals:
        send(conn, isn, data, start, end, fin_at=n)
    table.close_all()
    assert rec.stream() == ([data] if data else [])
    assert rec.closes() == [1.0 if arrivals else 0.5]
    sent = sum(end - start for start, end in arrivals)
    assert table.counters.retransmitted_bytes == sent - n
    assert table.counters.gaps == 0 and table.buffered_total == 0


@settings(max_examples=150, deadline=None)
@given(segmented(max_size=600), ISN, st.data())
def test_overlapping_copies_with_different_bytes_resolve_to_the_first_copy(case, isn, draw):
    data, segments = case
    n = len(data)
    ranges = draw.draw(st.lists(st.tuples(st.integers(0, n), st.integers(0, n)), max_size=8))
    copies = [(min(a, b), max(a, b), bytes([k + 1]) * abs(a - b))      # other content
              for k, (a, b) in enumerate(ranges) if a != b]
    arrivals = draw.draw(st.permutations([(a, b, data[a:b]) for a, b in segments] + copies))
    table, conn, rec = new_conn()
    conn.segment(True, isn, 0, SYN, b"", 0.5)
    expected = bytearray(n)
    filled = bytearray(n)
    for start, end, payload in arrivals:
        send(conn, isn, data, start, end, payload=payload)
        for i in range(start, end):
            if not filled[i]:
                expected[i], filled[i] = payload[i - start], 1
    table.close_all()
    assert rec.stream() == ([bytes(expected)] if n else [])


@settings(max_examples=150, deadline=None)
@given(segmented(min_size=1), ISN, st.data())
def test_any_drop_yields_the_original_bytes_with_gaps_of_the_right_size_in_place(case, isn, draw):
    data, segments = case
    kept_mask = draw.draw(st.lists(st.booleans(), min_size=len(segments), max_size=len(segments)))
    kept = [s for s, keep in zip(segments, kept_mask) if keep]
    resent = draw.draw(st.lists(st.sampled_from(kept), max_size=5)) if kept else []
    arrivals = draw.draw(st.permutations(kept + resent))
    table, conn, rec = new_conn()
    conn.segment(True, isn, 0, SYN, b"", 0.5)
    for start, end in arrivals:
        send(conn, isn, data, start, end, fin_at=len(data))
    table.close_all()
    covered = bytearray(len(data))
    for start, end in kept:
        covered[start:end] = b"\1" * (end - start)
    expected = runs(data, covered, max((end for _, end in kept), default=0))
    assert rec.stream() == expected
    assert table.counters.gap_bytes == sum(x for x in expected if isinstance(x, int))
    assert rec.closes() == [1.0 if arrivals else 0.5]


@settings(max_examples=150, deadline=None)
@given(segmented(min_size=1), ISN, ISN, st.data())
def test_an_ack_beyond_lost_bytes_reports_them_before_the_other_side_speaks(case, isn, server_isn,
                                                                              draw):
    data, segments = case
    n = len(data)
    kept_mask = draw.draw(st.lists(st.booleans(), min_size=len(segments), max_size=len(segments)))
    kept = [s for s, keep in zip(segments, kept_mask) if keep]
    table, conn, rec = new_conn()
    conn.segment(True, isn, 0, SYN, b"", 0.5)
    conn.segment(False, server_isn, isn + 1, SYN | ACK, b"", 0.6)
    for start, end in draw.draw(st.permutations(kept)):
        send(conn, isn, data, start, end, ack=server_isn + 1)
    # The server has everything: it acknowledges the whole request and answers.
    conn.segment(False, (server_isn + 1) & MASK, (isn + 1 + n) & MASK, ACK, b"response", 2.0)
    covered = bytearray(n)
    for start, end in kept:
        covered[start:end] = b"\1" * (end - start)
    last_kept = max((end for _, end in kept), default=0)
    hole_before_data = 0 in covered[:last_kept]
    # Documented: an ACK one past the last byte seen, with nothing held, is a missed FIN.
    end = n if (n - last_kept != 1 or hole_before_data) else last_kept
    first_server = next(i for i, e in enumerate(rec.events) if e[0] == "data" and not e[1])
    before = Recorder()
    before.events = rec.events[:first_server]
    assert before.stream() == runs(data, covered, end)
    assert rec.stream(from_client=False) == [b"response"]


@settings(max_examples=150, deadline=None)
@given(segmented(min_size=1), ISN, st.integers(0, 1500), st.integers(0, 4000), st.data())
def test_under_any_cap_every_byte_delivered_is_the_original_byte_at_its_place(
        case, isn, cap, total_cap, draw):
    data, segments = case
    kept_mask = draw.draw(st.lists(st.booleans(), min_size=len(segments), max_size=len(segments)))
    kept = [s for s, keep in zip(segments, kept_mask) if keep]
    resent = draw.draw(st.lists(st.sampled_from(kept), max_size=5)) if kept else []
    table, conn, rec = new_conn(max_buffered_bytes=cap, max_buffered_bytes_total=total_cap)
    conn.segment(True, isn, 0, SYN, b"", 0.5)
    for start, end in draw.draw(st.permutations(kept + resent)):
        send(conn, isn, data, start, end)
        assert conn.client.buffered <= cap and table.buffered_total <= max(cap, total_cap)
    table.close_all()
    covered = bytearray(len(data))
    for start, end in kept:
        covered[start:end] = b"\1" * (end - start)
    position = 0
    for item in rec.stream():
        if isinstance(item, int):
            position += item
        else:
            assert item == data[position:position + len(item)]
            assert all(covered[position:position + len(item)])
            position += len(item)
    assert position == max((end for _, end in kept), default=0)   # no dropped byte unreported
    assert table.buffered_total == 0


# -- named behaviours ------------------------------------------------------------

def test_in_order_segment_is_handed_on_as_is_without_copying():
    table, conn, rec = new_conn()
    handed: list[bytes] = []
    rec.on_data = lambda from_client, data, ts: handed.append(data)     # type: ignore[method-assign]
    conn.segment(True, 1000, 0, SYN, b"", 0.0)
    payload = b"GET / HTTP/1.1\r\n\r\n"
    conn.segment(True, 1001, 0, ACK, payload, 1.0)
    assert len(handed) == 1 and handed[0] is payload
    assert table.counters.segments == 2


def test_sequence_numbers_wrap_around_in_and_out_of_order():
    data = bytes(range(256)) * 4
    isn = MASK - 300        # the stream crosses 2**32 after 299 bytes
    table, conn, rec = new_conn()
    conn.segment(True, isn, 0, SYN, b"", 0.0)
    for start, end in [(0, 200), (400, 700), (200, 400), (700, 1024)]:
        send(conn, isn, data, start, end)
    assert rec.stream() == [data]
    assert table.counters.out_of_order_segments == 1


def test_a_connection_picked_up_mid_stream_starts_at_its_first_segment():
    data = b"0123456789abcdefghij"
    table, conn, rec = new_conn()
    seq = 7_000_000
    conn.segment(True, seq + 10, 0, ACK, data[10:15], 1.0)     # first seen: sets the start
    conn.segment(True, seq, 0, ACK, data[0:10], 1.1)           # before it: a retransmission
    conn.segment(True, seq + 15, 0, ACK, data[15:], 1.2)
    conn.segment(False, 50, seq + 20, ACK, b"reply", 1.3)      # the server side starts here too
    assert rec.stream() == [data[10:]]
    assert rec.stream(from_client=False) == [b"reply"]
    assert table.counters.retransmitted_bytes == 10


def test_rst_closes_at_once_giving_up_holes_and_later_segments_are_ignored():
    data = b"x" * 30
    table, conn, rec = new_conn()
    conn.segment(True, 100, 0, SYN, b"", 0.0)
    send(conn, 100, data, 0, 10)
    send(conn, 100, data, 20, 30)                  # held behind a hole of 10
    conn.segment(False, 900, 0, RST | ACK, b"", 2.0)
    assert rec.stream() == [data[:10], 10, data[20:]]
    assert rec.closes() == [2.0] and table.counters.connections_closed == 1
    assert KEY not in table.connections
    assert not table.admits(KEY, ACK, True)        # a late retransmission opens nothing
    assert table.counters.segments_ignored == 1
    assert table.admits(KEY, SYN, False)           # a new SYN does


def test_fin_both_ways_closes_once_after_the_bytes_before_each_fin():
    table, conn, rec = new_conn()
    conn.segment(True, 10, 0, SYN, b"", 0.0)
    conn.segment(False, 500, 11, SYN | ACK, b"", 0.1)
    conn.segment(True, 11, 501, ACK, b"request", 0.2)
    conn.segment(False, 506, 18, ACK | FIN, b"tail", 0.4)     # FIN ahead of a hole: held
    conn.segment(True, 18, 501, ACK | FIN, b"", 0.5)
    assert rec.closes() == []
    conn.segment(False, 501, 19, ACK, b"reply", 0.6)          # the hole fills: both ended
    assert rec.stream(from_client=False) == [b"replytail"]
    assert rec.events[-1] == ("close", 0.6)
    assert table.counters.connections_closed == 1 and KEY not in table.connections
    conn.segment(True, 19, 511, ACK, b"", 0.7)                # the last ACK: nothing happens
    assert len(rec.closes()) == 1


def test_a_fin_seen_behind_a_hole_makes_the_hole_a_gap_at_close():
    table, conn, rec = new_conn()
    conn.segment(False, 0, 0, SYN | ACK, b"", 0.0)
    conn.segment(False, 1, 0, ACK, b"abc", 0.1)
    conn.segment(False, 10, 0, ACK | FIN, b"", 0.2)   # bytes 3..8 lost, no data after them
    table.close_all()
    assert rec.stream(from_client=False) == [b"abc", 6]


def test_payload_past_a_fin_is_ignored_and_counted():
    table, conn, rec = new_conn()
    conn.segment(True, 0, 0, SYN, b"", 0.0)
    conn.segment(True, 1, 0, ACK | FIN, b"hello", 0.1)
    conn.segment(True, 4, 0, ACK, b"lo, world", 0.2)
    table.close_all()
    assert rec.stream() == [b"hello"]
    assert table.counters.segments_ignored == 1 and table.counters.retransmitted_bytes == 2


def test_an_ack_one_past_the_last_byte_is_a_missed_fin_not_a_lost_byte():
    table, conn, rec = new_conn()
    conn.segment(True, 0, 0, SYN, b"", 0.0)
    conn.segment(True, 1, 0, ACK, b"bye", 0.1)
    conn.segment(False, 77, 5, ACK, b"ok", 0.2)       # acknowledges 3 bytes + a FIN
    assert rec.stream() == [b"bye"] and table.counters.gaps == 0
    conn.segment(False, 79, 7, ACK, b"!", 0.3)        # 3 more bytes lost: now a gap of 3
    assert rec.stream() == [b"bye", 3]


def test_a_syn_with_data_delivers_it_after_the_syn():
    table, conn, rec = new_conn()
    conn.segment(True, 41, 0, SYN, b"fast open", 0.0)
    conn.segment(True, 51, 0, ACK, b"!", 0.1)
    assert rec.stream() == [b"fast open!"]


def test_a_new_syn_on_the_same_ports_replaces_the_connection():
    table, conn, rec = new_conn()
    conn.segment(True, 1000, 0, SYN, b"", 0.0)
    assert not conn.is_restarted_by(True, 1000)       # a retransmitted SYN
    assert conn.is_restarted_by(True, 5000)           # another connection
    rec2 = Recorder()
    conn2 = table.open(KEY, rec2, 3.0)
    assert rec.closes() == [3.0] and table.connections[KEY] is conn2
    assert table.counters.connections_opened == 2 and table.counters.connections_closed == 1


def test_segments_that_open_nothing():
    table = TCPTable()
    assert not table.admits(KEY, ACK, False)           # a bare ACK of an unknown connection
    assert not table.admits(KEY, FIN | ACK, False)
    assert table.admits(KEY, ACK, True)                # payload: picked up mid-stream
    assert table.admits(KEY, SYN | ACK, False)


# -- caps --------------------------------------------------------------------------

def test_cap_max_buffered_bytes_gives_up_the_oldest_hole():
    data = bytes(range(120))
    cap = 2 * (50 + HELD_SEGMENT_OVERHEAD) - 1     # room for one held segment of 50, not two
    table, conn, rec = new_conn(max_buffered_bytes=cap)
    conn.segment(True, 0, 0, SYN, b"", 0.0)
    send(conn, 0, data, 10, 60)
    assert rec.events == []
    send(conn, 0, data, 70, 120)                   # over the cap: the hole 0..10 goes
    assert rec.stream() == [10, data[10:60]]
    assert table.counters.buffer_cap_hits == 1
    send(conn, 0, data, 60, 70)                    # the next hole still fills normally
    send(conn, 0, data, 0, 10)                     # too late: a retransmission now
    assert rec.stream() == [10, data[10:]]
    assert table.counters.retransmitted_bytes == 10


def test_cap_max_buffered_bytes_counts_a_flood_of_tiny_segments_by_their_overhead():
    cap = 1000
    table, conn, rec = new_conn(max_buffered_bytes=cap)
    conn.segment(True, 0, 0, SYN, b"", 0.0)
    for pos in range(2, 2000, 2):                  # every other byte: 999 one-byte holes
        conn.segment(True, 1 + pos, 0, ACK, b"z", 0.1)
        assert len(conn.client.starts) <= cap // (1 + HELD_SEGMENT_OVERHEAD)
        assert conn.client.buffered <= cap
    assert table.counters.buffer_cap_hits > 900


def test_cap_max_buffered_bytes_total_makes_the_growing_direction_give_up():
    table = TCPTable(max_buffered_bytes=10_000, max_buffered_bytes_total=250)
    first, second = Recorder(), Recorder()
    a = table.open(("a",), first, 0.0)
    b = table.open(("b",), second, 0.0)
    for conn in (a, b):
        conn.segment(True, 0, 0, SYN, b"", 0.0)
        conn.segment(True, 11, 0, ACK, b"q" * 50, 0.1)          # held behind 10 lost bytes
    assert table.buffered_total == 2 * (50 + HELD_SEGMENT_OVERHEAD)
    b.segment(True, 71, 0, ACK, b"r" * 50, 0.2)                 # 342 > 250
    assert second.stream() == [10, b"q" * 50, 10, b"r" * 50]
    assert first.events == []
    assert table.counters.buffer_total_cap_hits == 1
    assert table.buffered_total == 50 + HELD_SEGMENT_OVERHEAD


def test_cap_max_connections_evicts_the_idlest_of_the_oldest():
    table = TCPTable(max_connections=3)
    recs = [Recorder() for _ in range(4)]
    conns = [table.open((i,), recs[i], float(i)) for i in range(3)]
    conns[0].segment(True, 0, 0, SYN, b"", 10.0)        # the oldest is busy
    conns[1].segment(True, 0, 0, SYN, b"", 1.0)
    conns[1].segment(True, 5, 0, ACK, b"held", 1.5)     # held behind 4 lost bytes
    table.open((3,), recs[3], 11.0)
    assert recs[1].events == [("gap", True, 4, 1.5), ("data", True, b"held", 1.5), ("close", 1.5)]
    assert recs[0].events == [] and recs[2].events == []
    assert sorted(table.connections) == [(0,), (2,), (3,)]
    assert table.counters.connections_evicted == 1 and table.buffered_total == 0


def test_cap_idle_timeout_closes_at_the_last_packet_time():
    table, conn, rec = new_conn(idle_timeout_s=60.0)
    conn.segment(True, 0, 0, SYN, b"", 100.0)
    conn.segment(True, 3, 0, ACK, b"late", 100.5)        # held behind 2 lost bytes
    table.expire(160.4)
    assert rec.events == [] and KEY in table.connections
    table.expire(160.6)
    assert rec.stream() == [2, b"late"] and rec.closes() == [100.5]
    assert table.counters.connections_timed_out == 1 and KEY not in table.connections
    assert table.admits(KEY, ACK, True)       # still talking later: picked up again


# -- through the engine -------------------------------------------------------------

class EchoStream:
    """A toy StreamDecoder: one transaction per connection with what each side sent."""

    def __init__(self, flow: FlowKey, options: Any) -> None:
        self.flow = flow
        self.sides: dict[bool, list[Any]] = {True: [], False: []}
        self.first_ts: float | None = None

    def on_data(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]:
        if data.startswith(b"BAD"):
            raise DecodeError("echo.bad")
        self.first_ts = ts if self.first_ts is None else self.first_ts
        self.sides[from_client].append(data.decode())
        return []

    def on_gap(self, from_client: bool, missing: int, ts: float) -> list[Transaction]:
        self.sides[from_client].append(missing)
        return []

    def on_close(self, ts: float) -> list[Transaction]:
        detail = {"client": self.sides[True], "server": self.sides[False]}
        return [Transaction(self.flow, self.first_ts or ts, ts, "OK", detail)]

    def expire(self, now: float) -> list[Transaction]:
        return []


ECHO = DecoderSpec(name="echo", document=lambda txn: {"echo": txn.detail}, stream=EchoStream,
                   ports=(7007,))


def make_engine(spec: DecoderSpec, strict: bool = True) -> tuple[Engine, Pipeline, ListOutput, Stats]:
    return engine_harness.make_engine([spec], strict)


def frame(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: str,
          payload: bytes = b"") -> bytes:
    segment = pcapgen.tcp(src, dst, sport, dport, payload, seq=seq, ack=ack, flags=flags)
    return pcapgen.ethernet(pcapgen.ip_packet(src, dst, pcapgen.IPPROTO_TCP, segment))


def test_engine_reassembles_a_lossy_reordered_capture_into_one_transaction(tmp_path):
    client, server = "192.0.2.1", "192.0.2.2"

    def c2s(seq: int, ack: int, flags: str, payload: bytes = b"") -> bytes:
        return frame(client, server, 40000, 7007, seq, ack, flags, payload)

    def s2c(seq: int, ack: int, flags: str, payload: bytes = b"") -> bytes:
        return frame(server, client, 7007, 40000, seq, ack, flags, payload)

    ci, si = MASK - 5, 1000          # the client's sequence numbers wrap mid-request
    frames = [
        c2s(ci, 0, "S"), s2c(si, ci + 1, "SA"), c2s(ci + 1, si + 1, "A"),
        c2s(ci + 1, si + 1, "PA", b"hello "),
        c2s(ci + 13, si + 1, "PA", b"there"),           # ahead of "world,"
        c2s(ci + 7, si + 1, "PA", b"world,"),
        c2s(ci + 1, si + 1, "PA", b"hello "),           # a retransmission
        # the server's first 4 bytes are lost; the client acknowledges past them
        s2c(si + 5, ci + 18, "PA", b"-back"),
        c2s(ci + 18, si + 10, "A"),
        c2s(ci + 18, si + 10, "PA", b"BAD bytes"),      # the decoder rejects these: counted
        s2c(si + 10, ci + 27, "FA"), c2s(ci + 27, si + 11, "FA"), s2c(si + 11, ci + 28, "A"),
        # not a configured port: not tracked
        frame(client, server, 40001, 9999, 1, 0, "PA", b"ignored"),
    ]
    path = tmp_path / "echo.pcap"
    pcapgen.write_pcap(path, [(1_700_000_000.0 + i / 10, f) for i, f in enumerate(frames)])

    engine, pipeline, output, stats = make_engine(ECHO)
    reader = open_capture(str(path))
    for f in reader:
        engine.on_frame(f.ts, f.linktype, f.data, reader.name)
    engine.finish(reader.name)
    reader.close()
    assert pipeline.close() == 0

    [doc] = output.docs
    assert doc["echo"] == {"client": ["hello ", "world,", "there"], "server": [4, "-back"]}
    assert (doc["client"]["ip"], doc["client"]["port"]) == (client, 40000)
    assert (doc["server"]["ip"], doc["server"]["port"]) == (server, 7007)
    counters = stats.snapshot()
    assert counters["tcp.connections_opened"] == 1 and counters["tcp.connections_closed"] == 1
    assert counters["tcp.gaps"] == 1 and counters["tcp.gap_bytes"] == 4
    assert counters["tcp.retransmitted_bytes"] == 6
    assert counters["tcp.out_of_order_segments"] == 2     # "there", and "-back" after the loss
    assert counters["packets.tcp_untracked"] == 1
    assert counters["decoder.malformed.echo.echo.bad"] == 1
    assert "tcp.connections_open" not in counters      # zero: snapshot leaves zeros out


def test_engine_orients_by_port_mid_stream_and_a_new_syn_starts_a_new_connection():
    engine, pipeline, output, stats = make_engine(ECHO)
    client, server = "2001:db8::1", "2001:db8::2"
    frames = [
        frame(server, client, 7007, 50000, 900, 100, "PA", b"late reply"),  # server speaks first
        frame(client, server, 50000, 7007, 100, 910, "PA", b"more"),
        frame(client, server, 50000, 7007, 7777, 0, "S"),                    # the ports are reused
        frame(server, client, 7007, 50000, 3000, 7778, "SA"),
        frame(client, server, 50000, 7007, 7778, 3001, "PA", b"again"),
    ]
    for i, f in enumerate(frames):
        engine.on_frame(10.0 + i, 1, f, "src")
    engine.finish()
    pipeline.close()
    first, second = output.docs
    assert first["echo"] == {"client": ["more"], "server": ["late reply"]}
    assert second["echo"] == {"client": ["again"], "server": []}
    for doc in (first, second):
        assert (doc["client"]["ip"], doc["server"]["port"]) == (client, 7007)
    counters = stats.snapshot()
    assert counters["tcp.connections_opened"] == 2 and counters["tcp.connections_closed"] == 2


class CrashingStream(EchoStream):
    def on_data(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]:
        if data == b"boom":
            raise ZeroDivisionError("a decoder bug")
        return super().on_data(from_client, data, ts)


def test_engine_counts_a_crashing_stream_decoder_and_goes_on_unless_strict():
    spec = DecoderSpec(name="crashy", document=lambda txn: {"echo": txn.detail},
                       stream=CrashingStream, ports=(7007,))
    frames = [frame("192.0.2.1", "192.0.2.2", 40000, 7007, 1, 0, "PA", b"boom"),
              frame("192.0.2.1", "192.0.2.2", 40000, 7007, 5, 0, "PA", b"fine")]
    engine, pipeline, output, stats = make_engine(spec, strict=False)
    for f in frames:
        engine.on_frame(1.0, 1, f, "src")
    engine.finish()
    pipeline.close()
    [doc] = output.docs
    assert doc["echo"]["client"] == ["fine"]
    assert stats.snapshot()["decoder.crashed.crashy"] == 1
    engine, pipeline, output, stats = make_engine(spec, strict=True)
    with pytest.raises(ZeroDivisionError):
        engine.on_frame(1.0, 1, frames[0], "src")
    pipeline.close()
