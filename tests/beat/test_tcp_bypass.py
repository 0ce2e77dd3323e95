"""Connections whose decoder needs no more bytes (issue #15): not reassembled, still closed.

First the TCP table with a sink that says it is done, then the engine with the
TLS decoder on real handshakes (pcaps/tls/, recorded from openssl and curl),
against the same decoder made never to say so.
"""
from __future__ import annotations

from typing import Any

import dpkt
import pytest

import pcapgen
from conftest import PCAPS
from wirebeat.decoders.api import DecoderSpec, FlowKey, Transaction
from wirebeat.decoders.http import DECODER as HTTP, HTTPStream
from wirebeat.decoders.tls import DECODER as TLS, TLSStream
from wirebeat.tcp import ACK, FIN, RST, SYN, TCPTable
from wirebeat.testing import decode_pcap, make_engine
from wirebeat.sources.pcapfile import open_capture

PA = 0x18       # PSH | ACK


class DoneAfter:
    """A sink that needs no more bytes once it has `limit` bytes of either direction."""

    def __init__(self, limit: int, done_on_gap: bool = False) -> None:
        self.limit = limit
        self.done_on_gap = done_on_gap
        self.got = {True: b"", False: b""}
        self.gaps: list[int] = []
        self.closed: list[float] = []

    def on_data(self, from_client: bool, data: bytes, ts: float) -> bool:
        assert not self.closed
        self.got[from_client] += data
        return len(self.got[from_client]) >= self.limit

    def on_gap(self, from_client: bool, missing: int, ts: float) -> bool:
        self.gaps.append(missing)
        return self.done_on_gap

    def on_close(self, ts: float) -> None:
        self.closed.append(ts)


def open_conn(sink: Any, **limits: Any) -> tuple[TCPTable, Any]:
    table = TCPTable(**limits)
    conn = table.open("k", sink, 0.0)
    conn.segment(True, 100, 0, SYN, b"", 0.0)
    conn.segment(False, 500, 101, SYN | ACK, b"", 0.1)
    return table, conn


def test_a_done_sink_gets_no_later_bytes_and_fins_both_ways_close_it():
    sink = DoneAfter(5)
    table, conn = open_conn(sink)
    conn.segment(True, 101, 501, PA, b"hello", 1.0)         # the sink is done with this
    conn.segment(False, 501, 106, PA, b"reply", 1.1)
    conn.segment(True, 106, 506, PA, b"more", 1.2)
    conn.segment(True, 110, 506, ACK, b"", 1.3)             # no payload: not counted
    conn.segment(False, 506, 110, FIN | ACK, b"", 2.0)
    assert not sink.closed and table.connections
    conn.segment(True, 110, 507, FIN | ACK, b"", 2.5)
    assert sink.got == {True: b"hello", False: b""}
    assert sink.closed == [2.5] and not table.connections
    c = table.counters
    assert (c.segments_bypassed, c.segments, c.connections_closed) == (2, 8, 1)


def test_a_done_connection_is_closed_by_an_rst():
    sink = DoneAfter(1)
    table, conn = open_conn(sink)
    conn.segment(False, 501, 101, PA, b"banner", 1.0)
    conn.segment(True, 101, 507, RST | ACK, b"", 1.5)
    assert sink.closed == [1.5] and table.counters.connections_closed == 1


def test_a_done_connection_times_out_at_its_last_packet_time():
    sink = DoneAfter(1)
    table, conn = open_conn(sink, idle_timeout_s=60.0)
    conn.segment(False, 501, 101, PA, b"banner", 1.0)
    conn.segment(False, 507, 101, PA, b"ignored", 7.0)
    table.expire(50.0)
    assert not sink.closed
    table.expire(70.0)
    assert sink.closed == [7.0] and table.counters.connections_timed_out == 1
    assert table.counters.segments_bypassed == 1


def test_bytes_held_when_the_sink_is_done_are_dropped_and_freed():
    sink = DoneAfter(3)
    table, conn = open_conn(sink)
    conn.segment(True, 104, 501, PA, b"def", 1.0)            # ahead of a hole: held
    conn.segment(True, 110, 501, PA, b"jkl", 1.1)
    assert table.buffered_total > 0
    conn.segment(True, 101, 501, PA, b"abc", 1.2)           # fills the hole: done after "abc"
    assert sink.got[True] == b"abc"
    assert table.buffered_total == 0
    conn.segment(True, 107, 501, PA, b"ghi", 1.3)
    assert sink.got[True] == b"abc" and table.counters.segments_bypassed == 1


