"""Duplicated and disordered capture input (wirebeat.dedup, wirebeat.tcp), on generated captures.

Ground truth is exact: each capture is made here from one list of packets,
then every packet is copied (as an `any` device or a SPAN port would: other
MAC addresses, TTL one lower, so another IPv4 checksum), timestamps are made
to go backwards (as in captures merged from taps whose clocks differ), or a
finished connection's SYN and data come again late. The documents of the
altered capture must equal those of the original list.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pcapgen as g  # noqa: E402
from wirebeat.registry import discover  # noqa: E402
from wirebeat.testing import make_engine  # noqa: E402

CLIENT, SERVER, RESOLVER = "10.1.0.1", "10.1.0.2", "10.1.0.53"
T0 = 1_700_000_000.0
SPECS = [r.spec for r in discover() if r.spec.name in ("http", "dns")]


class Packet:
    """One IP packet; `frame()` makes a copy of it as seen at some hop."""

    _idents: dict[str, int] = {}

    def __init__(self, ts: float, src: str, dst: str, proto: int, l4: bytes) -> None:
        self.ts, self.src, self.dst, self.proto, self.l4 = ts, src, dst, proto, l4
        self.ident = Packet._idents[src] = Packet._idents.get(src, 100) + 1   # per sender, as Linux

    def frame(self, hop: int = 0, ident: int | None = None) -> bytes:
        ip = g.ipv4(self.src, self.dst, self.proto, self.l4, ttl=64 - hop,
                    ident=self.ident if ident is None else ident, dont_fragment=True)
        return g.ethernet(ip, src=f"02:00:00:00:0{hop}:01", dst=f"02:00:00:00:0{hop}:02")


def http_exchange(t: float, port: int, path: str = "/", isn: int = 1000) -> list[Packet]:
    request = f"GET {path} HTTP/1.1\r\nHost: example\r\n\r\n".encode()
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    c, s, srv_isn = isn, 7000, 7000

    def seg(dt, from_client, flags, payload=b"", seq=0, ack=0):
        src, dst, sp, dp = (CLIENT, SERVER, port, 80) if from_client else (SERVER, CLIENT, 80, port)
        return Packet(t + dt, src, dst, g.IPPROTO_TCP,
                      g.tcp(src, dst, sp, dp, payload, seq=seq, ack=ack, flags=flags))
    return [
        seg(0.000, True, "S", seq=c),
        seg(0.001, False, "SA", seq=s, ack=c + 1),
        seg(0.002, True, "A", seq=c + 1, ack=s + 1),
        seg(0.003, True, "PA", request, seq=c + 1, ack=s + 1),
        seg(0.010, False, "PA", response, seq=s + 1, ack=c + 1 + len(request)),
        seg(0.011, True, "FA", seq=c + 1 + len(request), ack=srv_isn + 1 + len(response)),
        seg(0.012, False, "FA", seq=s + 1 + len(response), ack=c + 2 + len(request)),
        seg(0.013, True, "A", seq=c + 2 + len(request), ack=s + 2 + len(response)),
    ]


def _dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_exchange(t: float, port: int, ident: int, name: str = "www.example.com") -> list[Packet]:
    question = _dns_name(name) + struct.pack("!HH", 1, 1)
    query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question
    answer = (struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question
              + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes([192, 0, 2, 10]))
    return [Packet(t, CLIENT, RESOLVER, g.IPPROTO_UDP, g.udp(CLIENT, RESOLVER, port, 53, query)),
            Packet(t + 0.004, RESOLVER, CLIENT, g.IPPROTO_UDP, g.udp(RESOLVER, CLIENT, 53, port, answer))]


def traffic() -> list[Packet]:
    packets = []
    for i in range(4):
        packets += http_exchange(T0 + i, 40000 + i, f"/page{i}")
        packets += dns_exchange(T0 + i + 0.5, 50000 + i, 0x1000 + i)
    return packets


def run(frames: list[tuple[float, bytes]], **overrides) -> tuple[list[dict], dict[str, int]]:
    engine, pipeline, output, stats = make_engine(SPECS, strict=True, overrides=overrides)
    for ts, frame in frames:
        engine.on_frame(ts, g.LINKTYPE_ETHERNET, frame, "capture")
    engine.finish("capture")
    pipeline.close()
    return output.docs, stats.snapshot()


def transactions(docs: list[dict]) -> list[tuple]:
    """What a transaction says, without times and ids (the copies' times differ)."""
    out = []
    for d in docs:
        if d.get("type") == "flow":
            continue
        out.append((d["type"], d.get("status"), d.get("method"), d.get("query"),
                    d.get("http", {}).get("response", {}).get("status_code"),
                    d.get("dns", {}).get("response_code"), d["source"]["port"]))
    return sorted(out, key=repr)


def flow_counts(docs: list[dict]) -> dict[tuple, list[int]]:
    """Packets and bytes per direction of every port pair, summed over its final flow reports
    (flows are keyed by MAC addresses too: copies with other MACs would be flows of their own)."""
    out: dict[tuple, list[int]] = {}
    for d in docs:
        if d.get("type") == "flow" and d["flow"]["final"]:
            counts = out.setdefault((d["source"]["port"], d["destination"]["port"]), [0, 0, 0, 0])
            for i, n in enumerate((d["source"]["packets"], d["source"]["bytes"],
                                   d["destination"].get("packets", 0),
                                   d["destination"].get("bytes", 0))):
                counts[i] += n
    return out


def once(packets: list[Packet]) -> list[tuple[float, bytes]]:
    return [(p.ts, p.frame()) for p in packets]


def twice(packets: list[Packet], delay: float = 0.00005, hop: int = 1) -> list[tuple[float, bytes]]:
    """Each packet, then its copy `delay` later as seen one hop on (MACs, TTL, checksum differ)."""
    frames = []
    for p in packets:
        frames += [(p.ts, p.frame()), (p.ts + delay, p.frame(hop))]
    return sorted(frames, key=lambda f: f[0])


def test_every_packet_twice_gives_each_transaction_and_flow_count_once():
    packets = traffic()
    docs, counters = run(once(packets), **{"wirebeat.flows.enabled": True})
    dup_docs, dup_counters = run(twice(packets), **{"wirebeat.flows.enabled": True})
    assert len(transactions(docs)) == 8 and all(t[1] == "OK" for t in transactions(docs))
    assert transactions(dup_docs) == transactions(docs)
    assert dup_counters["dedup.dropped"] == len(packets)
    assert "dedup.dropped" not in counters
    # Flows count each packet once (the first copy; the copies here have the same length).
    assert flow_counts(dup_docs) == flow_counts(docs)
    assert dup_counters["tcp.segments"] == counters["tcp.segments"]
    assert "decoder.malformed" not in str(dup_counters)


def test_without_dedup_the_copies_make_phantom_errors_and_double_flows():
    """The failure dedup prevents (and the proof that the test above can fail)."""
    packets = traffic()
    docs, _ = run(once(packets), **{"wirebeat.flows.enabled": True})
    dup_docs, counters = run(twice(packets), **{"wirebeat.flows.enabled": True,
                                                "wirebeat.dedup.enabled": False})
    assert transactions(dup_docs) != transactions(docs)
    assert [t for t in transactions(dup_docs) if t[0] == "dns" and t[1] == "Error"]
    single, double = flow_counts(docs), flow_counts(dup_docs)
    assert {k: [2 * n for n in v] for k, v in single.items()} == double
    assert "dedup.dropped" not in counters


@pytest.mark.parametrize("delay", [-0.05, 0.0, 0.1])
def test_copies_within_the_window_either_way_are_dropped(delay):
    packets = dns_exchange(T0, 50000, 7)
    frames = [(packets[0].ts, packets[0].frame()), (packets[0].ts + delay, packets[0].frame(2)),
              (packets[1].ts, packets[1].frame())]
    docs, counters = run(frames)
    assert counters["dedup.dropped"] == 1
    assert [t[1] for t in transactions(docs)] == ["OK"]


def test_what_is_not_a_copy_is_kept():
    query, answer = dns_exchange(T0, 50000, 7)
    frames = [(query.ts, query.frame()),
              (query.ts + 0.01, query.frame(ident=query.ident + 1)),    # a retry: new IPv4 id
              (query.ts + 0.5, query.frame()),                          # outside the window
              (answer.ts + 0.6, answer.frame())]
    _docs, counters = run(frames)
    assert "dedup.dropped" not in counters
    assert counters["packets.decoded"] == 4


def test_a_copy_on_another_vlan_is_another_packet():
    query, _answer = dns_exchange(T0, 50000, 7)
    ip = g.ipv4(query.src, query.dst, query.proto, query.l4, ident=query.ident)
    frames = [(query.ts, g.ethernet(ip, vlans=[10])), (query.ts + 0.001, g.ethernet(ip, vlans=[20]))]
    _docs, counters = run(frames)
    assert "dedup.dropped" not in counters


def test_the_cap_forgets_the_oldest_and_counts_it():
    packets = [p for i in range(4) for p in dns_exchange(T0 + i * 0.001, 50000 + i, i)[:1]]
    frames = [(p.ts, p.frame()) for p in packets] + [(p.ts + 0.005, p.frame(1)) for p in packets]
    _docs, counters = run(frames, **{"wirebeat.dedup.max_packets": 2})
    # 8 packets through 2 places, all within the window: each of the last 6 pushes one out.
    assert counters["dedup.evicted_in_window"] == 6
    assert counters.get("dedup.dropped", 0) == 0                # the copies came too late for a cap of 2


def test_timestamps_going_backwards_keep_transactions_and_durations():
    """Two taps concatenated (`mergecap -a`): the second file starts 10 s earlier; copies 1 ms early."""
    first = [p for i in range(2) for p in http_exchange(T0 + 10 + i, 41000 + i, f"/a{i}")
             + dns_exchange(T0 + 10.5 + i, 51000 + i, 0x2000 + i)]
    second = [p for i in range(2) for p in http_exchange(T0 + i, 42000 + i, f"/b{i}")
              + dns_exchange(T0 + 0.5 + i, 52000 + i, 0x3000 + i)]
    merged = twice(first, delay=-0.001) + twice(second, delay=-0.001)
    expected, _ = run(sorted(once(first + second), key=lambda f: f[0]))
    docs, counters = run(merged)
    assert transactions(docs) == transactions(expected)
    assert len(transactions(docs)) == 8
    assert counters["dedup.dropped"] == len(first) + len(second)
    assert all(d["event"]["duration"] >= 0 for d in docs if "duration" in d.get("event", {}))


def test_segments_older_than_their_connection_are_taken_at_its_time():
    """A response stamped before its request (clocks of two taps): duration 0, not negative."""
    packets = http_exchange(T0, 40000)
    packets[4].ts = T0 - 0.5            # the response
    docs, counters = run(once(packets))
    [doc] = docs
    assert doc["status"] == "OK"
    assert doc["event"]["duration"] == 0
    assert counters["tcp.timestamps_behind"] >= 1


@pytest.mark.parametrize("dedup", [True, False])
def test_late_syn_and_data_after_fin_do_not_open_a_connection(dedup):
    packets = http_exchange(T0, 40000, "/once")
    syn, request = packets[0], packets[3]
    # Retransmissions (new IPv4 ids) of the SYN and the request, stamped before
    # the close, seen after it: another tap's copy, merged late.
    late = [(syn.ts + 0.001, syn.frame(ident=syn.ident + 50)),
            (request.ts + 0.001, request.frame(ident=request.ident + 50))]
    docs, counters = run(once(packets) + late, **{"wirebeat.dedup.enabled": dedup})
    assert [t[1] for t in transactions(docs)] == ["OK"]
    assert counters["tcp.connections_opened"] == 1
    assert counters["tcp.late_syns_ignored"] == 1
    assert counters["tcp.segments_ignored"] == 1


def test_a_new_connection_on_the_same_ports_still_opens():
    """The control: port reuse after the close, with a new ISN and a later time, is a new connection."""
    first = http_exchange(T0, 40000, "/first")
    second = http_exchange(T0 + 2, 40000, "/second", isn=900000)
    docs, counters = run(once(first + second))
    assert [t[1] for t in transactions(docs)] == ["OK", "OK"]
    assert counters["tcp.connections_opened"] == 2
    assert "tcp.late_syns_ignored" not in counters


def test_a_late_syn_with_the_same_isn_but_a_later_time_is_still_late():
    packets = http_exchange(T0, 40000, "/once")
    syn = packets[0]
    docs, counters = run(once(packets) + [(T0 + 1, syn.frame(ident=syn.ident + 9))])
    assert counters["tcp.connections_opened"] == 1
    assert counters["tcp.late_syns_ignored"] == 1
