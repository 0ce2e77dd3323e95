"""Several cores: `--workers N` decodes in N worker processes, sharded by flow.

The main process stays the reader and the one output stage. For every frame
it parses just enough to hash (link layer, VLAN/MPLS/PPPoE, the outermost
IPv4/IPv6 address pair) and hands the frame to worker
`crc32(capture source, unordered address pair) % N`, so both directions of a
conversation and every fragment of a datagram meet in one worker. Non-IP
frames (ARP ...) and frames too short to hash go to worker 0. Tunnels are
hashed on the OUTER pair: everything one tunnel carries lands in one worker
(an inner conversation is keyed by inner addresses, and stays together as
long as one tunnel carries it, the usual case; one inner conversation carried
by two different tunnel endpoint pairs would be split).

Each worker is forked from the main process once it has read its
configuration (every module is already imported, what decoders load late too,
nothing is pickled to start it), runs the ordinary `Engine` (decoders, TCP
reassembly, flows, processors) and serialises its documents with orjson; flow
reports and per-packet documents are made as JSON text there, as one process
makes them for an orjson output. Frames travel in batches of up to
`BATCH_FRAMES` through a pipe per worker, as runs of records (`_record`:
fixed-size heads and the frames' bytes, so a batch is a few buffers, not
objects per frame), written with writev beside a small pickle of the rest
(`_message`: the buffers out of band) and read into one reused buffer; the
worker collects a run's frames into batches for its engine in C (`feed`).
Documents come back as NDJSON blocks (`_Sink`: text, ids, count, as
`Pipeline.publish_block` takes them), which the main process publishes whole
to its one `Pipeline`: no object per frame or per document crosses the pipe.
With a plain console (NDJSON on a descriptor) and files as the only inputs, the
workers write their blocks to the console themselves instead (`_DirectWriter`,
through their copy of the main process's ConsoleOutput, each block whole under
a POSIX lock that the main process's output takes too for its own documents)
and report only how many they made and wrote, which the main pipeline counts
(`Pipeline.written_elsewhere`): the documents no longer cross a pipe, nor are
they copied in the main process. Elasticsearch, the file output, a pretty
console, the disk queue and live sources keep the one output stage.
A file's frames are routed a reader batch at a time (`on_batch`):
`shard` (C in wirebeat._workcore when built, else `shard_python`, the
reference) routes plain Ethernet IPv4/IPv6 frames, keeps the packet clock
and numbers the frames without a Python call per frame; any other frame goes
through `_route` in Python.

A capture file read with -I is mapped in memory before the workers are forked
(`_Mapped`), when it is a classic pcap file: the run loop then reads it through
`WorkerPool.file_batches` as spans of records, each checked whole and undamaged
just before (`pcap_extent`, the reader's own checks), which `shard_map` (C)
routes straight from the mapping, and a frame travels to its
worker as its offset in the file ("map" records), not as a copy through the
pipe: the main process makes no object per frame and copies no frame. Each
process gives back the pages it has read past (madvise), so none keeps the
file resident. Files given as stdin, pcapng files, the rest of a file from its
first damaged or truncated record on (`CaptureReader.resume_pcap`) and files
that changed size since they were opened are read by the reader as before, and
so are ZeroMQ and live sources (`on_batch`, `on_frame`). A file
cut shorter while it is being read is not supported with workers (the mapping
faults); one that grows is read to the size it had at the start.

Results do not depend on N (tests/integration/test_workers_identical.py):
- `_id`s are made from content (source, flow, time, identity), never from
  which process made them; per-packet documents are numbered by the reader
  (the frame's number in its source) and the worker uses that number;
- packet time: the engine checks timeouts when a packet of a source is at
  least a second past the last check. The reader keeps that clock per source
  and sends every worker a tick at exactly the frame that moves it, so every
  worker expires transactions and reports flows at the same packet times as
  one engine would (`_Clock`); end of a file and idle-source ticks go to all.
- in-band announcements (SIP's SDP names the RTP address; the media flow may
  hash to another worker than the signalling): every frame a decoder with
  `expectations` and no probe (the announcers: SIP) is routed to by port, and
  every IP fragment, is also sent to every other worker as a shadow. A
  worker feeds shadows to a second, silent engine that shares the worker's
  announcer decoder and Expectations table: each worker reads every
  announcement, in capture order, before the media behind it, and only the
  owner of the flow publishes its documents.

Stopping: `finish()` (the end of input, or SIGTERM through the run loop)
sends every worker the end of input and waits until each has published
everything and its last counters. Workers ignore SIGINT/SIGTERM themselves
(the main process decides) and exit when their input pipe closes. A worker
that dies (killed, crashed) is logged, restarted with an empty state, and the
frames it had not acknowledged are counted (`workers.frames_lost`), never
silent. Counters of all workers are summed into the one stats view.

With `wirebeat.workers: 1` (the default) none of this runs: the engine
decodes in the main process as before.
"""
from __future__ import annotations

import fcntl
import importlib
import mmap
import os
import pickle
import signal
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib
from typing import Any

import orjson

from wirebeat import logs
from wirebeat.accel import workcore
from wirebeat.config import Config
from wirebeat.document import DocumentBuilder
from wirebeat.engine import TICK_S, Engine, quiet_collector
from wirebeat.link import ETHERTYPE_IPV4, ETHERTYPE_IPV6, locate_network
from wirebeat.outputs import ConsoleOutput
from wirebeat.pipeline import BLOCK_MAX_BYTES, Block, OutputStopped, Pipeline
from wirebeat.registry import Registered
from wirebeat.sources.pcapfile import FormatError, parse_pcap_header
from wirebeat.stats import Stats
from wirebeat.tunnels import LINK_SHIMS, MAX_DEPTH, TUNNEL_PORTS, decapsulate, peel_link

__all__ = ["WorkerPool", "announcer_ports", "feed", "feed_python", "make_engine", "shard",
           "shard_python"]

log = logs.get("workers")

BATCH_FRAMES = 1024         # frames per hand-over to a worker (fewer wake-ups than 256)
PIPE_BYTES = 1 << 20        # pipe buffer asked for (Linux F_SETPIPE_SZ)
STATS_EVERY_S = 2.0         # a worker sends its counters at most this often (a snapshot walks its flow table)
FINISH_TIMEOUT_S = 600.0    # end of input: longest wait for a worker's last documents
_F_SETPIPE_SZ = 1031
_HEAD_MSG = struct.Struct("!II")   # a message: its pickle's length, its out-of-band buffers
_crc32 = zlib.crc32
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_PORTS = struct.Struct("!HH")
_V6_EXTENSIONS = frozenset({0, 43, 60})     # hop-by-hop, routing, destination options
_V6_NOT_PLAIN = _V6_EXTENSIONS | {44}       # ... and a fragment header
# Counters every worker holds for the whole input (not a share of it): shown once, not summed.
_NOT_SUMMED = ("sources.open", "sources.evicted")
_TUNNEL_DPORTS = frozenset(int.from_bytes(port, "big") for port in TUNNEL_PORTS)
# Late imports (DecoderSpec.lazy_imports) not made before the fork: a worker makes them
# when its traffic needs them, as one process does. TLS's x509 module (cryptography,
# ~30 ms) reads certificates, which TLS 1.3 encrypts: most traffic never needs it, and
# importing it before the fork kept both cores waiting. `run --user` imports every late
# import before its privilege drop anyway (cli.py), so the workers inherit it then.
_LEFT_TO_WORKERS = frozenset({"wirebeat.decoders.tls_x509"})


def make_engine(config: Config, enabled: list[Registered], builder: DocumentBuilder,
                pipeline: Pipeline, stats: Stats, strict: bool = False,
                flowless: list[str] = (), files: list = ()) -> Engine | WorkerPool:  # type: ignore[assignment]
    """The engine for `wirebeat run`: in this process, or a pool of `wirebeat.workers`.
    `flowless`: sources that get no packet flows (NetFlow listeners); `files`: the
    capture files' readers (CaptureReader), opened already (see WorkerPool.file_batches)."""
    if config["wirebeat.workers"] <= 1:
        engine = Engine(config, enabled, builder, pipeline, stats, strict=strict)
        engine.flowless_sources.update(flowless)
        return engine
    return WorkerPool(config, enabled, builder, pipeline, stats, strict, flowless, files)


