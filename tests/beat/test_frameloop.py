"""Reader batches with flows and decoders on (`Engine.on_batch`, wirebeat.frameloop,
`_speedups.frame_batch`): C keeps the books of the frames no decoder needs and
hands the others to `Engine.on_frame`.

The oracle is `Engine.on_frame` for every frame (the reference path): the same
documents (transactions, flow reports) in the same order with the same `_id`s,
and the same counters, on every bundled capture and on hostile traffic: TCP
connections on a test decoder's port that stops wanting bytes after a few
(bypass) while its segments keep coming (pure ACKs, retransmissions, holes
acknowledged past, out-of-order data, FIN and RST after the bypass, time going
backwards, idle timeouts that close at the connection's last-seen time),
connections picked up mid-stream, detected by their first payload, on no port
(untracked), UDP on routed and unrouted ports, duplicates, and the malformed,
non-IP, fragmented and tunneled frames of test_packets_batch. A decoder that
reports every byte it gets and its close time makes a wrong hand-over visible
in the documents. Under CI=true a missing extension is a failure.
"""
from __future__ import annotations

import os
import random
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest

import pcapgen as g
from test_engine_untracked import _capture
from test_packets_batch import FragmentOutput, _hostile, count_on_frame
from wirebeat import tcp
from wirebeat.accel import speedups
from wirebeat.config import Option
from wirebeat.decoders.api import Datagram, DecodeError, DecoderSpec, Expectations, FlowKey, Transaction
from wirebeat.registry import discover
from wirebeat.testing import make_engine

ROOT = Path(__file__).resolve().parent.parent.parent
CAPTURES = sorted((ROOT / "pcaps").glob("**/*.pcap*"))

needs_c = pytest.mark.skipif(speedups is None and os.environ.get("CI") != "true",
                             reason="C extension not built (a failure under CI=true)")

BYPASS_PORT, DETECT_PORT, UNTRACKED_PORT = 9000, 7777, 12345


class _Bypasser:
    """A stream decoder that wants the first `wants` bytes of each direction, reports
    every piece and gap it gets as a transaction, and its close (with the time)."""

    def __init__(self, flow: FlowKey, options: dict[str, Any]) -> None:
        self.flow = flow
        self.wants = options["wants"]
        self.seen = 0
        self.needs_bytes = True
        self.counters = {"bytes": 0, "gaps": 0}

    def _txn(self, ts: float, what: str) -> list[Transaction]:
        return [Transaction(self.flow, ts, ts, "OK", {"what": what, "seen": self.seen},
                            identity=f"{what}{self.seen}")]

    def on_data(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]:
        self.seen += len(data)
        self.counters["bytes"] += len(data)
        self.needs_bytes = self.seen < self.wants
        return self._txn(ts, f"data{int(from_client)}:{data[:8]!r}")

    def on_gap(self, from_client: bool, missing: int, ts: float) -> list[Transaction]:
        self.counters["gaps"] += 1
        return self._txn(ts, f"gap{missing}")

    def on_close(self, ts: float) -> list[Transaction]:
        return self._txn(ts, "close")

    def expire(self, now: float) -> list[Transaction]:
        return []


BYPASSER = DecoderSpec(name="bypasser", document=lambda txn: {"bypasser": txn.detail}, stream=_Bypasser,
                       ports=(BYPASS_PORT,), detect=lambda data: data.startswith(b"BYP"),
                       options={"wants": Option("int", 40, "bytes wanted per connection")})


class _Announcer:
    """UDP port 7000: "IP PORT" announces that endpoint for "target" for two seconds."""

    def __init__(self, options: dict[str, Any], expectations: Expectations) -> None:
        self.expectations = expectations

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        ip, port = dgram.payload.decode().split()
        self.expectations.expect(ip, int(port), "target", None, dgram.ts + 2.0)
        return []

    def expire(self, now: float) -> list[Transaction]:
        return []


class _Target:
    """Reports every datagram it gets (announced flows, or what its probe claims)."""

    def __init__(self, options: dict[str, Any], expectations: Expectations | None = None) -> None:
        pass

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        return [Transaction(dgram.flow, dgram.ts, dgram.ts, "OK", {"what": repr(dgram.payload[:12])},
                            identity=repr(dgram.payload))]

    def expire(self, now: float) -> list[Transaction]:
        return []


ANNOUNCER = DecoderSpec(name="announcer", document=lambda txn: {}, datagram=_Announcer, ports=(7000,),
                        expectations=True)
TARGET = DecoderSpec(name="target", document=lambda txn: {"target": txn.detail}, datagram=_Target,
                     expectations=True, probe=lambda data: data.startswith(b"G"))


