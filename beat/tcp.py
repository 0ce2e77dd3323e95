"""TCP reassembly (RFC 9293): each direction's bytes in order, and a gap notice where bytes are lost.

Sans-IO: the engine parses headers and hands each segment of a tracked
connection to `TCPConnection.segment`; the connection calls its sink (the
engine's wrapper around one `StreamDecoder`) with `on_data(from_client, data,
ts)`, `on_gap(from_client, missing, ts)` and, once, `on_close(ts)`. Time is
packet time, and nothing here reads a clock.

A sink that needs no more bytes of its connection (its decoder is done, or
there is no decoder) says so by returning True from `on_data` or `on_gap`.
The connection is then *bypassed*: held bytes are dropped, and later segments
are neither reassembled nor delivered (those with payload count as
`segments_bypassed`). It is still tracked: a FIN from each side or an RST
closes it (FINs count whenever they are seen, since nothing waits for the bytes
before them), idle timeout and eviction apply, `on_close` comes once, and the
connection counters count as before. The reassembly counters (retransmitted
bytes, out-of-order segments, gaps) stop counting for it.

Per direction:
- Bytes are delivered in sequence order. A segment ahead of the expected
  sequence number is held until the hole before it fills. Retransmitted and
  overlapping bytes are resolved deterministically, first copy wins: bytes
  already delivered or already held are dropped and counted.
- Sequence numbers wrap at 2**32; positions are kept as unbounded integers,
  so a stream of any length is fine.
- A SYN sets the initial sequence number (ISN + 1 is the first data byte). A
  direction first seen without a SYN (capture started mid-connection) starts
  at the sequence number of its first segment with payload, SYN or FIN;
  earlier bytes seen later count as retransmissions.
- A FIN marks the end of the direction at its sequence position (after any
  hole before it fills); payload past a FIN is ignored and counted. When both
  directions have reached their FIN, or on an RST, the connection closes.

A hole that cannot be filled is given up, reported as a gap of its exact size,
and the held bytes after it are delivered:
- when the other direction acknowledges bytes beyond the hole: acknowledged
  bytes are never sent again, so we will not see them (an ACK one past the last
  byte seen, with nothing held, is taken as a FIN we missed, not as a lost byte);
- when the held bytes exceed the direction's cap (below);
- when the connection closes, times out or is evicted; the bytes before a FIN
  that was seen are reported as a gap too.
Held bytes are delivered with the packet time of the segment that released
them, so times stay monotonic per connection.

Caps (per capture source, i.e. per `TCPTable`), each counted when hit:

| cap | default | on hitting it |
| --- | --- | --- |
| `max_connections` | 65536 | the idlest of the 8 oldest connections is closed (held bytes flushed with gaps, `on_close`); `connections_evicted` |
| `max_buffered_bytes` | 1 MiB per direction | holes are given up, oldest first, until the direction holds no more than the cap; `buffer_cap_hits` |
| `max_buffered_bytes_total` | 64 MiB | the direction that just grew gives up all its holes; `buffer_total_cap_hits` |
| `idle_timeout_s` | 300 s of packet time | the connection is closed at the next `expire`; `connections_timed_out` |

Held bytes are charged `HELD_SEGMENT_OVERHEAD` (64) bytes per held piece on
top of their length, so a flood of tiny out-of-order segments cannot hold more
memory (or make insertion slower) than the cap allows. A connection closed by
FIN or RST is remembered for `CLOSED_LINGER_S` (30 s) so that its late
retransmissions and final ACKs are ignored instead of opening a mid-stream
connection; only a new SYN reopens it (not a late copy of its own SYN: the
same ISN, or a packet time before the close). That memory holds at most
`max_connections` keys.

Packet time may go backwards (captures merged from several taps): a segment
older than its connection's newest is processed at the newest time
(`timestamps_behind`), so a decoder never sees time run backwards within a
connection and durations stay non-negative.
"""
from __future__ import annotations

from collections import OrderedDict
from bisect import bisect_right
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "CLOSED_LINGER_S", "DEFAULT_IDLE_TIMEOUT_S", "DEFAULT_MAX_BUFFERED_BYTES",
    "DEFAULT_MAX_BUFFERED_BYTES_TOTAL", "DEFAULT_MAX_CONNECTIONS", "HELD_SEGMENT_OVERHEAD",
    "StreamSink", "TCPConnection", "TCPCounters", "TCPTable",
]

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
_SYN_FIN_RST = SYN | FIN | RST
_SEQ_MASK = 0xFFFFFFFF
_SEQ_HALF = 1 << 31        # RFC 1982 serial arithmetic: a difference this large is "behind"
_SEQ_WRAP = 1 << 32