def announcer_ports(config: Config, enabled: list[Registered]) -> tuple[set[int], list[str]]:
    """Ports and names of the decoders that announce flows in-band (SIP): they use
    Expectations and have no probe (RTP, which reads announcements, has one)."""
    ports: set[int] = set()
    names = []
    for r in enabled:
        if r.spec.expectations and r.spec.probe is None:
            names.append(r.spec.name)
            ports.update(config.values.get(f"wirebeat.protocols.{r.spec.name}.ports", ()))
    return ports, names


# -- framing over raw pipes -----------------------------------------------------

def _message(obj: Any) -> list[memoryview]:
    """`obj` pickled, its large buffers (wrapped in `pickle.PickleBuffer`: a run's heads and
    frames, a reply's blocks) out of band, as pieces for `os.writev`: the pickle's length
    and the buffers' count (`_HEAD_MSG`), the buffers' lengths and the pickle, then each
    buffer as it is. Pickling a 1 MiB buffer in-band cost about ten times copying it
    (the pickler's output grows in steps), on both sides of every pipe."""
    buffers: list[pickle.PickleBuffer] = []
    body = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    lengths = struct.pack(f"!{len(views)}I", *[len(v) for v in views])
    return [memoryview(_HEAD_MSG.pack(len(body), len(views))), memoryview(lengths + body),
            *[v for v in views if len(v)]]


def _out_of_band(entry: Any) -> Any:
    """A pending entry with a run's buffers wrapped to travel out of band (`_message`)."""
    if entry.__class__ is not list:
        return entry
    raw, source, heads, blob, before = entry
    return [raw, source, pickle.PickleBuffer(heads), pickle.PickleBuffer(blob), before]


def _written(pieces: list[memoryview], n: int) -> None:
    """Drop the first `n` bytes of `pieces` (what `os.writev` took, or `os.readv` filled)."""
    while n:
        first = pieces[0]
        if len(first) > n:
            pieces[0] = first[n:]
            return
        n -= len(first)
        del pieces[0]


def _write_all(fd: int, pieces: list[memoryview]) -> None:
    while pieces:
        _written(pieces, os.writev(fd, pieces))


class _Reader:
    """Messages from a pipe (`_message`), each part read straight into place (not in
    pipe-sized chunks joined afterwards): the out-of-band buffers are the objects the
    message holds (views), not copied once more by the unpickler."""

    __slots__ = ("fd", "head", "meta", "pool", "buffers", "want", "stage")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.head = bytearray(_HEAD_MSG.size)
        self.meta = bytearray()         # the buffers' lengths and the pickle
        # The out-of-band buffers are read into one buffer, reused from message to
        # message (fresh 1 MiB buffers cost a page fault per 4 KiB each time): a message's
        # buffers are views of it, valid until the next message is read (the worker
        # decodes a batch before reading on; the reader makes replies bytes at once).
        self.pool = bytearray()
        self.buffers: list[memoryview] = []
        self.want = [memoryview(self.head)]     # what is still to be read of this part
        self.stage = 0                  # 0: head, 1: lengths and pickle, 2: buffers

    def read(self) -> Any:
        """The next whole message; `_Reader.WAIT` when a non-blocking pipe has no more
        for now; None at the end of the pipe."""
        while True:
            while self.want:
                try:
                    n = os.readv(self.fd, self.want)
                except BlockingIOError:
                    return _Reader.WAIT
                except OSError:
                    n = 0
                if not n:
                    return None
                _written(self.want, n)
            if self.stage == 0:
                size, count = _HEAD_MSG.unpack(self.head)
                self.meta = bytearray(4 * count + size)
                self.want = [memoryview(self.meta)]
                self.stage = 1
            elif self.stage == 1:
                count = _HEAD_MSG.unpack(self.head)[1]
                lengths = struct.unpack_from(f"!{count}I", self.meta)
                total = sum(lengths)
                if len(self.pool) < total:
                    # A new one, never a resize: views of the last message may still exist.
                    self.pool = bytearray(total + (total >> 2))
                view = memoryview(self.pool)
                self.buffers, off = [], 0
                for n in lengths:
                    self.buffers.append(view[off:off + n])
                    off += n
                self.want = [view[:total]] if total else []
                self.stage = 2
            else:
                count = len(self.buffers)
                body, buffers = memoryview(self.meta)[4 * count:], self.buffers
                self.meta, self.buffers = bytearray(), []
                self.want = [memoryview(self.head)]
                self.stage = 0
                with body:
                    return pickle.loads(body, buffers=buffers)

    WAIT: Any = object()


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass            # over /proc/sys/fs/pipe-max-size: the default works, just more round trips


# -- the reader's side ----------------------------------------------------------

def _locate_ip(linktype: int, data: bytes) -> tuple[bytes, bytes, int, int, bool] | None:
    """(src, dst, protocol, transport offset, is a fragment) of the outermost IP packet."""
    if linktype == 1 and data[12:14] == b"\x08\x00":
        ethertype, off = ETHERTYPE_IPV4, 14          # plain Ethernet + IPv4: most traffic
    else:
        located = locate_network(linktype, data)
        if located.__class__ is str:
            return None
        ethertype, off, _vlans = located
        if ethertype in LINK_SHIMS:
            peeled = peel_link(ethertype, data, off)
            if peeled.__class__ is str:
                return None
            ethertype, off, _layers = peeled
    if ethertype == ETHERTYPE_IPV4:
        if len(data) < off + 20:
            return None
        fragment = bool((data[off + 6] & 0x3F) or data[off + 7])     # MF or an offset
        return (data[off + 12:off + 16], data[off + 16:off + 20], data[off + 9],
                off + (data[off] & 0x0F) * 4, fragment)
    if ethertype == ETHERTYPE_IPV6:
        if len(data) < off + 40:
            return None
        proto, l4 = data[off + 6], off + 40
        while proto in _V6_EXTENSIONS and len(data) >= l4 + 2:
            proto, l4 = data[l4], l4 + (data[l4 + 1] + 1) * 8
        return data[off + 8:off + 24], data[off + 24:off + 40], proto, l4, proto == 44
    return None


def _plain_route(linktype: int, data: bytes, crc: int, n: int,
                 announce: set[int] | None, tunnel_ports: frozenset[int]) -> tuple[int, bool] | None:
    """(worker index, also a shadow) of plain Ethernet + IPv4, or IPv6 without extension
    headers (most traffic), or ARP (worker 0); None for anything else, or a tunnel that may carry an
    announcement: `WorkerPool._route` decides those."""
    if linktype == 1 and len(data) >= 38 and data[12] == 8 and data[13] == 0:
        src, dst = data[26:30], data[30:34]
        proto, l4 = data[23], 14 + (data[14] & 0x0F) * 4
        fragment = data[20] & 0x3F or data[21]
    elif linktype == 1 and len(data) >= 54 and data[12] == 0x86 and data[13] == 0xDD \
            and data[20] not in _V6_NOT_PLAIN:
        src, dst = data[22:38], data[38:54]
        proto, l4, fragment = data[20], 54, 0
    elif linktype == 1 and len(data) >= 14 and data[12] == 8 and data[13] == 6:
        return 0, False                     # ARP: not IP, worker 0 (as `_route`); no Python call each
    else:
        return None
    index = _crc32(src + dst if src < dst else dst + src, crc) % n
    if not announce:
        return index, False
    if fragment:
        return index, True                  # a fragment: it may be part of an announcement
    if proto == 17 or proto == 6:
        if len(data) >= l4 + 4:
            sport, dport = _PORTS.unpack_from(data, l4)
            if sport in announce or dport in announce:
                return index, True
            if proto == 17 and dport in tunnel_ports:
                return None                 # does the tunnel carry an announcement?
        return index, False
    return None if proto == 47 else (index, False)


