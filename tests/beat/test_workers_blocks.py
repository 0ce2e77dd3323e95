"""A worker's two hand-overs without an object per frame or per document.

- Frames in: a run of records (`workers._record`) is fed to the worker's engine by
  `feed` (C in wirebeat._workcore, `feed_python` the reference). Both are driven
  with recording callables on runs `shard` made of real frames (bundled
  captures, every generated frame shape), shadows and ticks, and checked against
  the frames handed over (`_entries` reads the records independently), against
  each other, and on hostile runs (cut heads, records longer than the frames,
  random byte flips, callables that raise or resize the run's buffer).
- Documents out: the worker's sink (`_Sink`) gathers its documents as NDJSON
  blocks that the main process publishes whole. Every line must be the document
  published, in publish order (flow-sweep blocks among single documents), with
  its _id on the same line of the ids, and no block over the pipeline's batch
  size or BLOCK_MAX_BYTES.
- End to end: 2 workers give the documents one process gives through the
  outputs that take blocks (console), and through the paths that do not: the
  pretty console (documents as dicts) and the disk queue (pairs).
"""
from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from test_workcore import CRC, SOURCE, _plain_frames
from test_speedups import CAPTURES, _capture_frames, _generated
from wirebeat import workers
from wirebeat.pipeline import Block
from wirebeat.workers import (SHADOW, _HEAD, _TUNNEL_DPORTS, _entries, _message, _out_of_band, _Reader,
                              _record, _Sink, feed_python, shard_python)
from running import needs_extension

try:
    from wirebeat import _workcore
except ImportError:
    _workcore = None

needs_c = needs_extension(_workcore)
ROOT = Path(__file__).resolve().parents[2]


# -- frames in: feed ------------------------------------------------------------------

class _Recorder:
    """The engine's side of `feed`: every call in order, and the frame number the
    per-packet state held when each frame arrived."""

    def __init__(self, fail_at: int = -1) -> None:
        self.calls: list[tuple] = []
        self.states: dict[str, list] = {}
        self.fail_at = fail_at

    def _note(self, call: tuple) -> None:
        if len(self.calls) == self.fail_at:
            raise RuntimeError("engine failed")
        self.calls.append(call)

    def on_frame(self, ts, linktype, data, source):
        self._note(("frame", ts, linktype, data, source, self.states.get(source, [None])[0]))

    def number_state(self, source):
        return self.states.setdefault(source, [None, "prefix"])

    def shadow(self, ts, linktype, data, source):
        self._note(("shadow", ts, linktype, data, source))

    def tick(self, source, ts, linktype, data):
        self._note(("tick", source, ts, linktype, data))


def _run(fn, run: list, numbered: bool = True, fail_at: int = -1) -> tuple:
    rec = _Recorder(fail_at)
    try:
        result = fn(run[2], run[3], run[1], rec.on_frame, rec.number_state if numbered else None,
                    rec.shadow, rec.tick)
    except Exception as err:    # noqa: BLE001 - compared between the two implementations
        result = (type(err).__name__, str(err))
    return repr(result), repr(rec.calls)


def _sharded(frames: list[tuple[int, bytes]], n: int = 3) -> list[list]:
    """The runs `shard_python` makes of (linktype, frame)s for `n` workers (announcers
    on, so some frames are shadowed; a tick every second of packet time); a frame it
    leaves to Python goes to the first list as `_record` puts it there."""
    batch = [(1_700_000_000.0 + i * 0.3, lt, frame, 0) for i, (lt, frame) in enumerate(frames)]
    pendings: list[list] = [[] for _ in range(n)]
    start, next_tick, now, number = 0, 0.0, 0.0, 5
    while start < len(batch):
        stop, slow, next_tick, now, number, _ = shard_python(
            batch, start, SOURCE, CRC, pendings, 1 << 30, next_tick, now, number, {5060, 53},
            _TUNNEL_DPORTS, 1.0)
        if slow:
            ts, lt, frame, _ = batch[stop]
            _record(pendings[0], SOURCE, ts, lt, frame, number)
            number += 1
            stop += 1
        start = stop
    return [entry for pending in pendings for entry in pending if entry.__class__ is list]


def _frames() -> list[tuple[int, bytes]]:
    frames = [(lt, f) for _, lt, f in _generated()] + [(1, f) for f in _plain_frames()]
    for path in CAPTURES[:6]:
        frames += [(lt, f) for _, lt, f in _capture_frames(path)[:300]]
    return frames


