"""The worker pool's reader core in C (wirebeat._workcore.shard) against its
pure-Python reference (wirebeat.workers.shard_python).

Both hand batches of frames to the workers' pending lists: the same entries in
the same lists in the same order (frames, shadow copies, packet-clock ticks),
the same stops (a full list, a frame only Python routes) and the same clock,
frame numbers and counts. The inputs: every bundled capture's frames, one frame
of every shape test_speedups generates (VLANs, tunnels, fragments, other link
layers, ARP ...), plain IPv4/IPv6 frames cut at every length, seeded random
byte flips, timestamps out of order, NaN and infinite, and items that are not
what a reader gives (bytearray data, int or bool fields, short tuples), with
and without announcer ports, for 1, 2, 3 and 5 workers and small list limits.
The routing itself is checked against the documented hash in test_workers.py.
Frames go into the lists as records (runs of fixed-size heads and the frames'
bytes): what a worker reads back is checked against the frames handed over,
and a list's size against its entries when sources take turns. Under CI=true
the extension must have been built.
"""
from __future__ import annotations

import math
import os
import random
import zlib

import pytest

import pcapgen as g
from test_speedups import CAPTURES, _capture_frames, _generated
from wirebeat.workers import _TUNNEL_DPORTS, shard_python
from running import needs_extension

try:
    from wirebeat import _workcore
except ImportError:
    _workcore = None

needs_c = needs_extension(_workcore)
SOURCE = "capture.pcap"
CRC = zlib.crc32(SOURCE.encode())


def test_extension_is_built_under_ci():
    if os.environ.get("CI") == "true":
        assert _workcore is not None, "wirebeat._workcore was not built (C compiler / Python headers?)"


def _drive(shard, batch: list, n: int, limit: int, announce: set[int] | None) -> list:
    """Everything `shard` does to a batch, as WorkerPool.on_batch calls it: each call's
    result, the lists it filled (emptied when full, as `_send` does), the frames left
    to Python."""
    pendings: list[list] = [[] for _ in range(n)]
    next_tick, now, frames = 0.0, 0.0, 7
    log: list = []
    start = 0
    while start < len(batch):
        stop, slow, next_tick, now, frames, counts = shard(
            batch, start, SOURCE, CRC, pendings, limit, next_tick, now, frames, announce,
            _TUNNEL_DPORTS, 1.0)
        log.append(("call", start, stop, slow, next_tick, now, frames, counts))
        assert start <= stop <= len(batch)
        if slow:
            log.append(("python", stop))
            stop += 1
        for k, pending in enumerate(pendings):
            if len(pending) >= limit or not slow and stop == len(batch):
                log.append(("sent", k, list(pending)))
                pending.clear()
        start = stop
    return log


def _same(a: list, b: list) -> None:
    # NaN != NaN: compare their text where floats are
    assert repr(a) == repr(b)


def _check(batch: list, ns=(1, 2, 3, 5), limits=(3, 1024), announces=(None, {5060, 5061})) -> None:
    assert _workcore is not None
    for n in ns:
        for limit in limits:
            for announce in announces:
                _same(_drive(_workcore.shard, batch, n, limit, announce),
                      _drive(shard_python, batch, n, limit, announce))