# -- frames as records -------------------------------------------------------------
#
# A worker's pending list holds runs: ["raw", source, heads, blob, before], one run per
# stretch of one source's frames (`before`: the entries and records ahead of the run in
# the list, so that `_size` is exact without walking the list). `heads` is a bytearray of `_HEAD` records (ts, number,
# linktype, length), `blob` the frames' bytes one after another. number >= 0: a frame
# (its number in its source), SHADOW: a shadow copy, TICK: the packet clock's tick at
# that frame. Pickling a run is copying two buffers, not one tuple, float, int and
# bytes object per frame; the worker reads the heads with `_HEAD.iter_unpack`. Other
# entries (finish, done, a frame a live source gave in a form no record holds) stay
# tuples, as before.

_HEAD = struct.Struct("<dqII")      # ts, number, linktype, length: 24 bytes
_MAP_AT = struct.Struct("<Q")       # a "map" record's frame: its offset in the mapped file
SHADOW = -1
TICK = -2


def _record(pending: list, source: str, ts: float, linktype: int, data: bytes, number: int,
            offset: int = -1) -> None:
    """Append one record to `pending`'s run of `source` (a new run when the last entry
    is not one of this kind and source). offset < 0: a "raw" run, which holds the
    frame's bytes; else a "map" run, which holds the frame's offset in the source's
    mapped capture file (`_MAP_AT`: see WorkerPool.file_batches)."""
    kind = "raw" if offset < 0 else "map"
    run = pending[-1] if pending else None
    if run.__class__ is not list or run[0] != kind or run[1] != source:
        run = [kind, source, bytearray(), bytearray(), _size(pending, 1 << 62)]
        pending.append(run)
    run[2] += _HEAD.pack(ts, number, linktype, len(data))
    run[3] += data if offset < 0 else _MAP_AT.pack(offset)


def _fits(ts: Any, linktype: Any, data: Any) -> bool:
    """Whether a frame can be a record (readers always give these; a live source's odd
    frame travels as a tuple)."""
    return (ts.__class__ is float and linktype.__class__ is int and 0 <= linktype <= 0xFFFFFFFF
            and data.__class__ is bytes)


def _size(pending: list, enough: int = BATCH_FRAMES) -> int:
    """Entries in a pending list, every record of its runs counted (or at least `enough`
    when there are that many entries after its last run)."""
    k, extra = len(pending), 0
    while k and pending[k - 1].__class__ is not list:
        k -= 1
        extra += 1
        if extra >= enough:
            return extra
    if not k:
        return extra
    run = pending[k - 1]
    return run[4] + len(run[2]) // _HEAD.size + extra


def _entries(pending: list, maps: dict[str, Any] | None = None) -> list[tuple]:
    """A pending list as tuples: (ts, linktype, data, source, number) for frames and
    shadows (number SHADOW), ("tick", source, ts, linktype, data), the rest as it is.
    `maps`: the mapped capture files by source, for "map" runs."""
    out: list[tuple] = []
    for entry in pending:
        if entry.__class__ is not list:
            out.append(entry)
            continue
        kind, source, heads, blob, _before = entry
        off = 0
        ats = _MAP_AT.iter_unpack(blob) if kind == "map" else None
        if ats is not None:
            assert maps is not None
            blob = maps[source]
        for ts, number, linktype, length in _HEAD.iter_unpack(heads):
            if ats is not None:
                off = next(ats)[0]
            data = bytes(blob[off:off + length])
            off += length
            out.append(("tick", source, ts, linktype, data) if number == TICK
                       else (ts, linktype, data, source, number))
    return out


def _owned(pending: list) -> int:
    """Frames in a pending list that its worker is to decode (not shadows, ticks, ends)."""
    owned = 0
    for entry in pending:
        if entry.__class__ is list:
            owned += sum(1 for _ts, number, _lt, _len in _HEAD.iter_unpack(entry[2]) if number >= 0)
        elif entry[0].__class__ is not str and entry[4] >= 0:
            owned += 1
    return owned


def shard_python(batch: list[tuple] | tuple, start: int, source: str, crc: int,
                 pendings: list[list], limit: int, next_tick: float, now: float,
                 frames: int, announce: set[int] | None, tunnel_ports: frozenset[int],
                 tick_s: float) -> tuple[int, bool, float, float, int, list[int]]:
    """Hand `batch[start:]` (frames of `source`) to the workers' pending lists, as
    `WorkerPool._route_one` does frame by frame: the packet clock's ticks to every list,
    each frame to its worker's (its number in the source), a shadow copy to the others',
    all as records (`_record`). Stops after a frame that fills a list to `limit`
    (`_size`), and before a frame that is not plain (`_plain_route`: slow is True).
    Returns (stop, slow, next_tick, now, frames, frames given to each list).
    wirebeat._workcore.shard is this in C (tests/beat/test_workcore.py)."""
    n = len(pendings)
    counts = [0] * n
    i, end = start, len(batch)
    while i < end:
        item = batch[i]
        if item.__class__ is not tuple or len(item) < 3:
            return i, True, next_tick, now, frames, counts
        ts, linktype, data = item[0], item[1], item[2]
        if ts.__class__ is not float or linktype.__class__ is not int or data.__class__ is not bytes:
            return i, True, next_tick, now, frames, counts
        route = _plain_route(linktype, data, crc, n, announce, tunnel_ports)
        if route is None:
            return i, True, next_tick, now, frames, counts
        i += 1
        full, next_tick, now = _place(pendings, source, ts, linktype, data, -1, route, next_tick, now,
                                      frames, counts, limit, tick_s)
        frames += 1
        if full:
            break
    return i, False, next_tick, now, frames, counts


def _place(pendings: list[list], source: str, ts: float, linktype: int, data: bytes, offset: int,
           route: tuple[int, bool], next_tick: float, now: float, number: int, counts: list[int],
           limit: int, tick_s: float) -> tuple[bool, float, float]:
    """What both shards do with a plain frame: the packet clock's tick to every list,
    the frame to its worker's (numbered `number`), a shadow copy to the others'.
    (a list it touched is full, next_tick, now)."""
    index, shadow = route
    full = False
    if ts >= next_tick:
        next_tick, now = ts + tick_s, ts
        for pending in pendings:
            _record(pending, source, ts, linktype, data, TICK, offset)
        full = True
    _record(pendings[index], source, ts, linktype, data, number, offset)
    counts[index] += 1
    if shadow:
        for k, pending in enumerate(pendings):
            if k != index:
                _record(pending, source, ts, linktype, data, SHADOW, offset)
        full = True
    full = full and any(_size(pending, limit) >= limit for pending in pendings) \
        or _size(pendings[index], limit) >= limit
    return full, next_tick, now


def pcap_extent_python(buf: Any, pos: int, little: bool, max_caplen: int, frac_max: int,
                       max_count: int) -> tuple[int, int]:
    """How far classic pcap records run whole and undamaged in `buf` from `pos`, up to
    `max_count` of them, by the reader's own checks (pcapfile's pcap_records: caplen
    within max_caplen, the fraction below frac_max, the record inside the buffer):
    (the end, records). wirebeat._workcore.pcap_extent is this in C."""
    unpack = (_RECORD_LE if little else _RECORD_BE).unpack_from
    count, end = 0, len(buf)
    while pos <= end - 16 and count < max_count:
        _sec, frac, caplen, _wire = unpack(buf, pos)
        if caplen > max_caplen or frac >= frac_max or caplen > end - pos - 16:
            break
        pos += 16 + caplen
        count += 1
    return pos, count


_RECORD_LE, _RECORD_BE = struct.Struct("<IIII"), struct.Struct(">IIII")


