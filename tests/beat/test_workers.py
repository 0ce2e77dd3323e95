"""`--workers N`: how frames are sharded, and what the option accepts.

The sharding contract (beat/workers.py): both directions of a conversation
and every fragment of a datagram meet in one worker. Checked end to end on a
generated capture whose ground truth is known: every echo request and reply
is fragmented (IPv4 and IPv6), so an ICMP transaction is reported only when
all fragments of both messages were reassembled in the same worker.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

import pcapgen as g
from wirebeat.workers import WorkerPool, _locate_ip

PAIRS = 40
T0 = 1_767_225_600.0


def _echo_frames(n: int, v6: bool) -> list[bytes]:
    a, b = (f"2001:db8::{n}:1", f"2001:db8::{n}:2") if v6 else (f"10.50.{n}.1", f"10.50.{n}.2")
    frames = []
    for reply in (False, True):
        src, dst = (b, a) if reply else (a, b)
        if v6:
            packet = g.ipv6(src, dst, 58, g.icmpv6_echo(src, dst, n, 1, b"z" * 3000, reply=reply))
            frames += [g.ethernet(f) for f in g.fragment_ipv6(packet, 1232, ident=n + (reply << 16))]
        else:
            packet = g.ipv4(src, dst, g.IPPROTO_ICMP, g.icmp_echo(n, 1, b"z" * 3000, reply=reply),
                            ident=n * 2 + reply)
            frames += [g.ethernet(f) for f in g.fragment_ipv4(packet, 1200)]
    return frames


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    frames = []
    for n in range(PAIRS):
        for v6 in (False, True):
            frames += _echo_frames(n, v6)
    path = tmp_path_factory.mktemp("workers") / "fragmented_echoes.pcap"
    g.write_pcap(path, [(T0 + i * 0.001, f) for i, f in enumerate(frames)])
    return path, PAIRS * 2


@pytest.mark.parametrize("workers", [2, 4])
def test_fragments_and_both_directions_meet_in_one_worker(wirebeat, fragmented, workers):
    path, expected = fragmented
    proc = wirebeat("run", "-I", str(path), "--console", "--workers", str(workers), "--strict",
                    "-E", "wirebeat.flows.enabled=false")
    assert proc.returncode == 0, proc.stderr.decode()
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    icmp = [d for d in docs if d["type"] == "icmp"]
    assert len(icmp) == expected
    assert all(d["status"] == "OK" for d in icmp), [d for d in icmp if d["status"] != "OK"][:2]


def test_locate_ip_reads_the_outer_pair_past_vlans_and_ipv6_extension_headers():
    v4 = g.ethernet(g.ipv4("10.0.0.1", "10.0.0.2", 17, g.udp("10.0.0.1", "10.0.0.2", 1, 2)),
                    vlans=[10, 20])
    src, dst, proto, l4, fragment = _locate_ip(1, v4)
    assert (src, dst, proto, l4, fragment) == (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 17, 14 + 8 + 20, False)
    packet = g.ipv6("2001:db8::1", "2001:db8::2", 17, g.udp("2001:db8::1", "2001:db8::2", 1, 2, b"x" * 3000))
    for piece in g.fragment_ipv6(packet, 1232):
        src, dst, proto, _l4, fragment = _locate_ip(1, g.ethernet(piece))
        assert proto == 44 and fragment and src < dst
    arp = g.ethernet(b"\x00" * 28, ethertype=0x0806)
    assert _locate_ip(1, arp) is None


def test_non_ip_frames_are_decoded_once(wirebeat, tmp_path):
    frames = [g.ethernet(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, ethertype=0x0806)] * 30
    path = tmp_path / "arp.pcap"
    g.write_pcap(path, [(T0 + i, f) for i, f in enumerate(frames)])
    proc = wirebeat("run", "-I", str(path), "--console", "--workers", "2")
    assert proc.returncode == 0, proc.stderr.decode()
    summary = [json.loads(line) for line in proc.stderr.splitlines() if b'"summary"' in line][-1]
    assert summary["packets.read"] == 30 and summary["packets.non_ip"] == 30


@pytest.mark.parametrize("args", [["--workers", "0"], ["-E", "wirebeat.workers=-1"]])
def test_no_workers_is_exit_2_with_one_line(wirebeat, args, tmp_path):
    path = tmp_path / "empty.pcap"
    g.write_pcap(path, [])
    proc = wirebeat("run", "-I", str(path), "--console", *args)
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "wirebeat.workers" in lines[0] and "Traceback" not in lines[0]


def test_one_worker_is_the_in_process_engine():
    from wirebeat.config import Config, base_schema
    from wirebeat.engine import Engine
    from wirebeat.workers import make_engine

    values = {key: option.default for key, option in base_schema().items()}
    assert values["wirebeat.workers"] == 1
    engine = make_engine(Config(values, set(), None), [], _builder(), _pipeline(), _stats())
    assert type(engine) is Engine


def _builder():
    from wirebeat.document import DocumentBuilder
    return DocumentBuilder({"type": "wirebeat", "version": "t", "name": "t"}, [], {}, False, [])


def _pipeline():
    from wirebeat.pipeline import Pipeline
    from wirebeat.testing import ListOutput
    return Pipeline(ListOutput())


def _stats():
    from wirebeat.stats import Stats
    return Stats()


@pytest.mark.parametrize("core", ["c", "python"])
def test_inline_routing_agrees_with_the_general_path_on_every_bundled_frame(core, monkeypatch):
    """`WorkerPool.on_frame` routes plain Ethernet IPv4/IPv6 in `shard` (C, or its
    Python reference) for speed; every frame must land where `_route` (the documented
    hash, and the announcers' shadows) puts it. The pool here has fake workers (lists)
    and no processes."""
    import zlib

    from wirebeat import workers
    if core == "python":
        monkeypatch.setattr(workers, "shard", workers.shard_python)
    elif workers.shard is workers.shard_python and os.environ.get("CI") != "true":
        pytest.skip("C extension not built (a failure under CI=true)")

    from wirebeat.sources.pcapfile import CaptureError, open_capture
    from wirebeat.workers import WorkerPool

    class Fake:
        def __init__(self) -> None:
            self.pending: list[tuple] = []
            self.sent = 0

    root = Path(__file__).resolve().parents[2]
    files = sorted(str(p) for p in root.glob("pcaps/**/*.pcap*"))
    checked = 0
    for n in (2, 3):
        pool = WorkerPool.__new__(WorkerPool)
        pool.n, pool.announce, pool.tunnels = n, {5060, 5061}, True
        pool.clocks, pool.numbers, pool.max_sources, pool.packets = {}, {}, 10_000, 0
        pool.workers = [Fake() for _ in range(n)]
        pool._tick = lambda *args: None     # type: ignore[method-assign]
        pool._send = lambda worker: None    # type: ignore[method-assign]
        for name in files:
            try:
                reader = open_capture(name)
            except CaptureError:
                continue
            crc = zlib.crc32(name.encode())
            for frame in reader:
                pool.on_frame(frame.ts, frame.linktype, frame.data, name)
                # The lists were emptied after the last frame: what is in them now (as
                # tuples: frames travel as records) is this frame, and maybe a tick.
                last = [[e for e in workers._entries(w.pending) if e[0] != "tick"]
                        for w in pool.workers]
                assert all(len(entries) <= 1 for entries in last), name
                last = [entries[0] if entries else None for entries in last]
                owners = [i for i, e in enumerate(last) if e and e[4] >= 0 and e[2] == frame.data]
                shadowed = any(e and e[4] < 0 and e[2] == frame.data for e in last)
                assert (owners, shadowed) == ([pool._route(crc, frame.linktype, frame.data)[0]],
                                              pool._route(crc, frame.linktype, frame.data)[1]), name
                for w in pool.workers:
                    w.pending.clear()
                checked += 1
            reader.close()
    assert checked > 10_000


# -- a capture file mapped before the fork (WorkerPool.file_batches) --------------------

def _echo_capture(path: Path, frames_wanted: int) -> int:
    """A classic pcap of ICMP echo requests and replies between 500 host pairs."""
    base = []
    for n in range(500):
        a, b = f"10.60.{n // 250}.{n % 250 + 1}", f"10.61.{n // 250}.{n % 250 + 1}"
        base += [g.ethernet(g.ipv4(a, b, g.IPPROTO_ICMP, g.icmp_echo(n, 1, b"p" * 64))),
                 g.ethernet(g.ipv4(b, a, g.IPPROTO_ICMP, g.icmp_echo(n, 1, b"p" * 64, reply=True)))]
    with open(path, "wb") as out:
        out.write(g.pcap_header())
        for i in range(frames_wanted):
            ts = int(T0) + i // 1000
            frame = base[i % len(base)]
            out.write(struct.pack("<IIII", ts, (i % 1000) * 1000, len(frame), len(frame)) + frame)
    return frames_wanted


class _Pool:         # the part of WorkerPool that file_batches uses
    file_batches = WorkerPool.file_batches

    def __init__(self, maps):
        self.maps = maps


def _read_through_pool(path) -> tuple[list, list, list]:
    """(frames as (ts, data), the kinds of batch given, the reader's damage details) of
    `path` read as WorkerPool.file_batches gives it, spans expanded from the mapping."""
    from wirebeat.sources.pcapfile import open_capture
    from wirebeat.workers import _map_capture, _Span
    reader = open_capture(str(path))
    mapped = _map_capture(reader)
    frames, kinds = [], []
    for batch in _Pool({str(path): mapped} if mapped else {}).file_batches(reader):
        kinds.append((batch.__class__.__name__, len(batch)))
        if batch.__class__ is _Span:
            pos = batch.pos
            for _ in range(batch.count):
                ts, _lt, data = mapped.frame(pos)
                frames.append((ts, bytes(data)))
                pos += 16 + len(data)
        else:
            frames += [(ts, bytes(data)) for ts, _lt, data, _wire in batch]
    return frames, kinds, list(reader.damage.details)


def test_file_batches_maps_a_classic_pcap_and_leaves_the_rest_to_the_reader_from_a_damaged_record(tmp_path):
    """Records are checked a span at a time (not all before the fork); from the first
    damaged or truncated record on, the reader reads the rest: the same frames and the
    same damage (byte offsets, resynchronisation) as the reader alone."""
    from wirebeat.sources.pcapfile import open_capture
    from wirebeat.workers import BATCH_FRAMES, _map_capture
    clean = tmp_path / "clean.pcap"
    _echo_capture(clean, 2500)
    raw = clean.read_bytes()
    ng = tmp_path / "echo.pcapng"
    g.write_pcapng(ng, packets=[(0, T0, g.ethernet(g.ipv4("10.0.0.1", "10.0.0.2", 1, g.icmp_echo(1, 1))))])
    assert _map_capture(open_capture(str(ng))) is None
    mapped = _map_capture(open_capture(str(clean)))
    assert mapped is not None and mapped.pos == 24

    record = (len(raw) - 24) // 2500            # every echo record has the same length
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[:-7])                   # the last record cut short
    garbage = tmp_path / "garbage.pcap"         # 37 bytes of junk before record 1500
    garbage.write_bytes(raw[:24 + 1500 * record] + b"\xff" * 37 + raw[24 + 1500 * record:])
    first = tmp_path / "first.pcap"             # junk before the first record
    first.write_bytes(raw[:24] + b"\xff" * 20 + raw[24:])
    # A resynchronisation compares with the last good record's time: a record 3 days
    # later right after the junk is not taken (the reader skips on to the next one).
    late = bytearray(raw)
    at = 24 + 1500 * record
    struct.pack_into("<I", late, at, struct.unpack_from("<I", late, at)[0] + 3 * 86400)
    jump = tmp_path / "jump.pcap"
    jump.write_bytes(bytes(late[:at]) + b"\xff" * 5 + bytes(late[at:]))

    frames, kinds, damage = _read_through_pool(clean)
    assert kinds == [("_Span", BATCH_FRAMES), ("_Span", BATCH_FRAMES), ("_Span", 2500 - 2 * BATCH_FRAMES)]
    assert len(frames) == 2500 and not damage
    for path, spans in ((cut, 2499), (garbage, 1500), (first, 0), (jump, 1500)):
        frames, kinds, damage = _read_through_pool(path)
        alone = open_capture(str(path))
        expected = [(ts, bytes(data)) for batch in alone.batches() for ts, _lt, data, _wire in batch]
        assert frames == expected, path.name
        assert damage == alone.damage.details and damage, path.name
        assert sum(n for kind, n in kinds if kind == "_Span") == spans, path.name
    assert len(_read_through_pool(jump)[0]) < 2500      # the late record was skipped


def test_a_worker_killed_during_a_mapped_file_is_restarted_and_its_loss_counted(tmp_path):
    """The restarted worker is forked after the file was mapped: it reads its share by
    offset too. Every frame is decoded or counted as lost."""
    import signal
    import subprocess
    import sys
    import time
    path = tmp_path / "echoes.pcap"
    total = _echo_capture(path, 200_000)
    proc = subprocess.Popen([sys.executable, "-m", "wirebeat.cli", "run", "-I", str(path), "--console",
                             "--workers", "2", "-E", "logging.level=info", "-E", "wirebeat.flows.enabled=false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines = []
    victim = None
    try:
        for raw in proc.stderr:
            lines.append(raw)
            if b'"workers started"' in raw:
                victim = json.loads(raw)["pids"][1]
                os.kill(victim, signal.SIGSTOP)      # holds what it is sent: frames it never decodes
                time.sleep(1.0)
                os.kill(victim, signal.SIGKILL)
                break
        lines += proc.stderr.readlines()
        code = proc.wait(300)
    finally:
        proc.kill()
    text = b"".join(lines).decode()
    assert code == 0, text[-3000:]
    logs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    died = [e for e in logs if e.get("event") == "worker died"]
    assert len(died) == 1 and died[0]["pid"] == victim and died[0]["how"] == "killed by SIGKILL"
    assert any(e.get("event") == "worker restarted" for e in logs)
    summary = [e for e in logs if e.get("event") == "summary"][-1]
    assert summary["workers.crashed"] == 1
    assert summary["workers.frames_lost"] > 0
    assert summary["packets.read"] + summary["workers.frames_lost"] == total
    finished = [e for e in logs if e.get("event") == "workers finished"][-1]
    assert finished["frames"][1] > 0        # the restarted worker decoded its share after
    assert "1 worker(s) died and were restarted" in text