def test_a_sink_done_at_a_gap_gets_nothing_after_it():
    sink = DoneAfter(100, done_on_gap=True)
    table, conn = open_conn(sink)
    conn.segment(True, 101, 501, PA, b"abc", 1.0)
    conn.segment(True, 110, 501, PA, b"later", 1.1)         # held behind 6 lost bytes
    conn.segment(False, 501, 115, PA, b"resp", 1.2)         # acknowledged: the loss is given up
    assert sink.gaps == [6] and sink.got == {True: b"abc", False: b""}
    assert table.buffered_total == 0 and table.counters.segments_bypassed == 1
    conn.segment(True, 101, 501, FIN | ACK, b"", 1.3)
    conn.segment(False, 505, 116, FIN | ACK, b"", 1.4)
    assert sink.closed == [1.4]


def test_a_fin_seen_before_the_sink_was_done_still_counts():
    sink = DoneAfter(3)
    table, conn = open_conn(sink)
    conn.segment(False, 503, 101, FIN | ACK, b"zz", 1.0)    # the server's FIN, behind a hole
    conn.segment(True, 101, 501, PA, b"abc", 1.1)            # done
    conn.segment(True, 104, 501, FIN | ACK, b"", 1.2)
    assert sink.closed == [1.2] and table.counters.connections_closed == 1


def test_a_sink_that_never_says_done_gets_every_byte_as_before():
    frames = [(True, 101, PA, b"abc"), (True, 107, PA, b"ghi"), (False, 501, PA, b"xy"),
              (True, 104, PA, b"def"), (True, 110, FIN | ACK, b""), (False, 503, FIN | ACK, b"")]
    sink = DoneAfter(10**9)
    table, conn = open_conn(sink)
    for from_client, seq, flags, data in frames:
        conn.segment(from_client, seq, 0, flags, data, 1.0)
    assert sink.got == {True: b"abcdefghi", False: b"xy"} and sink.closed == [1.0]
    assert table.counters.segments_bypassed == 0
    assert table.counters.out_of_order_segments == 1


# -- the engine, with TLS ---------------------------------------------------------


class NeverDone(TLSStream):
    """TLS as it was: it ignores bytes after its report, but never tells the engine."""

    needs_bytes = property(lambda self: True, lambda self, value: None)
    needs_expire = property(lambda self: True, lambda self, value: None)


TLS_NEVER_DONE = type(TLS)(**{**{f: getattr(TLS, f) for f in TLS.__dataclass_fields__},
                              "stream": NeverDone})


def tls_connections(name: str) -> dict[tuple[int, int], list[tuple[bool, bytes]]]:
    """(client port, server port) -> (from_client, payload) of each connection of a
    pcaps/tls capture that starts with a SYN, in capture order."""
    conns: dict[tuple[int, int], list[tuple[bool, bytes]]] = {}
    with open(PCAPS / "tls" / name, "rb") as fh:
        for _, frame in dpkt.pcap.Reader(fh):
            tcp = dpkt.ethernet.Ethernet(frame).data.data
            forward, backward = (tcp.sport, tcp.dport), (tcp.dport, tcp.sport)
            if tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK:
                conns[forward] = []
            elif tcp.data:
                key = forward if forward in conns else backward
                conns[key].append((key == forward, bytes(tcp.data)))
    return conns


def handshake_completions(name: str) -> dict[tuple[int, int], tuple[int, int]]:
    """Per connection (client port, server port): (payload segments in all, payload
    segments after the one that completed the TLS 1.2 handshake).

    Independent of the decoder: each direction's bytes are cut into records by
    their 5-byte headers (RFC 5246 §6.2.1), and the handshake is complete at
    the segment that carries the second of the two ChangeCipherSpec records
    (content type 20), one from each side.
    """
    conns = tls_connections(name)
    out = {}
    for key, segs in conns.items():
        seen_ccs, buffered, next_record = set(), {True: 0, False: 0}, {True: 0, False: 0}
        stream = {True: b"", False: b""}
        completed = None
        for index, (from_client, data) in enumerate(segs):
            stream[from_client] += data
            buffered[from_client] += len(data)
            while next_record[from_client] + 5 <= buffered[from_client]:
                at = next_record[from_client]
                header = stream[from_client][at:at + 5]
                if header[0] == 20:
                    seen_ccs.add(from_client)
                next_record[from_client] = at + 5 + (header[3] << 8 | header[4])
            if completed is None and seen_ccs == {True, False}:
                completed = index
        assert completed is not None, key
        out[key] = (len(segs), len(segs) - 1 - completed)
    return out


