"""wirebeat's log lines (beat/logs.py): JSON events on stderr, filtered by level.

Log shippers and tests/running.py read these keys: `component`, the call's
keywords, `event`, `level`, `timestamp` (ISO 8601 UTC) and `exception`.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wirebeat import logs


class _Err:
    """What the test wrote to stderr so far (pytest's capture stands in for it: configure()
    runs inside each test, after pytest has put its own sys.stderr in place)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys, self.text = capsys, ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[_Err]:
    settings = dict(vars(logs._settings))
    yield _Err(capsys)
    vars(logs._settings).clear()
    vars(logs._settings).update(settings)     # as other tests found it


def _lines(stream: _Err) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_component_keywords_event_level_and_utc_time(stderr: _Err) -> None:
    logs.configure("info", json_lines=True)
    before = dt.datetime.now(dt.timezone.utc)
    logs.get("engine").info("file done", packets=3, path=Path("/tmp/x.pcap"), names=["a", "b"])
    [line] = stderr.getvalue().splitlines()
    # Key order too: what structlog's JSON renderer wrote before.
    assert list(json.loads(line)) == ["component", "packets", "path", "names", "event", "level", "timestamp"]
    event = json.loads(line)
    assert {k: v for k, v in event.items() if k != "timestamp"} == {
        "component": "engine", "packets": 3, "path": "PosixPath('/tmp/x.pcap')", "names": ["a", "b"],
        "event": "file done", "level": "info"}
    assert event["timestamp"].endswith("Z")
    stamp = dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert before <= stamp <= dt.datetime.now(dt.timezone.utc)


def test_events_below_the_level_are_dropped(stderr: _Err) -> None:
    logs.configure("warning", json_lines=True)
    log = logs.get("x")
    log.debug("a")
    log.info("b")
    log.warning("c")
    log.error("d")
    log.critical("e")
    assert [(e["event"], e["level"]) for e in _lines(stderr)] == [
        ("c", "warning"), ("d", "error"), ("e", "critical")]
    logs.configure("debug", json_lines=True)
    log.debug("f")
    assert _lines(stderr)[-1]["event"] == "f"


def test_exc_info_adds_the_traceback(stderr: _Err) -> None:
    logs.configure("info", json_lines=True)
    try:
        {}["missing"]
    except KeyError:
        logs.get("x").error("decoder crashed", exc_info=True, decoder="dns")
    [event] = _lines(stderr)
    assert "exc_info" not in event and event["decoder"] == "dns"
    assert event["exception"].startswith("Traceback (most recent call last):")
    assert event["exception"].endswith("KeyError: 'missing'")
    logs.get("x").error("no error", exc_info=False)
    assert "exception" not in _lines(stderr)[-1]


def test_plain_text_for_a_terminal(stderr: _Err) -> None:
    logs.configure("info", json_lines=False)
    logs.get("cli").info("started", workers=2, user="nobody")
    text = stderr.getvalue()
    assert "[info     ] started" in text and "component=cli user=nobody workers=2" in text
    with pytest.raises(ValueError):
        json.loads(text)


def test_lines_from_threads_never_interleave(stderr: _Err) -> None:
    logs.configure("info", json_lines=True)
    log = logs.get("t")

    def burst(n: int) -> None:
        for i in range(200):
            log.info("x" * 200, thread=n, i=i)

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = _lines(stderr)
    assert len(events) == 800 and {(e["thread"], e["i"]) for e in events} == {
        (n, i) for n in range(4) for i in range(200)}
