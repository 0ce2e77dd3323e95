"""Per-packet documents alone, a reader batch at a time in C (`Engine.on_batch`,
wirebeat.packets.packets_only_batches, `_speedups.packet_batch`).

The oracle is the engine's own per-frame path (`Engine.on_frame` for every
frame, with the extension's per-frame `packet_doc`, itself tested against the
pure-Python documents in test_speedups.py): the same documents with the same
`_id`s in the same order, and the same counters (packets, bytes, malformed by
reason, non-IP by ethertype, untracked TCP, fragments, tunnels, duplicates),
on every bundled capture and on hostile frames: truncated link, IP, TCP and UDP
headers, bad TCP data offsets, fragments, tunnels, ARP, VLANs, IPv6 extension
headers, timestamps before 1970 and across timeout ticks, and duplicates whose
first copy is taken by C and the second by Python and the other way round (the
C code computes Dedup's key without building its tuple: a different key would
let those through). Under CI=true a missing extension is a failure.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

import pcapgen as g
import tunnelgen as tg
from test_engine_untracked import _capture
from wirebeat.accel import speedups
from wirebeat.testing import ListOutput, make_engine

ROOT = Path(__file__).resolve().parent.parent.parent
CAPTURES = sorted((ROOT / "pcaps").glob("**/*.pcap*"))
A, B = "192.0.2.1", "198.51.100.2"
A6, B6 = "2001:db8::1", "2001:db8::2"

needs_c = pytest.mark.skipif(speedups is None and os.environ.get("CI") != "true",
                             reason="C extension not built (a failure under CI=true)")


class FragmentOutput(ListOutput):
    """Takes orjson.Fragment (as the console, file and Elasticsearch outputs do); keeps
    (_id, JSON bytes) in the order the pipeline handed them over."""

    accepts_fragments = True

    def send(self, batch: list[tuple[str, Any]], stopping: Any) -> int:
        self.docs.extend((doc_id, orjson.dumps(doc)) for doc_id, doc in batch)
        return 0


def count_on_frame(engine: Any) -> list[int]:
    """Counts the frames the engine then takes one by one (`on_frame`): [count]."""
    taken = [0]
    on_frame = engine.on_frame

    def counted(ts: float, linktype: int, data: bytes, source: str) -> None:
        taken[0] += 1
        on_frame(ts, linktype, data, source)

    engine.on_frame = counted
    return taken


def _run(frames: list[tuple[float, int, bytes]], batched: bool, sizes: tuple[int, ...] = (4096,),
         **overrides: Any) -> tuple[list, dict, int]:
    """(documents, counters, frames the engine took one by one)."""
    engine, pipeline, output, stats = make_engine(
        [], overrides={"wirebeat.packets.enabled": True, **overrides}, output=FragmentOutput())
    per_frame = count_on_frame(engine)
    records = [(ts, linktype, data, len(data)) for ts, linktype, data in frames]
    if batched:
        assert engine.on_batch is not None
        at, turn = 0, 0
        while at < len(records):     # reader batches of varying sizes
            size = sizes[turn % len(sizes)]
            engine.on_batch(records[at:at + size], "test")
            at, turn = at + size, turn + 1
    else:
        for ts, linktype, data, _wire_len in records:
            engine.on_frame(ts, linktype, data, "test")
    engine.finish("test")
    pipeline.close()
    return output.docs, stats.snapshot(), per_frame[0]


def _same(frames: list[tuple[float, int, bytes]], **kwargs: Any) -> tuple[dict, int]:
    """Both ways agree; (counters, frames the batch path left to on_frame)."""
    docs, counters, left = _run(frames, batched=True, **kwargs)
    kwargs.pop("sizes", None)
    expected_docs, expected_counters, _ = _run(frames, batched=False, **kwargs)
    assert docs == expected_docs
    assert counters == expected_counters
    return counters, left


def _eth(packet: bytes, **kwargs: Any) -> tuple[int, bytes]:
    return g.LINKTYPE_ETHERNET, g.ethernet(packet, **kwargs)


def _hostile() -> list[tuple[int, bytes]]:
    """Frames of every shape the batch path must take or leave alone, each once."""
    good = g.tcp(A, B, 40000, 80, b"GET / HTTP/1.1\r\n\r\n", flags="PA")
    big = g.ipv4(A, B, 6, g.tcp(A, B, 40001, 443, b"y" * 3000, flags="PA"))
    big6 = g.ipv6(A6, B6, 17, g.udp(A6, B6, 40002, 53, b"z" * 3000))
    inner = g.ethernet(g.ipv4("10.0.0.1", "10.0.0.2", 17, g.udp("10.0.0.1", "10.0.0.2", 1, 53, b"q")))
    frames = [
        _eth(g.ipv4(A, B, 6, good)),                                    # untracked TCP
        _eth(g.ipv4(A, B, 6, good[:12])),                               # tcp.truncated
        _eth(g.ipv4(A, B, 6, good[:12] + bytes([0x40]) + good[13:])),   # data offset 16
        _eth(g.ipv4(A, B, 6, good[:12] + bytes([0xF0]) + good[13:])),   # data offset past the end
        _eth(g.ipv4(A, B, 6, good[:20])),                               # a bare header
        _eth(g.ipv4(A, B, 17, g.udp(A, B, 5353, 53, b"x"))),            # UDP on no route
        _eth(g.ipv4(A, B, 17, g.udp(A, B, 5353, 53, b"x")[:5])),        # udp.truncated
        _eth(g.ipv4(A, B, 132, b"\0" * 12)),                            # SCTP
        _eth(g.ipv4(A, B, 1, g.icmp_echo(7, 1, b"ping"))),              # ICMP
        _eth(g.ipv6(A6, B6, 58, g.icmpv6_echo(A6, B6, 7, 1, b"ping"))),  # ICMPv6
        _eth(g.ipv6(A6, B6, 6, good, extensions=[g.hop_by_hop()])),     # IPv6 extension header
        _eth(g.ipv4(A, B, 6, good), vlans=[100]),                       # 802.1Q
        _eth(g.ipv4(A, B, 17, g.udp(A, B, 1, 2, b"v")), vlans=g.qinq(10, 20)),   # QinQ
        _eth(g.ipv4(A, B, 6, good))[:20],                               # ip.truncated
        (g.LINKTYPE_ETHERNET, b"\x02" * 10),                            # link.truncated
        (g.LINKTYPE_ETHERNET, g.ethernet(b"\x45" + b"\0" * 30)),       # bad IPv4 header length
        (g.LINKTYPE_ETHERNET, g.ethernet(b"\x00" * 28, ethertype=0x0806)),   # ARP: non-IP
        (g.LINKTYPE_ETHERNET, g.ethernet(b"\x00" * 28, ethertype=0x88CC)),   # LLDP
        (g.LINKTYPE_ETHERNET, g.ethernet(g.ipv4(A, B, 6, good), ethertype=0x8847)),  # MPLS shim
        (g.LINKTYPE_RAW, g.ipv4(A, B, 6, good)),                        # raw IP link
        (g.LINKTYPE_LINUX_SLL, g.linux_sll(g.ipv6(A6, B6, 6, good))),
        (999, b"\0" * 40),                                              # link.unsupported_linktype
        (g.LINKTYPE_ETHERNET, g.ethernet(tg.vxlan(inner, 42))),        # tunnels
        (g.LINKTYPE_ETHERNET, g.ethernet(tg.geneve(inner, 43))),
        (g.LINKTYPE_ETHERNET, g.ethernet(tg.gre(g.ipv4("10.0.0.3", "10.0.0.4", 1, g.icmp_echo(1, 1)), 0x0800))),
    ]
    frames += [_eth(f) for f in g.fragment_ipv4(big, 1200)]            # fragments
    frames += [_eth(f) for f in g.fragment_ipv6(big6, 1200)]
    return frames


def _timed(shapes: list[tuple[int, bytes]], seed: int) -> list[tuple[float, int, bytes]]:
    """Every shape at random times (ticks due now and then, some copies within the dedup
    window, some frames before 1970 or past what the C path formats)."""
    rng = random.Random(seed)
    frames, ts = [], 1_700_000_000.0
    for _ in range(3000):
        ts += rng.choice((0.0, 0.001, 0.001, 0.03, 0.2, 1.5))
        linktype, data = rng.choice(shapes)
        frames.append((ts, linktype, data))
        if rng.random() < 0.2:       # a copy (the same frame again soon): dedup's business
            frames.append((ts + rng.choice((0.0, 0.05, 0.5)), linktype, data))
    frames.insert(100, (-5.0, *shapes[0]))
    frames.insert(200, (9.9e9, *shapes[0]))
    return frames


@needs_c
def test_per_packet_alone_runs_batches_in_c_and_nothing_else_does() -> None:
    engine, pipeline, _output, _stats = make_engine([], overrides={"wirebeat.packets.enabled": True},
                                                    output=FragmentOutput())
    assert engine.on_batch is not None
    pipeline.close()
    engine, pipeline, _output, _stats = make_engine(
        [], overrides={"wirebeat.packets.enabled": True, "wirebeat.flows.enabled": True}, output=FragmentOutput())
    assert engine.on_batch is None
    pipeline.close()
    # Without per-packet documents, batches are wirebeat.frameloop's (tests/beat/test_frameloop.py).
    engine, pipeline, _output, _stats = make_engine([], overrides={"wirebeat.packets.enabled": False},
                                                    output=FragmentOutput())
    assert engine.on_batch is not None and engine.on_batch.__module__ == "wirebeat.frameloop"
    pipeline.close()
    # An output that wants dicts (no fast path): per frame.
    engine, pipeline, _output, _stats = make_engine([], overrides={"wirebeat.packets.enabled": True})
    assert engine.on_batch is None
    pipeline.close()


@needs_c
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(ROOT / "pcaps")))
def test_bundled_captures_batched_as_frame_by_frame(path: Path) -> None:
    frames = _capture(path)
    _same(frames)
    _same(frames, sizes=(1, 7, 1500))


@needs_c
@pytest.mark.parametrize("seed", range(4))
def test_hostile_frames_batched_as_frame_by_frame(seed: int) -> None:
    frames = _timed(_hostile(), seed)
    counters, left = _same(frames, sizes=(4096, 3, 999))
    # The oracle can tell: malformed, non-IP, fragments, tunnels and duplicates happened,
    # and C took most frames (the rest went through on_frame).
    assert counters["dedup.dropped"] > 100
    assert counters["packets.tcp_untracked"] > 100
    assert counters["packets.non_ip"] > 0 and counters["packets.tunneled"] > 0
    assert any(k.startswith("packets.malformed") for k in counters)
    assert len(frames) / 5 < left < len(frames) * 4 / 5


@needs_c
@pytest.mark.parametrize("overrides", [{"wirebeat.dedup.enabled": False},
                                       {"wirebeat.tunnels.enabled": False},
                                       {"wirebeat.dedup.window": 10.0, "wirebeat.dedup.max_packets": 16}],
                         ids=["dedup-off", "tunnels-off", "dedup-small-table"])
def test_hostile_frames_under_other_settings(overrides: dict[str, Any]) -> None:
    _same(_timed(_hostile(), 7), sizes=(500,), **overrides)


@needs_c
def test_duplicates_across_the_two_paths() -> None:
    """A copy taken by C of a frame the engine took itself, and the other way round:
    Dedup's key must be the same both ways (the first frame after a tick is the engine's)."""
    shapes = [_eth(g.ipv4(A, B, 6, g.tcp(A, B, 40000 + i, 80, b"d" * i, flags="PA")), vlans=[i % 3] if i % 2 else ())
              for i in range(1, 20)]
    shapes += [_eth(g.ipv6(A6, B6, 17, g.udp(A6, B6, 5000 + i, 53, b"e" * i))) for i in range(1, 20)]
    start = 1_700_000_000.0
    frames = [(start, *_eth(g.ipv4(B, A, 17, g.udp(B, A, 1, 2, b"first"))))]    # the first tick
    for i, (linktype, data) in enumerate(shapes):
        frames.append((start + i + 0.95, linktype, data))      # C (no tick due) ...
        frames.append((start + i + 1.0, linktype, data))       # ... a tick due: the engine's
        frames.append((start + i + 1.01, linktype, data))      # C again
    counters, left = _same(frames)
    assert counters["dedup.dropped"] == 2 * len(shapes)
    assert left == len(shapes) + 1     # the ticks (the first frame's too)
