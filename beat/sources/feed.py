"""Live sources (ZeroMQ feeds, interfaces) hand their input to the main thread.

Each live source runs one thread that only receives: it puts batches of raw
input on one bounded queue, and the main thread, which alone runs the engine,
takes them off and calls the source's `deliver`. The queue holds at most
`wirebeat.limits.max_queued_frames` frames (in batches of up to 256). When it
is full a source either waits (live capture: the kernel buffer absorbs the
burst and counts its drops) or drops the batch and counts it (ZeroMQ: waiting
would only move the loss to the socket's high-water mark, where nothing
counts it).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from wirebeat import logs

__all__ = ["BATCH_ITEMS", "Feed", "LiveInput", "SourceError"]

log = logs.get("feed")

BATCH_ITEMS = 256


class SourceError(Exception):
    """A source cannot be opened or fails (the CLI exits 2 with this line when opening)."""


class LiveInput(Protocol):
    name: str
    kind: str
    last_seen: dict[str, tuple[float, float]]     # capture source -> (packet ts, monotonic)

    def run(self, hand_over: Callable[[Any, list[Any], bool], bool], stop: threading.Event) -> None: ...

    def deliver(self, batch: list[Any], on_frame: Callable[[float, int, bytes, str], None],
                on_event: Callable[[Any, Any], None]) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def summary(self) -> str: ...


class Feed:
    def __init__(self, max_frames: int) -> None:
        self.queue: queue.Queue[tuple[LiveInput, list[Any]]] = queue.Queue(
            maxsize=max(2, max_frames // BATCH_ITEMS))
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sources: list[LiveInput] = []
        self.failed: list[str] = []

    def hand_over(self, source: LiveInput, batch: list[Any], wait: bool) -> bool:
        """Queue a batch; False if it was not queued (full and not waiting, or stopping)."""
        if not wait:
            try:
                self.queue.put_nowait((source, batch))
                return True
            except queue.Full:
                return False
        while not self.stop.is_set():
            try:
                self.queue.put((source, batch), timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def start(self, sources: list[LiveInput]) -> None:
        for source in sources:
            thread = threading.Thread(target=self._run, args=(source,), daemon=True,
                                      name=f"{source.kind} {source.name}")
            self.sources.append(source)
            self.threads.append(thread)
            thread.start()

    def _run(self, source: LiveInput) -> None:
        try:
            source.run(self.hand_over, self.stop)
        except SourceError as err:
            self.failed.append(str(err))
        except Exception as err:                 # a bug: say so, keep the other sources
            self.failed.append(f"{source.kind} {source.name}: {type(err).__name__}: {err}")
            log.error("source thread failed", source=source.name, exc_info=True)

    def get(self, timeout: float) -> tuple[LiveInput, list[Any]] | None:
        try:
            if timeout <= 0:
                return self.queue.get_nowait()
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop every source thread and wait for them (bounded)."""
        self.stop.set()
        for source in self.sources:
            interrupt = getattr(source, "interrupt", None)
            if interrupt is not None:
                interrupt()
        for thread in self.threads:
            thread.join(timeout_s)