class _UDPReporter:
    """UDP port 9100: reports every datagram, with who sent it and its body."""

    def __init__(self, options: dict[str, Any]) -> None:
        pass

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        if dgram.payload.startswith(b"bad"):
            raise DecodeError("reporter.bad")
        return [Transaction(dgram.flow, dgram.ts, dgram.ts, "OK",
                            {"from_client": dgram.from_client, "body": dgram.payload.hex()},
                            identity=f"{dgram.ts}{dgram.payload!r}")]

    def expire(self, now: float) -> list[Transaction]:
        return []


UDP_REPORTER = DecoderSpec(name="reporter", document=lambda txn: {"reporter": txn.detail},
                           datagram=_UDPReporter, ports=(9100,))


def _specs() -> list[DecoderSpec]:
    """Every bundled decoder (as `wirebeat run` enables them by default) and the test ones."""
    return [r.spec for r in discover()] + [BYPASSER, ANNOUNCER, TARGET, UDP_REPORTER]


def _run(frames: list[tuple[float, int, bytes, str]], batched: bool, sizes: tuple[int, ...] = (4096,),
         **overrides: Any) -> tuple[list, dict, int]:
    """(documents, counters, frames the engine took one by one) with flows on."""
    engine, pipeline, output, stats = make_engine(
        _specs(), strict=False, overrides={"wirebeat.flows.enabled": True, **overrides},
        output=FragmentOutput())
    per_frame = count_on_frame(engine)
    if batched:
        assert engine.on_batch is not None
        at, turn = 0, 0
        while at < len(frames):     # reader batches of varying sizes, one source each
            size = sizes[turn % len(sizes)]
            chunk = frames[at:at + size]
            source = chunk[0][3]
            chunk = [f for f in chunk if f[3] == source]
            engine.on_batch([(ts, linktype, data, len(data)) for ts, linktype, data, _s in chunk], source)
            at, turn = at + len(chunk), turn + 1
    else:
        for ts, linktype, data, source in frames:
            engine.on_frame(ts, linktype, data, source)
    engine.finish()
    pipeline.close()
    return output.docs, stats.snapshot(), per_frame[0]


def _same(frames: list[tuple[float, int, bytes, str]], **kwargs: Any) -> tuple[dict, int, list]:
    """Both ways agree; (counters, frames the batch path left to on_frame, documents)."""
    docs, counters, left = _run(frames, batched=True, **kwargs)
    kwargs.pop("sizes", None)
    expected_docs, expected_counters, _ = _run(frames, batched=False, **kwargs)
    assert len(docs) == len(expected_docs)
    assert docs == expected_docs
    assert counters == expected_counters
    return counters, left, docs