def shard_map_python(buf: Any, pos: int, count: int, little: bool, scale: float, linktype: int,
                     source: str, crc: int, pendings: list[list], limit: int, next_tick: float,
                     now: float, frames: int, announce: set[int] | None, tunnel_ports: frozenset[int],
                     tick_s: float) -> tuple[int, int, bool, float, float, int, list[int]]:
    """`shard_python` for a classic pcap file mapped in memory whose records
    `pcap_extent` found whole: up to `count` records from `pos` go to the lists as "map"
    records (the frame's offset in the file, not its bytes). Stops after a record that
    fills a list, and before one that is not plain (slow: the pool routes it).
    Returns (pos, records placed, the last one's position or -1, slow, next_tick, now,
    frames, counts). wirebeat._workcore.shard_map is this in C."""
    unpack = (_RECORD_LE if little else _RECORD_BE).unpack_from
    n = len(pendings)
    counts = [0] * n
    done, last = 0, -1
    while done < count:
        if pos > len(buf) - 16:
            raise ValueError("fewer records than counted")
        sec, frac, caplen, _wire = unpack(buf, pos)
        if caplen > len(buf) - pos - 16:
            raise ValueError("a record runs past the end")
        data = bytes(buf[pos + 16:pos + 16 + caplen])
        route = _plain_route(linktype, data, crc, n, announce, tunnel_ports) if linktype == 1 else None
        if route is None:
            return pos, done, last, True, next_tick, now, frames, counts
        ts = sec + frac * scale
        full, next_tick, now = _place(pendings, source, ts, linktype, data, pos + 16, route, next_tick,
                                      now, frames, counts, limit, tick_s)
        frames += 1
        last = pos
        pos += 16 + caplen
        done += 1
        if full:
            break
    return pos, done, last, False, next_tick, now, frames, counts


shard = workcore.shard if workcore is not None else shard_python
pcap_extent = workcore.pcap_extent if workcore is not None else pcap_extent_python
shard_map = workcore.shard_map if workcore is not None else shard_map_python


def feed_python(heads: bytes | bytearray, blob: Any, source: str, on_frame: Any,
                number_state: Any, shadow: Any, tick: Any, offsets: Any = None) -> int:
    """A worker feeds one run of records (`_record`) to its engine: on_frame(ts, linktype,
    data, source) for a frame (after number_state(source)[0] = its number, unless
    number_state is None: per-packet documents are numbered as the reader counted),
    shadow(...) for a shadow copy, tick(source, ts, linktype, data) for a tick. The
    frames fed to on_frame. When on_frame is a list, each frame is appended to it as
    (ts, linktype, data, 0) instead: a batch for `Engine.on_batch` (number_state must be
    None then). `offsets`: a "map" run's (`_record`): `blob` is the mapped file and each
    frame is at its offset there. wirebeat._workcore.feed is this in C."""
    if len(heads) % _HEAD.size or offsets is not None and len(offsets) != len(heads) // _HEAD.size * 8:
        raise ValueError("a run's heads are not whole records")
    ats = None if offsets is None else _MAP_AT.iter_unpack(offsets)
    collect = on_frame.append if on_frame.__class__ is list else None
    if collect is not None and number_state is not None:
        raise ValueError("frames collected in a list carry no number state")
    if ats is None:
        blob = bytes(blob)      # slices of an mmap (a "map" run's blob) are bytes already
    count = off = 0
    for ts, number, linktype, length in _HEAD.iter_unpack(heads):
        if ats is not None:
            off = next(ats)[0]
            if off > len(blob):
                raise ValueError("a record's offset is past the mapped file")
        if length > len(blob) - off:
            raise ValueError("a record is longer than the run's frames")
        end = off + length
        data = blob[off:end]
        off = end
        if number >= 0:
            if collect is not None:
                collect((ts, linktype, data, 0))
                count += 1
                continue
            if number_state is not None:
                number_state(source)[0] = number
            on_frame(ts, linktype, data, source)
            count += 1
        elif number == SHADOW:
            shadow(ts, linktype, data, source)
        else:
            tick(source, ts, linktype, data)
    return count


feed = workcore.feed if workcore is not None else feed_python


class _Clock:
    """One source's packet clock as the engine keeps it: when it ticks, every worker must."""

    __slots__ = ("next_tick", "now", "crc", "frames")

    def __init__(self, source: str, frames: int) -> None:
        self.next_tick = 0.0
        self.now = 0.0
        self.crc = zlib.crc32(source.encode())
        self.frames = frames        # frames of the source so far: per-packet documents' numbers


class _Mapped:
    """A classic pcap capture file mapped read-only in memory: mapped before the workers
    are forked, so every worker (and every restarted one) shares the mapping, and a frame
    travels to its worker as its offset in the file (a "map" record), not as a copy of
    its bytes through the pipe. Its records are checked (`pcap_extent`) a span at a time
    as they are routed (`WorkerPool.file_batches`), not all before the fork."""

    __slots__ = ("map", "little", "scale", "linktype", "max_caplen", "frac_max", "pos", "dropped",
                 "reader")

    def __init__(self, data: mmap.mmap, header: Any) -> None:
        self.map = data
        self.little = header.order == "<"
        self.scale = header.scale
        self.linktype = header.linktype
        self.max_caplen = header.max_caplen
        self.frac_max = header.frac_max
        self.pos = 24               # the next record to route (the main process's)
        self.dropped = 0            # pages below this are given back (`release`)
        self.reader: Any = None

    def release(self, upto: int) -> None:
        """Give back the pages below `upto` (they stay in the page cache): what a process
        read of the file does not stay in its resident memory for the whole run."""
        upto &= ~(mmap.PAGESIZE - 1)
        if upto - self.dropped >= _RELEASE_BYTES:
            try:
                self.map.madvise(mmap.MADV_DONTNEED, self.dropped, upto - self.dropped)
            except (OSError, ValueError, AttributeError):
                pass            # no madvise here: the pages stay mapped, nothing else changes
            self.dropped = upto

    def frame(self, pos: int) -> tuple[float, int, bytes]:
        """(ts, linktype, data) of the record at `pos`, as the reader makes them."""
        sec, frac, caplen, _wire = (_RECORD_LE if self.little else _RECORD_BE).unpack_from(self.map, pos)
        return sec + frac * self.scale, self.linktype, self.map[pos + 16:pos + 16 + caplen]

    def extent(self, pos: int, count: int) -> tuple[int, int]:
        """(end, records): how far up to `count` records from `pos` run whole and undamaged."""
        return pcap_extent(self.map, pos, self.little, self.max_caplen, self.frac_max, count)

    def seconds_before(self, start: int, pos: int) -> int | None:
        """The seconds of the record that ends at `pos`, walking whole records from
        `start` (a record's start at or before it); None when pos is `start`."""
        last = None
        while start < pos:
            last = start
            start = self.extent(start, 1)[0]
        if last is None:
            return None
        return (_RECORD_LE if self.little else _RECORD_BE).unpack_from(self.map, last)[0]


_RELEASE_BYTES = 4 << 20       # pages are given back this many bytes at a time


def _map_capture(reader: Any) -> _Mapped | None:
    """The reader's file as a `_Mapped`, when it is a classic pcap file on disk; None for
    anything else (stdin, pcapng: the reader reads those, as with one process). Its
    records are not read here: that is serial time before the fork (a file's worth of
    page faults); `file_batches` checks them a span at a time, and leaves the rest of
    the file to the reader from a damaged or truncated record on."""
    if reader.name == "-" or getattr(reader, "pcap_header", None) is None:
        return None
    try:
        data = mmap.mmap(reader.fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, AttributeError):
        return None             # empty, not a regular file, not a real descriptor ...
    try:
        header = parse_pcap_header(data[:24])
    except FormatError:
        data.close()
        return None
    return _Mapped(data, header)


class _Span:
    """`count` records of a mapped file (`_Mapped`) from byte `pos`, checked whole: what
    WorkerPool.file_batches gives the run loop in place of a batch of frames."""

    __slots__ = ("mapped", "pos", "count")

    def __init__(self, mapped: _Mapped, pos: int, count: int) -> None:
        self.mapped = mapped
        self.pos = pos
        self.count = count

    def __len__(self) -> int:
        return self.count


