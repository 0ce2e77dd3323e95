"""Bounded queue between the decoders and the output.

Documents are grouped into batches and handed to one output thread through a
queue that holds at most `queue.mem.events` documents. What happens when it is
full depends on the sources (ARCHITECTURE.md, "nothing is lost silently"):
- files can wait, so `publish` blocks: the reader slows to the output's pace;
- live capture and ZeroMQ cannot wait without the kernel or the collector
  dropping instead, so the batch is dropped and counted (`queue.dropped`),
  and the summary says so.

With `queue.disk.path` set, batches go through a DiskQueue instead
(beat/diskqueue.py): they survive an outage longer than memory and a crash;
its size cap drops (counted, logged) instead of the memory cap.

A batch is a list of (id, document) pairs or, from the flow table's C core, a
`Block`: many documents as one NDJSON text with their ids (`publish_block`),
so flow reports need no Python object each. Every count (published, queued,
acked, failed, dropped) is in documents either way. Blocks are offered only
to outputs that declare `accepts_blocks` and never go to the disk queue.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

from orjson import Fragment, dumps

from wirebeat import logs
from wirebeat.diskqueue import DiskQueue
from wirebeat.template import TemplateError

__all__ = ["BLOCK_MAX_BYTES", "BLOCK_SMALL_BYTES", "Block", "Output", "OutputStopped", "Pipeline", "documents"]

log = logs.get("pipeline")

Batch = list[tuple[str, dict[str, Any]]]

# A flow-report block is handed over at `batch_size` documents or once its text reaches this
# many bytes (counted: queue.blocks_at_byte_cap): what the C core holds at once stays bounded.
BLOCK_MAX_BYTES = 4 * 2**20
# Outputs that write a block's text as it is (console, file) declare `block_bytes`: they take
# blocks of about this many bytes, and `publish_block` returns once the output has written the
# block, so that the C core writes the next one into the same buffer, still in the CPU's cache.
# (A sweep's blocks, queued, were each written into memory long evicted: one last-level cache
# miss per 64 bytes of report text; docs/performance.md, flow11.) 64 KiB, not 256: between two
# uses of the buffer a sweep reads each reported record and its cached text, ~12 lines a report,
# and a 256 KiB buffer was half out of a 512 KiB L2 by then (cachegrind, realistic 100k, L2 as
# its last level: 233,000 fewer write misses at 64 KiB, 0.2% more instructions; 32 and 128 KiB
# gained less; docs/performance.md, "Sixteenth session"). The Elasticsearch output keeps
# blocks of `batch_size` documents, queued: one bulk request each.
BLOCK_SMALL_BYTES = 64 * 1024


class Block:
    """Documents as NDJSON text: `data` holds `count` JSON documents, each followed by a
    newline, exactly the bytes orjson makes of them; `ids` their _ids, one per line."""

    __slots__ = ("data", "ids", "count")

    def __init__(self, data: bytes, ids: bytes, count: int) -> None:
        self.data = data
        self.ids = ids
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[str, Fragment]]:
        """(id, Fragment) pairs, so code written for lists of pairs (a patched output's
        send, a test's) reads a block too; the outputs here write `data` as it is."""
        return iter(self.pairs())

    def pairs(self) -> list[tuple[str, Fragment]]:
        """The documents as (id, orjson.Fragment) pairs, as one `publish` each would have made."""
        ids = self.ids.decode().split("\n")
        # bytes for Fragment (a worker's blocks are bytearrays: WorkerPool.direct)
        lines = (self.data if self.data.__class__ is bytes else bytes(self.data)).split(b"\n")
        if len(ids) != self.count + 1 or len(lines) != self.count + 1:
            raise ValueError(f"block of {self.count} documents holds {len(lines) - 1} lines, "
                             f"{len(ids) - 1} ids")
        return list(zip(ids[:-1], map(Fragment, lines[:-1])))


def documents(batch: Batch | Block) -> Batch:
    """A batch as (id, document) pairs: a Block expanded, a list as it is."""
    return batch.pairs() if batch.__class__ is Block else batch  # type: ignore[union-attr]


class OutputStopped(Exception):
    """The output gave up on a batch because the pipeline is shutting down."""


class Output(Protocol):
    name: str

    def send(self, batch: Batch, stopping: threading.Event) -> int:
        """Deliver the batch; return how many documents failed for good (counted, logged).

        With `accepts_blocks = True` the batch may also be a Block (see `documents`).

        Retries transient failures itself until `stopping` is set, then raises
        OutputStopped.
        """
        ...

    def close(self) -> None: ...


class Pipeline:
    def __init__(self, output: Output, max_events: int = 32768, batch_size: int = 1024,
                 flush_timeout_s: float = 1.0, block_when_full: bool = True,
                 disk: DiskQueue | None = None) -> None:
        self.output = output
        self.disk = disk
        self.closing = False
        self.last_drop_log = 0.0
        self.batch_size = max(1, min(batch_size, max_events))
        self.flush_timeout_s = flush_timeout_s
        self.block_when_full = block_when_full
        # The cap counts documents, not batches: batches flushed by the timeout
        # are small, and a cap in batches would hold far fewer documents than
        # queue.mem.events says when the output is down for a while.
        self.max_events = max(1, max_events)
        self.queued_events = 0
        self.space = threading.Condition()
        self.queue: queue.Queue[Batch | Block | None] = queue.Queue()
        self.batch: Batch = []
        self.batch_started = 0.0
        self.published = 0
        # An output that writes orjson.Fragment as it is gets each dict document as its
        # JSON text at once (see publish).
        self.serialise = bool(getattr(output, "accepts_fragments", False))
        # Flow reports as NDJSON blocks (`publish_block`): None when the output does not
        # take them or batches go to the disk queue (it stores (id, document) pairs).
        if not (getattr(output, "accepts_blocks", False) and disk is None):
            self.publish_block = None       # type: ignore[assignment]
        # A flow-report block's size cap in bytes: the output's `block_bytes`, at most
        # BLOCK_MAX_BYTES; with one, publish_block waits until the block is written.
        out_bytes = getattr(output, "block_bytes", None)
        self.block_bytes = max(1, min(out_bytes or BLOCK_MAX_BYTES, BLOCK_MAX_BYTES))
        self.wait_blocks = out_bytes is not None
        self.blocks = 0
        self.blocks_at_byte_cap = 0
        self.acked = 0          # by the output thread
        # Documents other processes wrote to this pipeline's output themselves (worker
        # processes writing console lines: `written_elsewhere`), counted by the main thread.
        self.acked_elsewhere = 0
        self.failed = 0
        self.dropped = 0
        self.in_flight = 0
        self.stopping = threading.Event()
        self.sending = threading.Lock()     # held while output.send runs, in whichever thread
        self.error: BaseException | None = None
        self.close_deadline: float | None = None     # set by hurry()
        self.thread = threading.Thread(target=self._run, name="output", daemon=True)
        self.thread.start()

    def counters(self) -> dict[str, int]:
        counters = {"events.published": self.published, "events.acked": self.acknowledged,
                    "events.failed": self.failed, "queue.dropped": self.dropped,
                    "queue.batches": self.queue.qsize(), "queue.events": self.queued_events,
                    "queue.blocks": self.blocks, "queue.blocks_at_byte_cap": self.blocks_at_byte_cap}
        if self.disk is not None:
            counters.update(self.disk.counters())
        return counters

    @property
    def acknowledged(self) -> int:
        """Documents the output took, here and written by other processes."""
        return self.acked + self.acked_elsewhere

    def written_elsewhere(self, published: int, written: int) -> None:
        """Count documents another process published to this output itself: `written`
        of the `published` reached it (worker processes writing the console's lines; the
        rest count as unacknowledged, as when this pipeline's output stops)."""
        self.published += published
        self.acked_elsewhere += written

    def publish(self, doc_id: str, doc: dict[str, Any]) -> None:
        """Queue one document (called for every document: kept short).

        When the output takes orjson.Fragment, a dict is serialised here, once,
        to the same bytes the output would have made of it: the dict and its
        nested containers are freed now instead of waiting in the batch and the
        queue, where every pass of the garbage collector walked them (the
        collector's cost, not the serialisation, was most of a transaction
        document's output cost).
        """
        batch = self.batch
        if not batch:
            self.batch_started = time.monotonic()
        if self.serialise and doc.__class__ is dict:
            try:
                doc = Fragment(dumps(doc))
            except TypeError:       # not JSON: the output fails on it, as it always did
                pass
        batch.append((doc_id, doc))
        self.published += 1
        if len(batch) >= self.batch_size:
            self.flush()

    def publish_many(self, docs: Batch) -> None:
        """`publish` of each, in one call, for documents that need no serialising here
        (JSON text, orjson.Fragment: a flow table sweep's reports, a worker process's
        documents with `--workers N`): the same batches as one `publish` per document."""
        start, end = 0, len(docs)
        while start < end:
            batch = self.batch
            if not batch:
                self.batch_started = time.monotonic()
            chunk = docs[start:start + max(1, self.batch_size - len(batch))]
            batch.extend(chunk)
            self.published += len(chunk)
            start += len(chunk)
            if len(batch) >= self.batch_size:
                self.flush()

    def publish_block(self, data: bytes, ids: bytes, count: int) -> None:
        """`count` documents as one NDJSON text (a Block): queued as a batch of their own,
        after the batch being filled, so the order is publish order. The caller keeps a
        block within `batch_size` documents (and `block_bytes`).

        For an output with `block_bytes` (console, file), returns once the output has
        written it: the caller's buffer is its own again (see BLOCK_SMALL_BYTES)."""
        self.published += count
        self.blocks += 1
        if len(data) >= BLOCK_MAX_BYTES:
            self.blocks_at_byte_cap += 1
        block = Block(data, ids, count)
        if self.wait_blocks and self._send_here(block):
            return
        self.flush()
        self._enqueue(block)
        if self.wait_blocks:
            with self.space:
                while ((self.queued_events or self.in_flight) and self.error is None
                       and self.thread.is_alive() and not self._out_of_time(None)):
                    self.space.wait(0.5)

    def _send_here(self, block: Block) -> bool:
        """Console and file outputs (`wait_blocks`): while the output thread has nothing queued
        or in flight, this thread sends the partial batch and then the block itself, as `_run`
        would, and True; else False. Handing a block over and waiting for it cost two thread
        switches each way, 40-260 us a block on this VM (docs/performance.md, "Thirteenth
        session"), where writing it takes a few microseconds."""
        with self.space:
            if (self.queued_events or self.in_flight or self.error is not None
                    or not self.thread.is_alive()):
                return False
            batch, self.batch = self.batch, []
            self.in_flight = len(batch) + len(block)
        try:
            with self.sending:
                for item in (batch, block):
                    if item:
                        self._count_sent(item, self.output.send(item, self.stopping))
        except OutputStopped:         # as in _run: the output is done, and so is its thread
            self._end_thread()
        except Exception as err:      # as in _run (a signal's KeyboardInterrupt is not the output's)
            self.error = err
            log.error("output failed", output=self.output.name, error=str(err),
                      exc_info=not isinstance(err, TemplateError))
            self._end_thread()
        finally:
            with self.space:
                self.in_flight = 0
                self.space.notify_all()
        return True

    def _end_thread(self) -> None:
        """The output thread, idle, returns (as it does itself when its output fails)."""
        self.queue.put(None)
        self.thread.join()

    def _count_sent(self, batch: Batch | Block, failed: int) -> None:
        self.failed += failed
        self.acked += len(batch) - failed

    def maybe_flush(self) -> None:
        """Hand over a partial batch that has waited longer than the flush timeout."""
        if self.batch and time.monotonic() - self.batch_started >= self.flush_timeout_s:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        if self.disk is not None:
            self._to_disk(batch)
            return
        self._enqueue(batch)

    def _enqueue(self, batch: Batch | Block) -> None:
        size = len(batch)       # documents (a Block's count)
        with self.space:
            while self.queued_events and self.queued_events + size > self.max_events:
                if not self.block_when_full:
                    self.dropped += size
                    return
                if self.error is not None:
                    raise RuntimeError(f"output {self.output.name} failed: {self.error}")
                if self._out_of_time(None):
                    return      # shutting down: these count as unacknowledged
                self.space.wait(0.5)
            self.queued_events += size
        self.queue.put(batch)   # type: ignore[arg-type]

    def _to_disk(self, batch: Batch) -> None:
        assert self.disk is not None
        while not self.disk.append(batch):
            if not self.block_when_full:
                self.dropped += len(batch)
                now = time.monotonic()
                if now - self.last_drop_log >= 10.0:     # never silent, never a flood
                    self.last_drop_log = now
                    log.warning("disk queue full, documents dropped", max_size=self.disk.max_bytes,
                                dropped_total=self.dropped)
                return
            if self.error is not None:
                raise RuntimeError(f"output {self.output.name} failed: {self.error}")
            if self._out_of_time(None):
                return
            time.sleep(0.2)

    def _run_disk(self) -> None:
        assert self.disk is not None
        while True:
            item = self.disk.get(0.2)
            if item is None:
                if self.closing and self.disk.empty():
                    return
                continue
            batch, position, size = item
            self.in_flight = len(batch)
            try:
                failed = self.output.send(batch, self.stopping)
            except OutputStopped:
                self.in_flight = 0
                return
            except BaseException as err:     # as in _run
                self.error = err
                log.error("output failed", output=self.output.name, error=str(err),
                          exc_info=not isinstance(err, TemplateError))
                return
            self.disk.ack(position, len(batch), size)
            self.failed += failed
            self.acked += len(batch) - failed
            self.in_flight = 0

    def _run(self) -> None:
        if self.disk is not None:
            self._run_disk()
            return
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            size = self.in_flight = len(batch)
            with self.space:
                self.queued_events -= size
                self.space.notify_all()
            try:
                with self.sending:          # (counted under it too: _send_here counts there)
                    self._count_sent(batch, self.output.send(batch, self.stopping))
            except OutputStopped:
                self.in_flight = 0
                return
            except BaseException as err:     # an output bug or refused setup: stop publishing, say why
                self.error = err
                log.error("output failed", output=self.output.name, error=str(err),
                          exc_info=not isinstance(err, TemplateError))
                return
            batch = None        # (a block's buffer is its writer's again: publish_block)
            with self.space:    # publish_block may wait for this
                self.in_flight = 0
                self.space.notify_all()

    def hurry(self, timeout_s: float) -> None:
        """A stop was asked for: whatever flush() or close() waits on, wait at most this long."""
        self.close_deadline = time.monotonic() + timeout_s

    def _out_of_time(self, deadline: float | None) -> bool:
        limits = [d for d in (deadline, self.close_deadline) if d is not None]
        return bool(limits) and time.monotonic() > min(limits)

    def close(self, timeout_s: float | None = None) -> int:
        """Flush, wait for the output to finish (at most `timeout_s`), return unacknowledged count.

        Without a timeout it waits until every document is acknowledged, unless
        hurry() is called meanwhile (a signal during the final flush).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.flush()
        self.closing = True
        self.queue.put(None)
        while self.thread.is_alive() and not self._out_of_time(deadline):
            self.thread.join(0.2)
        if self.thread.is_alive():
            self.stopping.set()
            self.thread.join(5.0)
        self.output.close()
        replayed = 0
        if self.disk is not None:
            replayed = self.disk.replayed
            self.disk.close()
        return self.published + replayed - self.acknowledged - self.failed - self.dropped