def _connection(rng: random.Random, n: int, start: float) -> list[tuple[float, int, bytes]]:
    """One TCP conversation's frames (time, linktype, frame), of a random shape: plain
    Ethernet, 802.1Q or Linux cooked (transactions show their frames' link layers)."""
    client, server = f"10.1.{n // 200}.{n % 200 + 1}", f"10.2.0.{n % 3 + 1}"
    sport = 20000 + n
    dport = rng.choice((BYPASS_PORT, BYPASS_PORT, BYPASS_PORT, 80, DETECT_PORT, UNTRACKED_PORT))
    cseq = rng.choice((rng.randrange(1 << 32), (1 << 32) - 30))       # some wrap
    sseq = rng.randrange(1 << 32)
    ts = start
    out: list[tuple[float, int, bytes]] = []
    link = rng.choice(("eth", "eth", "vlan", "sll"))

    def seg(from_client: bool, flags: str, payload: bytes = b"", seq: int | None = None,
            ack: int | None = None) -> None:
        nonlocal ts
        ts += rng.choice((0.0005, 0.001, 0.01, 0.3))
        when = ts - 0.5 if rng.random() < 0.03 else ts        # now and then behind
        s, d, sp, dp = (client, server, sport, dport) if from_client else (server, client, dport, sport)
        mine = cseq if from_client else sseq
        theirs = sseq if from_client else cseq
        packet = g.ipv4(s, d, 6, g.tcp(s, d, sp, dp, payload, seq=mine if seq is None else seq,
                                       ack=theirs if ack is None else ack, flags=flags))
        if link == "sll":
            out.append((when, g.LINKTYPE_LINUX_SLL, g.linux_sll(packet)))
        else:
            out.append((when, g.LINKTYPE_ETHERNET, g.ethernet(packet, vlans=[n % 4 + 1] if link == "vlan" else ())))

    if rng.random() < 0.8:          # else picked up mid-stream
        seg(True, "S", seq=cseq - 1, ack=0)
        seg(False, "SA", seq=sseq - 1, ack=cseq)
        seg(True, "A")
    first = b"BYP hello" if dport == DETECT_PORT else b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for turn in range(rng.randrange(1, 8)):
        payload = first if turn == 0 else bytes([65 + turn]) * rng.randrange(1, 30)
        shape = rng.random()
        if shape < 0.1:             # a hole, acknowledged past by the peer
            cseq += 5
            seg(True, "PA", payload)
            cseq += len(payload)
            seg(False, "A")
        elif shape < 0.2:           # out of order: the second piece first
            half = max(1, len(payload) // 2)
            seg(True, "PA", payload[half:], seq=cseq + half)
            seg(True, "PA", payload[:half])
            cseq += len(payload)
        elif shape < 0.3:           # a retransmission
            seg(True, "PA", payload)
            seg(True, "PA", payload)
            cseq += len(payload)
        else:
            seg(True, "PA", payload)
            cseq += len(payload)
        seg(False, "A")             # pure ACKs
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" if turn == 0 and dport == 80 \
            else b"r" * rng.randrange(1, 50)
        seg(False, "PA", answer)
        sseq += len(answer)
        seg(True, "A")
        if rng.random() < 0.2:
            seg(True, "A", ack=sseq - 3)         # an old ACK
    end = rng.random()
    if end < 0.5:
        seg(True, "FA")
        cseq += 1
        seg(False, "FA")
        sseq += 1
        seg(True, "A")
        if rng.random() < 0.3:
            seg(True, "A")                      # late: after the close
    elif end < 0.7:
        seg(rng.random() < 0.5, "R")
    elif end < 0.8:
        seg(True, "FA")                         # one FIN only, then silence
    return out                                  # else: silence (the idle timeout closes it)


def _traffic(seed: int, connections: int = 150) -> list[tuple[float, int, bytes, str]]:
    rng = random.Random(seed)
    frames: list[tuple[float, int, bytes]] = []
    start = 1_700_000_000.0
    eth = g.LINKTYPE_ETHERNET
    for n in range(connections):
        frames += _connection(rng, n, start + rng.random() * 60)
    for n in range(200):            # UDP on routed and unrouted ports, ICMP, ARP
        ts = start + rng.random() * 60
        port = rng.choice((53, 5353, 40000, 123))
        udp = g.udp("10.3.0.1", "10.3.0.2", 30000 + n % 7, port, b"\x12\x34" + b"\0" * 10)
        frames.append((ts, eth, g.ethernet(g.ipv4("10.3.0.1", "10.3.0.2", 17, udp))))
        if n % 10 == 0:
            frames.append((ts, eth, g.ethernet(g.ipv4("10.3.0.1", "10.3.0.2", 1, g.icmp_echo(n, 1)))))
            frames.append((ts, eth, g.ethernet(b"\x00" * 28, ethertype=0x0806)))
    for _ in range(3):              # malformed, non-IP, shims, fragments, tunnels, other links
        frames += [(start + rng.random() * 60, linktype, data) for linktype, data in _hostile()]
    frames.sort(key=lambda f: f[0] + rng.choice((0.0, 0.0, 0.0, 0.002)))    # mostly in time order
    out = []
    for ts, linktype, data in frames:
        out.append((ts, linktype, data, "test"))
        if rng.random() < 0.05:     # a copy soon after: dedup's
            out.append((ts + 0.01, linktype, data, "test"))
    return out


@needs_c
def test_default_config_batches_in_c() -> None:
    engine, pipeline, _output, _stats = make_engine(_specs(), overrides={"wirebeat.flows.enabled": True},
                                                    output=FragmentOutput())
    assert engine.on_batch is not None and engine.on_batch.__module__ == "wirebeat.frameloop"
    pipeline.close()
    # Per-packet documents with decoders: per frame, as before.
    engine, pipeline, _output, _stats = make_engine(_specs(), overrides={"wirebeat.packets.enabled": True},
                                                    output=FragmentOutput())
    assert engine.on_batch is None
    pipeline.close()


@needs_c
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(ROOT / "pcaps")))
def test_bundled_captures_batched_as_frame_by_frame(path: Path) -> None:
    frames = [(ts, linktype, data, "test") for ts, linktype, data in _capture(path)]
    _same(frames)
    _same(frames, sizes=(1, 7, 1500))


@needs_c
@pytest.mark.parametrize("seed", range(4))
def test_hostile_traffic_batched_as_frame_by_frame(seed: int) -> None:
    frames = _traffic(seed)
    counters, left, docs = _same(frames, sizes=(4096, 3, 999), **{"wirebeat.limits.tcp.idle_timeout": 5.0})
    # The oracle can tell: connections were bypassed and segments kept coming, some timed
    # out, duplicates, untracked segments and non-IP frames happened; on_frame took only
    # ticks, fragments, tunnels and malformed frames (C called the transport step itself).
    assert counters["tcp.segments_bypassed"] > 100
    assert counters["tcp.connections_timed_out"] > 0 and counters["tcp.connections_closed"] > 0
    assert counters["tcp.timestamps_behind"] > 0
    assert counters["dedup.dropped"] > 10 and counters["packets.tcp_untracked"] > 100
    assert counters["packets.non_ip"] > 0 and counters["tcp.connections_detected"] > 0
    assert any(b'"what":"close"' in doc for _id, doc in docs)
    assert 0 < left < len(frames) / 10