class _Process:
    """A forked worker process, as much of `subprocess.Popen` as the pool uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.cpu_s = 0.0        # user + system CPU seconds, once it has exited

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -signal.SIGKILL       # reaped elsewhere: gone
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_s = usage.ru_utime + usage.ru_stime
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class _Worker:
    """The main process's handle on one worker process."""

    def __init__(self, index: int, setup: dict[str, Any]) -> None:
        self.index = index
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        for fd in (in_w, out_w):
            _grow_pipe(fd)
        # Forked, not started afresh: the worker has every module the reader imported
        # (a new interpreter spent ~0.35 CPU-s importing them again) and takes its set-up
        # as it is, without pickling.
        pid = os.fork()
        if pid == 0:
            _forked(in_r, out_w, setup)     # never returns
        os.close(in_r)
        os.close(out_w)
        self.proc = _Process(pid)
        self.fd_in, self.fd_out = in_w, out_r
        os.set_blocking(self.fd_in, False)
        os.set_blocking(self.fd_out, False)
        self.outbox: list[memoryview] = []     # messages not yet in the pipe
        self.inbox = _Reader(self.fd_out)
        self.pending: list = []     # runs of records and tuples (see `_record`)
        self.sent = 0               # frames handed over (not counting shadows)
        self.acked = 0              # frames the worker said it decoded
        self.published = 0          # documents it made and wrote to the output itself ...
        self.written = 0            # ... and those the output took (WorkerPool.direct)
        self.counters: dict[str, Any] = {}
        self.done = False
        self.dead = False

    def close(self) -> None:
        for fd in (self.fd_in, self.fd_out):
            try:
                os.close(fd)
            except OSError:
                pass


