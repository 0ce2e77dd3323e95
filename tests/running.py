"""`wirebeat run` as a background process, for tests of live sources and signals.

Stdout (documents with --console) and stderr (JSON log lines, then the
summary) are read by threads as they come, so a test can wait for a document
or a log event while the process runs, then stop it with a signal and look at
everything it wrote.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["Wirebeat", "needs_extension", "require", "wait_until"]


def require(condition: bool, what: str) -> None:
    """Skip when a component is missing, except under CI=true, where that is a failure."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"missing in CI: {what}")
    pytest.skip(f"missing: {what}")


def needs_extension(module: Any) -> pytest.MarkDecorator:
    """Mark for tests of a C accelerator (`module`: it, or None when it did not import).

    A missing extension skips, except under CI=true, where the tests run and fail.
    WIREBEAT_PURE_PYTHON=1 turns the accelerators off in wirebeat.accel, so the
    engine paths these tests compare against the C ones are Python too: skipped,
    in CI as elsewhere (CI does not set it)."""
    if os.environ.get("WIREBEAT_PURE_PYTHON", "") not in ("", "0"):
        return pytest.mark.skip(reason="WIREBEAT_PURE_PYTHON=1: the C accelerators are off by request")
    return pytest.mark.skipif(module is None and os.environ.get("CI") != "true",
                              reason="C extension not built (a failure under CI=true)")


def require_root_and_tools(*tools: str) -> None:
    require(os.geteuid() == 0, "root (network namespaces, live capture)")
    for tool in tools:
        require(shutil.which(tool) is not None, f"the {tool} command")


def wait_until(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition",
               interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class Wirebeat:
    """A running `wirebeat run ...`; `prefix` runs it through e.g. `ip netns exec NS`,
    `command` replaces `python -m wirebeat.cli` (e.g. with a launcher script)."""

    started: list["Wirebeat"] = []     # every one, so conftest can end what a failed test left

    def __init__(self, *args: str, prefix: Sequence[str] = (), http: bool = True,
                 command: Sequence[str] = (sys.executable, "-m", "wirebeat.cli")) -> None:
        extra = ["-E", "http.enabled=true", "-E", "http.port=0"] if http else []
        self.argv = [*prefix, *command, "run", *args, *extra]
        self.prefix = list(prefix)
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        Wirebeat.started.append(self)
        self.stdout_lines: list[bytes] = []
        self.stderr_lines: list[bytes] = []
        self.threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines), daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines), daemon=True)]
        for t in self.threads:
            t.start()
        self.stats_url: str | None = None
        if http:
            event = self.wait_for_log("stats endpoint listening")
            self.stats_url = event["url"]

    @staticmethod
    def _read(stream: Any, into: list[bytes]) -> None:
        for line in iter(stream.readline, b""):
            into.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.stderr_lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stderr_text(self) -> str:
        return b"".join(self.stderr_lines).decode(errors="replace")

    def wait_for_log(self, event: str, timeout_s: float = 20.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            if self.proc.poll() is not None and not any(e.get("event") == event for e in self.logs()):
                time.sleep(0.2)       # let the reader threads catch up, then report
                raise AssertionError(f"wirebeat exited ({self.proc.returncode}) before logging "
                                     f"{event!r}:\n{self.stderr_text()}")
            return next((e for e in self.logs() if e.get("event") == event), None)
        return wait_until(find, timeout_s, f"log event {event!r}")

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.stdout_lines) if line.strip()]

    def stats(self) -> dict[str, Any]:
        """GET /stats: in wirebeat's network namespace when it runs in another one."""
        assert self.stats_url is not None
        if not self.prefix:
            with urllib.request.urlopen(self.stats_url, timeout=5) as response:
                return json.loads(response.read())
        fetch = "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=5).read())"
        proc = subprocess.run([*self.prefix, sys.executable, "-c", fetch, self.stats_url],
                              capture_output=True, check=True, timeout=30)
        return json.loads(proc.stdout)

    def counter(self, name: str) -> int:
        return self.stats()["counters"].get(name, 0)

    def wait_for_counter(self, name: str, at_least: int, timeout_s: float = 20.0) -> None:
        wait_until(lambda: self.counter(name) >= at_least, timeout_s,
                   f"counter {name} >= {at_least} (stderr so far:\n{self.stderr_text()[-2000:]})")

    def status(self) -> dict[str, str]:
        """This process's /proc status lines (Uid, CapEff, ...)."""
        with open(f"/proc/{self.pid}/status", encoding="utf-8") as fh:
            return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> tuple[int, float]:
        """Send `sig`, wait for the exit; (exit code, seconds it took)."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout_s)
        took = time.monotonic() - started
        for t in self.threads:
            t.join(5)
        return code, took

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def summary(self) -> str:
        """The one-line summary printed last on stderr."""
        lines = [line for line in self.stderr_text().splitlines() if line.startswith("wirebeat: ")]
        assert lines, self.stderr_text()
        return lines[-1]


# `wirebeat run` whose console lines are [_id, document]: run as
# [sys.executable, "-c", CONSOLE_WITH_IDS, "run", ...] to compare outputs with their _ids.
CONSOLE_WITH_IDS = """
import sys, orjson, wirebeat.outputs as o
def send(self, batch, stopping):
    self.stream.write(b"".join(orjson.dumps([i, d]) + b"\\n" for i, d in batch))
    return 0
o.ConsoleOutput.send = send
from wirebeat.cli import main
sys.exit(main(sys.argv[1:]))
"""
