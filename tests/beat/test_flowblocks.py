"""Flow reports as NDJSON blocks (Pipeline.publish_block) against one object per report.

With the C core (beat/_flowcore.c) and an output that takes blocks (console,
file, Elasticsearch), a sweep's text reports are written into one bytes block
per chunk instead of one (id, orjson.Fragment) pair each. The pure-Python
reporter (beat/flows.py) stays the reference: every test here runs the same
traffic through both and requires the same documents, byte for byte, with the
same `_id`s in the same order, and the same pipeline counts. Under CI=true the
extension must have been built (a missing one fails, never skips).
"""
from __future__ import annotations

import contextlib
import io
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import pcapgen as g
from test_flowcore import SPECS, _traffic, needs_c     # needs_c: skipped without the extension, failed under CI
from wirebeat import flows
from wirebeat.document import DocumentBuilder
from wirebeat.flows import R_BYTES, FlowReporter, FlowTable
from wirebeat.outputs import ConsoleOutput, FileOutput
from wirebeat.pipeline import BLOCK_MAX_BYTES, BLOCK_SMALL_BYTES, Block, OutputStopped, Pipeline, documents
from wirebeat.testing import make_engine

T0 = 1_700_000_000.125


@contextlib.contextmanager
def _core(c: bool) -> Iterator[None]:
    """Tables and reporters made inside use the C core (c) or the pure-Python path."""
    saved = flows._flowcore
    if not c:
        flows._flowcore = None
    try:
        yield
    finally:
        flows._flowcore = saved


class Lines:
    """An output that takes blocks and keeps (_id, the JSON text) of every document, plus
    what kind of batch each arrived in."""

    name = "lines"
    accepts_fragments = True
    accepts_blocks = True

    def __init__(self) -> None:
        self.lines: list[tuple[str, bytes]] = []
        self.blocks: list[int] = []

    def send(self, batch: Any, stopping: threading.Event) -> int:
        if batch.__class__ is Block:
            self.blocks.append(batch.count)
            # The block's text is the lines themselves: split independently of Block.pairs.
            lines = batch.data.split(b"\n")
            ids = batch.ids.split(b"\n")
            assert lines[-1] == b"" and ids[-1] == b"" and len(lines) == len(ids) == batch.count + 1
            self.lines.extend(zip([i.decode() for i in ids[:-1]], lines[:-1]))
        else:
            self.lines.extend((doc_id, orjson.dumps(doc)) for doc_id, doc in batch)
        return 0

    def close(self) -> None:
        pass


