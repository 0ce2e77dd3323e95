"""A disk queue between the decoders and the output, for sources that cannot wait.

With `queue.disk.path` set, every batch the pipeline hands over is appended
to segment files in that directory before the output sees it, and the output
reads batches back in order. After Elasticsearch acknowledged a batch, the
read position is recorded (`ack.json`, replaced atomically). So an output
outage longer than memory allows, a `kill -9` or a power cut loses nothing
that reached the disk: on the next start everything after the recorded
position is sent again. A batch acknowledged just before a crash may be sent
twice; the deterministic `_id`s make that one document in the index.

Records are `<length, crc32, documents>` headers followed by the batch as
JSON; a record cut short by a crash fails its length or CRC check and is cut
off at start-up (counted as `queue.disk.torn_records`). `queue.disk.max_size`
caps the bytes not yet acknowledged: a batch that would exceed it is refused
and the pipeline counts and logs the drop (an empty queue takes any one
batch, however large, so a cap below one batch cannot block everything). `queue.disk.fsync`: `always`
(fsync after every batch: nothing acknowledged to the source is lost on a
power cut), `interval` (at most once a second), `never` (the kernel decides;
survives a process crash, not a power cut).

Not on disk: the batch being filled in memory (at most
`queue.mem.flush.min_events` documents or `queue.mem.flush.timeout` old).
"""
from __future__ import annotations

import json
import os
import re
import struct
import threading
import time
import zlib
from typing import Any, BinaryIO

import orjson

__all__ = ["DiskQueue", "DiskQueueError", "FSYNC_POLICIES"]

HEADER = struct.Struct("<III")          # payload length, crc32 of payload, documents
SEGMENT_BYTES = 16 * 2**20              # a new segment file after this many bytes
FSYNC_POLICIES = ("always", "interval", "never")
FSYNC_INTERVAL_S = 1.0
_SEGMENT = re.compile(r"^seg-(\d{10})\.dat$")

Batch = list[tuple[str, dict[str, Any]]]
Position = tuple[int, int]              # segment number, byte offset


class DiskQueueError(Exception):
    """The queue directory is unusable (one line for the operator)."""