class _ShadowedConnection(tcp.TCPConnection):
    """A connection whose `last_ts` and `bypassed` are properties over other slots: the
    C loop reads and writes TCPConnection's slots in place, and must see that these are
    not those slots (else it writes a slot the properties never read)."""

    __slots__ = ("_last", "_bypassed")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # TCPConnection's own slots hold stale values a wrong reader would take
        _ShadowedConnection.__base__.last_ts.__set__(self, 0.0)
        _ShadowedConnection.__base__.bypassed.__set__(self, True)

    last_ts = property(lambda self: self._last, lambda self, v: setattr(self, "_last", v))
    bypassed = property(lambda self: self._bypassed, lambda self, v: setattr(self, "_bypassed", v))


@needs_c
def test_connection_attributes_not_in_slots_go_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp, "TCPConnection", _ShadowedConnection)
    counters, _left, _docs = _same(_traffic(7), sizes=(4096, 3), **{"wirebeat.limits.tcp.idle_timeout": 5.0})
    assert counters["tcp.segments_bypassed"] > 100 and counters["tcp.timestamps_behind"] > 0


@needs_c
@pytest.mark.parametrize("overrides", [
    {"wirebeat.limits.max_mac_pairs": 3},
    {"wirebeat.limits.tcp.max_connections": 8},
    {"wirebeat.limits.max_mac_pairs": 2, "wirebeat.limits.tcp.max_connections": 4},
    {"wirebeat.dedup.enabled": False, "wirebeat.tunnels.enabled": False},
    {"wirebeat.flows.enabled": False},
    {"wirebeat.protocols.bypasser.wants": 0, "wirebeat.protocols.tls.detect": False},
], ids=["few-mac-pairs", "few-connections", "few-pairs-and-connections", "dedup-tunnels-off", "flows-off",
        "bypass-at-once"])
def test_hostile_traffic_under_other_settings(overrides: dict[str, Any]) -> None:
    _same(_traffic(11, 80), sizes=(500, 1), **overrides)


@needs_c
def test_two_sources_interleaved() -> None:
    """Batches of two capture sources, each with its own tables."""
    one = _traffic(21, 60)
    two = [(ts, linktype, data, "other") for ts, linktype, data, _s in _traffic(22, 60)]
    frames = []
    for i in range(0, max(len(one), len(two)), 50):
        frames += one[i:i + 50] + two[i:i + 50]
    _same(frames, sizes=(50,))


@needs_c
def test_no_decoder_reachable() -> None:
    """No decoder at all, flows on: TCP is untracked and UDP only counted, in C."""
    frames = _traffic(31, 60)
    results = []
    for batched in (True, False):
        engine, pipeline, output, stats = make_engine([], overrides={"wirebeat.flows.enabled": True},
                                                      output=FragmentOutput())
        assert engine.on_batch is not None and not engine.decoding
        if batched:
            engine.on_batch([(ts, lt, data, len(data)) for ts, lt, data, _s in frames], "test")
        else:
            for ts, lt, data, _s in frames:
                engine.on_frame(ts, lt, data, "test")
        engine.finish()
        pipeline.close()
        results.append((output.docs, stats.snapshot()))
    assert results[0] == results[1]
    assert results[0][1]["packets.tcp_untracked"] > 100


def _announced(seed: int) -> list[tuple[float, int, bytes, str]]:
    """Announcements on port 7000, then datagrams to and from the announced endpoints for
    a minute: once the announcement has expired (swept every 10 s) only the engine's UDP
    flow table knows these flows are the target's. Some datagrams on unannounced ports
    start with b"G" (the target's probe, with heuristics on)."""
    rng = random.Random(seed)
    start, frames = 1_700_000_000.0, []
    a, b = "10.5.0.1", "10.5.0.2"
    for n in range(20):
        ts = start + n * 3
        port = 30000 + n
        frames.append((ts, g.ethernet(g.ipv4(b, a, 17, g.udp(b, a, 5060, 7000, f"{a} {port}".encode())))))
        for k in range(40):
            ts += rng.choice((0.02, 0.5, 1.5))
            there = rng.random() < 0.5
            sp, dp, s_ip, d_ip = (40000 + n, port, b, a) if there else (port, 40000 + n, a, b)
            body = (b"G" if rng.random() < 0.3 else b"x") + bytes([k]) * 8
            frames.append((ts, g.ethernet(g.ipv4(s_ip, d_ip, 17, g.udp(s_ip, d_ip, sp, dp, body)))))
            if rng.random() < 0.2:        # unannounced: nothing, or the probe's
                frames.append((ts, g.ethernet(g.ipv4(a, b, 17, g.udp(a, b, 50000 + k, 51000 + n, body)))))
    frames.sort(key=lambda f: f[0])
    return [(ts, g.LINKTYPE_ETHERNET, data, "test") for ts, data in frames]