def test_tls_connections_done_after_the_handshake_bypass_the_rest_and_documents_do_not_change():
    path = PCAPS / "tls" / "tls12_rsa.pcap"
    expected = handshake_completions("tls12_rsa.pcap")
    assert all(after > 0 for _, after in expected.values())     # there is something to bypass
    docs, counters = decode_pcap(path, [TLS])
    before_docs, before = decode_pcap(path, [TLS_NEVER_DONE])
    assert docs == before_docs and len(docs) == len(expected)
    assert counters["tcp.segments_bypassed"] == sum(after for _, after in expected.values())
    assert "tcp.segments_bypassed" not in before
    for name in ("tcp.connections_opened", "tcp.connections_closed", "tcp.segments"):
        assert counters[name] == before[name]
    assert counters["tcp.connections_closed"] == len(expected)
    assert "tcp.connections_timed_out" not in counters


CLIENT, SERVER = "192.0.2.10", "192.0.2.20"


def conversation(server_port: int) -> tuple[list[tuple[float, bytes]], Any]:
    """(frames, send): send(from_client, flags, payload) appends the next segment of one
    CLIENT:40000 <-> SERVER:server_port connection, sequence numbers kept, 10 ms apart;
    it starts with the handshake already sent."""
    seq = {True: 1000, False: 90000}
    frames: list[tuple[float, bytes]] = []

    def send(from_client: bool, flags: str, payload: bytes = b"") -> None:
        src, dst, sport, dport = ((CLIENT, SERVER, 40000, server_port) if from_client
                                  else (SERVER, CLIENT, server_port, 40000))
        segment = pcapgen.tcp(src, dst, sport, dport, payload, seq=seq[from_client],
                              ack=seq[not from_client], flags=flags)
        frames.append((1_700_000_000.0 + len(frames) / 100,
                       pcapgen.ethernet(pcapgen.ip_packet(src, dst, pcapgen.IPPROTO_TCP, segment))))
        seq[from_client] += len(payload) + (1 if "S" in flags or "F" in flags else 0)

    send(True, "S")
    send(False, "SA")
    send(True, "A")
    return frames, send


def replayed(ending: str) -> list[tuple[float, bytes]]:
    """The first connection of tls12_rsa.pcap replayed on new addresses, its payload
    in the original order, then 5 application-data records each way and `ending`:
    "fin" both ways, an "rst", or nothing ("idle": a packet of an untracked
    connection 400 s later makes the idle timeout due)."""
    segments = list(next(iter(tls_connections("tls12_rsa.pcap").values())))
    app = bytes([23, 3, 3, 0, 40]) + bytes(40)
    segments += [(from_client, app) for _ in range(5) for from_client in (True, False)]
    frames, send = conversation(443)
    for from_client, payload in segments:
        send(from_client, "PA", payload)
    if ending == "fin":
        send(True, "FA")
        send(False, "FA")
        send(True, "A")
    elif ending == "rst":
        send(True, "RA")
    else:
        segment = pcapgen.tcp(CLIENT, SERVER, 40001, 9, b"x", seq=1, flags="PA")
        frames.append((frames[-1][0] + 400, pcapgen.ethernet(
            pcapgen.ip_packet(CLIENT, SERVER, pcapgen.IPPROTO_TCP, segment))))
    return frames


def run_frames(spec: Any, frames: list[tuple[float, bytes]], tmp_path) -> tuple[list, dict, dict]:
    """(documents, counters before the end of input, counters after it)."""
    path = tmp_path / "replay.pcap"
    pcapgen.write_pcap(path, frames)
    engine, pipeline, output, stats = make_engine([spec])
    reader = open_capture(str(path))
    for f in reader:
        engine.on_frame(f.ts, f.linktype, f.data, reader.name)
    open_before_end = stats.snapshot()
    engine.finish(reader.name)
    reader.close()
    assert pipeline.close() == 0
    return output.docs, open_before_end, stats.snapshot()