class WorkerPool:
    """Stands in for `Engine` in the run loop: on_frame, advance, finish, packets."""

    def __init__(self, config: Config, enabled: list[Registered], builder: DocumentBuilder,
                 pipeline: Pipeline, stats: Stats, strict: bool = False,
                 flowless: list[str] = (), files: list = ()) -> None:  # type: ignore[assignment]
        self.n = config["wirebeat.workers"]
        self.pipeline = pipeline
        self.stats = stats
        self.max_sources = config["wirebeat.limits.max_sources"]
        self.tunnels = config["wirebeat.tunnels.enabled"]
        self.announce, names = announcer_ports(config, enabled)
        # Counters of what every worker reads in full (the announcers' datagram decoders
        # and the Expectations they fill): each worker's figure is the one-process figure,
        # so they are shown once (the largest), not summed N times.
        self.whole = ("expectations.",) + tuple(f"decoder.{name}." for name in names)
        # Outputs that serialise with orjson (console, file, Elasticsearch's bulk body)
        # take a Fragment: the document goes out as the worker serialised it. Others
        # (a pretty console) get the document back as a dict.
        self.raw = getattr(getattr(pipeline, "output", None), "accepts_fragments", False)
        # Outputs that write NDJSON text as it is (and no disk queue) take a worker's
        # blocks whole (Pipeline.publish_block).
        self.publish_block = getattr(pipeline, "publish_block", None)
        # A console of NDJSON lines on a descriptor, when the inputs can wait (files): the
        # workers write their blocks to it themselves, under a POSIX lock the main
        # process's output takes too (`_write_direct`), and report only how many; no
        # document crosses a pipe or is copied in the main process.
        self.direct = self._direct_output(pipeline)
        # Capture files mapped before the fork: the workers read frames there (file_batches).
        self.maps: dict[str, _Mapped] = {}
        for reader in files:
            mapped = _map_capture(reader)
            if mapped is not None and reader.name not in self.maps:
                self.maps[reader.name] = mapped
        self.setup = {"config": config, "enabled": list(enabled),
                      "per_source": dict(builder.per_source), "strict": strict,
                      "flowless": list(flowless), "batch_size": getattr(pipeline, "batch_size", 1024),
                      "maps": self.maps, "direct": self.direct}
        self.clocks: dict[str, _Clock] = {}
        self.numbers: dict[str, int] = {}      # frames of finished sources, for per-packet ids
        self.last: tuple = (0.0, 0, b"", "", 0)     # the newest frame handed over
        self.packets = 0
        self.crashed = 0
        self.frames_lost = 0
        self.retired: dict[str, int] = {}      # counters of workers that died
        self.finished = False
        # What decoders load on first use (DNS's public suffix list: ~0.3 s) is loaded here,
        # once, and inherited by every worker at the fork, rather than loaded by each.
        for r in enabled:
            for module in r.spec.lazy_imports:
                if module not in _LEFT_TO_WORKERS:
                    importlib.import_module(module)
        self.workers = [_Worker(i, self.setup) for i in range(self.n)]
        stats.add_source(self.counters)
        log.info("workers started", workers=self.n, pids=[w.proc.pid for w in self.workers])

    def _direct_output(self, pipeline: Any) -> tuple[int, int, ConsoleOutput] | None:
        """(the console's descriptor, the lock's, the output) when the workers are to write
        the console's lines themselves: a console that takes blocks (not pretty), no disk queue, and a
        pipeline that blocks when full (files only: with live sources a full queue drops
        and counts, which a worker writing itself would turn into waiting)."""
        output = getattr(pipeline, "output", None)
        if not (isinstance(output, ConsoleOutput) and output.accepts_blocks and self.publish_block is not None
                and getattr(pipeline, "block_when_full", False)):
            return None
        try:
            fd = output.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return None         # a stream without a descriptor (tests' BytesIO): relayed
        self._lock_file = tempfile.TemporaryFile(prefix="wirebeat-console-lock-")
        output.lock_fd = self._lock_file.fileno()
        return fd, output.lock_fd, output

    # -- counters ------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = dict(self.retired)
        for worker in self.workers:
            for key, value in worker.counters.items():
                if key in _NOT_SUMMED or key.startswith(self.whole):
                    out[key] = max(out.get(key, 0), value)
                else:
                    out[key] = out.get(key, 0) + value
            # Fresher than the snapshot: every reply says how many frames were decoded.
            out["packets.read"] = out.get("packets.read", 0) + worker.acked - \
                worker.counters.get("packets.read", 0)
        out["workers.crashed"] = self.crashed
        out["workers.frames_lost"] = self.frames_lost
        return out

    def summary(self) -> str:
        """For the run's summary line: only when something went wrong."""
        if not self.crashed:
            return ""
        return (f"{self.crashed} worker(s) died and were restarted, {self.frames_lost} frames "
                f"lost with them")

    # -- frames in -----------------------------------------------------------

    def on_frame(self, ts: float, linktype: int, data: bytes, source: str) -> None:
        self.on_batch(((ts, linktype, data, 0),), source)

    def file_batches(self, reader: Any) -> Any:
        """What the run loop reads a capture file as: the reader's batches, or, for a file
        mapped at the start (`_Mapped`) that has not changed size since, `_Span`s of its
        records (as many as a reader's batch, each checked whole by `pcap_extent` just
        before), which `on_batch` routes by offset. From a damaged or truncated record
        on, the reader reads the rest (`resume_pcap`), as it reads such a file whole."""
        mapped = self.maps.get(reader.name)
        try:
            same = mapped is not None and os.fstat(reader.fh.fileno()).st_size == len(mapped.map)
        except (OSError, ValueError, AttributeError):
            same = False
        if not same or mapped.pos != 24:     # changed, or given twice: read as it is now
            yield from reader.batches()
            return
        mapped.reader = reader
        pos, size, start = 24, len(mapped.map), 24
        while pos < size:
            end, count = mapped.extent(pos, BATCH_FRAMES)
            if not count:
                break
            yield _Span(mapped, pos, count)
            start, pos = pos, end
        if pos == size:
            return
        if pos == 24:           # damaged from its first record: the reader's, as it is
            yield from reader.batches()
            return
        yield from reader.resume_pcap(pos, mapped.seconds_before(start, pos))

    def _on_span(self, span: _Span, source: str) -> None:
        """A span of a mapped file: `shard_map` routes its plain records to the pending
        lists by offset, and stops at any other for `_route_one`, and whenever a pending
        list is full (`_send`)."""
        mapped = span.mapped
        mapped.pos = span.pos
        clock = self.clocks.get(source) or self._new_source(source)
        left = span.count
        while left:
            workers = self.workers
            pos, done, last, slow, clock.next_tick, clock.now, clock.frames, counts = shard_map(
                mapped.map, mapped.pos, left, mapped.little, mapped.scale, mapped.linktype, source,
                clock.crc, [w.pending for w in workers], BATCH_FRAMES, clock.next_tick, clock.now,
                clock.frames, self.announce or None, _TUNNEL_DPORTS, TICK_S)
            mapped.pos = pos
            left -= done
            if done:
                self.packets += done
                self.last = mapped.frame(last)
                for worker, count in zip(workers, counts):
                    worker.sent += count
            if slow:
                ts, linktype, data = mapped.frame(pos)
                mapped.pos = pos + 16 + len(data)
                left -= 1
                self._route_one(ts, linktype, data, source, clock)
            else:
                for worker in workers:
                    if _size(worker.pending) >= BATCH_FRAMES:
                        self._send(worker)
        if mapped.reader is not None:
            mapped.reader.bytes_consumed = mapped.pos     # for the progress line
        mapped.release(mapped.pos)

    def on_batch(self, batch: list[tuple] | tuple, source: str) -> None:
        """Frames of one source, (ts, linktype, data, ...) each, as `CaptureReader.batches`
        gives them: `shard` routes the plain ones to the pending lists, and stops at any
        other for `_route_one`, and whenever a pending list is full (`_send`)."""
        if batch.__class__ is _Span:
            self._on_span(batch, source)    # type: ignore[arg-type]
            return
        clock = self.clocks.get(source) or self._new_source(source)
        start, end = 0, len(batch)
        while start < end:
            workers = self.workers
            stop, slow, clock.next_tick, clock.now, clock.frames, counts = shard(
                batch, start, source, clock.crc, [w.pending for w in workers], BATCH_FRAMES,
                clock.next_tick, clock.now, clock.frames, self.announce or None, _TUNNEL_DPORTS, TICK_S)
            if stop > start:
                self.packets += stop - start
                self.last = batch[stop - 1]
                for worker, count in zip(workers, counts):
                    worker.sent += count
            if slow:
                ts, linktype, data = batch[stop][:3]
                self._route_one(ts, linktype, data, source, clock)
                stop += 1
            else:
                for worker in workers:
                    if _size(worker.pending) >= BATCH_FRAMES:
                        self._send(worker)
            start = stop

    def _route_one(self, ts: float, linktype: int, data: bytes, source: str, clock: _Clock) -> None:
        """A frame `shard` left to Python: any link layer, tunnels, VLANs ..."""
        self.packets += 1
        number = clock.frames
        clock.frames = number + 1
        if ts >= clock.next_tick:
            self._tick(source, clock, ts, linktype, data)
        self.last = (ts, linktype, data, source, number)
        index, shadow = self._route(clock.crc, linktype, data)
        worker = self.workers[index]
        fits = _fits(ts, linktype, data)
        if fits:
            _record(worker.pending, source, ts, linktype, data, number)
        else:
            worker.pending.append((ts, linktype, data, source, number))
        worker.sent += 1
        if shadow:
            for other in self.workers:
                if other is not worker:
                    if fits:
                        _record(other.pending, source, ts, linktype, data, SHADOW)
                    else:
                        other.pending.append((ts, linktype, data, source, SHADOW))
        for other in self.workers:
            if _size(other.pending) >= BATCH_FRAMES:
                self._send(other)

    def _new_source(self, source: str) -> _Clock:
        # As Engine._source: past the cap the source whose clock is oldest is finished.
        if len(self.clocks) >= self.max_sources:
            idlest = min(self.clocks, key=lambda name: self.clocks[name].now)
            self._forget(idlest)
        clock = self.clocks[source] = _Clock(source, self.numbers.pop(source, 0))
        return clock

    def _forget(self, source: str) -> None:
        clock = self.clocks.pop(source, None)
        if clock is not None:       # per-packet documents go on numbering where they were
            self.numbers[source] = clock.frames

    def _tick(self, source: str, clock: _Clock, ts: float, linktype: int, data: bytes) -> None:
        clock.next_tick = ts + TICK_S
        clock.now = ts
        # Documents made at a tick name the link layers of the frame that caused it.
        if not _fits(ts, linktype, data):
            self._broadcast(("tick", source, ts, linktype, data))
            return
        for worker in self.workers:
            _record(worker.pending, source, ts, linktype, data, TICK)
            if _size(worker.pending) >= BATCH_FRAMES:
                self._send(worker)

    def _route(self, crc: int, linktype: int, data: bytes) -> tuple[int, bool]:
        """(worker index, also to the others as a shadow)."""
        found = _locate_ip(linktype, data)
        if found is None:
            return 0, False
        src, dst, proto, l4, fragment = found
        index = zlib.crc32(src + dst if src < dst else dst + src, crc) % self.n
        return index, bool(self.announce) and self._announces(found, data, 0)

    def _announces(self, found: tuple, data: bytes, depth: int) -> bool:
        """Could this packet carry an announcement (a fragment, or an announcer's port)?"""
        _src, _dst, proto, l4, fragment = found
        if fragment:
            return True
        if proto != 6 and proto != 17 and proto != 47:
            return False
        if proto != 47:
            if len(data) < l4 + 4:
                return False
            sport, dport = _PORTS.unpack_from(data, l4)
            if sport in self.announce or dport in self.announce:
                return True
            if proto == 6 or data[l4 + 2:l4 + 4] not in TUNNEL_PORTS:
                return False
        if not self.tunnels or depth >= MAX_DEPTH:
            return False
        tunnel = decapsulate(proto, data[l4:])
        if tunnel is None or tunnel.__class__ is str:
            return False
        inner = _locate_ip(tunnel[3], tunnel[4])
        return inner is not None and self._announces(inner, tunnel[4], depth + 1)

    def _broadcast(self, entry: tuple) -> None:
        for worker in self.workers:
            worker.pending.append(entry)
            if _size(worker.pending) >= BATCH_FRAMES:
                self._send(worker)

    def advance(self, source: str, now: float) -> None:
        clock = self.clocks.get(source)
        if clock is not None and now >= clock.next_tick:
            self._tick(source, clock, now, self.last[1], self.last[2])
            self.poll()

    def finish(self, source: str | None = None) -> None:
        if source is not None:
            self._forget(source)
            self._broadcast(("finish", source))
            return
        if self.finished:
            return
        self.finished = True
        for name in list(self.clocks):
            self._forget(name)
        self._broadcast(("finish", None))
        self._broadcast(("done",))
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        for worker in self.workers:
            self._send(worker)
        while not all(w.done or w.dead for w in self.workers) and time.monotonic() < deadline:
            self._pump(0.2)
        for worker in self.workers:
            if not worker.done and not worker.dead:
                self._lost(worker, "did not finish in time")
            worker.close()
            try:
                worker.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        for mapped in self.maps.values():
            mapped.map.close()          # the main process's mapping; each worker had its own
        # The load balance: frames each decoded and the CPU each used (tests/bench/workers_scale.py).
        log.info("workers finished", frames=[w.acked for w in self.workers],
                 cpu_s=[round(w.proc.cpu_s, 3) for w in self.workers])

    def poll(self) -> None:
        """Housekeeping: hand over partial batches, take in what workers sent, notice deaths."""
        if self.finished:
            return
        for worker in self.workers:
            if worker.pending:
                self._send(worker)
        self._pump(0.0)
        for worker in list(self.workers):
            if worker.proc.poll() is not None and not worker.dead:
                self._died(worker)

    # -- pipes ---------------------------------------------------------------

    def _send(self, worker: _Worker) -> None:
        """Queue the worker's pending batch, and write until it is all in the pipe."""
        if worker.pending:
            worker.outbox += _message([_out_of_band(e) for e in worker.pending])
            worker.pending = []
        while worker.outbox and not worker.dead:
            try:
                _written(worker.outbox, os.writev(worker.fd_in, worker.outbox))
            except BlockingIOError:
                # The pipe is full: the worker may be waiting for us to read its documents.
                self._pump(0.5, want_write=worker)
            except (BrokenPipeError, OSError):
                self._died(worker)
        self._pump(0.0)

    def _pump(self, timeout: float, want_write: _Worker | None = None) -> None:
        """Read every worker's output that is ready (waiting up to `timeout`)."""
        live = [w for w in self.workers if not w.dead]
        readers = {w.fd_out: w for w in live}
        writers = [want_write.fd_in] if want_write is not None and not want_write.dead else []
        try:
            ready, _, _ = select.select(list(readers), writers, [], timeout)
        except (OSError, ValueError):
            return
        for fd in ready:
            worker = readers[fd]
            while not worker.dead:
                message = worker.inbox.read()
                if message is _Reader.WAIT:
                    break
                if message is None:
                    self._died(worker)
                    break
                self._take(worker, message)

    def _take(self, worker: _Worker, message: tuple) -> None:
        kind, acked, blocks, counters, written = message
        worker.acked = acked
        if counters is not None:
            worker.counters = counters
        if written is not None:     # (published, written) so far, by a worker writing itself
            published, done = written
            self.pipeline.written_elsewhere(published - worker.published, done - worker.written)
            worker.published, worker.written = published, done
        publish_block = self.publish_block
        for data, ids, count in blocks:
            # Out of band (`_message`): buffers, made bytes once here (orjson.Fragment,
            # the Elasticsearch output's pairs, take bytes only).
            data, ids = bytes(data), bytes(ids)
            if publish_block is not None:
                publish_block(data, ids, count)     # written as the worker made it
            elif self.raw:
                self.pipeline.publish_many(Block(data, ids, count).pairs())
            else:
                publish, loads = self.pipeline.publish, orjson.loads
                for doc_id, text in zip(ids.decode().split("\n"), data.split(b"\n")[:count]):
                    publish(doc_id, loads(text))
        if kind == "done":
            worker.done = True

    def _died(self, worker: _Worker) -> None:
        if worker.dead:
            return
        worker.dead = True
        code = worker.proc.poll()
        if code is None:
            try:
                code = worker.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                code = worker.proc.wait()
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        self._lost(worker, how)
        worker.close()
        if self.finished:
            return
        # A fresh worker takes over its share, with empty state: open transactions are lost.
        fresh = _Worker(worker.index, self.setup)
        fresh.pending = worker.pending
        fresh.sent = _owned(fresh.pending)
        self.workers[worker.index] = fresh
        log.error("worker restarted", worker=worker.index, pid=fresh.proc.pid)

    def _lost(self, worker: _Worker, how: str) -> None:
        worker.dead = True
        lost = worker.sent - worker.acked
        self.crashed += 1
        self.frames_lost += lost
        for key, value in worker.counters.items():
            if key not in _NOT_SUMMED and not key.startswith(self.whole):
                self.retired[key] = self.retired.get(key, 0) + value
        self.retired["packets.read"] = self.retired.get("packets.read", 0) + worker.acked - \
            worker.counters.get("packets.read", 0)
        worker.counters, worker.acked, worker.sent = {}, 0, 0
        log.error("worker died", worker=worker.index, pid=worker.proc.pid, how=how,
                  frames_lost=lost, detail="its open transactions and flows are lost; "
                  "frames it had not decoded are counted in workers.frames_lost")