DEFAULT_MAX_CONNECTIONS = 65536
DEFAULT_MAX_BUFFERED_BYTES = 1 << 20
DEFAULT_MAX_BUFFERED_BYTES_TOTAL = 64 << 20
DEFAULT_IDLE_TIMEOUT_S = 300.0      # beyond common keep-alive idle limits (nginx 75 s)
HELD_SEGMENT_OVERHEAD = 64          # roughly a bytes object and two list slots
CLOSED_LINGER_S = 30.0              # covers retransmission timeouts after the close
EVICTION_SAMPLE = 8


class StreamSink(Protocol):
    """Where a connection's reassembled events go (the engine: a StreamDecoder behind its error boundary)."""

    # Both return True when the sink needs no more bytes of the connection (None or
    # False: go on delivering).
    def on_data(self, from_client: bool, data: bytes, ts: float) -> bool | None: ...

    def on_gap(self, from_client: bool, missing: int, ts: float) -> bool | None: ...

    def on_close(self, ts: float) -> None: ...


@dataclass(slots=True)
class TCPCounters:
    """Reassembly counters."""

    segments: int = 0                   # segments handed to a connection
    retransmitted_bytes: int = 0        # payload already delivered or held (retransmission, overlap)
    out_of_order_segments: int = 0      # segments that arrived ahead of a hole
    gaps: int = 0                       # gap notices delivered
    gap_bytes: int = 0                  # bytes those gaps stand for
    connections_opened: int = 0
    connections_closed: int = 0         # FIN both ways, RST, a new SYN on the same ports, end of input
    connections_timed_out: int = 0      # idle_timeout_s
    connections_evicted: int = 0        # max_connections
    buffer_cap_hits: int = 0            # max_buffered_bytes
    buffer_total_cap_hits: int = 0      # max_buffered_bytes_total
    segments_ignored: int = 0           # payload not delivered: after the close, or past a FIN
    late_syns_ignored: int = 0          # a closed connection's SYN seen again (merged or duplicated capture)
    timestamps_behind: int = 0          # segments older than their connection's newest: taken at its time
    segments_bypassed: int = 0          # payload not reassembled: the sink needed no more bytes


class _Half:
    """One direction of a connection."""

    __slots__ = ("nxt", "pos", "started", "ended", "syn_seq", "fin_pos", "starts", "segs",
                 "buffered")

    def __init__(self) -> None:
        # The fast path's key: the wire sequence number of the next byte while the
        # direction is open with nothing held; -1 otherwise (no segment matches it).
        self.nxt = -1
        self.pos = 0                    # unbounded position of the next byte; pos & mask = its seq
        self.started = False
        self.ended = False              # reached its FIN, or the connection closed
        self.syn_seq: int | None = None
        self.fin_pos: int | None = None
        self.starts: list[int] = []     # held pieces: positions, ascending, never overlapping,
        self.segs: list[bytes] = []     # all beyond pos
        self.buffered = 0               # held bytes plus HELD_SEGMENT_OVERHEAD per piece