def _expected_calls(run: list, frame) -> list[tuple]:
    """What feeding `run` should do, from `_entries` (the records read back with struct):
    ticks and shadows as the recorder notes them, `frame(entry)` for each frame."""
    expected = []
    for entry in _entries([run]):
        if entry[0] == "tick":
            expected.append(entry)
        elif entry[4] == SHADOW:
            expected.append(("shadow", *entry[:4]))
        else:
            expected.append(frame(entry))
    return expected


def test_feed_python_gives_the_engine_every_record_as_handed_over():
    """Checked against `_entries` (the records read back with struct), not against C."""
    runs = _sharded(_frames())
    assert runs
    kinds = set()
    for run in runs:
        rec = _Recorder()
        count = feed_python(run[2], run[3], run[1], rec.on_frame, rec.number_state, rec.shadow, rec.tick)
        # a frame arrives with its number already in the per-packet state
        expected = _expected_calls(run, lambda entry: ("frame", *entry[:4], entry[4]))
        assert rec.calls == expected
        assert count == sum(1 for c in expected if c[0] == "frame")
        kinds.update(c[0] for c in expected)
    assert kinds == {"frame", "shadow", "tick"}


@needs_c
def test_feed_in_c_is_the_python_reference():
    assert _workcore is not None
    for run in _sharded(_frames()):
        for numbered in (True, False):
            assert _run(_workcore.feed, run, numbered) == _run(feed_python, run, numbered)
        for fail_at in (0, 1, 7):
            assert _run(_workcore.feed, run, True, fail_at) == _run(feed_python, run, True, fail_at)