# -- the worker's side ----------------------------------------------------------

class _Sink:
    """The worker's stand-in for the pipeline: its documents as NDJSON blocks (the text
    `Pipeline.publish_block` takes), sent with each reply.

    The engine asks the pipeline's output whether it takes JSON text (orjson.Fragment):
    the sink does, so flow reports and per-packet documents are made as text here, as in
    one process; a flow sweep's blocks pass as they are, and other documents are
    serialised into blocks of the sink's own. The main process hands each block to its
    pipeline whole: no object per document crosses the pipe or is made there."""

    accepts_fragments = True

    def __init__(self, batch_size: int = 1024) -> None:
        self.output = self
        # As the main pipeline's: a flow sweep cuts its blocks at this many documents.
        self.batch_size = max(1, batch_size)
        self.blocks: list[tuple[Any, Any, int]] = []     # whole blocks (bytes or bytearrays), in publish order
        self.data = bytearray()     # the block being filled: NDJSON text ...
        self.ids = bytearray()      # ... and its documents' _ids, one per line
        self.count = 0
        self.published = 0

    def publish(self, doc_id: str, doc: Any) -> None:
        self.data += _dumps(doc, option=_NEWLINE)
        self.ids += doc_id.encode()
        self.ids += b"\n"
        self.count += 1
        if self.count >= self.batch_size or len(self.data) >= BLOCK_MAX_BYTES:
            self._close()

    def publish_many(self, docs: list[tuple[str, Any]]) -> None:
        for doc_id, doc in docs:
            self.publish(doc_id, doc)

    def publish_block(self, data: bytes, ids: bytes, count: int) -> None:
        """A flow sweep's reports as NDJSON text (see Pipeline.publish_block), as they are
        made in one process: after the documents before it, in the block being filled
        while that stays within the pipeline's limits (fewer, fuller batches), else as
        a block of its own."""
        if self.count + count > self.batch_size or len(self.data) + len(data) > BLOCK_MAX_BYTES:
            self._close()
        if not self.count and (count >= self.batch_size or len(data) >= BLOCK_MAX_BYTES):
            self.blocks.append((data, ids, count))      # full already: no copy
            return
        self.data += data
        self.ids += ids
        self.count += count
        if self.count >= self.batch_size or len(self.data) >= BLOCK_MAX_BYTES:
            self._close()

    def _close(self) -> None:
        if self.count:
            # Handed over as they are (they cross the pipe out of band); new ones fill next.
            self.blocks.append((self.data, self.ids, self.count))
            self.data = bytearray()
            self.ids = bytearray()
            self.count = 0

    def take(self) -> list[tuple[Any, Any, int]]:
        """The documents since the last call, as (NDJSON text, _ids, count) blocks."""
        self._close()
        blocks, self.blocks = self.blocks, []
        return blocks

    def maybe_flush(self) -> None:
        pass

    def flush(self) -> None:
        pass


class _Silent:
    """A pipeline that keeps nothing: the shadow engine's."""

    def publish(self, doc_id: str, doc: dict[str, Any]) -> None:
        pass

    def maybe_flush(self) -> None:
        pass