@needs_c
@pytest.mark.parametrize("heuristic", [False, True])
def test_announced_and_probed_udp_flows(heuristic: bool) -> None:
    counters, _left, docs = _same(_announced(5), sizes=(100, 1),
                                  **{"wirebeat.protocols.target.heuristic": heuristic})
    assert counters["flows.expected"] == 20 and counters.get("expectations.open", 0) == 0
    assert (counters.get("flows.probed", 0) > 0) == heuristic
    assert sum(b'"target"' in doc for _id, doc in docs) > 20 * 40 * 0.9


def _key_cache_traffic(seed: int) -> list[tuple[float, int, bytes, str]]:
    """Flows for the C key cache frame_batch accounts through (_flowcore's account_raw):
    thousands of keys at once (the cache grows, slot pairs are shared), keys of every
    shape (MACs or none, QinQ, IPv6, ICMP echo identifiers, one MAC order both ways),
    and keys reused after their flow ended: by the idle timeout, by FIN before the next
    sweep took it, and a new SYN on a FIN-closed flow (the Python _control)."""
    rng = random.Random(seed)
    eth, frames = g.LINKTYPE_ETHERNET, []
    start = 1_700_000_000.0
    peer_mac, host_mac = "02:00:00:00:00:02", "02:00:00:00:00:01"

    def framed(shape: int, packet: bytes, forward: bool) -> tuple[int, bytes]:
        macs = {"src": host_mac, "dst": peer_mac} if forward else {"src": peer_mac, "dst": host_mac}
        if shape == 1:
            return eth, g.ethernet(packet, vlans=g.qinq(100, 7), **macs)
        if shape == 2:          # a tap writing one MAC order for both directions
            return eth, g.ethernet(packet, src=host_mac, dst=peer_mac)
        if shape == 3:
            return g.LINKTYPE_LINUX_SLL, g.linux_sll(packet)
        if shape == 4:
            return g.LINKTYPE_RAW, packet
        return eth, g.ethernet(packet, **macs)

    for n in range(4000):       # short UDP exchanges, many at once
        shape = n % 6
        ts = start + n * 0.005 + rng.random()
        if shape == 5:
            a, b = f"2001:db8::{n:x}", "2001:db8:ffff::1"
        else:
            a, b = f"10.9.{n // 250}.{n % 250 + 1}", "10.8.0.1"
        for k, forward in enumerate((True, False, True, False, True)[:rng.randrange(1, 6)]):
            s, d = (a, b) if forward else (b, a)
            sp, dp = (40000 + n % 97, 5000 + n % 13) if forward else (5000 + n % 13, 40000 + n % 97)
            packet = g.ip_packet(s, d, 17, g.udp(s, d, sp, dp, b"x" * rng.randrange(0, 40)))
            frames.append((ts + k * 0.001, *framed(shape % 5, packet, forward)))
    for n in range(50):         # one address and port pair in every link shape and VLAN: other flows
        ts = start + 2 + n * 0.02
        for shape in range(5):
            for vlans in ((), (5,), (6,), g.qinq(5, 6)):
                packet = g.ipv4("10.5.0.1", "10.5.0.2", 17, g.udp("10.5.0.1", "10.5.0.2", 6000, 6001 + n % 2, b"v"))
                linktype, data = framed(shape, packet, n % 3 != 0)
                if vlans and linktype == eth:
                    data = g.ethernet(packet, vlans=vlans, src=data[6:12], dst=data[:6])
                frames.append((ts, linktype, data))
    for n in range(40):         # IPv6 with MACs and one VLAN id: the longest key a slot holds; with two, not cached
        ts = start + 3 + n * 0.02
        a, b = f"2001:db8:7::{n % 20 + 1:x}", "2001:db8:7::ffff"
        for k, forward in enumerate((True, False, True)):
            s, d = (a, b) if forward else (b, a)
            sp, dp = (41000 + n % 20, 6000) if forward else (6000, 41000 + n % 20)
            packet = g.ipv6(s, d, 17, g.udp(s, d, sp, dp, bytes([n, k])))
            frames.append((ts + k * 0.001, eth, g.ethernet(packet, vlans=(7,) if n < 20 else g.qinq(7, 8))))
    for round_ in range(3):     # the same keys again after the idle timeout
        for n in range(40):
            ts = start + round_ * 45 + n * 0.01
            packet = g.ipv4("10.7.0.1", "10.7.0.2", 17, g.udp("10.7.0.1", "10.7.0.2", 7100 + n, 7201, b"r"))
            frames.append((ts, eth, g.ethernet(packet)))
        for n in range(10):     # ICMP echo, v4 and v6, the same identifiers
            ts = start + round_ * 45 + 1 + n * 0.01
            for reply in (False, True):
                s, d = ("10.7.1.2", "10.7.1.1") if reply else ("10.7.1.1", "10.7.1.2")
                frames.append((ts + reply * 0.001, eth, g.ethernet(g.ipv4(s, d, 1, g.icmp_echo(n, round_, reply=reply)))))
                s6, d6 = ("fd00::2", "fd00::1") if reply else ("fd00::1", "fd00::2")
                frames.append((ts + reply * 0.001, eth,
                               g.ethernet(g.ipv6(s6, d6, 58, g.icmpv6_echo(s6, d6, n, round_, reply=reply)))))
    for turn in range(6):       # 500 flows in turn, every few ms: a table of 300 evicts flows that send again soon
        for n in range(500):
            ts = start + 100 + turn * 2.5 + n * 0.005
            packet = g.ipv4("10.3.1.1", f"10.3.{2 + n // 250}.{n % 250 + 1}", 17,
                            g.udp("10.3.1.1", f"10.3.{2 + n // 250}.{n % 250 + 1}", 8000, 8001, b"t"))
            frames.append((ts, eth, g.ethernet(packet)))
    for n in range(60):         # TCP closed by FIN, then the same ports again
        c, s, sp, dp = "10.6.0.1", "10.6.0.2", 30000 + n, 443
        ts = start + 5 + n * 0.5
        gap = (0.2, 3.0, 40.0)[n % 3]       # before the sweep ends it (a new SYN on it), after, after idle
        for again in (0.0, gap):
            seq = 1000 + int(again * 10)
            t = ts + again
            for k, (fwd, flags, data) in enumerate(((True, "S", b""), (False, "SA", b""), (True, "A", b""),
                                                    (True, "PA", b"hello"), (False, "PA", b"world!"),
                                                    (True, "FA", b""), (False, "FA", b""), (True, "A", b""))):
                a, b, pa, pb = (c, s, sp, dp) if fwd else (s, c, dp, sp)
                packet = g.ipv4(a, b, 6, g.tcp(a, b, pa, pb, data, seq=seq + k * 10, ack=1, flags=flags))
                frames.append((t + k * 0.01, eth, g.ethernet(packet)))
    frames.sort(key=lambda f: f[0])
    return [(ts, linktype, data, "test") for ts, linktype, data in frames]