class TCPConnection:
    """One tracked connection: feed it every segment with `segment()`; it calls its sink."""

    __slots__ = ("table", "key", "sink", "client_first", "client", "server", "last_ts",
                 "closed", "bypassed", "counters")

    def __init__(self, table: TCPTable, key: Hashable, sink: StreamSink, ts: float,
                 client_first: bool) -> None:
        self.table = table
        self.key = key
        self.sink = sink
        self.client_first = client_first    # the caller's note: is the client first in `key`?
        self.client = _Half()
        self.server = _Half()
        self.last_ts = ts
        self.closed = False
        self.bypassed = False       # the sink needs no more bytes: track the close only
        self.counters = table.counters

    def segment(self, from_client: bool, seq: int, ack: int, flags: int, data: bytes,
                ts: float) -> None:
        """Process one segment: `flags` is the TCP flags byte, `data` its payload."""
        if ts < self.last_ts:       # merged captures go back in time: keep the connection's monotonic
            self.counters.timestamps_behind += 1
            ts = self.last_ts
        self.last_ts = ts
        self.counters.segments += 1
        if from_client:
            half, other = self.client, self.server
        else:
            half, other = self.server, self.client
        if flags & ACK and ack != other.nxt and not self.bypassed and other.started \
                and not other.ended:
            self._on_ack(other, not from_client, ack, ts)
        if self.bypassed:       # the sink needs no more bytes (perhaps since the gap just given up)
            if data:
                self.counters.segments_bypassed += 1
            if flags & _SYN_FIN_RST:
                self._bypassed_flags(half, seq, flags, ts)
            return
        if seq == half.nxt and not flags & _SYN_FIN_RST:
            if data:        # the fast path: in order, nothing held
                n = len(data)
                half.nxt = (seq + n) & _SEQ_MASK
                half.pos += n
                if self.sink.on_data(from_client, data, ts):
                    self._bypass()
            return
        if data or flags & _SYN_FIN_RST:
            self._segment(half, from_client, seq, flags, data, ts)

    def is_restarted_by(self, from_client: bool, syn_seq: int) -> bool:
        """Whether a pure SYN with this sequence number starts a new connection on these ports."""
        half = self.client if from_client else self.server
        return half.started and half.syn_seq != syn_seq

    # -- bypassed: the sink needs no more bytes ----------------------------------

    def _bypass(self) -> None:
        """Stop reassembling: drop what is held; from now on only the close is tracked."""
        self.bypassed = True
        for half in (self.client, self.server):
            half.nxt = -1
            half.starts.clear()
            half.segs.clear()
            self.table.buffered_total -= half.buffered
            half.buffered = 0
            if half.fin_pos is not None:
                half.ended = True       # its FIN was seen: nothing waits for the bytes before it

    def _bypassed_flags(self, half: _Half, seq: int, flags: int, ts: float) -> None:
        """SYN, FIN or RST on a bypassed connection: the close is all that is tracked."""
        if flags & RST:
            self.table.close(self, ts)
            return
        if flags & SYN and not half.started:    # for is_restarted_by
            half.started = True
            half.syn_seq = seq
        if flags & FIN:
            half.ended = True
            if self.client.ended and self.server.ended:
                self.table.close(self, ts)

    # -- the slow path -----------------------------------------------------------

    def _segment(self, half: _Half, from_client: bool, seq: int, flags: int, data: bytes,
                 ts: float) -> None:
        counters = self.counters
        if self.closed:
            if data:
                counters.segments_ignored += 1
            return
        if flags & RST:
            self.table.close(self, ts)
            return
        if flags & SYN:
            if not half.started:
                half.syn_seq = seq
            seq = (seq + 1) & _SEQ_MASK      # the SYN takes one sequence number
        if not half.started:
            half.started = True
            half.pos = seq
        delta = (seq - half.pos) & _SEQ_MASK
        if delta >= _SEQ_HALF:
            delta -= _SEQ_WRAP
        start = half.pos + delta
        end = start + len(data)
        if flags & FIN and half.fin_pos is None:
            self._set_fin(half, end)
        if half.fin_pos is not None and end > half.fin_pos:
            counters.segments_ignored += 1
            data = data[:max(0, half.fin_pos - start)]
            end = start + len(data)
        if data:
            if start > half.pos:
                counters.out_of_order_segments += 1
            if half.starts or start > half.pos:
                self._hold(half, start, data)
                self._drain(half, from_client, ts)
                if half.buffered > self.table.max_buffered_bytes:
                    counters.buffer_cap_hits += 1
                    limit = self.table.max_buffered_bytes
                    while half.buffered > limit:
                        self._skip_to(half, from_client, half.starts[0], ts)
                if self.table.buffered_total > self.table.max_buffered_bytes_total and half.starts:
                    counters.buffer_total_cap_hits += 1
                    self._skip_to(half, from_client, half.starts[-1], ts)
            elif end <= half.pos:
                counters.retransmitted_bytes += len(data)
            else:
                cut = half.pos - start
                if cut:
                    counters.retransmitted_bytes += cut
                    data = data[cut:]
                half.pos = end
                if self.sink.on_data(from_client, data, ts):
                    self._bypass()
        self._settle(half, ts)

    def _on_ack(self, half: _Half, from_client: bool, ack: int, ts: float) -> None:
        """The peer acknowledged up to `ack`: bytes of `half` below it will not come again."""
        delta = (ack - half.pos) & _SEQ_MASK
        if delta == 0 or delta >= _SEQ_HALF:
            return
        limit = half.pos + delta
        if half.fin_pos is not None:
            limit = min(limit, half.fin_pos)
        elif delta == 1 and not half.starts:
            return      # a FIN takes a sequence number too: this acknowledges a FIN we missed
        if limit > half.pos:
            self._skip_to(half, from_client, limit, ts)
            self._settle(half, ts)

    def _set_fin(self, half: _Half, fin_pos: int) -> None:
        half.fin_pos = fin_pos
        starts, segs = half.starts, half.segs
        while starts and starts[-1] + len(segs[-1]) > fin_pos:    # held bytes past the FIN
            self.counters.segments_ignored += 1
            start, seg = starts.pop(), segs.pop()
            freed = len(seg) + HELD_SEGMENT_OVERHEAD
            if start < fin_pos:
                starts.append(start)
                segs.append(seg[:fin_pos - start])
                freed = len(seg) - (fin_pos - start)
            half.buffered -= freed
            self.table.buffered_total -= freed

    def _hold(self, half: _Half, start: int, data: bytes) -> None:
        """Keep the bytes of `data` not already delivered or held (first copy wins)."""
        counters = self.counters
        base = start
        end = start + len(data)
        if start < half.pos:
            counters.retransmitted_bytes += min(half.pos, end) - start
            start = half.pos
            if start >= end:
                return
        starts, segs = half.starts, half.segs
        i = bisect_right(starts, start)
        if i:
            previous_end = starts[i - 1] + len(segs[i - 1])
            if previous_end > start:
                covered = min(previous_end, end) - start
                counters.retransmitted_bytes += covered
                start += covered
        added = 0
        while start < end:
            if i < len(starts) and starts[i] < end:
                next_start = starts[i]
                if next_start > start:
                    piece = data[start - base:next_start - base]
                    starts.insert(i, start)
                    segs.insert(i, piece)
                    added += len(piece) + HELD_SEGMENT_OVERHEAD
                    i += 1
                next_end = next_start + len(segs[i])
                counters.retransmitted_bytes += min(next_end, end) - next_start
                start = next_end
                i += 1
            else:
                piece = data[start - base:]
                starts.insert(i, start)
                segs.insert(i, piece)
                added += len(piece) + HELD_SEGMENT_OVERHEAD
                break
        half.buffered += added
        self.table.buffered_total += added

    def _drain(self, half: _Half, from_client: bool, ts: float) -> None:
        """Deliver the held pieces that now continue the stream."""
        starts, segs = half.starts, half.segs
        pos = half.pos
        count = 0
        while count < len(starts) and starts[count] == pos:
            pos += len(segs[count])
            count += 1
        if not count:
            return
        ready = segs[:count]
        del starts[:count]
        del segs[:count]
        freed = pos - half.pos + count * HELD_SEGMENT_OVERHEAD
        half.buffered -= freed
        self.table.buffered_total -= freed
        half.pos = pos
        on_data = self.sink.on_data
        for seg in ready:
            if on_data(from_client, seg, ts):
                self._bypass()
                return

    def _skip_to(self, half: _Half, from_client: bool, limit: int, ts: float) -> None:
        """Give up on the bytes before `limit`: each hole is a gap, each held piece is delivered."""
        counters = self.counters
        while half.pos < limit and not self.bypassed:
            target = half.starts[0] if half.starts and half.starts[0] < limit else limit
            missing = target - half.pos
            half.pos = target
            counters.gaps += 1
            counters.gap_bytes += missing
            if self.sink.on_gap(from_client, missing, ts):
                self._bypass()
                return
            self._drain(half, from_client, ts)

    def _settle(self, half: _Half, ts: float) -> None:
        """Re-arm the fast path after a slow-path change; close when both directions ended."""
        if self.bypassed:       # the sink stopped wanting bytes during this segment
            if self.client.ended and self.server.ended and not self.closed:
                self.table.close(self, ts)
            return
        if half.fin_pos is not None and half.pos >= half.fin_pos:
            half.ended = True
            half.nxt = -1
            if self.client.ended and self.server.ended and not self.closed:
                self.table.close(self, ts)
        elif half.started and not half.starts and half.fin_pos is None:
            half.nxt = half.pos & _SEQ_MASK     # (a FIN seen ahead keeps this direction on the slow path)
        else:
            half.nxt = -1

    def _finish(self, ts: float) -> None:
        """Flush what is held (giving up holes) and tell the sink the connection is over."""
        if self.closed:
            return
        self.closed = True
        for half, from_client in ((self.client, True), (self.server, False)):
            half.nxt = -1
            if half.started and not half.ended and not self.bypassed:
                if half.starts:
                    self._skip_to(half, from_client, half.starts[-1], ts)
                    self._drain(half, from_client, ts)
                if half.fin_pos is not None and half.pos < half.fin_pos:
                    self._skip_to(half, from_client, half.fin_pos, ts)
            half.ended = True
        self.sink.on_close(ts)


