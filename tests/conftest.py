"""Shared test fixtures: the wirebeat command, decoded documents, the real Elasticsearch.

Tests that index use the real single-node Elasticsearch started by
scripts/esnode.py (fetched from Maven Central, cached). When it cannot start,
those tests fail — they never skip, in CI or elsewhere.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

WIREBEAT = [sys.executable, "-m", "wirebeat.cli"]


def run_wirebeat(*args: str, input: bytes | None = None, timeout: float = 120,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the real command line; logs go to stderr, documents (with --console) to stdout."""
    return subprocess.run([*WIREBEAT, *args], input=input, capture_output=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})}, check=False)


def decode_file(path: str | Path, *overrides: str, flows: bool = False) -> list[dict]:
    """Documents for one capture, as `wirebeat run -I PATH --console --strict` prints them.

    Flow reports are left out unless `flows` is true: a decoder's tests count
    its own documents (the flow tests and the template test ask for them).
    """
    extra = [a for o in overrides for a in ("-E", o)]
    if not flows:
        extra += ["-E", "wirebeat.flows.enabled=false"]
    proc = run_wirebeat("run", "-I", str(path), "--console", "--strict", *extra)
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module", autouse=True)
def _no_wirebeat_outlives_its_module() -> Iterator[None]:
    """A test that fails before stopping its `running.Wirebeat` would leave it running
    (a run against a dead Elasticsearch retries for ever), loading the host under
    every later test: whatever a module started is killed when the module ends."""
    from running import Wirebeat
    yield
    while Wirebeat.started:
        Wirebeat.started.pop().kill()


@pytest.fixture
def wirebeat() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    return run_wirebeat


@pytest.fixture
def decode() -> Callable[..., list[dict]]:
    return decode_file


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    """URL of the real Elasticsearch node; fails (never skips) if it cannot start."""
    import esnode
    already_running = esnode.url() is not None
    try:
        url = esnode.start()
    except Exception as err:    # the reason is the test failure's message
        pytest.fail(f"Elasticsearch could not be started by scripts/esnode.py: {err}")
    yield url
    # Stop only a node this session started: a developer's or the demo's stays up.
    if not already_running and os.environ.get("WIREBEAT_KEEP_ES") != "1":
        esnode.stop()