def _udp_frames(flows_n: int, seconds: float, source_port: int = 20000) -> list[tuple[float, int, bytes]]:
    """`flows_n` UDP conversations, each a query and an answer, spread over `seconds` and
    repeated every 7 s: several report periods with many live flows."""
    frames = []
    for i in range(flows_n):
        a, b = f"10.{i // 250}.{i % 250}.1", "192.0.2.53"
        for rep in range(int(seconds // 7) + 1):
            t = T0 + (i * 7.0 / flows_n) + rep * 7
            frames.append((t, 1, g.ethernet(g.ipv4(a, b, 17, g.udp(a, b, source_port + i % 1000, 53, b"q")))))
            frames.append((t + 0.01, 1, g.ethernet(g.ipv4(b, a, 17, g.udp(b, a, 53, source_port + i % 1000,
                                                                         b"answer")))))
    frames.sort(key=lambda f: f[0])
    return frames


def _run(c: bool, frames: list[tuple[float, int, bytes]], output: Any, block_docs: int | None = None,
         source: str = "test") -> tuple[Pipeline, Any]:
    with _core(c):
        engine, pipeline, _, stats = make_engine(SPECS, strict=False, output=output,
                                                 overrides={"wirebeat.flows.enabled": True})
    assert (engine.flow_reporter.core is not None) == c
    if c and block_docs is not None:
        engine.flow_reporter.core.blocks(pipeline.publish_block, block_docs, BLOCK_MAX_BYTES)
    for ts, linktype, frame in frames:
        engine.on_frame(ts, linktype, frame, source)
    engine.finish()
    assert pipeline.close() == 0
    return pipeline, stats.snapshot()


def test_extension_is_built_under_ci():
    if os.environ.get("CI") == "true" and os.environ.get("WIREBEAT_PURE_PYTHON") in (None, "", "0"):
        assert flows._flowcore is not None, "wirebeat._flowcore was not built or was refused"


@needs_c
@pytest.mark.parametrize("block_docs", [None, 1, 7])
def test_blocks_carry_the_documents_ids_and_order_of_the_python_path(block_docs):
    """Every kind of flow (test_flowcore's traffic: handshakes, FIN/RST, VLANs, tunnels,
    IPv6, ICMP, evictions, several periods) plus many UDP flows: the same (id, text) list."""
    frames = sorted(_traffic() + _udp_frames(300, 40), key=lambda f: f[0])
    py_out, c_out = Lines(), Lines()
    py_pipe, py_stats = _run(False, frames, py_out)
    c_pipe, c_stats = _run(True, frames, c_out, block_docs)
    assert c_out.lines == py_out.lines
    flow_docs = sum(1 for _, text in py_out.lines if b'"type":"flow"' in text)
    assert flow_docs > 1000
    assert not py_out.blocks and py_pipe.blocks == 0
    # Most flow reports came in blocks, each within its cap.
    assert sum(c_out.blocks) > flow_docs // 2 and c_pipe.blocks == len(c_out.blocks)
    assert max(c_out.blocks) <= (block_docs or c_pipe.batch_size)
    for name in ("events.published", "events.acked", "events.failed", "queue.dropped"):
        assert c_stats.get(name, 0) == py_stats.get(name, 0), name
    assert c_pipe.published == c_pipe.acked == len(c_out.lines)


@needs_c
def test_a_report_python_makes_mid_sweep_keeps_its_place():
    """A count past 64 bits sends one report to the Python method mid-sweep: the block
    collected so far is handed over first, then that report, then a new block."""
    runs = []
    for c in (True, False):
        out = Lines()
        pipeline = Pipeline(out, batch_size=1000, flush_timeout_s=3600)
        with _core(c):
            reporter = FlowReporter(DocumentBuilder({"type": "wirebeat"}, [], {}, False, []), pipeline.publish,
                                    30.0, 10.0, 100, fragments=True, publish_many=pipeline.publish_many,
                                    publish_block=pipeline.publish_block, block_docs=pipeline.batch_size)
            table = FlowTable("src", reporter)
        for i in range(30):
            frame = g.ethernet(g.ipv4("192.0.2.1", "192.0.2.2", 17, g.udp("192.0.2.1", "192.0.2.2", 1000 + i, 53, b"q")))
            table.account(T0 + i * 0.1, 1, frame, (), frame[26:30], frame[30:34], 17, frame[34:])
        table._records()[7][R_BYTES] = -5     # a count the C reporter hands to Python
        for now in (5, 15, 25):
            table.sweep(T0 + now)
        table.finish()
        assert pipeline.close() == 0
        runs.append((out.lines, out.blocks))
    (c_lines, c_blocks), (py_lines, py_blocks) = runs
    assert c_lines == py_lines and len(py_lines) == 90
    assert py_blocks == [] and c_blocks == [7, 22] * 3


@needs_c
def test_blocks_stay_within_their_byte_cap():
    """A block is handed over as soon as its text reaches max_bytes: never more than one
    report past it, whatever the number of live flows."""
    got: list[tuple[bytes, bytes, int]] = []
    builder = DocumentBuilder({"type": "wirebeat"}, [], {}, False, [])
    reporter = FlowReporter(builder, lambda *a: pytest.fail("published alone"), 30.0, 10.0, 5000,
                            fragments=True, publish_many=lambda docs: pytest.fail("a list"),
                            publish_block=lambda d, i, n: got.append((d, i, n)), block_docs=10**6)
    reporter.core.blocks(lambda d, i, n: got.append((d, i, n)), 10**6, 20_000)
    table = FlowTable("src", reporter)
    for i in range(1000):
        frame = g.ethernet(g.ipv4("192.0.2.1", "192.0.2.2", 17, g.udp("192.0.2.1", "192.0.2.2", 1000 + i, 53, b"q")))
        table.account(T0 + i * 0.001, 1, frame, (), frame[26:30], frame[30:34], 17, frame[34:])
    table.sweep(T0 + 5)
    table.sweep(T0 + 15)
    longest = max(len(line) + 1 for d, _, _ in got for line in d.split(b"\n")[:-1])
    assert sum(n for _, _, n in got) == 1000 and len(got) > 10
    assert all(len(d) < 20_000 + longest for d, _, _ in got)
    assert all(len(d) >= 20_000 for d, _, _ in got[:-1])       # full ones handed over at the cap
    for d, i, n in got:
        assert d.count(b"\n") == i.count(b"\n") == n
        assert all(orjson.loads(line)["flow"]["final"] is False for line in d.split(b"\n")[:-1])


@needs_c
@pytest.mark.parametrize("source", ["caf\u00e9-\u65e5\u672c", "plain"])
def test_console_output_is_byte_identical(source):
    """The real console output, blocks written as they are against one line per document;
    a source name outside ASCII travels as UTF-8 in the block as orjson writes it."""
    frames = sorted(_traffic() + _udp_frames(200, 30), key=lambda f: f[0])
    outputs = []
    for c in (False, True):
        stream = io.BytesIO()
        pipeline, _ = _run(c, frames, ConsoleOutput(stream=stream), source=source)
        assert (pipeline.blocks > 0) == c
        outputs.append(stream.getvalue())
    assert outputs[0] == outputs[1] and outputs[0].count(b"\n") > 1000
    assert source.encode() in outputs[0]


@needs_c
def test_file_output_rotates_between_the_same_lines(tmp_path: Path):
    """A block that crosses the rotation size is written line by line: the same files."""
    frames = sorted(_traffic() + _udp_frames(150, 30), key=lambda f: f[0])
    contents = []
    for c in (False, True):
        path = tmp_path / ("c" if c else "py")
        output = FileOutput(str(path), "flows.ndjson", rotate_every_kb=64, number_of_files=100)
        pipeline, _ = _run(c, frames, output, block_docs=50)
        assert (pipeline.blocks > 0) == c
        contents.append({p.name: p.read_bytes() for p in sorted(path.iterdir())})
    assert contents[0] == contents[1] and len(contents[0]) > 3
    for name, data in contents[0].items():
        assert len(data) <= 64 * 1024 and data.endswith(b"\n"), name


def test_a_block_is_counted_in_documents_by_the_pipeline():
    """published/acked count a block's documents; a full queue that may not wait drops and
    counts all of them; close() reports none unacknowledged."""
    out = Lines()
    pipeline = Pipeline(out, max_events=100, batch_size=10, flush_timeout_s=3600)
    pipeline.publish("a", {"x": 1})
    pipeline.publish_block(b'{"y":1}\n{"y":2}\n', b"b\nc\n", 2)
    pipeline.publish("d", {"x": 2})
    assert pipeline.published == 4
    assert pipeline.close() == 0
    assert out.lines == [("a", b'{"x":1}'), ("b", b'{"y":1}'), ("c", b'{"y":2}'), ("d", b'{"x":2}')]
    assert pipeline.acked == 4 and pipeline.counters()["queue.blocks"] == 1

    gate = threading.Event()

    class Stuck(Lines):
        def send(self, batch, stopping):
            gate.wait(10)
            return super().send(batch, stopping)

    stuck = Stuck()
    pipeline = Pipeline(stuck, max_events=5, batch_size=5, flush_timeout_s=3600, block_when_full=False)
    pipeline.publish_block(b"{}\n" * 5, b"1\n2\n3\n4\n5\n", 5)     # taken by the output, which waits
    for _ in range(200):
        if pipeline.in_flight:
            break
        threading.Event().wait(0.01)
    pipeline.publish_block(b"{}\n" * 5, b"6\n7\n8\n9\n10\n", 5)    # queued: the queue is full now
    pipeline.publish_block(b"{}\n" * 3, b"11\n12\n13\n", 3)        # may not wait: dropped, counted
    assert pipeline.dropped == 3 and pipeline.published == 13
    gate.set()
    assert pipeline.close() == 0
    assert pipeline.acked == 10 and [i for i, _ in stuck.lines] == [str(n) for n in range(1, 11)]


def test_block_pairs_are_what_publish_would_have_queued():
    block = Block(b'{"a":1}\n{"b":"\xc3\xa9"}\n', b"x-0\ny-1\n", 2)
    pairs = documents(block)
    assert [(i, orjson.dumps(d)) for i, d in pairs] == [("x-0", b'{"a":1}'), ("y-1", '{"b":"\u00e9"}'.encode())]
    assert [(i, orjson.dumps(d)) for i, d in block] == [(i, orjson.dumps(d)) for i, d in pairs]
    assert documents([("z", {})]) == [("z", {})]
    with pytest.raises(ValueError):
        Block(b"{}\n", b"x\ny\n", 2).pairs()


def test_no_blocks_for_outputs_that_do_not_take_them_or_the_disk_queue(tmp_path: Path):
    from wirebeat.diskqueue import DiskQueue
    assert Pipeline(ConsoleOutput(stream=io.BytesIO(), pretty=True)).publish_block is None
    lines = Lines()
    assert Pipeline(lines).publish_block is not None
    disk = DiskQueue(str(tmp_path / "q"), 2**20)
    pipeline = Pipeline(lines, disk=disk)
    assert pipeline.publish_block is None
    pipeline.close()


@needs_c
def test_a_block_is_written_again_only_once_nobody_holds_it():
    """The C reporter writes a new block into one it handed over before (a spare) once only
    its own reference is left. A sink that keeps every other block it gets: the blocks it
    keeps never change afterwards, and every block held the Python path's documents when it
    came (the ones let go were written again, the ones kept were not)."""
    frames = sorted(_traffic() + _udp_frames(300, 40), key=lambda f: f[0])
    py_out = Lines()
    _run(False, frames, py_out)
    with _core(True):
        engine, pipeline, _, _stats = make_engine(SPECS, strict=False, output=Lines(),
                                                  overrides={"wirebeat.flows.enabled": True})
    came: list[tuple[bytes, bytes]] = []        # (a copy of the text, of the ids) as handed over
    kept: list[tuple[bytes, bytes]] = []        # (the block's own bytes object, its copy)

    def sink(data: bytes, ids: bytes, count: int) -> None:
        came.append((bytes(bytearray(data)), bytes(bytearray(ids))))
        if len(came) % 2:
            kept.append((data, came[-1][0]))

    engine.flow_reporter.core.blocks(sink, 5, BLOCK_MAX_BYTES)
    for ts, linktype, frame in frames:
        engine.on_frame(ts, linktype, frame, "test")
    engine.finish()
    pipeline.close()
    assert len(came) > 100
    assert all(data == copy for data, copy in kept)
    lines = [(doc_id.decode(), line) for text, ids in came
             for doc_id, line in zip(ids.split(b"\n")[:-1], text.split(b"\n")[:-1])]
    flow_lines = Counter(pair for pair in py_out.lines if b'"type":"flow"' in pair[1])
    assert not Counter(lines) - flow_lines and len(lines) > sum(flow_lines.values()) // 2


@needs_c
def test_console_blocks_are_small_and_written_before_publish_block_returns():
    """The console and file outputs declare block_bytes (BLOCK_SMALL_BYTES): the C core hands
    them blocks of about that many bytes, and publish_block returns once the output thread has
    written the block (its buffer is the C core's again, still in cache), with every document
    before it. An output without block_bytes (Elasticsearch's kind: Lines here) keeps blocks of
    batch_size documents, queued, not waited for."""
    frames = _udp_frames(1500, 30)
    stream = io.BytesIO()
    console = ConsoleOutput(stream=stream)
    assert console.block_bytes == BLOCK_SMALL_BYTES and FileOutput.block_bytes == BLOCK_SMALL_BYTES
    with _core(True):
        engine, pipeline, _, _stats = make_engine(SPECS, strict=False, output=console,
                                                  overrides={"wirebeat.flows.enabled": True})
    assert pipeline.block_bytes == BLOCK_SMALL_BYTES and pipeline.wait_blocks
    sizes: list[int] = []
    unwritten: list[int] = []
    publish_block = pipeline.publish_block

    def watching(data: bytes, ids: bytes, count: int) -> None:
        sizes.append(len(data))
        publish_block(data, ids, count)
        unwritten.append(pipeline.queued_events + pipeline.in_flight)
        assert stream.getvalue().endswith(bytes(data))      # written, and last

    engine.flow_reporter.core.blocks(watching, pipeline.batch_size, pipeline.block_bytes)
    for ts, linktype, frame in frames:
        engine.on_frame(ts, linktype, frame, "test")
    engine.finish()
    assert pipeline.close() == 0
    assert len(sizes) > 10 and max(sizes) < BLOCK_SMALL_BYTES + 4096 and set(unwritten) == {0}
    py_out = Lines()
    _run(False, frames, py_out)
    assert stream.getvalue() == b"".join(text + b"\n" for _, text in py_out.lines)
    lines = Lines()
    pipe = Pipeline(lines)
    assert pipe.block_bytes == BLOCK_MAX_BYTES and not pipe.wait_blocks
    pipe.close()


class Written(Lines):
    """Lines with `block_bytes` (what console and file declare), noting the thread of each send."""

    block_bytes = BLOCK_SMALL_BYTES

    def __init__(self, fail: BaseException | None = None) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.fail = fail

    def send(self, batch: Any, stopping: threading.Event) -> int:
        self.threads.append(threading.current_thread().name)
        if self.fail is not None and batch.__class__ is Block:
            raise self.fail
        return super().send(batch, stopping)


def test_an_idle_output_takes_the_block_from_the_publishing_thread_in_publish_order():
    """With `block_bytes` and nothing queued or in flight, publish_block sends the partial batch
    and then the block itself (no hand-over to the output thread and back); while the output
    thread is busy the block is queued behind its batches and waited for. Either way the
    documents keep publish order, and every one is acknowledged."""
    out = Written()
    pipeline = Pipeline(out, max_events=100, batch_size=10, flush_timeout_s=3600)
    assert pipeline.wait_blocks
    pipeline.publish("a", {"x": 1})
    pipeline.publish_block(b'{"y":1}\n{"y":2}\n', b"b\nc\n", 2)
    assert [i for i, _ in out.lines] == ["a", "b", "c"]        # written before it returned
    assert out.threads == [threading.current_thread().name] * 2
    gate = threading.Event()

    class Busy(Written):
        def send(self, batch: Any, stopping: threading.Event) -> int:
            if batch.__class__ is not Block:
                gate.wait(10)
            return super().send(batch, stopping)

    busy = Busy()
    pipeline2 = Pipeline(busy, max_events=100, batch_size=1, flush_timeout_s=3600)
    pipeline2.publish("d", {"x": 2})                 # a full batch: the output thread takes it, waits
    threading.Timer(0.2, gate.set).start()
    pipeline2.publish_block(b'{"y":3}\n', b"e\n", 1)  # queued behind it, then waited for
    assert [i for i, _ in busy.lines] == ["d", "e"] and busy.threads == ["output", "output"]
    for p, n in ((pipeline, 3), (pipeline2, 2)):
        assert p.close() == 0 and p.acked == n


@pytest.mark.parametrize("fail", [OSError(28, "No space left on device"), OutputStopped()])
def test_an_output_failing_in_the_publishing_thread_fails_as_in_its_own(fail: BaseException):
    """The output's failure in a send from the publishing thread ends its thread as a failure
    in the output thread does: an error is kept (a stopped output, such as a closed pipe, just
    stops), later blocks are not sent, the run does not hang, and what was not written counts
    as unacknowledged."""
    out = Written(fail)
    pipeline = Pipeline(out, max_events=100, batch_size=10, flush_timeout_s=3600)
    pipeline.publish("a", {"x": 1})
    pipeline.publish_block(b'{"y":1}\n', b"b\n", 1)
    pipeline.publish_block(b'{"y":2}\n', b"c\n", 1)
    pipeline.thread.join(5)
    assert not pipeline.thread.is_alive()
    assert (pipeline.error is fail) == (not isinstance(fail, OutputStopped))
    assert [i for i, _ in out.lines] == ["a"] and len(out.threads) == 2
    assert pipeline.close(timeout_s=5) == 2 and pipeline.acked == 1
