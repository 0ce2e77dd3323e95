"""`--workers N` changes where documents are made, never which: 1, 2 and 4 workers
give the same documents with the same `_id`s (compared sorted: the order in
which workers deliver legitimately differs).

Every bundled capture (pcaps/**) is read in one run (each file is its own
capture source), with flow reports and per-packet documents on, so flow ids,
tick-driven expiry, flow periods and per-packet numbering are compared too.
The benchmark generators' captures (tests/bench/gen_realistic.py and
gen_mixed.py, smaller than the benchmark's) are compared as well; the
full-size benchmark captures are compared by tests/bench/same_output.py
--workers (see docs/performance.md).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from running import CONSOLE_WITH_IDS

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tests" / "bench"

# The real command line, with console lines written as [_id, document].
CHILD = CONSOLE_WITH_IDS


def documents(files: list[Path], workers: int, *extra: str) -> list[bytes]:
    args = [a for f in files for a in ("-I", str(f))]
    proc = subprocess.run([sys.executable, "-c", CHILD, "run", *args, "--console",
                           "--workers", str(workers), "-E", "logging.level=error", *extra],
                          capture_output=True, cwd=ROOT, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert f"{_frames(proc.stderr)} packets" in proc.stderr.decode()
    return sorted(proc.stdout.splitlines())


def _frames(stderr: bytes) -> str:
    line = stderr.decode().strip().splitlines()[-1]
    return line.split(" packets,")[0].rsplit(" ", 1)[-1]


def assert_same(one: list[bytes], other: list[bytes], label: str) -> None:
    if one == other:
        return
    only_one = sorted(set(one) - set(other))[:3]
    only_other = sorted(set(other) - set(one))[:3]
    pytest.fail(f"{label}: {len(one)} documents with 1 worker, {len(other)} with more;\n"
                f"only with 1: {[d[:400] for d in only_one]}\nonly with more: "
                f"{[d[:400] for d in only_other]}")


BUNDLED = sorted(p for p in (ROOT / "pcaps").glob("**/*.pcap*"))


@pytest.mark.parametrize("extra", [(), ("-E", "wirebeat.packets.enabled=true")],
                         ids=["transactions+flows", "per-packet"])
def test_bundled_captures_same_documents_with_1_2_4_workers(extra: tuple[str, ...]) -> None:
    assert len(BUNDLED) > 20
    one = documents(BUNDLED, 1, *extra)
    assert len(one) > 500
    for workers in (2, 4):
        assert_same(one, documents(BUNDLED, workers, *extra), f"bundled, {workers} workers")


@pytest.fixture(scope="module")
def bench_captures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("bench")
    realistic, mixed = out / "realistic.pcap", out / "mixed.pcap"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    subprocess.run([sys.executable, str(BENCH / "gen_realistic.py"), str(realistic),
                    "--packets", "30000", "--seconds", "60", "--concurrent", "300"],
                   check=True, capture_output=True, env=env)
    subprocess.run([sys.executable, str(BENCH / "gen_mixed.py"), str(mixed), "--packets", "20000"],
                   check=True, capture_output=True, env=env)
    return [realistic, mixed]


def test_benchmark_captures_same_documents_with_1_2_4_workers(bench_captures: list[Path]) -> None:
    for capture in bench_captures:
        one = documents([capture], 1)
        assert len(one) > 1000
        for workers in (2, 4):
            assert_same(one, documents([capture], workers), f"{capture.name}, {workers} workers")