@needs_c
def test_feed_on_hostile_runs_fails_as_the_reference_or_not_at_all():
    assert _workcore is not None
    rng = random.Random(15)
    runs = _sharded([(1, f) for f in _plain_frames()] * 4, n=2)
    heads, blob = bytes(runs[0][2]), bytes(runs[0][3])
    cases = [
        (heads[:-1], blob),                             # a cut head
        (heads, blob[:-1]),                             # the last frame longer than the bytes
        (heads + heads[:24], blob),                     # a record past the end
        (b"", b""), (b"", blob),
        (_HEAD.pack(float("nan"), 3, 0xFFFFFFFF, 0), b""),     # NaN time, odd link type, empty
        (_HEAD.pack(1.0, -7, 1, 2), b"ab"),             # an unknown negative number: a tick
        (_HEAD.pack(1.0, 1, 1, 0xFFFFFFFF), b"x"),      # a length far past the frames
    ]
    for _ in range(300):
        flipped = bytearray(heads)
        for _ in range(rng.randint(1, 6)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        cases.append((bytes(flipped), blob))
    for h, b in cases:
        for kind in (bytes, bytearray):
            run = ["raw", SOURCE, kind(h), kind(b), 0]
            assert _run(_workcore.feed, run) == _run(feed_python, run)
    with pytest.raises(TypeError):
        _workcore.feed(heads, blob, 5, print, None, print, print)       # a source is a str


@needs_c
def test_feed_survives_a_callable_that_resizes_the_run():
    """The run's buffers are held while C reads them: resizing one raises, never crashes."""
    assert _workcore is not None
    run = _sharded([(1, f) for f in _plain_frames()] * 3, n=1)[0]
    blob = bytearray(run[3])

    def grow(*args):
        blob.extend(b"x" * 100_000)

    with pytest.raises(BufferError):
        _workcore.feed(run[2], blob, SOURCE, grow, None, grow, grow)


class _Collector(_Recorder):
    """The worker's side of `feed` with a list for on_frame: the frames collected so
    far are handed over (noted and cleared) before every shadow and tick, and at the end."""

    def __init__(self, fail_at: int = -1) -> None:
        super().__init__(fail_at)
        self.frames: list[tuple] = []

    def hand_over(self) -> None:
        for ts, linktype, data, zero in self.frames:
            self.calls.append(("frame", ts, linktype, data, zero))
        self.frames.clear()

    def shadow(self, ts, linktype, data, source):
        self.hand_over()
        super().shadow(ts, linktype, data, source)

    def tick(self, source, ts, linktype, data):
        self.hand_over()
        super().tick(source, ts, linktype, data)


def _collected(fn, heads, blob, numbered: bool = False, fail_at: int = -1) -> tuple:
    rec = _Collector(fail_at)
    try:
        result = fn(heads, blob, SOURCE, rec.frames, rec.number_state if numbered else None,
                    rec.shadow, rec.tick)
        rec.hand_over()
    except Exception as err:    # noqa: BLE001 - compared between the two implementations
        result = (type(err).__name__, str(err))
    return repr(result), repr(rec.calls)


def test_feed_collects_frames_in_a_list_in_record_order():
    """With a list for on_frame (how a worker builds Engine.on_batch's batches), every
    frame lands there as (ts, linktype, data, 0), in order with the shadows and ticks
    around it: checked against `_entries` (the records read back with struct)."""
    for run in _sharded(_frames()):
        rec = _Collector()
        count = feed_python(run[2], run[3], run[1], rec.frames, None, rec.shadow, rec.tick)
        rec.hand_over()
        expected = _expected_calls(run, lambda entry: ("frame", *entry[:3], 0))
        assert rec.calls == expected
        assert count == sum(1 for c in expected if c[0] == "frame")
    with pytest.raises(ValueError):
        feed_python(run[2], run[3], run[1], [], _Recorder().number_state, print, print)


@needs_c
def test_feed_collecting_in_c_is_the_python_reference():
    assert _workcore is not None
    rng = random.Random(16)
    runs = _sharded(_frames())
    for run in runs:
        # bytearrays (as sharded), and memoryviews of a larger buffer (as the worker's
        # reader gives them: views of its reused buffer)
        pool = bytearray(b"?" * 7) + run[2] + run[3] + b"!"
        view = memoryview(pool)
        heads = view[7:7 + len(run[2])]
        blob = view[7 + len(run[2]):7 + len(run[2]) + len(run[3])]
        for h, b in ((run[2], run[3]), (heads, blob)):
            assert _collected(_workcore.feed, h, b) == _collected(feed_python, h, b)
            for fail_at in (0, 1, 7):
                assert _collected(_workcore.feed, h, b, fail_at=fail_at) == \
                    _collected(feed_python, h, b, fail_at=fail_at)
            assert _collected(_workcore.feed, h, b, numbered=True) == \
                _collected(feed_python, h, b, numbered=True)        # refused by both
    heads, blob = bytes(runs[0][2]), bytes(runs[0][3])
    for _ in range(200):
        flipped = bytearray(heads)
        for _ in range(rng.randint(1, 6)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        assert _collected(_workcore.feed, bytes(flipped), blob) == \
            _collected(feed_python, bytes(flipped), blob)


# -- the wire: messages with out-of-band buffers -------------------------------------

def _through_pipe(messages: list, chunk: int) -> list:
    """`messages` written with `_message` into a non-blocking pipe `chunk` bytes at a
    time, read back with `_Reader` as they come: what the reader returned, in order."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    reader = _Reader(r)
    wire = bytearray()
    for message in messages:
        for piece in _message(message):
            wire += piece
    got: list = []
    try:
        for at in range(0, len(wire), chunk):
            os.write(w, wire[at:at + chunk])
            while True:
                message = reader.read()
                if message is _Reader.WAIT:
                    break
                # a message's buffers are views of the reader's buffer until the next read:
                # keep copies, as the worker decodes a batch before it reads on
                got.append(_plain(message))
        os.close(w)
        w = -1
        assert reader.read() is None
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    return got


def _plain(obj):
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(x) for x in obj)
    if isinstance(obj, (memoryview, bytearray, pickle.PickleBuffer)):
        return bytes(obj)
    return obj


def test_messages_cross_a_pipe_whole_in_any_cut():
    rng = random.Random(17)
    runs = _sharded(_frames(), n=2)
    pending = [runs[0], ("tick", SOURCE, 1.5, 1, b"abc"), runs[1], ("finish", None), ("done",)]
    blocks = [(b'{"a":1}\n{"b":2}\n', b"id1\nid2\n", 2), (b"", b"", 0),
              (bytes(rng.randbytes(70_000)), b"x\n", 1)]
    messages = [
        [_out_of_band(e) for e in pending],
        ("docs", 7, [(pickle.PickleBuffer(d), pickle.PickleBuffer(bytearray(i)), c) for d, i, c in blocks],
         {"packets.read": 7}),
        ("done", 9, [], None),
        [],
        [_out_of_band(["raw", SOURCE, bytearray(), bytearray(), 0])],     # empty buffers
    ]
    expected = [_plain(pending), ("docs", 7, blocks, {"packets.read": 7}), ("done", 9, [], None), [],
                [["raw", SOURCE, b"", b"", 0]]]
    for chunk in (1, 3, 4096, 65536):     # at most a pipe's default capacity: drained after each
        assert _through_pipe(messages if chunk > 1 else messages[2:4], chunk) == \
            (expected if chunk > 1 else expected[2:4])


def test_a_message_is_not_pickled_with_its_buffers():
    """The runs' bytes travel beside the pickle, not in it (in-band, pickling a 1 MiB
    buffer cost ten times copying it)."""
    blob = bytearray(os.urandom(1 << 20))
    pieces = _message([_out_of_band(["raw", SOURCE, bytearray(24), blob, 0])])
    assert len(pieces) == 4
    assert len(pieces[1]) < 1000 and pieces[3].obj is blob


# -- documents out: the sink's blocks ------------------------------------------------

def _lines(blocks: list[tuple[bytes, bytes, int]]) -> list[tuple[str, object]]:
    out = []
    for data, ids, count in blocks:
        texts, names = data.split(b"\n"), ids.decode().split("\n")
        assert len(texts) == len(names) == count + 1 and texts[-1] == b"" and names[-1] == ""
        assert [t for _, t in Block(data, ids, count).pairs()]      # as the pipeline reads it
        out += [(name, orjson.loads(text)) for name, text in zip(names[:-1], texts[:-1])]
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 1024])
def test_the_sink_keeps_every_document_in_order_within_the_limits(batch_size, monkeypatch):
    monkeypatch.setattr(workers, "BLOCK_MAX_BYTES", 400)
    rng = random.Random(batch_size)
    sink = _Sink(batch_size)
    published: list[tuple[str, object]] = []
    replies = []
    for step in range(400):
        roll = rng.random()
        if roll < 0.5:
            doc = {"n": step, "text": "é" * rng.randint(0, 60), "nested": {"list": [step, None]}}
            sink.publish(f"id-{step}", doc if rng.random() < 0.5 else orjson.Fragment(orjson.dumps(doc)))
            published.append((f"id-{step}", doc))
        elif roll < 0.8:        # a flow sweep's block: at most batch_size documents, as flows cut them
            docs = [(f"flow-{step}-{k}", {"flow": step, "k": k})
                    for k in range(rng.randint(1, min(batch_size, 5)))]
            sink.publish_block(b"".join(orjson.dumps(d) + b"\n" for _, d in docs),
                               "".join(i + "\n" for i, _ in docs).encode(), len(docs))
            published += docs
        else:
            replies.append(sink.take())
    replies.append(sink.take())
    assert sink.take() == []
    blocks = [block for reply in replies for block in reply]
    assert _lines(blocks) == published
    for data, _ids, count in blocks:
        assert 1 <= count <= batch_size
        # handed over once the text reaches the cap: under it before the last document
        assert len(data) - len(data[:-1].rpartition(b"\n")[2]) - 1 < 400


# -- end to end: every output path with 2 workers ------------------------------------

CAPTURES_E2E = [ROOT / "pcaps" / "dns" / "udp_queries.pcap", ROOT / "pcaps" / "http" / "keepalive.pcap"]


def _documents(workers_n: int, *extra: str, tmp: Path | None = None) -> list:
    args = [sys.executable, "-m", "wirebeat.cli", "run", *[a for c in CAPTURES_E2E for a in ("-I", str(c))], "--console",
            "--workers", str(workers_n), "-E", "logging.level=error", *extra]
    proc = subprocess.run(args, capture_output=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = proc.stdout.decode()
    if "output.console.pretty=true" in extra:      # indented documents one after another
        docs, decoder, at = [], json.JSONDecoder(), 0
        while out[at:].strip():
            doc, at = decoder.raw_decode(out, len(out) - len(out[at:].lstrip()))
            docs.append(doc)
    else:
        docs = [orjson.loads(line) for line in out.splitlines()]
    return sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in docs)


@pytest.mark.parametrize("extra", [(), ("-E", "output.console.pretty=true"), ("disk",)])
def test_two_workers_give_one_process_documents_through_every_output_path(extra, tmp_path):
    if extra == ("disk",):
        extra = ("-E", f"queue.disk.path={tmp_path / 'q'}")
    one = _documents(1, *extra)
    assert len(one) > 10
    assert _documents(2, *extra) == one


# -- workers writing the console's lines themselves (WorkerPool.direct) ----------------

def _direct_child(write_fd: int, lock_fd: int, writer: int, blocks: int, lines: int) -> None:
    """A forked child: `blocks` blocks of `lines` lines each through a _DirectWriter."""
    code = 1
    try:
        from wirebeat.outputs import ConsoleOutput
        direct = workers._DirectWriter(write_fd, lock_fd, ConsoleOutput())
        pad = "x" * (200 + 50 * writer)
        for b in range(blocks):
            data = b"".join(orjson.dumps({"w": writer, "b": b, "n": n, "pad": pad}) + b"\n" for n in range(lines))
            ids = b"".join(b"%d-%d-%d\n" % (writer, b, n) for n in range(lines))
            direct.write([(bytearray(data), bytearray(ids), lines)])
        code = 0 if (direct.published, direct.written) == (blocks * lines, blocks * lines) else 3
    finally:
        os._exit(code)


def test_workers_writing_the_console_themselves_never_interleave_lines(tmp_path):
    """Three processes write blocks far larger than a pipe's atomic write (PIPE_BUF) to
    one pipe, read slowly: each block goes out whole under the shared lock, so every
    line is one whole document and each writer's lines come in its order."""
    import tempfile
    import time
    lock = tempfile.TemporaryFile()
    read_fd, write_fd = os.pipe()
    pids = []
    for writer in range(3):
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _direct_child(write_fd, lock.fileno(), writer, blocks=12, lines=300)
        pids.append(pid)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 1000)     # a slow reader: writers wait mid-block
        if not chunk:
            break
        chunks.append(chunk)
        if len(chunks) % 200 == 0:
            time.sleep(0.001)
    os.close(read_fd)
    assert all(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in pids)
    seen: dict[int, list] = {0: [], 1: [], 2: []}
    for line in b"".join(chunks).splitlines():
        doc = orjson.loads(line)
        assert doc["pad"] == "x" * (200 + 50 * doc["w"])
        seen[doc["w"]].append((doc["b"], doc["n"]))
    for writer in range(3):
        assert seen[writer] == [(b, n) for b in range(12) for n in range(300)]