class _WorkerLoop:
    def __init__(self, setup: dict[str, Any]) -> None:
        # Imported here: the main process never needs what only decoding does.
        from wirebeat import __version__
        from wirebeat.processors import load_processors
        import socket

        config: Config = setup["config"]
        logs.configure(config["logging.level"])
        enabled: list[Registered] = setup["enabled"]
        stats = Stats()
        processors = load_processors(config["processors"], config.path,
                                     config.section("output.elasticsearch"))
        stats.add_source(processors.counters)
        agent = {"type": "wirebeat", "version": __version__, "name": socket.gethostname()}
        builder = DocumentBuilder(agent, processors, config["fields"], config["fields_under_root"],
                                  config["tags"])
        builder.per_source.update(setup["per_source"])
        self.sink = _Sink(setup.get("batch_size", 1024))
        # Inherited at the fork. The mappings need no descriptor (_forked closed the
        # duplicates mmap keeps): a worker reads them and never closes them.
        self.maps: dict[str, _Mapped] = setup.get("maps", {})
        self.stats = stats
        self.engine = Engine(config, enabled, builder, self.sink, stats,  # type: ignore[arg-type]
                             strict=setup["strict"])
        self.engine.flowless_sources.update(setup["flowless"])
        self.packet_docs = self.engine.packet_docs
        _ports, names = announcer_ports(config, enabled)
        self.shadow: Engine | None = None
        self.announcers = [(name, self.engine.routes_named[name]) for name in names
                           if name in self.engine.routes_named]
        if names:
            values = dict(config.values)
            values["wirebeat.flows.enabled"] = False
            values["wirebeat.packets.enabled"] = False
            quiet = Config(values, set(), config.path)
            # Its own builder: an engine points its builder at its own tunnel table.
            shadow = Engine(quiet, [r for r in enabled if r.spec.name in names],
                            DocumentBuilder(agent, processors, {}, False, []),
                            _Silent(), Stats())  # type: ignore[arg-type]
            # It only reads announcements: it routes by port only and publishes nothing.
            shadow.routes_named, shadow.probes, shadow.detectors = {}, [], []
            shadow._emit = lambda spec, txns: None     # type: ignore[method-assign]
            self.shadow = shadow

    def _link(self, source: str) -> None:
        """The shadow engine's state for `source` shares the main engine's announcer
        decoder and Expectations: one reader of every announcement, as in one process."""
        main, shadow = self.engine, self.shadow
        assert shadow is not None
        m = main.sources.get(source) or main._source(source)
        s = shadow.sources.get(source) or shadow._source(source)
        if s.expectations is not m.expectations:
            s.expectations, s.expected = m.expectations, m.expected
        for name, route in self.announcers:
            s.decoders[name] = m.decoders.get(name) or main._decoder(m, route)

    def handle(self, batch: list[tuple]) -> tuple[int, bool]:
        """Decode one batch: (frames decoded, the end was asked for)."""
        on_frame = self.engine.on_frame
        packet_docs = self.packet_docs
        count = 0
        for entry in batch:
            first = entry[0]
            if entry.__class__ is list:         # ["raw", ...]: a run of records
                count += self._records(entry)
            elif first.__class__ is not str:    # a frame a record could not hold
                ts, linktype, data, source, number = entry
                if number < 0:
                    self._shadow_frame(ts, linktype, data, source)
                    continue
                if packet_docs is not None:
                    self._number(source, number)
                on_frame(ts, linktype, data, source)
                count += 1
            elif first == "tick":
                _, source, ts, linktype, data = entry
                self._tick(source, ts, linktype, data)
            elif first == "finish":
                for engine in (self.engine, self.shadow):
                    if engine is not None:
                        engine.finish(entry[1])
            elif first == "done":
                return count, True
        return count, False

    def _records(self, run: list) -> int:
        """Decode one run of records (`_record`): frames decoded."""
        engine, packet_docs = self.engine, self.packet_docs
        blob, offsets = run[3], None
        if run[0] == "map":         # frames in the mapped capture file, by offset
            mapped = self.maps[run[1]]
            blob, offsets = mapped.map, run[3]
            if offsets:
                mapped.release(_MAP_AT.unpack_from(offsets)[0])
        on_batch = getattr(engine, "on_batch", None) if packet_docs is None else None
        if on_batch is None:
            return feed(run[2], blob, run[1], engine.on_frame,
                        None if packet_docs is None else packet_docs.source_state,
                        self._shadow_frame, self._tick, offsets)
        # The engine takes frames a batch at a time (wirebeat.frameloop, as one process
        # does): `feed` collects the run's frames in a list (no call per frame), handed
        # over before a shadow or a tick.
        source: str = run[1]
        frames: list[tuple] = []

        def hand_over() -> None:
            if frames:
                on_batch(frames, source)    # walked there and then, never kept: reused after
                frames.clear()

        def shadow(*frame: Any) -> None:
            hand_over()
            self._shadow_frame(*frame)

        def tick(*args: Any) -> None:
            hand_over()
            self._tick(*args)

        count = feed(run[2], blob, source, frames, None, shadow, tick, offsets)
        hand_over()
        return count

    def _shadow_frame(self, ts: float, linktype: int, data: bytes, source: str) -> None:
        self._link(source)
        self.shadow.on_frame(ts, linktype, data, source)    # type: ignore[union-attr]

    def _tick(self, source: str, ts: float, linktype: int, data: bytes) -> None:
        for engine in (self.engine, self.shadow):
            if engine is not None:
                if source not in engine.sources:
                    engine._source(source)
                engine.frame = (linktype, data)
                engine.advance(source, ts)

    def _number(self, source: str, number: int) -> None:
        """Per-packet documents are numbered in their source as the reader counted."""
        assert self.packet_docs is not None
        self.packet_docs.source_state(source)[0] = number


def _forked(fd_in: int, fd_out: int, setup: dict[str, Any]) -> None:
    """The child's side of the fork: run the worker, then leave without running any of
    the reader's clean-up (its buffered output, atexit handlers, threads are not ours)."""
    code = 1
    try:
        # Only the two pipes: a worker holding another worker's pipe (or the reader's
        # files and sockets) would keep it open after the reader is gone.
        # (and the console's lock, when it writes the console's lines itself).
        keep = sorted({fd_in, fd_out} | (set(setup["direct"][:2]) - {0, 1, 2} if setup.get("direct") else set()))
        low = 3
        for fd in keep:
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, _descriptor_ceiling())
        # A fresh stderr: a lock of the old one may have been held by one of the
        # reader's threads at the fork, and those threads do not exist here.
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        code = worker_main(fd_in, fd_out, setup)
    except BaseException:       # noqa: BLE001 - a worker must never return into the reader's code
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except Exception:       # noqa: BLE001
            pass
    finally:
        os._exit(code)


def _descriptor_ceiling() -> int:
    """One past the highest descriptor number this process may have open (the
    system's RLIMIT_NOFILE, not a wirebeat limit): where closing stops."""
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536


def worker_main(fd_in: int, fd_out: int, setup: dict[str, Any]) -> int:
    # The main process decides when to stop, and flushes every worker then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    loop = _WorkerLoop(setup)
    quiet_collector()               # as the run loop
    decoded = 0
    last_stats = 0.0
    sink = loop.sink
    reader = _Reader(fd_in)
    direct = _DirectWriter(*setup["direct"]) if setup.get("direct") else None
    while True:
        batch = reader.read()
        if batch is None:
            return 0        # the main process closed the pipe (or died)
        count, done = loop.handle(batch)
        batch = None        # its runs are views of the reader's buffer, which the next read fills
        decoded += count
        # Counters at most every STATS_EVERY_S (a snapshot walks the flow table); the
        # count of frames decoded goes with every reply, so a death's loss is exact.
        now = time.monotonic()
        counters = None
        if done or now - last_stats >= STATS_EVERY_S:
            last_stats = now
            counters = loop.stats.snapshot()
        if direct is not None:
            direct.write(sink.take())
            blocks, written = [], (direct.published, direct.written)
        else:
            blocks = [(pickle.PickleBuffer(data), pickle.PickleBuffer(ids), count)
                      for data, ids, count in sink.take()]
            written = None
        _write_all(fd_out, _message(("done" if done else "docs", decoded, blocks, counters, written)))


class _DirectWriter:
    """A worker writing its documents' blocks to the console itself (WorkerPool.direct):
    through its copy of the main process's ConsoleOutput (what it writes is what that
    output writes), each block whole under the lock every writer takes (no other
    process's line inside it), in the order the worker made them. Counts what it made
    and what was written; once the console is gone (a closed pipe: `| head`) the rest
    is counted, not written, as one process's output stops."""

    def __init__(self, fd: int, lock: int, output: ConsoleOutput) -> None:
        # Its own stream on the descriptor: the inherited one's lock may have been held by
        # the main process's output thread at the fork.
        output.stream = open(fd, "wb", closefd=False)     # noqa: SIM115 (the process's, to its end)
        output.lock_fd = None       # taken here, around the write and the flush
        self.output = output
        self.lock = lock
        self.stopping = threading.Event()
        self.published = 0
        self.written = 0
        self.stopped = False

    def write(self, blocks: list[tuple[Any, Any, int]]) -> None:
        for data, ids, count in blocks:
            self.published += count
            if self.stopped:
                continue
            fcntl.lockf(self.lock, fcntl.LOCK_EX)
            try:
                self.output.send(Block(data, ids, count), self.stopping)
                self.output.stream.flush()
            except (OutputStopped, OSError):    # the console is gone
                self.stopped = True
                continue
            finally:
                fcntl.lockf(self.lock, fcntl.LOCK_UN)
            self.written += count