def _plain_frames() -> list[bytes]:
    a4, b4, a6, b6 = "10.0.0.1", "192.168.1.20", "2001:db8::1", "fe80::2"
    return [
        g.ethernet(g.ipv4(a4, b4, 17, g.udp(a4, b4, 1234, 5060, b"INVITE"))),
        g.ethernet(g.ipv4(b4, a4, 17, g.udp(b4, a4, 5060, 1234, b"OK"))),
        g.ethernet(g.ipv4(a4, b4, 6, g.tcp(a4, b4, 5061, 443, b"x"))),
        g.ethernet(g.ipv4(a4, b4, 17, g.udp(a4, b4, 1, 4789, b"\x08" + b"\0" * 20))),     # VXLAN port
        g.ethernet(g.ipv4(a4, b4, 17, g.udp(a4, b4, 1, 6081, b"\0" * 20))),              # Geneve port
        g.ethernet(g.ipv4(a4, b4, 47, b"\0\0\x08\0")),                                   # GRE
        g.ethernet(g.ipv4(a4, b4, 17, g.udp(a4, b4, 1, 53, b"q"), options=b"\x01" * 8)),
        g.ethernet(g.ipv4(a4, b4, 17, b"z" * 40, more_fragments=True)),
        g.ethernet(g.ipv4(a4, b4, 17, b"z" * 40, frag_offset_bytes=8)),
        g.ethernet(g.ipv6(a6, b6, 17, g.udp(a6, b6, 5060, 9, b"SIP"))),
        g.ethernet(g.ipv6(b6, a6, 6, g.tcp(b6, a6, 80, 40000, b"GET"))),
        g.ethernet(g.ipv6(a6, b6, 17, g.udp(a6, b6, 9, 4789, b"\0" * 16))),
        g.ethernet(g.ipv6(a6, b6, 44, b"\x11\0\0\x01\0\0\0\x01" + b"f" * 16)),          # a fragment header
        g.ethernet(g.ipv6(a6, b6, 0, b"\x11\0" + b"\0" * 6 + g.udp(a6, b6, 1, 2, b""))),  # hop-by-hop
        g.ethernet(g.ipv6(a6, b6, 58, b"\x80\0\0\0\0\1\0\1")),
    ]


@needs_c
def test_bundled_captures_are_identical():
    batch = []
    for path in CAPTURES:
        try:
            batch += [(ts, lt, data, len(data)) for ts, lt, data in _capture_frames(path)]
        except Exception:       # noqa: BLE001 - damaged test captures: their frames are enough
            continue
    assert len(batch) > 1000
    _check(batch, ns=(2, 3), limits=(64,))


@needs_c
def test_generated_frames_are_identical():
    _check([(ts, lt, data, 0) for ts, lt, data in _generated()])


@needs_c
def test_frames_cut_at_every_length_are_identical():
    batch = []
    ts = 1_700_000_000.0
    for frame in _plain_frames():
        for cut in range(len(frame) + 1):
            ts += 0.3
            batch.append((ts, 1, frame[:cut], cut))
    _check(batch)


@needs_c
def test_random_byte_flips_are_identical():
    rng = random.Random(15)
    frames = _plain_frames()
    batch = []
    for i in range(4000):
        frame = bytearray(rng.choice(frames))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(12, min(len(frame), 60))
            frame[at] = rng.choice((0, 6, 8, 17, 44, 47, 0x86, 0xDD, 0x13, 0xC4, rng.randrange(256)))
        batch.append((1_700_000_000.0 + rng.uniform(-5, 50), 1, bytes(frame), len(frame)))
    _check(batch)


@needs_c
def test_odd_items_and_times_are_identical():
    frame = _plain_frames()[0]
    batch = [
        (1.0, 1, frame, 0), (math.nan, 1, frame, 0), (math.inf, 1, frame, 0), (2.0, 1, frame, 0),
        (-math.inf, 1, frame), (3.0, True, frame, 0), (4.0, 1, bytearray(frame), 0),
        (5, 1, frame, 0), (6.0, 1.0, frame, 0), (7.0, 2**70, frame, 0), (8.0, -1, frame, 0),
        (9.0, 1), [10.0, 1, frame, 0], (11.0, 1, frame, 0), (12.0, 0, frame, 0),
    ]
    _check(batch)
    _check(tuple(batch))


@needs_c
def test_bad_arguments_raise_and_leave_the_lists_alone():
    assert _workcore is not None
    frame = _plain_frames()[0]
    batch = [(1.0, 1, frame, 0)]
    pendings: list[list] = [[], []]
    with pytest.raises(TypeError):
        _workcore.shard(batch, 0, SOURCE, CRC, pendings, 8, 0.0, 0.0, 0, [5060], _TUNNEL_DPORTS, 1.0)
    with pytest.raises(TypeError):
        _workcore.shard(batch, 0, SOURCE, CRC, [[], "x"], 8, 0.0, 0.0, 0, None, _TUNNEL_DPORTS, 1.0)
    with pytest.raises(ValueError):
        _workcore.shard(batch, 0, SOURCE, CRC, [], 8, 0.0, 0.0, 0, None, _TUNNEL_DPORTS, 1.0)
    with pytest.raises(TypeError):
        _workcore.shard(iter(batch), 0, SOURCE, CRC, pendings, 8, 0.0, 0.0, 0, None, _TUNNEL_DPORTS, 1.0)
    assert pendings == [[], []]