def test_a_worker_writing_the_console_itself_counts_what_a_closed_console_did_not_take():
    """`| head`: once the console's pipe is closed the worker stops writing, and counts
    the rest as made but not written (unacknowledged in the summary), never raising."""
    import tempfile
    from wirebeat.outputs import ConsoleOutput
    lock = tempfile.TemporaryFile()
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    direct = workers._DirectWriter(write_fd, lock.fileno(), ConsoleOutput())
    try:
        direct.write([(bytearray(b'{"a":1}\n{"a":2}\n'), bytearray(b"x\ny\n"), 2)] * 3)
    finally:
        os.close(write_fd)
    assert (direct.published, direct.written, direct.stopped) == (6, 0, True)


def test_two_workers_and_the_main_process_share_the_console_through_a_pipe():
    """With the main process's own documents (wirebeat.stats) on the same pipe, every line
    is whole, the workers' documents are one process's, and the summary counts them all
    as acknowledged."""
    def run(n: int) -> tuple[list, str]:
        args = [sys.executable, "-m", "wirebeat.cli", "run", *[a for c in CAPTURES_E2E for a in ("-I", str(c))],
                "--console", "--workers", str(n), "-E", "logging.level=error",
                "-E", "monitoring.enabled=true", "-E", "monitoring.period=0.001"]
        proc = subprocess.run(args, capture_output=True, cwd=ROOT, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        return [orjson.loads(line) for line in proc.stdout.splitlines()], proc.stderr.decode().strip().splitlines()[-1]
    one, _ = run(1)
    two, summary = run(2)
    docs = lambda all_docs: sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in all_docs  # noqa: E731
                                   if d.get("event", {}).get("dataset") != "wirebeat.stats")
    assert docs(two) == docs(one) and len(docs(one)) > 10
    assert len(two) > len(docs(two))            # the main process's stats documents too
    assert f"{len(two)} documents ({len(two)} acknowledged, 0 failed, 0 unacknowledged)" in summary