class DiskQueue:
    def __init__(self, path: str, max_bytes: int, fsync: str = "always") -> None:
        if fsync not in FSYNC_POLICIES:
            raise DiskQueueError(f"queue.disk.fsync: {fsync!r} is not one of {', '.join(FSYNC_POLICIES)}")
        self.path = path
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.cond = threading.Condition()
        self.torn_records = 0
        self.last_fsync = 0.0
        try:
            os.makedirs(path, exist_ok=True)
            self.ack_pos = self._read_ack()
            segments = self._segments()
            for number in segments:
                if number < self.ack_pos[0]:
                    os.remove(self._segment_path(number))
            segments = [n for n in segments if n >= self.ack_pos[0]] or [self.ack_pos[0]]
            self.pending_events, self.pending_bytes = self._scan(segments)
            self.write_seg = segments[-1]
            self.writer: BinaryIO = open(self._segment_path(self.write_seg), "ab")
        except OSError as err:
            raise DiskQueueError(f"queue.disk.path {path}: {err.strerror or err}") from None
        self.replayed = self.pending_events     # found on disk at start: sent again
        self.read_pos: Position = self.ack_pos
        self.reader: BinaryIO | None = None
        self.reader_seg = -1

    # -- files ------------------------------------------------------------------

    def _segment_path(self, number: int) -> str:
        return os.path.join(self.path, f"seg-{number:010d}.dat")

    def _segments(self) -> list[int]:
        return sorted(int(m.group(1)) for name in os.listdir(self.path) if (m := _SEGMENT.match(name)))

    def _read_ack(self) -> Position:
        try:
            with open(os.path.join(self.path, "ack.json"), encoding="utf-8") as fh:
                state = json.load(fh)
            return int(state["segment"]), int(state["offset"])
        except FileNotFoundError:
            return 0, 0
        except (ValueError, KeyError, TypeError):
            raise DiskQueueError(f"queue.disk.path {self.path}: ack.json is damaged") from None

    def _write_ack(self, pos: Position) -> None:
        temporary = os.path.join(self.path, "ack.json.tmp")
        with open(temporary, "w", encoding="utf-8") as fh:
            json.dump({"segment": pos[0], "offset": pos[1]}, fh)
        os.replace(temporary, os.path.join(self.path, "ack.json"))

    def _scan(self, segments: list[int]) -> tuple[int, int]:
        """Count what is after the ack position; cut a torn record off the last segment."""
        events = size = 0
        for number in segments:
            start = self.ack_pos[1] if number == self.ack_pos[0] else 0
            path = self._segment_path(number)
            if not os.path.exists(path):
                open(path, "ab").close()
            with open(path, "rb") as fh:
                fh.seek(start)
                good = start
                while True:
                    record = _read_record(fh)
                    if record is None:
                        break
                    _, count, length = record
                    events += count
                    size += length
                    good = fh.tell()
                if good != os.path.getsize(path):
                    self.torn_records += 1
                    os.truncate(path, good)
        return events, size

    # -- writing (the decoding thread) -----------------------------------------------

    def append(self, batch: Batch) -> bool:
        """Write a batch; False (nothing written) when it would exceed max_bytes."""
        payload = orjson.dumps(batch)
        record = HEADER.pack(len(payload), zlib.crc32(payload), len(batch)) + payload
        with self.cond:
            if self.pending_bytes and self.pending_bytes + len(record) > self.max_bytes:
                return False
            if self.writer.tell() >= SEGMENT_BYTES:
                self._sync()
                self.writer.close()
                self.write_seg += 1
                self.writer = open(self._segment_path(self.write_seg), "ab")
            self.writer.write(record)
            self.writer.flush()
            now = time.monotonic()
            if self.fsync == "always" or (self.fsync == "interval" and now - self.last_fsync >= FSYNC_INTERVAL_S):
                self._sync()
                self.last_fsync = now
            self.pending_bytes += len(record)
            self.pending_events += len(batch)
            self.cond.notify_all()
        return True

    def _sync(self) -> None:
        if self.fsync != "never":
            os.fsync(self.writer.fileno())

    # -- reading and acknowledging (the output thread) --------------------------------

    def get(self, timeout_s: float) -> tuple[Batch, Position, int] | None:
        """The next batch, its end position and size in bytes; None when nothing came in time."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                item = self._read_next()
                if item is not None:
                    return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def _read_next(self) -> tuple[Batch, Position, int] | None:
        segment, offset = self.read_pos
        while True:
            if self.reader_seg != segment:
                if self.reader is not None:
                    self.reader.close()
                self.reader = open(self._segment_path(segment), "rb")
                self.reader_seg = segment
            self.reader.seek(offset)
            record = _read_record(self.reader)
            if record is not None:
                payload, _, length = record
                self.read_pos = (segment, self.reader.tell())
                batch = [(doc_id, doc) for doc_id, doc in orjson.loads(payload)]
                return batch, self.read_pos, length
            if segment >= self.write_seg:
                return None
            segment, offset = segment + 1, 0       # that segment is complete: on to the next
            self.read_pos = (segment, offset)

    def ack(self, pos: Position, events: int, size: int) -> None:
        """The batch ending at `pos` was delivered (or failed for good): never send it again."""
        with self.cond:
            self.pending_events -= events
            self.pending_bytes -= size
            self.ack_pos = pos
            self._write_ack(pos)
            for number in self._segments():
                if number < pos[0]:
                    os.remove(self._segment_path(number))

    def empty(self) -> bool:
        with self.cond:
            return self.pending_events == 0

    def counters(self) -> dict[str, int]:
        return {"queue.disk.events": self.pending_events, "queue.disk.bytes": self.pending_bytes,
                "queue.disk.replayed": self.replayed, "queue.disk.torn_records": self.torn_records}

    def close(self) -> None:
        with self.cond:
            self._sync()
            self.writer.close()
            if self.reader is not None:
                self.reader.close()


def _read_record(fh: BinaryIO) -> tuple[bytes, int, int] | None:
    """(payload, documents, record length) of the next complete, intact record, else None."""
    header = fh.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    length, crc, count = HEADER.unpack(header)
    payload = fh.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return payload, count, HEADER.size + length
