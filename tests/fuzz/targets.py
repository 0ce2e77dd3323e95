"""Fuzz targets: the whole engine from raw frames, and every decoder through the engine.

Each target takes one input (bytes) and must never raise: bad input is
counted and skipped (ARCHITECTURE.md, invariants). The engine runs strict,
so a decoder bug raises instead of being counted. Each input is decoded as
its own capture source and finished at the end, so inputs are independent
and a crash reproduces from its input file alone.

Input formats (so that seeds made from pcaps/ mutate into near-valid traffic):
- engine: one byte choosing the link type, then frames as <u16 length, bytes>;
- decoder <name>: chunks as <u8 flags, u16 length, bytes>; flags bit 0 is the
  direction (server to client), bit 1 UDP instead of TCP where the decoder has
  both; TCP chunks become in-order segments of one connection after a
  handshake, UDP chunks datagrams of one flow, both on the decoder's first port.
"""
from __future__ import annotations

import itertools
import struct
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import pcapgen as g  # noqa: E402
from wirebeat.registry import discover  # noqa: E402
from wirebeat.testing import ListOutput, make_engine  # noqa: E402

__all__ = ["LINKTYPES", "Target", "decoder_input", "engine_input", "targets"]

LINKTYPES = (g.LINKTYPE_ETHERNET, g.LINKTYPE_LINUX_SLL, 101, 228, 0)   # ethernet, SLL, raw, IPv4, null
CLIENT, SERVER = "10.99.0.1", "10.99.0.2"
CLIENT_PORT = 40000
_sources = itertools.count()


class _RawJSONOutput(ListOutput):
    """Takes pre-serialised documents, as the console output does: the engine target then
    runs per-packet documents on their fast path (wirebeat._speedups.packet_doc)."""

    accepts_fragments = True


class Target:
    """One fuzz target: an engine kept across inputs, a fresh capture source per input."""

    def __init__(self, name: str, decoder: str | None) -> None:
        self.name = name
        specs = [r.spec for r in discover()]
        if decoder is not None:
            specs = [s for s in specs if s.name == decoder]
        self.spec = specs[0] if decoder is not None else None
        if decoder is None:     # per-packet documents too, through the C accelerator when built
            self.engine, self.pipeline, self.output, self.stats = make_engine(
                specs, strict=True, overrides={"wirebeat.packets.enabled": True}, output=_RawJSONOutput())
        else:
            self.engine, self.pipeline, self.output, self.stats = make_engine(specs, strict=True)
        self.inputs = 0

    def __call__(self, data: bytes) -> None:
        self.inputs += 1
        source = f"fuzz-{next(_sources)}"
        frames = engine_frames(data) if self.spec is None else decoder_frames(self.spec, data)
        for linktype, ts, frame in frames:
            self.engine.on_frame(ts, linktype, frame, source)
        self.engine.finish(source)
        # The documents were built (that is what can fail); handing them to the
        # output thread only cost a thread switch per input, so they are dropped.
        self.pipeline.batch.clear()
        if len(self.output.docs) > 10000:
            self.output.docs.clear()


def engine_frames(data: bytes) -> list[tuple[int, float, bytes]]:
    if not data:
        return []
    linktype = LINKTYPES[data[0] % len(LINKTYPES)]
    frames, pos, ts = [], 1, 1_700_000_000.0
    while pos + 2 <= len(data) and len(frames) < 256:
        (length,) = struct.unpack_from("!H", data, pos)
        pos += 2
        frames.append((linktype, ts, data[pos:pos + length]))
        pos += length
        ts += 0.001
    return frames


_ETH = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"
_ADDR = {False: g._packed(CLIENT) + g._packed(SERVER), True: g._packed(SERVER) + g._packed(CLIENT)}
_IPV4 = struct.Struct("!BBHHHBBH8s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_TCP_FLAGS = {"S": 0x02, "SA": 0x12, "A": 0x10, "PA": 0x18, "FA": 0x11}


def _frame(from_server: bool, protocol: int, l4: bytes) -> bytes:
    """Ethernet + IPv4 around `l4`, packed directly (no checksums: the engine checks none).

    pcapgen builds the same bytes with checksums, but parses the addresses and
    sums every byte for each frame, which was half the time of a fuzz input.
    """
    return _ETH + _IPV4.pack(0x45, 0, 20 + len(l4), 0, 0, 64, protocol, 0, _ADDR[from_server]) + l4


def decoder_frames(spec: Any, data: bytes) -> list[tuple[int, float, bytes]]:
    port = spec.ports[0] if spec.ports else 9
    chunks, pos = [], 0
    while pos + 3 <= len(data) and len(chunks) < 128:
        flags, length = struct.unpack_from("!BH", data, pos)
        pos += 3
        chunks.append((flags, data[pos:pos + length]))
        pos += length
    frames, ts = [], 1_700_000_000.0
    use_udp = spec.stream is None or (spec.datagram is not None and chunks and chunks[0][0] & 2)
    if spec.stream is None and spec.datagram is None:
        return []
    ether = g.LINKTYPE_ETHERNET
    if spec.ip_protocols and not spec.ports:           # ICMP: the chunk is the IP payload
        for flags, chunk in chunks:
            frames.append((ether, ts, _frame(bool(flags & 1), spec.ip_protocols[0], chunk)))
            ts += 0.001
        return frames
    if use_udp:
        for flags, chunk in chunks:
            sport, dport = (port, CLIENT_PORT) if flags & 1 else (CLIENT_PORT, port)
            frames.append((ether, ts, _frame(bool(flags & 1), g.IPPROTO_UDP,
                                             _UDP.pack(sport, dport, 8 + len(chunk), 0) + chunk)))
            ts += 0.001
        return frames
    seq = {False: 1000, True: 5000}

    def segment(from_server: bool, payload: bytes, flags: str) -> tuple[int, float, bytes]:
        sport, dport = (port, CLIENT_PORT) if from_server else (CLIENT_PORT, port)
        header = _TCP.pack(sport, dport, seq[from_server] & 0xFFFFFFFF, seq[not from_server] & 0xFFFFFFFF,
                           5 << 4, _TCP_FLAGS[flags], 65535, 0, 0)
        seq[from_server] += len(payload) + (1 if "S" in flags or "F" in flags else 0)
        return ether, ts, _frame(from_server, g.IPPROTO_TCP, header + payload)

    frames.append(segment(False, b"", "S"))
    frames.append(segment(True, b"", "SA"))
    frames.append(segment(False, b"", "A"))
    for flags, chunk in chunks:
        ts += 0.001
        frames.append(segment(bool(flags & 1), chunk, "PA"))
    frames.append(segment(False, b"", "FA"))
    frames.append(segment(True, b"", "FA"))
    return frames


def engine_input(linktype: int, frames: list[bytes]) -> bytes:
    """A seed for the engine target."""
    index = LINKTYPES.index(linktype) if linktype in LINKTYPES else 0
    return bytes([index]) + b"".join(struct.pack("!H", len(f)) + f for f in frames)


def decoder_input(chunks: list[tuple[bool, bool, bytes]]) -> bytes:
    """A seed for a decoder target: (from_server, udp, payload) chunks."""
    return b"".join(struct.pack("!BH", int(s) | (2 if u else 0), len(p)) + p for s, u, p in chunks)


def targets() -> list[str]:
    return ["engine", *(r.spec.name for r in discover())]