@needs_c
@pytest.mark.parametrize("max_flows", [65536, 300], ids=["room", "evicting"])
def test_flow_key_cache(max_flows: int) -> None:
    """The key cache frame_batch accounts through changes nothing: the same documents and
    counters as frame by frame (Python keys, no cache), while it was used, missed, and grew;
    also when a full table evicts flows between packets (their cached entries go stale)."""
    frames = _key_cache_traffic(41)
    overrides = {"wirebeat.flows.max_flows": max_flows}
    counters, _left, docs = _same(frames, sizes=(4096, 5), **overrides)
    assert counters["flows.table.opened"] >= 4000 + 3 * 60 + 60 * 2
    if max_flows < 4000:
        assert counters["flows.table.evicted"] > 1000
    engine, pipeline, _output, _stats = make_engine(
        [], overrides={"wirebeat.flows.enabled": True, **overrides}, output=FragmentOutput())
    engine.on_batch([(ts, lt, data, len(data)) for ts, lt, data, _s in frames], "test")
    slots, hits, misses = engine.sources["test"].flows.core.key_cache()
    engine.finish()
    pipeline.close()
    assert slots > 1024 and hits > 4000 and misses > 4000


def _dns(ident: int, answer: bool) -> bytes:
    """A DNS query for example.com A, or its answer (RFC 1035 wire format)."""
    header = struct.pack("!HHHHHH", ident, 0x8180 if answer else 0x0100, 1, int(answer), 0, 0)
    question = b"\x07example\x03com\x00" + struct.pack("!HH", 1, 1)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes((192, 0, 2, 1)) if answer else b""
    return header + question + record