# -- records (frames as bytes) ---------------------------------------------------------

@needs_c
def test_records_round_trip_to_the_frames_handed_over():
    """What the worker reads back from the lists (`_entries`, the worker's own decoding
    of records) is every frame with its number, every shadow and every tick, as the
    tuples the lists held before records: checked against the frames themselves, not
    against the other implementation."""
    from wirebeat.workers import SHADOW, _entries
    frames = _plain_frames()
    batch = [(1_700_000_000.0 + i * 0.4, 1, frames[i % len(frames)], 0) for i in range(200)]
    for shard in (_workcore.shard, shard_python):
        pendings: list[list] = [[], [], []]
        start, seen = 0, []
        next_tick, now, number = 0.0, 0.0, 0
        while start < len(batch):
            stop, slow, next_tick, now, number, _counts = shard(
                batch, start, SOURCE, CRC, pendings, 10_000, next_tick, now, number,
                {5060}, _TUNNEL_DPORTS, 1.0)
            seen += batch[start:stop]
            start = stop + 1 if slow else stop
        entries = [e for pending in pendings for e in _entries(pending)]
        owned = sorted(e[4] for e in entries if e[0] != "tick" and e[4] >= 0)
        assert owned == list(range(len(owned))) and len(owned) == len(seen)
        by_number = {e[4]: e for e in entries if e[0] != "tick" and e[4] >= 0}
        for number, (ts, linktype, data, _) in enumerate(seen):
            assert by_number[number] == (ts, linktype, data, SOURCE, number)
        # ticks: one per second of packet time, in every list, at the frame that moved it
        ticks = [e for e in _entries(pendings[0]) if e[0] == "tick"]
        assert [e[2] for e in ticks] == _tick_times([s[0] for s in seen])
        for pending in pendings[1:]:
            assert [e for e in _entries(pending) if e[0] == "tick"] == ticks
        # a shadow is a copy of an owned frame, in every list but its owner's
        shadows = [e for e in entries if e[0] != "tick" and e[4] == SHADOW]
        assert shadows and all(any(o[:3] == s[:3] for o in by_number.values()) for s in shadows)


def _tick_times(times: list[float]) -> list[float]:
    out, next_tick = [], 0.0
    for ts in times:
        if ts >= next_tick:
            out.append(ts)
            next_tick = ts + 1.0
    return out


