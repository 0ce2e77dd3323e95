"""The main loop of `wirebeat run`: sources in, the engine in this thread, documents out.

Files are read here, in chunks, as fast as the output allows. Live sources
(ZeroMQ feeds, interfaces) receive in their own threads and hand batches over
through `Feed`; this loop takes them off between file chunks, or waits for
them when no file is left. With only files, the loop ends when they are read;
with a live source, it runs until a signal.

Time is packet time. A live source that goes quiet would freeze its clock and
leave transactions open forever, so about once a second an idle source's clock
is moved on by the wall time since its last packet (`Engine.advance`).

Stopping (SIGTERM or SIGINT): the sources stop, frames already queued are
decoded, every open transaction is reported, the output gets up to
`wirebeat.shutdown_timeout` to acknowledge what is queued, then the process
exits (0 when everything was acknowledged). A second signal exits at once.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

from wirebeat import logs
from wirebeat.config import Config
from wirebeat.document import DocumentBuilder
from wirebeat.engine import Engine, quiet_collector
from wirebeat.monitor import StatsServer, source_documents, stats_document
from wirebeat.pipeline import Pipeline
from wirebeat.sources.feed import Feed, LiveInput
from wirebeat.sources.pcapfile import CaptureReader
from wirebeat.sources.zmq import CollectorEvent, ZMQSource, event_document
from wirebeat.stats import Stats
from wirebeat.template import TemplateError

__all__ = ["Runner"]

log = logs.get("wirebeat")

FILE_CHUNK_FRAMES = 16384       # frames read from a file between looks at everything else
IDLE_WAIT_S = 0.2               # with only live sources: longest wait for a batch
LIVE_BUDGET_S = 0.05            # with files too: time given to queued live input per round
HOUSEKEEPING_S = 0.5            # flush partial batches, idle ticks, stats, at most this often
IDLE_AFTER_S = 1.0              # a live source without packets this long gets wall-clock ticks
FEED_STOP_S = 2.0               # how long a source thread gets to stop
WATCHDOG_SLACK_S = 10.0         # after the first signal, exit no later than shutdown_timeout + this
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class Progress:
    """A progress line on a terminal (bytes, packets/s); nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.shown = False

    def update(self, reader: CaptureReader, packets: int, started: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.5:
            return
        self.last = now
        rate = packets / max(now - started, 1e-6)
        done = reader.bytes_consumed
        if reader.size:
            pct = min(100.0, 100.0 * done / reader.size)
            width = 30
            bar = "#" * int(width * pct / 100)
            text = f"[{bar:<{width}}] {pct:5.1f}% {done / 1e6:8.1f} MB {rate:9.0f} packets/s"
        else:
            text = f"{done / 1e6:8.1f} MB {rate:9.0f} packets/s"
        sys.stderr.write(f"\r{reader.name[-30:]} {text}")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


class PipeInput:
    """Standard input for `-I -`.

    A read returns what has arrived instead of waiting for a whole buffer, so
    `tcpdump -U -w - | wirebeat run -I -` is decoded as the frames come. While
    it waits for more, it hands over the documents already built (`idle`: a
    pipeline's timed flush) and looks every WAIT_S whether a signal asked
    wirebeat to stop (`stopping`), and then reads as the end of input: a
    blocked read would otherwise hold a SIGTERM until the writer sends more.
    The Runner sets both.
    """

    WAIT_S = 0.2

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.stopping: Any = lambda: False
        self.idle: Any = lambda: None

    def fileno(self) -> int:
        return self.fd

    def read(self, size: int) -> bytes:
        while not self.stopping():
            if select.select([self.fd], [], [], self.WAIT_S)[0]:
                return os.read(self.fd, size)
            self.idle()
        return b""


class Runner:
    def __init__(self, config: Config, engine: Engine, pipeline: Pipeline, stats: Stats,
                 builder: DocumentBuilder, readers: list[CaptureReader], live: list[LiveInput],
                 server: StatsServer | None) -> None:
        self.config = config
        self.engine = engine
        self.pipeline = pipeline
        self.stats = stats
        self.builder = builder
        self.readers = readers
        self.live = live
        self.feed = Feed(config["wirebeat.limits.max_queued_frames"]) if live else None
        self.server = server
        self.stop_signal: int | None = None
        self.host = socket.gethostname()
        self.damage_lines: list[str] = []
        self.source_failures: list[str] = []
        self.metrics_period = config["logging.metrics.period"]
        self.monitoring_period = config["monitoring.period"] if config["monitoring.enabled"] else 0.0
        stats.add_source(self.live_counters)
        self.file_frames: dict[str, int] = {}      # frames read per capture file
        self.file_damage: dict[str, int] = {}      # damaged records per capture file
        for reader in readers:
            if isinstance(reader.fh, PipeInput):
                reader.fh.stopping = lambda: self.stop_signal is not None
                reader.fh.idle = pipeline.maybe_flush

    # -- signals ---------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_signal is not None:
            sys.stderr.write(f"wirebeat: {signal.Signals(signum).name} again, exiting now\n")
            sys.stderr.flush()
            os._exit(EXIT_FAILURE)
        self.stop_signal = signum
        if self.feed is not None:
            self.feed.stop.set()
        self.pipeline.hurry(self.config["wirebeat.shutdown_timeout"])
        # However the shutdown goes, it is bounded.
        limit = self.config["wirebeat.shutdown_timeout"] + WATCHDOG_SLACK_S
        watchdog = threading.Timer(limit, self._give_up, args=(limit,))
        watchdog.daemon = True
        watchdog.start()

    @staticmethod
    def _give_up(limit: float) -> None:
        sys.stderr.write(f"wirebeat: shutdown took longer than {limit:.0f} s, exiting now\n")
        sys.stderr.flush()
        os._exit(EXIT_FAILURE)

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        started = time.monotonic()
        self.started = started
        quiet_collector()
        if self.feed is not None:
            self.feed.start(self.live)
        if self.server is not None:
            self.server.start()
        progress = Progress(sys.stderr.isatty() and bool(self.readers))
        on_frame = self.engine.on_frame
        # Worker processes (wirebeat.workers) take a file's batch whole: one call, not one per frame.
        on_batch = getattr(self.engine, "on_batch", None)
        # ... and may read a capture file its own way (by offset in a mapped file).
        file_batches = getattr(self.engine, "file_batches", None)
        files = list(self.readers)
        current: Any = None
        now = time.monotonic()
        next_housekeeping = now + HOUSEKEEPING_S
        next_metrics = now + self.metrics_period if self.metrics_period else float("inf")
        next_stats_doc = now + self.monitoring_period if self.monitoring_period else float("inf")
        while self.stop_signal is None:
            if self.feed is not None:
                self._take_live(IDLE_WAIT_S if not files else 0.0)
            if files:
                reader = files[0]
                if current is None:
                    current = reader.batches() if file_batches is None else file_batches(reader)
                source = reader.name
                count, ended = 0, True
                for batch in current:       # lists of (ts, linktype, data, wire_len)
                    if on_batch is not None:
                        on_batch(batch, source)
                    else:
                        for ts, linktype, data, _wire_len in batch:
                            on_frame(ts, linktype, data, source)
                    count += len(batch)
                    if count >= FILE_CHUNK_FRAMES:
                        ended = False
                        break
                self.file_frames[source] = self.file_frames.get(source, 0) + count
                progress.update(reader, self.engine.packets, started)
                if ended:
                    self._end_file(files.pop(0))
                    current = None
            elif self.feed is None:
                break
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_S
                if hasattr(self.engine, "poll"):        # worker processes (wirebeat.workers)
                    self.engine.poll()
                self.pipeline.maybe_flush()
                if self.feed is not None:
                    self._tick_idle_sources(now)
                    # After a signal the sources stop on purpose: only a stop nobody
                    # asked for is an error (a signal can land between two checks here).
                    if not self.feed.alive() and self.stop_signal is None and not self.feed.stop.is_set():
                        self.source_failures = list(self.feed.failed)
                        log.error("every live source has stopped", errors=self.source_failures)
                        break
                if self.server is not None:
                    self.server.update(self.stats.snapshot(), self.source_details())
                if now >= next_metrics:
                    next_metrics = now + self.metrics_period
                    log.info("metrics", **self.stats.snapshot(), **self.stats.process())
                if now >= next_stats_doc:
                    next_stats_doc = now + self.monitoring_period
                    self._publish_stats()
        progress.done()
        return self._shut_down(files, current)

    def _take_live(self, wait_s: float) -> None:
        """Decode queued live input for up to LIVE_BUDGET_S (waiting up to wait_s for the first)."""
        assert self.feed is not None
        on_frame, on_event = self.engine.on_frame, self._on_collector_event
        deadline = time.monotonic() + LIVE_BUDGET_S
        item = self.feed.get(wait_s)
        while item is not None:
            source, batch = item
            source.deliver(batch, on_frame, on_event)
            if time.monotonic() >= deadline or self.stop_signal is not None:
                return
            item = self.feed.get(0)

    def _end_file(self, reader: CaptureReader) -> None:
        self.engine.finish(reader.name)
        reader.close()
        if reader.damage.any():
            d = reader.damage
            self.damage_lines.append(
                f"{reader.name}: {d.truncated_tail} truncated record(s) at the end, "
                f"{d.garbage_records} garbage record(s) ({d.garbage_bytes} bytes skipped), "
                f"{d.unknown_interface} packet(s) on undescribed interfaces")
            self.stats.count("capture.truncated_records", d.truncated_tail)
            self.stats.count("capture.garbage_records", d.garbage_records)
            self.file_damage[reader.name] = d.truncated_tail + d.garbage_records

    def _tick_idle_sources(self, now: float) -> None:
        for source in self.live:
            for name, (ts, seen) in list(source.last_seen.items()):
                idle_s = now - seen
                if idle_s >= IDLE_AFTER_S:
                    self.engine.advance(name, ts + idle_s)

    def _on_collector_event(self, source: ZMQSource, event: CollectorEvent) -> None:
        log.info("collector event", endpoint=source.endpoint, client=event.client,
                 action=event.action, path=event.path)
        doc_id, doc = event_document(event, source.endpoint, time.time())
        self._publish_other(doc_id, doc)

    def _publish_stats(self) -> None:
        now = time.time()
        doc_id, doc = stats_document(self.stats.snapshot(), self.stats.process(), now, self.host)
        self._publish_other(doc_id, doc)
        for doc_id, doc in source_documents(self.source_details(), now, self.host):
            self._publish_other(doc_id, doc)

    def _publish_other(self, doc_id: str, doc: dict) -> None:
        built = self.builder.build_other(doc)
        if built is not None:       # None: a processor dropped it
            self.pipeline.publish(doc_id, built)

    # -- reports ---------------------------------------------------------------

    def live_counters(self) -> dict[str, int]:
        """Counters of every live source, summed where two feeds name the same client."""
        out: dict[str, int] = {}
        for source in self.live:
            for key, value in source.counters().items():
                out[key] = out.get(key, 0) + value
        return out

    def source_details(self) -> list[dict[str, Any]]:
        details: list[dict[str, Any]] = [
            {"kind": "file", "name": r.name, "packets": self.file_frames.get(r.name, 0),
             "malformed": self.file_damage.get(r.name, 0)} for r in self.readers]
        for source in self.live:
            entry: dict[str, Any] = {"kind": source.kind, "name": source.name}
            if isinstance(source, ZMQSource):
                entry["receive_hwm"] = source.receive_hwm
                entry["received_per_client"] = source.received_per_client()
                entry["dropped_per_client"] = source.dropped_per_client()
            else:
                entry.update(source.counters())
            details.append(entry)
        return details

    def _shut_down(self, files: list[CaptureReader], current: Any) -> int:
        stopped_by = self.stop_signal
        if stopped_by is not None:
            log.info("stopping", signal=signal.Signals(stopped_by).name)
        if self.feed is not None:
            self.feed.close(FEED_STOP_S)
            # What the sources had already received is decoded too.
            while self._drain_once():
                pass
            if not self.source_failures:
                self.source_failures = list(self.feed.failed)
        for reader in files:
            if reader is files[0] and current is not None:
                self._end_file(reader)
            else:
                reader.close()
        self.engine.finish()
        if self.monitoring_period:
            self._publish_stats()       # the last numbers, also for a file run shorter than a period
        timeout = None if stopped_by is None and self.feed is None else self.config["wirebeat.shutdown_timeout"]
        unacked = self.pipeline.close(timeout_s=timeout)
        if self.server is not None:
            self.server.close()
        for line in self.damage_lines:
            log.warning("damaged capture", detail=line)
        for line in self.source_failures:
            log.error("source failed", detail=line)
        elapsed = time.monotonic() - self.started
        process = self.stats.process()
        log.info("summary", elapsed_s=round(elapsed, 3), **self.stats.snapshot(), **process)
        print(self._summary(elapsed, unacked, process), file=sys.stderr)
        if isinstance(self.pipeline.error, TemplateError):    # found on a late first contact
            print(f"wirebeat: {self.pipeline.error}", file=sys.stderr)
            return EXIT_USAGE
        if self.pipeline.error is not None or unacked or self.pipeline.failed or self.source_failures:
            return EXIT_FAILURE
        return EXIT_OK

    def _drain_once(self) -> bool:
        assert self.feed is not None
        item = self.feed.get(0)
        if item is None:
            return False
        source, batch = item
        source.deliver(batch, self.engine.on_frame, self._on_collector_event)
        return True

    def _summary(self, elapsed: float, unacked: int, process: dict[str, Any]) -> str:
        kinds = [(len(self.readers), "file(s)"),
                 (sum(1 for s in self.live if s.kind == "zmq"), "ZeroMQ feed(s)"),
                 (sum(1 for s in self.live if s.kind == "interface"), "interface(s)"),
                 (sum(1 for s in self.live if s.kind == "netflow"), "NetFlow listener(s)")]
        inputs = ", ".join(f"{n} {what}" for n, what in kinds if n) or "no input"
        pipeline = self.pipeline
        dropped = f", {pipeline.dropped} dropped (output behind)" if pipeline.dropped else ""
        if pipeline.disk is not None and pipeline.disk.replayed:
            dropped += f", {pipeline.disk.replayed} more replayed from the disk queue"
        packets = self.engine.packets
        pps = packets / elapsed if elapsed > 0 else 0.0
        line = (f"wirebeat: {inputs}, {packets} packets, "
                f"{pipeline.published} documents ({pipeline.acknowledged} acknowledged, {pipeline.failed} failed, "
                f"{unacked} unacknowledged{dropped}) in {elapsed:.2f} s ({pps:.0f} packets/s, "
                f"peak RSS {process['peak_rss_bytes'] / 2**20:.0f} MiB)")
        if self.damage_lines:
            line += "; damaged input, see warning"
        for source in self.live:
            line += "; " + source.summary()
        if getattr(self.engine, "summary", None) and self.engine.summary():     # workers
            line += "; " + self.engine.summary()
        return line
