"""With every decoder off the engine tracks no conversation (Engine.decoding is False).

Per-packet documents alone (`wirebeat.packets.enabled`, every decoder off) is the
job `tshark -T ek` does; then no TCP segment or UDP datagram can reach a decoder,
so the engine only counts them. The oracle is the engine's full path, forced on
(`decoding = True`) for the same frames: the same documents, the same `_id`s and
the same counters, on every bundled capture and on hostile frames (truncated TCP
and UDP headers, TCP data offsets below 20 bytes and past the segment,
fragments, duplicates).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import pcapgen as g
from wirebeat.registry import discover
from wirebeat.sources.pcapfile import open_capture
from wirebeat.testing import ListOutput, make_engine

ROOT = Path(__file__).resolve().parent.parent.parent
CAPTURES = sorted((ROOT / "pcaps").glob("**/*.pcap*"))
A, B = "192.0.2.1", "198.51.100.2"


class _IdOutput(ListOutput):
    def send(self, batch: list[tuple[str, Any]], stopping: Any) -> int:
        self.docs.extend((doc_id, orjson.dumps(doc)) for doc_id, doc in batch)
        return 0


def _run(frames: list[tuple[float, int, bytes]], forced: bool, **overrides: Any) -> tuple[list, dict]:
    engine, pipeline, output, stats = make_engine(
        [], overrides={"wirebeat.packets.enabled": True, **overrides}, output=_IdOutput())
    assert engine.decoding is False       # no decoder: nothing is routable
    engine.decoding = forced
    for ts, linktype, data in frames:
        engine.on_frame(ts, linktype, data, "test")
    engine.finish("test")
    pipeline.close()
    return output.docs, stats.snapshot()


def _capture(path: Path) -> list[tuple[float, int, bytes]]:
    reader = open_capture(str(path))
    try:
        return [(f.ts, f.linktype, f.data) for f in reader]
    finally:
        reader.close()


def _hostile() -> list[tuple[float, int, bytes]]:
    good = g.tcp(A, B, 40000, 80, b"GET / HTTP/1.1\r\n\r\n", flags="PA")
    payloads = [
        (6, good),                                      # a well-formed segment: untracked
        (6, good[:12]),                                 # truncated TCP header
        (6, good[:12] + bytes([0x40]) + good[13:]),     # data offset 16 bytes (< 20)
        (6, good[:12] + bytes([0xF0]) + good[13:]),     # data offset 60 bytes, past the segment
        (6, good[:20]),                                 # exactly a header, no payload
        (17, g.udp(A, B, 5353, 53, b"x")),              # a datagram on no route
        (17, g.udp(A, B, 5353, 53, b"x")[:5]),          # truncated UDP header
        (132, b"\0" * 12),                              # SCTP: no route either
    ]
    frames = []
    for i, (proto, payload) in enumerate(payloads):
        packet = g.ipv4(A, B, proto, payload)
        frames.append((1.0 + i, g.LINKTYPE_ETHERNET, g.ethernet(packet)))
        frames.append((1.0 + i, g.LINKTYPE_ETHERNET, g.ethernet(packet)))      # a duplicate
    big = g.ipv4(A, B, 6, g.tcp(A, B, 40001, 443, b"y" * 3000, flags="PA"))
    frames += [(20.0, g.LINKTYPE_ETHERNET, g.ethernet(f)) for f in g.fragment_ipv4(big, 1200)]
    return frames


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(ROOT / "pcaps")))
def test_untracked_path_counts_what_the_full_path_counts(path: Path) -> None:
    frames = _capture(path)
    assert _run(frames, forced=False) == _run(frames, forced=True)


@pytest.mark.parametrize("overrides, copies", [
    ({}, 1), ({"wirebeat.flows.enabled": True}, 1), ({"wirebeat.dedup.enabled": False}, 2)])
def test_hostile_frames_are_counted_alike(overrides: dict[str, Any], copies: int) -> None:
    frames = _hostile()
    fast, fast_counters = _run(frames, forced=False, **overrides)
    full, full_counters = _run(frames, forced=True, **overrides)
    assert fast == full and fast_counters == full_counters
    packet_docs = [doc for _, doc in fast if b'"dataset":"packet"' in doc]
    assert len(packet_docs) == len(frames)      # one per frame, duplicates included
    # The counters the shortcut keeps, by hand from the frames above (dedup on: one copy each).
    assert fast_counters["packets.malformed.tcp.truncated"] == copies
    assert fast_counters["packets.malformed.tcp.bad_header_length"] == 2 * copies
    assert fast_counters["packets.malformed.udp.truncated"] == copies
    assert fast_counters["packets.tcp_untracked"] == 2 * copies + 1     # + the reassembled one


def test_any_decoder_traffic_can_reach_keeps_the_full_path() -> None:
    specs = {r.spec.name: r.spec for r in discover()}
    for name, spec in specs.items():
        engine, pipeline, _, _ = make_engine([spec])
        pipeline.close()
        # Every built-in has default ports or IP protocols, except RTP: no port, its
        # heuristic off by default, and the SIP announcing its streams is off here.
        assert engine.decoding is (name != "rtp"), name
    for overrides in ({"wirebeat.protocols.rtp.heuristic": True},
                      {"wirebeat.protocols.rtp.ports": [5004]}):
        engine, pipeline, _, _ = make_engine([specs["rtp"]], overrides=overrides)
        pipeline.close()
        assert engine.decoding is True, overrides
    engine, pipeline, _, _ = make_engine([specs["tls"]], overrides={"wirebeat.protocols.tls.ports": []})
    pipeline.close()
    assert engine.decoding is True      # TLS on no port: found by detection
