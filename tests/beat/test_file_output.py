"""The file output: NDJSON, rotated by size, keeping number_of_files."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import PCAPS, decode_file

CAPTURE = PCAPS / "icmp" / "ping.pcap"


def _run_to_files(wirebeat, out: Path, rotate_kb: int, keep: int) -> None:
    proc = wirebeat("run", "-I", str(CAPTURE), "-E", f"output.file.path={out}",
                    "-E", f"output.file.rotate_every_kb={rotate_kb}",
                    "-E", f"output.file.number_of_files={keep}")
    assert proc.returncode == 0, proc.stderr.decode()


def _lines(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for p in paths for line in p.read_text().splitlines()]


def test_file_output_writes_exactly_the_console_documents(wirebeat, tmp_path: Path):
    _run_to_files(wirebeat, tmp_path, rotate_kb=10240, keep=7)
    [only] = list(tmp_path.iterdir())
    assert only.name == "wirebeat.ndjson"
    assert _lines([only]) == decode_file(CAPTURE, flows=True)


def test_rotation_keeps_every_file_under_the_size_and_loses_nothing_within_the_count(wirebeat, tmp_path: Path):
    _run_to_files(wirebeat, tmp_path, rotate_kb=2, keep=50)
    files = sorted(tmp_path.iterdir())
    assert len(files) > 2
    assert all(p.stat().st_size <= 2048 for p in files)
    expected = decode_file(CAPTURE, flows=True)
    assert sorted(map(json.dumps, _lines(files))) == sorted(map(json.dumps, expected))


def test_rotation_drops_the_oldest_files_beyond_number_of_files(wirebeat, tmp_path: Path):
    _run_to_files(wirebeat, tmp_path, rotate_kb=2, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["wirebeat.ndjson", "wirebeat.ndjson.1"]
    # The newest documents are in the current file: the last one written is the last line.
    last = decode_file(CAPTURE, flows=True)[-1]
    assert _lines([tmp_path / "wirebeat.ndjson"])[-1] == last