@pytest.mark.parametrize("ending", ["fin", "rst", "idle"])
def test_a_done_tls_connection_is_still_counted_and_closed(ending, tmp_path):
    frames = replayed(ending)
    docs, running, final = run_frames(TLS, frames, tmp_path)
    old_docs, old_running, old_final = run_frames(TLS_NEVER_DONE, frames, tmp_path)
    [doc] = docs
    assert doc["tls"]["established"] is True
    assert docs == old_docs
    _, after = next(iter(handshake_completions("tls12_rsa.pcap").values()))
    assert final["tcp.segments_bypassed"] == after + 10     # the capture's own, and ours
    assert "tcp.segments_bypassed" not in old_final
    # closed when it ended, not at the end of input
    assert "tcp.connections_open" not in running and "tcp.connections_open" not in old_running
    closed_by = "tcp.connections_timed_out" if ending == "idle" else "tcp.connections_closed"
    assert running[closed_by] == old_running[closed_by] == 1
    for name in ("tcp.connections_opened", "tcp.connections_closed", "tcp.connections_timed_out",
                 "tcp.segments"):
        assert final.get(name) == old_final.get(name), name


def test_a_tls_decoder_done_sets_both_flags_and_one_that_lost_both_directions_needs_no_bytes():
    flow = FlowKey("tcp", CLIENT, 40000, SERVER, 443, "test")
    stream = TLSStream(flow, {})
    assert stream.needs_bytes and stream.needs_expire
    stream.on_data(True, bytes([22, 3, 1, 0, 8, 1, 0, 0, 4]) + bytes(4), 1.0)   # a bad ClientHello
    assert stream.needs_bytes
    stream.on_gap(False, 100, 1.5)
    assert not stream.needs_bytes and not stream.needs_expire and stream.done   # nothing to report

    hello = TLSStream(flow, {})
    [(from_client, client_hello), *_] = next(iter(tls_connections("tls12_rsa.pcap").values()))
    hello.on_data(from_client, client_hello, 1.0)
    assert hello.session.client_hello is not None
    hello.on_gap(True, 10, 2.0)
    hello.on_gap(False, 10, 2.0)
    assert not hello.needs_bytes and hello.needs_expire     # still reports at close or timeout
    [txn] = hello.expire(100.0)
    assert txn.status == "Error" and not hello.needs_expire


# -- the engine, with a decoder that counts its calls -------------------------------


class Counting:
    """Needs the first payload of the connection only; expire once more, if `expire_once`."""

    calls: list[str] = []

    def __init__(self, flow: FlowKey, options: dict, expire_once: bool = True) -> None:
        self.flow = flow
        self.expire_once = expire_once
        self.first: tuple[float, bytes] | None = None

    def on_data(self, from_client: bool, data: bytes, ts: float) -> list:
        self.calls.append("data")
        self.first = self.first or (ts, data)
        self.needs_bytes = False
        return []

    def on_gap(self, from_client: bool, missing: int, ts: float) -> list:
        self.calls.append("gap")
        return []

    def expire(self, now: float) -> list:
        self.calls.append("expire")
        self.needs_expire = not self.expire_once
        return []

    def on_close(self, ts: float) -> list:
        self.calls.append("close")
        return [Transaction(self.flow, self.first[0], ts, "OK", self.first[1])]


def counting_spec(expire_once: bool) -> DecoderSpec:
    return DecoderSpec(name="counting", document=lambda txn: {"counting": {"first": txn.detail.decode()}},
                       stream=lambda flow, options: Counting(flow, options, expire_once),
                       ports=(7070,))