@needs_c
def test_link_header_changes_mid_conversation() -> None:
    """One IP pair whose frames change MACs and VLAN tags between transactions: each DNS
    document carries the MACs of its own frames. An unanswered query is reported at its
    timeout, a minute later, from the pair's stored link header: the C loop must have
    stored each new header (it skips storing one equal to the stored one)."""
    eth, frames, expected = g.LINKTYPE_ETHERNET, [], {}
    client, server, server_mac = "10.4.0.1", "10.4.0.2", "02:00:00:00:02:ff"
    for n in range(12):
        client_mac = f"02:00:00:00:01:{n % 4:02x}"
        vlans = ((), (9,), g.qinq(9, 10))[n // 4]
        ts = 1_700_000_000.0 + n * 60
        other = g.ipv4("10.4.9.1", "10.4.9.2", 17, g.udp("10.4.9.1", "10.4.9.2", 9, 9, b"tick"))
        frames.append((ts - 0.5, eth, g.ethernet(other), "test"))     # takes the tick due: the rest goes to C
        for answer in (False, True)[:1 + n % 2]:
            s, d = (server, client) if answer else (client, server)
            packet = g.ipv4(s, d, 17, g.udp(s, d, 53 if answer else 40000, 40000 if answer else 53, _dns(n, answer)))
            macs = {"src": server_mac, "dst": client_mac} if answer else {"src": client_mac, "dst": server_mac}
            frames.append((ts + answer * 0.01, eth, g.ethernet(packet, vlans=vlans, **macs), "test"))
        expected[n] = client_mac.replace(":", "-").upper()
    _counters, _left, docs = _same(frames)
    seen = {}
    for _id, text in docs:
        doc = orjson.loads(text)
        if doc.get("type") == "dns":
            seen[doc["dns"]["id"]] = doc["source"]["mac"]
    assert seen == expected


@needs_c
def test_key_cache_entry_from_65536_generations_ago_is_not_taken() -> None:
    """A key cache slot keeps 16 bits of the table's generation: after a flow ended through
    the Python path (which moves the generation instead of letting go of the slot) and 65,535
    more moves, the slot's generation reads current again. The next packet of that key must
    open a new flow, not count on the ended flow's record."""
    eth, start = g.LINKTYPE_ETHERNET, 1_700_000_000.0
    frames = [g.ethernet(g.ipv4("10.2.0.1", "10.2.0.2", 17, g.udp("10.2.0.1", "10.2.0.2", 4000, 4001, bytes([n]))))
              for n in range(4)]       # not duplicates of each other
    engine, pipeline, _output, _stats = make_engine([], overrides={"wirebeat.flows.enabled": True},
                                                    output=FragmentOutput())
    engine.on_batch([(start + n * 0.1, eth, frame, len(frame)) for n, frame in enumerate(frames[:3])], "test")
    table = engine.sources["test"].flows
    [old] = {id(rec): rec for rec in table.flows.values()}.values()
    assert old[2] == 3 and table.core.key_cache()[1] >= 1      # R_PACKETS; the third packet was a hit
    table._end(old, "idle", start + 0.2)                           # moves the generation once
    for _ in range(65535):
        table.core.invalidate()
    engine.on_batch([(start + 0.3, eth, frames[3], len(frames[3]))], "test")
    [new] = {id(rec): rec for rec in table.flows.values()}.values()
    assert new is not old and new[2] == 1 and old[2] == 3
    engine.finish()
    pipeline.close()


@needs_c
def test_icmp_messages_delivered_from_c_as_on_frame_delivers_them() -> None:
    """The frame loop makes an ICMP/ICMPv6 message's flow and datagram itself (beat/_speedups.c
    deliver_icmp): echo pairs v4 and v6, a lone reply, an error report, messages of 0, 1, 2,
    3 and 7 bytes (too short: malformed, counted), through 802.1Q and Linux cooked links,
    and a second source whose name the flows carry first."""
    start, eth = 1_700_000_000.0, g.LINKTYPE_ETHERNET
    a, b, a6, b6 = "10.9.0.1", "10.9.0.2", "2001:db8::1", "2001:db8::2"
    frames: list[tuple[float, int, bytes, str]] = []
    for n in range(40):
        ts = start + n * 0.01
        source = "other" if n < 8 else "test"     # (a source's frames together: _run's batches)
        request = g.ipv4(a, b, 1, g.icmp_echo(n, 1))
        frames.append((ts, eth, g.ethernet(request, vlans=[7] if n % 3 == 0 else ()), source))
        frames.append((ts + 0.001, eth, g.ethernet(g.ipv4(b, a, 1, g.icmp_echo(n, 1, reply=True))), source))
        frames.append((ts + 0.002, g.LINKTYPE_LINUX_SLL, g.linux_sll(g.ipv6(a6, b6, 58, g.icmpv6_echo(a6, b6, n, 2))),
                       source))
        frames.append((ts + 0.003, eth, g.ethernet(g.ipv6(b6, a6, 58, g.icmpv6_echo(b6, a6, n, 2, reply=True))),
                       source))
    frames.append((start + 1, eth, g.ethernet(g.ipv4(b, a, 1, g.icmp_echo(999, 9, reply=True))), "test"))
    frames.append((start + 1, eth, g.ethernet(g.ipv4(b, a, 1, bytes([3, 3, 0, 0, 0, 0, 0, 0]) + b"x" * 28)), "test"))
    for size in (0, 1, 2, 3, 7):
        frames.append((start + 1.5, eth, g.ethernet(g.ipv4(a, b, 1, bytes([8, 0, 0, 0, 0, 1, 0])[:size])), "test"))
        frames.append((start + 1.5, eth, g.ethernet(g.ipv6(a6, b6, 58, bytes([128, 0, 0, 0])[:size])), "test"))
    counters, left, docs = _same(frames, sizes=(4096, 5))
    assert sum(b'"type":"icmp"' in doc for _id, doc in docs) == 82
    assert sum(b'"capture":{"source":"other"}' in doc and b'"type":"icmp"' in doc for _id, doc in docs) == 16
    assert counters["decoder.malformed.icmp.icmp.truncated"] == 10      # each short message, once
    assert left < 10        # (the ticks)


@needs_c
def test_datagrams_of_a_held_routed_flow_delivered_from_c_as_on_frame_delivers_them() -> None:
    """A UDP datagram of a routed flow the table already holds goes to `_deliver` from C
    (beat/_speedups.c deliver_udp): sent by the client or the server (the client being
    the side on the routed port's other end, or the one the flow started with), its
    body bounded by the UDP length (Ethernet padding after it), longer than the bytes (a
    snap-length cut), a length under 8, an empty body, a decoder error, IPv6, and DNS."""
    start, eth = 1_700_000_000.0, g.LINKTYPE_ETHERNET
    a, b, a6, b6 = "10.8.0.1", "10.8.0.2", "2001:db8::a", "2001:db8::b"
    frames: list[tuple[float, int, bytes, str]] = []

    def add(ts: float, src: str, dst: str, sport: int, dport: int, body: bytes, **kw: Any) -> None:
        packet = (g.ipv6 if ":" in src else g.ipv4)(src, dst, 17, g.udp(src, dst, sport, dport, body, **kw))
        frames.append((ts, eth, g.ethernet(packet), "test"))

    for n in range(30):
        ts = start + n * 0.01
        port = 30000 + n
        add(ts, a, b, port, 9100, b"ask%d" % n)                    # the flow starts: Python
        add(ts + 0.001, b, a, 9100, port, b"answer%d" % n)         # held: C, from the server
        add(ts + 0.002, a, b, port, 9100, b"again%d" % n)          # held: C, from the client
        add(ts + 0.003, b, a, 9100, port, b"padded%d" % n, length=8 + 3)    # body cut to 3 bytes
        add(ts + 0.004, b, a, 9100, port, b"cut", length=8 + 200)           # length past the bytes
        add(ts + 0.005, a, b, port, 9100, b"short", length=4)               # a bogus length
        add(ts + 0.006, a, b, port, 9100, b"")
        add(ts + 0.007, b, a, 9100, port, b"bad%d" % n)                     # decoder error
        add(ts + 0.008, a6, b6, port, 9100, b"v6 ask")
        add(ts + 0.009, b6, a6, 9100, port, b"v6 answer")
    # the server's port first: its side is the server all the same
    add(start + 1, b, a, 9100, 40000, b"from the server first")
    add(start + 1.001, a, b, 40000, 9100, b"then the client")
    for n in range(20):     # DNS: a query makes the flow, its response goes from C
        query_id = 0x4000 + n
        question = b"\x04host\x07example\x03com\x00" + struct.pack("!HH", 1, 1)
        query = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question
        response = (struct.pack("!HHHHHH", query_id, 0x8180, 1, 1, 0, 0) + question
                    + struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + bytes([192, 0, 2, n]))
        add(start + 2 + n * 0.01, a, b, 50000 + n, 53, query)
        add(start + 2 + n * 0.01 + 0.001, b, a, 53, 50000 + n, response)
    counters, left, docs = _same(frames, sizes=(4096, 7))
    reports = [doc for _id, doc in docs if b'"type":"reporter"' in doc]
    assert len(reports) == 30 * 9 + 2
    assert sum(b'"from_client":true' in doc for doc in reports) == 30 * 5 + 1
    assert counters["decoder.malformed.reporter.reporter.bad"] == 30
    assert sum(b'"type":"dns"' in doc and b'"status":"OK"' in doc for _id, doc in docs) == 20
    assert left < 10        # (the ticks)
