"""Counters and process statistics: what the periodic log line and the summary say.

Hot-path counters live as plain integer attributes on the objects that bump
them (engine, defragmenter, pipeline); `Stats` holds the labelled, rarer ones
(malformed per decoder and reason, ...). `snapshot()` gathers everything into
one flat mapping of dotted names, with the process's CPU time and RSS.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["Stats", "log_once"]

_logged_once: set[str] = set()


def log_once(log: Any, message: str, **kwargs: Any) -> None:
    """Log a message the first time only: a decoder bug must not flood the log."""
    if message in _logged_once:
        return
    _logged_once.add(message)
    log.error(message, **kwargs)


class Stats:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self._sources: list[Callable[[], dict[str, int]]] = []
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        self._peak_rss = 0

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        if labels:
            name = name + "." + ".".join(f"{v}" for _, v in sorted(labels.items()))
        self.counters[name] += n

    def add_source(self, source: Callable[[], dict[str, int]]) -> None:
        """Register a callable returning more counters (read at snapshot time)."""
        self._sources.append(source)

    def process(self) -> dict[str, Any]:
        """CPU time, RSS and open descriptors, from the kernel as psutil reads them on Linux
        (times(2), /proc/self/statm, /proc/self/fd) without psutil's ~8 ms import."""
        cpu = os.times()
        try:
            with open("/proc/self/statm", "rb") as fh:
                rss = int(fh.read().split()[1]) * self._page_size
        except (OSError, IndexError, ValueError):
            rss = 0
        try:
            fds = len(os.listdir("/proc/self/fd"))
        except OSError:          # after a switch to another user the process is not dumpable
            fds = -1
        self._peak_rss = max(self._peak_rss, rss)
        return {"cpu_user_s": round(cpu.user, 3), "cpu_system_s": round(cpu.system, 3),
                "rss_bytes": rss, "peak_rss_bytes": self.peak_rss(), "open_fds": fds}

    def peak_rss(self) -> int:
        """Peak resident set size: the kernel's high-water mark where Linux has one."""
        try:
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return max(self._peak_rss, int(line.split()[1]) * 1024)
        except OSError:
            pass
        return self._peak_rss

    def snapshot(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for source in self._sources:
            merged.update(source())
        merged.update(self.counters)
        return {k: merged[k] for k in sorted(merged) if merged[k]}

