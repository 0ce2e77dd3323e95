"""The console and file outputs must not make the kernel fault in a batch's memory anew.

How a batch's lines are made decides whether glibc keeps their memory: ~1 KiB texts
kept alive together until the batch's join and freed together (orjson's own output
buffers, as `OPT_APPEND_NEWLINE` leaves them) are handed back to the kernel, and the
next batch faults every page in again. On mixed-100000's per-packet documents that was
117k page faults instead of 10.8k (docs/performance.md, dense3's section): invisible to
instruction counts, 0.2-0.3 s of system time. The outputs run in the pipeline's thread,
so do these sends: a thread's malloc arena gives memory back by itself (madvise).
"""
from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

import orjson

from wirebeat.outputs import ConsoleOutput, FileOutput

BATCHES = 40
PER_BATCH = 1024


def _batch(n: int) -> list[tuple[str, orjson.Fragment]]:
    """Per-packet-document-like lines of ~1 KiB, JSON text already (Fragment), as the C core makes."""
    pad = "x" * 900
    return [(f"id{n}-{i}", orjson.Fragment(f'{{"n":{n},"i":{i},"pad":"{pad}"}}'.encode()))
            for i in range(PER_BATCH)]


def _faults_per_document(send) -> float:
    batches = [_batch(n) for n in range(BATCHES)]
    result: list[int] = []

    def run() -> None:
        stopping = threading.Event()
        send(batches[0], stopping)              # the first batch may grow the arena
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for batch in batches[1:]:
            send(batch, stopping)
        result.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result[0] / ((BATCHES - 1) * PER_BATCH)


def test_console_lines_do_not_fault_each_batch_in_again() -> None:
    with open(os.devnull, "wb") as devnull:
        output = ConsoleOutput(stream=devnull)
        per_document = _faults_per_document(output.send)
    # ~1 KiB a document is a quarter page: faulting it all in again is >= 0.25 a document
    assert per_document < 0.05, f"{per_document:.3f} page faults a document"


def test_file_lines_do_not_fault_each_batch_in_again(tmp_path: Path) -> None:
    output = FileOutput(str(tmp_path), "wirebeat.ndjson", rotate_every_kb=1 << 30, number_of_files=2)
    try:
        per_document = _faults_per_document(output.send)
    finally:
        output.close()
    assert per_document < 0.05, f"{per_document:.3f} page faults a document"
