"""Fuzz targets: the whole engine from raw frames, every decoder through the engine,
and every decoder alone through its sans-IO API (the fast targets).

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
- direct decoder <name>.direct: the same chunks handed to a new decoder
  straight through decoders/api.py, as the engine would hand them (a
  StreamDecoder's on_data, a DatagramDecoder's on_datagram), then its
  documents built by the engine's DocumentBuilder. Two more flag bits reach
  what in-order traffic through the engine cannot: bit 2 makes the chunk a gap
  (on_gap, `length` bytes missing, no bytes follow), bit 3 moves packet time
  on by a minute and calls expire() first. Bit 4 marks a datagram `reprobed`.
  No frames, no engine, no instrumented engine code: what an input costs is
  the decoder's own work, and a new decoder per input keeps every crash
  reproducible from its file alone.
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
from wirebeat.decoders.api import Datagram, DecodeError, Expectations, FlowKey  # noqa: E402
from wirebeat.registry import discover  # noqa: E402
from wirebeat.stack import link_layers  # noqa: E402
from wirebeat.testing import ListOutput, make_engine  # noqa: E402

__all__ = ["LINKTYPES", "DirectTarget", "Target", "decoder_input", "engine_input", "make_target",
           "targets"]

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
            # A decoder on no port (RTP) is reached by its heuristic only: turned on here, or
            # its target would fuzz the engine's UDP layer and never reach the decoder.
            overrides = ({f"wirebeat.protocols.{decoder}.heuristic": True}
                         if self.spec is not None and self.spec.probe is not None and not self.spec.ports
                         else None)
            self.engine, self.pipeline, self.output, self.stats = make_engine(specs, strict=True,
                                                                              overrides=overrides)
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


DIRECT = ".direct"


class DirectTarget:
    """One decoder alone: a new decoder per input, fed through its sans-IO API.

    What the engine adds around a decoder (frames, reassembly, routing, the
    error boundary) is left out; what it does with a decoder's output is kept:
    every Transaction becomes a document through the engine's own
    DocumentBuilder (where a port past 65535 once failed). DecodeError is
    what bad input may raise (the engine counts it and goes on, so do we);
    anything else is a crash.
    """

    def __init__(self, decoder: str) -> None:
        self.name = decoder + DIRECT
        self.spec = spec = next(r.spec for r in discover() if r.spec.name == decoder)
        engine = make_engine([spec], strict=True)[0]
        routes = [*engine.routes_tcp.values(), *engine.routes_named.values(), *engine.routes_ip.values()]
        self.options = next(r.options for r in routes if r.spec is spec)
        self.build = engine.builder.build
        engine.builder.link = link_layers(g.LINKTYPE_ETHERNET, _ETH + bytes(20))
        port = spec.ports[0] if spec.ports else 9
        self.udp_flow = FlowKey("udp", CLIENT, CLIENT_PORT, SERVER, port, "fuzz")
        self.tcp_flow = FlowKey("tcp", CLIENT, CLIENT_PORT, SERVER, port, "fuzz")
        self.inputs = 0

    def __call__(self, data: bytes) -> None:
        self.inputs += 1
        spec, chunks = self.spec, _chunks(data)
        if spec.ip_protocols and not spec.ports:
            self._datagrams(chunks, icmp=True)
        elif spec.stream is None or (spec.datagram is not None and chunks and chunks[0][0] & 2):
            self._datagrams(chunks, icmp=False)
        else:
            self._stream(chunks)

    def _documents(self, txns: list | None) -> None:
        for txn in txns or ():
            try:
                self.build(self.spec, txn)
            except DecodeError as err:      # the engine counts any failure here as a crash
                raise RuntimeError("document building raised DecodeError") from err

    def _datagrams(self, chunks: list[tuple[int, int, bytes]], icmp: bool) -> None:
        spec = self.spec
        if spec.expectations:
            decoder = spec.datagram(self.options, Expectations())
        else:
            decoder = spec.datagram(self.options)
        ts = 1_700_000_000.0
        for flags, _length, chunk in chunks:
            ts += 60.0 if flags & 8 else 0.001
            if flags & 8:
                self._documents(decoder.expire(ts))
            if flags & 4:
                continue                    # datagrams have no gaps: a lost datagram
            if icmp:                        # the engine's ICMP flow: type and code as ports
                ends = (SERVER, CLIENT) if flags & 1 else (CLIENT, SERVER)
                type_code = (chunk[0], chunk[1]) if len(chunk) >= 2 else (0, 0)
                dgram = Datagram(ts, FlowKey("icmp", ends[0], type_code[0], ends[1], type_code[1],
                                             "fuzz"), True, chunk, bool(flags & 16))
            else:
                dgram = Datagram(ts, self.udp_flow, not flags & 1, chunk, bool(flags & 16))
            try:
                self._documents(decoder.on_datagram(dgram))
            except DecodeError:
                pass
        self._documents(decoder.expire(float("inf")))

    def _stream(self, chunks: list[tuple[int, int, bytes]]) -> None:
        spec = self.spec
        if spec.expectations:
            decoder = spec.stream(self.tcp_flow, self.options, Expectations())
        else:
            decoder = spec.stream(self.tcp_flow, self.options)
        ts = 1_700_000_000.0
        for flags, length, chunk in chunks:
            ts += 60.0 if flags & 8 else 0.001
            try:
                if flags & 8:
                    self._documents(decoder.expire(ts))
                if flags & 4:           # the engine reports a gap of at least one byte
                    self._documents(decoder.on_gap(not flags & 1, max(1, length), ts))
                elif chunk:             # ... and delivers no empty segment
                    self._documents(decoder.on_data(not flags & 1, chunk, ts))
            except DecodeError:
                pass
        try:            # the end of input: the engine closes the connection, no expire() after
            self._documents(decoder.on_close(ts))
        except DecodeError:
            pass


def _chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(flags, length, bytes) of <u8 flags, u16 length, bytes> chunks; a gap (flag bit 2)
    carries its length only, no bytes."""
    chunks, pos = [], 0
    while pos + 3 <= len(data) and len(chunks) < 128:
        flags, length = struct.unpack_from("!BH", data, pos)
        pos += 3
        if flags & 4:
            chunks.append((flags, length, b""))
            continue
        chunk = data[pos:pos + length]
        chunks.append((flags, len(chunk), chunk))
        pos += length
    return chunks


def make_target(name: str) -> Target | DirectTarget:
    """The target called `name`: "engine", a decoder's name, or "<decoder>.direct"."""
    if name.endswith(DIRECT):
        return DirectTarget(name[:-len(DIRECT)])
    return Target(name, None if name == "engine" else name)


def targets() -> list[str]:
    decoders = [r.spec.name for r in discover()]
    return ["engine", *decoders, *(name + DIRECT for name in decoders)]
