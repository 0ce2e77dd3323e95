"""Logging: structured events to stderr, JSON lines when stderr is not a terminal.

Operators ship the JSON lines to their own log pipeline; on a terminal the
same events read as plain text. Nothing is ever logged to stdout, which
belongs to `--console` documents.

A JSON line holds the logger's `component`, the call's keywords, `event`,
`level`, `timestamp` (ISO 8601, UTC) and, with `exc_info=True`, `exception`
(the traceback): the shape structlog's JSON renderer gave these lines before
this module replaced it. structlog cost ~37 ms of CPU at every start (its
import pulls in asyncio), a tenth of a short file run.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from typing import Any

__all__ = ["Logger", "configure", "get"]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class _Settings:
    threshold = _LEVELS["info"]
    json_lines = True


_settings = _Settings()
_write_lock = threading.Lock()


def configure(level: str = "info", json_lines: bool | None = None) -> None:
    """Log events at `level` and above (an unknown name means info) to stderr."""
    _settings.threshold = _LEVELS.get(level, _LEVELS["info"])
    _settings.json_lines = not sys.stderr.isatty() if json_lines is None else json_lines


class Logger:
    """`log.info("event", key=value, ...)`; `exc_info=True` adds the current traceback."""

    __slots__ = ("component",)

    def __init__(self, component: str) -> None:
        self.component = component

    def debug(self, event: str, **kw: Any) -> None:
        self._log(10, "debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._log(20, "info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._log(30, "warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._log(40, "error", event, kw)

    def critical(self, event: str, **kw: Any) -> None:
        self._log(50, "critical", event, kw)

    def _log(self, number: int, level: str, event: str, kw: dict[str, Any]) -> None:
        if number < _settings.threshold:
            return
        exc_info = kw.pop("exc_info", None)
        record: dict[str, Any] = {"component": self.component, **kw, "event": event, "level": level,
                                  "timestamp": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")}
        if exc_info:
            info = sys.exc_info() if exc_info is True else exc_info
            if isinstance(info, BaseException):
                info = (type(info), info, info.__traceback__)
            # Imported at the first traceback logged (~11 M instructions of every start-up
            # otherwise); before a user switch by privileges._LATE_IMPORTS.
            import traceback
            record["exception"] = "".join(traceback.format_exception(*info)).rstrip("\n")
        line = (json.dumps(record, default=repr) if _settings.json_lines else _plain(record))
        stream = sys.stderr         # as it is now (tests replace it)
        with _write_lock:
            stream.write(line + "\n")
            stream.flush()


def _plain(record: dict[str, Any]) -> str:
    """One event as text for a terminal: time, level, event, then key=value, sorted."""
    rest = {k: v for k, v in record.items() if k not in ("timestamp", "level", "event", "exception")}
    pairs = " ".join(f"{k}={_text(v)}" for k, v in sorted(rest.items()))
    line = f"{record['timestamp']} [{record['level']:<9}] {record['event']:<30} {pairs}".rstrip()
    return line + ("\n" + record["exception"] if "exception" in record else "")


def _text(value: Any) -> str:
    return value if isinstance(value, str) and value and not any(c.isspace() for c in value) else repr(value)


def get(name: str) -> Logger:
    return Logger(name)