@pytest.mark.parametrize("expire_once", [True, False])
def test_the_engine_stops_bytes_and_expire_when_told_and_still_reports_at_close(expire_once, tmp_path):
    Counting.calls = []
    seq = {True: 1, False: 5000}
    frames: list[tuple[float, bytes]] = []

    def send(from_client: bool, flags: str, payload: bytes, ts: float) -> None:
        src, dst, sport, dport = ((CLIENT, SERVER, 40000, 7070) if from_client
                                  else (SERVER, CLIENT, 7070, 40000))
        segment = pcapgen.tcp(src, dst, sport, dport, payload, seq=seq[from_client],
                              ack=seq[not from_client], flags=flags)
        frames.append((ts, pcapgen.ethernet(pcapgen.ip_packet(src, dst, pcapgen.IPPROTO_TCP, segment))))
        seq[from_client] += len(payload) + (1 if "S" in flags or "F" in flags else 0)

    send(True, "S", b"", 100.0)
    send(False, "SA", b"", 100.1)
    send(True, "PA", b"first", 100.2)
    for second in range(1, 11):                 # ten seconds of later bytes, both ways
        send(False, "PA", b"reply", 100.2 + second)
        send(True, "PA", b"more", 100.5 + second)
    send(True, "FA", b"", 112.0)
    send(False, "FA", b"", 112.1)
    docs, running, final = run_frames(counting_spec(expire_once), frames, tmp_path)
    assert [doc["counting"]["first"] for doc in docs] == ["first"]
    assert docs[0]["event"]["end"].startswith("1970-01-01T00:01:52.1")     # closed at the last FIN
    assert Counting.calls.count("data") == 1 and "gap" not in Counting.calls
    assert Counting.calls.count("close") == 1 and Counting.calls[-1] == "close"
    expires = Counting.calls.count("expire")
    assert expires == 1 if expire_once else expires >= 10      # a tick a second otherwise
    assert running["tcp.segments_bypassed"] == 20
    assert running["tcp.connections_closed"] == 1 and "tcp.connections_open" not in running


# -- the engine, with HTTP tunnels (CONNECT, Upgrade) ------------------------------


class HTTPNeverDone(HTTPStream):
    """HTTP as it was: it ignores tunnel bytes, but never tells the engine."""

    needs_bytes = property(lambda self: True, lambda self, value: None)
    needs_expire = property(lambda self: True, lambda self, value: None)


HTTP_NEVER_DONE = type(HTTP)(**{**{f: getattr(HTTP, f) for f in HTTP.__dataclass_fields__},
                                "stream": HTTPNeverDone})
TUNNEL = bytes(range(256)) * 4      # 1 KiB of what HTTP cannot parse


def http_exchange(first: tuple[bytes, bytes], rest: list[tuple[bool, bytes]]) -> list[tuple[float, bytes]]:
    """A connection to port 80: handshake, `first` request and its answer, then `rest`
    ((from_client, payload) segments), FINs both ways."""
    frames, send = conversation(80)
    send(True, "PA", first[0])
    send(False, "PA", first[1])
    for from_client, payload in rest:
        send(from_client, "PA", payload)
    send(True, "FA")
    send(False, "FA")
    send(True, "A")
    return frames


CONNECT = (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
           b"HTTP/1.1 200 Connection established\r\n\r\n")
UPGRADE = (b"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
           b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
REFUSED = (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
           b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
AGAIN = (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.mark.parametrize("first", [CONNECT, UPGRADE], ids=["connect", "upgrade"])
def test_an_http_tunnel_is_not_reassembled_and_documents_do_not_change(first, tmp_path):
    # 6 tunnel segments after the answer, 3 each way: all of them are bypassed (the
    # answer's own segment is the last the decoder needs); the FINs still close it.
    rest = [(from_client, TUNNEL) for _ in range(3) for from_client in (True, False)]
    frames = http_exchange(first, rest)
    docs, _, counters = run_frames(HTTP, frames, tmp_path)
    old_docs, _, old = run_frames(HTTP_NEVER_DONE, frames, tmp_path)
    assert docs == old_docs and len(docs) == 1
    assert docs[0]["http"]["response"]["status_code"] == (200 if first is CONNECT else 101)
    assert counters["tcp.segments_bypassed"] == len(rest)
    assert "tcp.segments_bypassed" not in old
    assert counters["tcp.connections_closed"] == old["tcp.connections_closed"] == 1


def test_a_refused_connect_keeps_decoding_http(tmp_path):
    frames = http_exchange(REFUSED, [(True, AGAIN[0]), (False, AGAIN[1])])
    docs, _, counters = run_frames(HTTP, frames, tmp_path)
    assert [d["http"]["response"]["status_code"] for d in docs] == [407, 200]
    assert "tcp.segments_bypassed" not in counters
