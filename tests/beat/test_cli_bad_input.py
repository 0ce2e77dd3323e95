"""Bad input gets one clear line and exit 2; damaged captures give all they hold."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import pcapgen as g

T0 = 1_700_000_000_000_000_000
NO_FLOWS = ("-E", "wirebeat.flows.enabled=false")    # these count decoder documents


def _one_line_error(proc) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_missing_file_exits_2_naming_it(wirebeat, tmp_path: Path):
    missing = tmp_path / "nope.pcap"
    line = _one_line_error(wirebeat("run", "-I", str(missing), "--console"))
    assert str(missing) in line and "no such file" in line


def test_garbage_file_exits_2_and_processes_nothing(wirebeat, tmp_path: Path):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all\n" * 10)
    good = tmp_path / "good.pcap"
    req = g.ipv4("10.0.0.1", "10.0.0.2", 1, g.icmp_echo(1, 1))
    g.write_pcap(good, [(T0, g.ethernet(req))])
    proc = wirebeat("run", "-I", str(good), "-I", str(junk), "--console")
    line = _one_line_error(proc)
    assert str(junk) in line and "not a pcap or pcapng file" in line
    assert proc.stdout == b""       # the good file before it was not processed either


@pytest.mark.parametrize("content, words", [
    (b"", "empty file"),
    (b"\xd4\xc3", "too short"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "too short for a pcap header"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00", "too short for a pcapng section header"),
])
def test_file_too_short_for_its_header_exits_2(wirebeat, tmp_path: Path, content, words):
    path = tmp_path / "short.pcap"
    path.write_bytes(content)
    assert words in _one_line_error(wirebeat("run", "-I", str(path), "--console"))


def test_directory_as_input_exits_2(wirebeat, tmp_path: Path):
    assert "is a directory" in _one_line_error(wirebeat("run", "-I", str(tmp_path), "--console"))


def _echo_records(n: int) -> list[bytes]:
    records = []
    for i in range(n):
        req = g.ipv4("10.0.0.1", "10.0.0.2", 1, g.icmp_echo(1, i, b"p" * 20))
        rep = g.ipv4("10.0.0.2", "10.0.0.1", 1, g.icmp_echo(1, i, b"p" * 20, reply=True))
        records.append(g.pcap_record(T0 + i * 10**9, g.ethernet(req)))
        records.append(g.pcap_record(T0 + i * 10**9 + 1000, g.ethernet(rep)))
    return records


@pytest.mark.parametrize("cut", [1, 10, 17, 40])
def test_capture_cut_mid_record_yields_every_complete_record_and_warns(wirebeat, tmp_path: Path, cut):
    records = _echo_records(5)
    data = g.pcap_header() + b"".join(records)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-cut])     # the last record (5th reply) is incomplete
    proc = wirebeat("run", "-I", str(path), "--console", "--strict", *NO_FLOWS)
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    ok = [d for d in docs if d["status"] == "OK"]
    unanswered = [d for d in docs if d["status"] == "Error"]
    assert len(ok) == 4 and len(unanswered) == 1      # 5th request lost its reply
    warnings = [line for line in proc.stderr.decode().splitlines() if "damaged capture" in line]
    assert len(warnings) == 1 and "1 truncated record" in warnings[0]


def test_garbage_record_inside_is_skipped_and_reading_resumes(wirebeat, tmp_path: Path):
    records = _echo_records(4)
    garbage = b"\xff" * 37           # a record header with an impossible caplen
    data = g.pcap_header() + b"".join(records[:4]) + garbage + b"".join(records[4:])
    path = tmp_path / "garbage.pcap"
    path.write_bytes(data)
    proc = wirebeat("run", "-I", str(path), "--console", "--strict", *NO_FLOWS)
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(d["status"] for d in docs) == ["OK"] * 4
    err = proc.stderr.decode()
    assert "1 garbage record(s) (37 bytes skipped)" in err


def test_pcapng_garbage_block_is_skipped(wirebeat, tmp_path: Path):
    req = g.ipv4("10.0.0.1", "10.0.0.2", 1, g.icmp_echo(1, 1))
    rep = g.ipv4("10.0.0.2", "10.0.0.1", 1, g.icmp_echo(1, 1, reply=True))
    data = (g.pcapng_shb() + g.pcapng_idb(g.LINKTYPE_ETHERNET)
            + g.pcapng_epb(0, T0, g.ethernet(req)) + b"\x06\x00\x00\x00\xff\xff\x00\x00" * 3
            + g.pcapng_epb(0, T0 + 1000, g.ethernet(rep)))
    path = tmp_path / "garbage.pcapng"
    path.write_bytes(data)
    proc = wirebeat("run", "-I", str(path), "--console", "--strict", *NO_FLOWS)
    assert proc.returncode == 0, proc.stderr
    [doc] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert doc["status"] == "OK"
    assert b"garbage record" in proc.stderr


def test_run_without_input_is_a_usage_error(wirebeat):
    assert "nothing to read" in _one_line_error(wirebeat("run", "--console"))


def test_unknown_subcommand_is_a_usage_error(wirebeat):
    _one_line_error(wirebeat("frobnicate"))


def test_version_and_decoders_list(wirebeat):
    proc = wirebeat("version")
    assert proc.returncode == 0 and proc.stdout.startswith(b"wirebeat ")
    proc = wirebeat("decoders")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.decode().splitlines()]
    assert "icmp" in names