@needs_c
def test_run_of_another_source_starts_a_new_run():
    frame = _plain_frames()[2]
    for shard in (_workcore.shard, shard_python):
        pendings: list[list] = [[]]
        shard([(1.0, 1, frame, 0)], 0, "a", CRC, pendings, 99, 0.0, 0.0, 0, None, _TUNNEL_DPORTS, 1.0)
        shard([(1.5, 1, frame, 0)], 0, "b", CRC, pendings, 99, 0.0, 0.0, 0, None, _TUNNEL_DPORTS, 1.0)
        shard([(1.6, 1, frame, 0)], 0, "b", CRC, pendings, 99, 9.0, 0.0, 1, None, _TUNNEL_DPORTS, 1.0)
        assert [(run[0], run[1], len(run[2]) // 24, run[4]) for run in pendings[0]] == \
            [("raw", "a", 2, 0), ("raw", "b", 3, 2)]


@needs_c
def test_lists_are_full_at_the_limit_when_sources_alternate():
    """A list holds one run per stretch of one source: with two sources taking turns
    (two live feeds) every run but the last must still count towards the limit, or the
    list would grow past it unsent."""
    from wirebeat.workers import _entries, _size
    frame = _plain_frames()[2]
    for shard in (_workcore.shard, shard_python):
        pendings: list[list] = [[]]
        clocks = {"a": [0.0, 0.0, 0], "b": [0.0, 0.0, 0]}
        stops = 0
        for i in range(40):
            source = "ab"[(i // 3) % 2]
            clock = clocks[source]
            batch = [(1.0 + i + k / 10, 1, frame, 0) for k in range(4)]
            start = 0
            while start < len(batch):
                stop, slow, clock[0], clock[1], clock[2], _ = shard(
                    batch, start, source, CRC, pendings, 10, clock[0], clock[1], clock[2], None,
                    _TUNNEL_DPORTS, 5.0)
                assert not slow
                size = _size(pendings[0])
                assert size == len(_entries(pendings[0]))
                assert size <= 10 + 1      # a tick and its frame may land together
                if stop < len(batch):
                    assert size >= 10
                    stops += 1
                if size >= 10:             # the pool sends it (`_send`)
                    pendings[0].clear()
                start = stop
        assert stops > 5


def test_a_restarted_worker_is_owed_the_frames_of_its_list():
    """`_owned`: what a dead worker's successor is handed counts towards the frames it
    must acknowledge (`workers.frames_lost`): frames only, not shadows, ticks or ends."""
    from wirebeat.workers import SHADOW, TICK, _owned, _record
    frame = _plain_frames()[0]
    pending: list = []
    _record(pending, "a", 1.0, 1, frame, TICK)
    _record(pending, "a", 1.0, 1, frame, 0)
    _record(pending, "a", 1.1, 1, frame, SHADOW)
    _record(pending, "a", 1.2, 1, frame, 1)
    pending.append(("finish", "a"))
    pending.append((3, 1, frame, "b", 0))              # an odd frame of a live source: a tuple
    pending.append((4.0, 1, frame, "b", SHADOW))
    _record(pending, "b", 5.0, 1, frame, 1)
    pending.append(("finish", None))
    pending.append(("done",))
    assert _owned(pending) == 4


# -- announcer ports as a bitmap, runs' arrays grown in place ------------------------

@needs_c
def test_odd_announcer_port_sets_are_identical():
    """The C side looks ports up in a bitmap made from the set (exact ints in 0-65535);
    a set with anything else (a float equal to a port, a bool, out-of-range numbers, a
    string) must decide as Python's `in` does."""
    batch = [(1.0 + i, 1, frame, 0) for i, frame in enumerate(_plain_frames())]
    _check(batch, ns=(2, 3), limits=(1024,), announces=(
        {5060.0}, {True, 1234}, {-5060, 70000, 2**70}, {"5060", 5061}, frozenset({5060}), set()))


@needs_c
def test_runs_past_their_first_room_are_identical_and_whole():
    """A list's first run starts with room for typical frames (512 KiB), later runs with
    a little: frames of 9,000 bytes, and sources taking turns, grow both past it."""
    from wirebeat.workers import _entries
    a4, b4 = "10.0.0.1", "192.168.1.20"
    big = [g.ethernet(g.ipv4(a4, b4, 17, g.udp(a4, b4, 1000 + i, 53, bytes([i]) * 9000)))
           for i in range(120)]
    batch = [(1.0 + i / 10, 1, frame, 0) for i, frame in enumerate(big)]
    _check(batch, ns=(1, 2), limits=(1024,), announces=(None,))
    pendings: list[list] = [[]]
    number = 0
    for i, item in enumerate(batch):      # sources take turns: a new run per frame
        _stop, _slow, _t, _n, number, _c = _workcore.shard(
            [item], 0, f"s{i % 2}", CRC, pendings, 10_000, 0.0, 0.0, number, None, _TUNNEL_DPORTS, 100.0)
    frames = [e for e in _entries(pendings[0]) if e[0].__class__ is not str]
    assert [e[2] for e in frames] == big
    assert [e[3] for e in frames] == [f"s{i % 2}" for i in range(len(big))]


@needs_c
def test_a_run_held_by_a_buffer_export_is_not_written_under_it():
    """While a view of a run's frames exists (as while a message holding it is written),
    growing it raises BufferError in both, and the view still sees what it saw."""
    frame = _plain_frames()[2]
    after = []
    for shard in (_workcore.shard, shard_python):
        pendings: list[list] = [[]]
        # The first frame ticks the clock: the run holds the tick's copy and the frame.
        shard([(1.0, 1, frame, 0)], 0, SOURCE, CRC, pendings, 10_000, 0.0, 0.0, 0, None, _TUNNEL_DPORTS, 100.0)
        blob = pendings[0][-1][3]
        assert blob == frame + frame
        view = memoryview(blob)
        with pytest.raises(BufferError):
            shard([(2.0, 1, frame, 0)], 0, SOURCE, CRC, pendings, 10_000, 200.0, 1.0, 1, None,
                  _TUNNEL_DPORTS, 100.0)
        assert bytes(view) == frame + frame
        view.release()
        after.append(repr(pendings))
    assert after[0] == after[1]


# -- capture files mapped in memory: frames by offset ----------------------------------

def _classic(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")


def _extent_cases(tmp_path) -> list[bytes]:
    """Classic pcap files as bytes: every bundled one, generated ones in both byte orders
    and resolutions (and a non-Ethernet link type), and damaged ones: cut inside a
    record, a caplen over the snaplen, a fraction of a second too large."""
    files = [p.read_bytes() for p in CAPTURES if p.suffix == ".pcap" and _classic(p)]
    frames = _plain_frames()
    for big in (False, True):
        for ns in (False, True):
            files.append(g.pcap_header(big_endian=big, nanosecond=ns) + b"".join(
                g.pcap_record(1_700_000_000 + i * 0.37, frame, big_endian=big, nanosecond=ns)
                for i, frame in enumerate(frames * 3)))
    files.append(g.pcap_header(linktype=101) + b"".join(
        g.pcap_record(5.0 + i, frame[14:]) for i, frame in enumerate(frames)))     # raw IP
    good = files[-2]
    files += [good[:len(good) - 5], good[:24 + 10], good[:24], good + b"\0" * 7]
    rec = bytearray(good)
    rec[24 + 8:24 + 12] = (70000).to_bytes(4, "little")      # caplen over the snaplen
    files.append(bytes(rec))
    rec = bytearray(good)
    rec[24 + 4:24 + 8] = (2_000_000_000).to_bytes(4, "little")   # a fraction of a second too large
    files.append(bytes(rec))
    return files


def _header_args(data: bytes) -> tuple:
    from wirebeat.sources.pcapfile import parse_pcap_header
    h = parse_pcap_header(data[:24])
    return h.order == "<", h.scale, h.linktype, h.max_caplen, h.frac_max


@needs_c
def test_pcap_extent_is_identical_and_agrees_with_the_reader(tmp_path):
    """Both find where whole, undamaged records end; for a file they call clean (the end
    is the file's end) the reader reads as many frames and notes no damage."""
    from wirebeat.sources.pcapfile import open_capture
    from wirebeat.workers import pcap_extent_python
    for k, data in enumerate(_extent_cases(tmp_path)):
        little, _scale, _lt, max_caplen, frac_max = _header_args(data)
        for step in (1, 3, 1 << 30):
            pos, total, got = 24, 0, None
            while got is None or got[1] == step:
                got = _workcore.pcap_extent(data, pos, little, max_caplen, frac_max, step)
                assert got == pcap_extent_python(data, pos, little, max_caplen, frac_max, step)
                pos, total = got[0], total + got[1]
        path = tmp_path / f"{k}.pcap"
        path.write_bytes(data)
        reader = open_capture(str(path))
        frames = sum(1 for _ in reader)
        reader.close()
        if pos == len(data):
            assert frames == total and not reader.damage.any()
        else:
            assert reader.damage.any()


def _drive_map(shard_map, data: bytes, n: int, limit: int, announce) -> list:
    """`_drive` for shard_map over a whole file, as WorkerPool._on_span calls it."""
    from wirebeat.workers import pcap_extent_python
    little, scale, linktype, max_caplen, frac_max = _header_args(data)
    pos, count = pcap_extent_python(data, 24, little, max_caplen, frac_max, 1 << 62)
    assert pos == len(data)
    pendings: list[list] = [[] for _ in range(n)]
    next_tick, now, frames, pos, left = 0.0, 0.0, 7, 24, count
    log: list = []
    while left:
        pos, done, last, slow, next_tick, now, frames, counts = shard_map(
            data, pos, left, little, scale, linktype, SOURCE, CRC, pendings, limit, next_tick, now,
            frames, announce, _TUNNEL_DPORTS, 1.0)
        log.append(("call", pos, done, last, slow, next_tick, now, frames, counts))
        left -= done
        if slow:
            caplen = int.from_bytes(data[pos + 8:pos + 12], "little" if little else "big")
            log.append(("python", pos))
            pos += 16 + caplen
            left -= 1
        for k, pending in enumerate(pendings):
            if len(pending) >= limit or not slow and not left:
                log.append(("sent", k, list(pending)))
                pending.clear()
    return log


@needs_c
def test_shard_map_is_identical(tmp_path):
    from wirebeat.workers import shard_map_python
    files = [d for d in _extent_cases(tmp_path) if len(d) > 24]
    clean = []
    for data in files:
        little, _s, _l, max_caplen, frac_max = _header_args(data)
        if _workcore.pcap_extent(data, 24, little, max_caplen, frac_max, 1 << 62)[0] == len(data):
            clean.append(data)
    assert len(clean) > 10
    for data in clean:
        for n in (1, 2, 3):
            for limit in (3, 1024):
                for announce in (None, {5060, 5061}):
                    _same(_drive_map(_workcore.shard_map, data, n, limit, announce),
                          _drive_map(shard_map_python, data, n, limit, announce))


@needs_c
def test_map_records_are_the_files_frames(tmp_path):
    """What a worker makes of "map" records (feed with offsets, C and Python; the pool's
    `_entries`) is every frame the reader reads from the file, in order, with its
    number: checked against the reader, not against the other implementation."""
    import mmap
    from wirebeat.sources.pcapfile import open_capture
    from wirebeat.workers import _entries, feed_python, shard_map_python
    a4, b4 = "10.0.0.1", "192.168.1.20"
    frames = [g.ethernet(g.ipv4(a4, b4, 17, g.udp(a4, b4, 1000 + i, 53, bytes([i % 256]) * (i * 7 % 300))))
              for i in range(300)] + _plain_frames()
    path = tmp_path / "f.pcap"
    g.write_pcap(path, [(1_700_000_000 + i * 0.1, f) for i, f in enumerate(frames)])
    reader = open_capture(str(path))
    expected = [(f.ts, f.linktype, f.data) for f in reader]
    reader.close()
    data = path.read_bytes()
    little, scale, linktype, _m, _f = _header_args(data)
    with open(path, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    for shard_map in (_workcore.shard_map, shard_map_python):
        pendings: list[list] = [[], []]
        pos, left, number, seen = 24, len(frames), 0, []
        while left:
            pos, done, _last, slow, _t, _n, number, _c = shard_map(
                mapped, pos, left, little, scale, linktype, SOURCE, CRC, pendings, 1 << 30, 0.0, 0.0,
                number, None, _TUNNEL_DPORTS, 1e9)
            left -= done
            if slow:        # not plain: the pool routes it (as a "raw" record, numbered); skipped here
                pos += 16 + int.from_bytes(data[pos + 8:pos + 12], "little")
                left -= 1
                number += 1
                seen.append(None)
            else:
                assert left == 0
        got = {}
        for pending in pendings:
            for e in _entries(pending, {SOURCE: mapped}):
                if e[0].__class__ is not str:
                    got[e[4]] = (e[0], e[1], e[2])
            for run in pending:
                assert run[0] == "map"
                fed = []
                for feeder in (_workcore.feed, feed_python):
                    batch: list = []
                    ticks: list = []
                    n = feeder(run[2], mapped, SOURCE, batch, None, None, lambda *a: ticks.append(a), run[3])
                    batch.append(ticks)
                    assert n == len(batch) - 1
                    fed.append(batch)
                assert fed[0] == fed[1]
                assert [(ts, lt, d) for ts, lt, d, _ in fed[0][:-1]] == \
                    [e[:3] for e in _entries([run], {SOURCE: mapped}) if e[0].__class__ is not str]
        for number_, frame in got.items():
            assert frame == expected[number_]
        assert len(got) == len(expected) - seen.count(None) > 300
    with pytest.raises(ValueError):       # an offset past the file is refused, not read
        _workcore.feed(b"\0" * 8 + b"\0" * 8 + b"\1\0\0\0" + b"\4\0\0\0", mapped, SOURCE, [], None,
                       None, None, (len(mapped) + 1).to_bytes(8, "little"))
    with pytest.raises(ValueError):
        feed_python(b"\0" * 8 + b"\0" * 8 + b"\1\0\0\0" + b"\4\0\0\0", mapped, SOURCE, [], None,
                    None, None, (len(mapped) + 1).to_bytes(8, "little"))
    mapped.close()