class TCPTable:
    """The connections of one capture source, with their caps and counters."""

    def __init__(self, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
                 max_buffered_bytes_total: int = DEFAULT_MAX_BUFFERED_BYTES_TOTAL,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.max_connections = max(1, max_connections)
        self.max_buffered_bytes = max_buffered_bytes
        self.max_buffered_bytes_total = max_buffered_bytes_total
        self.idle_timeout_s = idle_timeout_s
        # Oldest first. An OrderedDict: _evict looks at the oldest, which in a plain dict means
        # stepping over every entry deleted before them (65,536 steps in a SYN flood).
        self.connections: OrderedDict[Hashable, TCPConnection] = OrderedDict()
        # key -> (close time, the ISNs of its SYNs), oldest first
        self.recently_closed: OrderedDict[Hashable, tuple[float, tuple]] = OrderedDict()
        self.buffered_total = 0
        self.counters = TCPCounters()

    def admits(self, key: Hashable, flags: int, has_payload: bool, seq: int | None = None,
               ts: float | None = None) -> bool:
        """Whether a segment of a connection not in the table may open one (counted if not).

        A SYN may, unless it is a late copy of the SYN of a connection closed in
        the last CLOSED_LINGER_S: the same ISN, or a time before the close (a
        capture merged from several taps, or duplicated, shows it after the FIN;
        `late_syns_ignored`). Payload may, except on such a recently closed
        connection, whose late retransmissions would otherwise look like a new
        connection picked up mid-stream (those count as `segments_ignored`).
        An empty ACK, FIN or RST may not.
        """
        closed = self.recently_closed.get(key)
        if flags & SYN and not flags & ACK:
            if closed is None or seq is None or (seq not in closed[1]
                                                 and (ts is None or ts >= closed[0])):
                return True
            self.counters.late_syns_ignored += 1
            return False
        if (flags & SYN or has_payload) and closed is None:
            return True
        if has_payload:
            self.counters.segments_ignored += 1
        return False

    def open(self, key: Hashable, sink: StreamSink, ts: float,
             client_first: bool = True) -> TCPConnection:
        """Track a new connection under `key`, closing one it replaces or evicting one to make room."""
        old = self.connections.get(key)
        if old is not None:
            self.close(old, ts)
        self.recently_closed.pop(key, None)
        if len(self.connections) >= self.max_connections:
            self._evict()
        conn = self.connections[key] = TCPConnection(self, key, sink, ts, client_first)
        self.counters.connections_opened += 1
        return conn

    def close(self, conn: TCPConnection, ts: float) -> None:
        """Close a connection that ended (FIN both ways, RST, replaced, end of input)."""
        if self._forget(conn):
            self.counters.connections_closed += 1
            self.recently_closed.pop(conn.key, None)
            self.recently_closed[conn.key] = (ts, (conn.client.syn_seq, conn.server.syn_seq))
            if len(self.recently_closed) > self.max_connections:
                self.recently_closed.popitem(last=False)
            conn._finish(ts)

    def expire(self, now: float) -> None:
        """Close connections idle since before `now - idle_timeout_s`; forget old closes."""
        idle_before = now - self.idle_timeout_s
        for conn in [c for c in self.connections.values() if c.last_ts < idle_before]:
            if self._forget(conn):
                self.counters.connections_timed_out += 1
                conn._finish(conn.last_ts)
        linger_before = now - CLOSED_LINGER_S
        stale = []
        for key, (closed_ts, _isns) in self.recently_closed.items():
            if closed_ts >= linger_before:
                break
            stale.append(key)
        for key in stale:
            del self.recently_closed[key]

    def close_all(self) -> None:
        """End of input: close every connection at its last packet time."""
        for conn in list(self.connections.values()):
            self.close(conn, conn.last_ts)
        self.recently_closed.clear()

    def _evict(self) -> None:
        victim = None
        for count, conn in enumerate(self.connections.values()):
            if victim is None or conn.last_ts < victim.last_ts:
                victim = conn
            if count + 1 >= EVICTION_SAMPLE:
                break
        if victim is not None and self._forget(victim):
            self.counters.connections_evicted += 1
            victim._finish(victim.last_ts)

    def _forget(self, conn: TCPConnection) -> bool:
        """Take a connection out of the table; False if it already was."""
        if conn.closed or self.connections.get(conn.key) is not conn:
            return False
        del self.connections[conn.key]
        return True
