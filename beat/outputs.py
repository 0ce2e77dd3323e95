"""Outputs: Elasticsearch (bulk; wirebeat.elasticsearch_output), console (NDJSON on stdout),
file (NDJSON, rotated).

All three receive the same (id, document) batches from the pipeline, or a
Block (flow reports as NDJSON text, `accepts_blocks`). The console and file
outputs write exactly the document Elasticsearch would get; a Block's text is
already those lines and is written as it is.
"""
from __future__ import annotations

import fcntl
import os
import sys
import threading
from typing import Any, BinaryIO

import orjson

from wirebeat import logs
from wirebeat.pipeline import BLOCK_SMALL_BYTES, Batch, Block, OutputStopped

__all__ = ["ConsoleOutput", "DeadLetterFile", "FileOutput", "OutputError"]

log = logs.get("output")


class OutputError(Exception):
    """The output cannot work (the message is one line for the operator).

    `permanent`: waiting will not help (credentials refused, TLS verification
    failed, wrong server version), so `run` stops at start-up with this line.
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ConsoleOutput:
    name = "console"

    def __init__(self, pretty: bool = False, stream: BinaryIO | None = None) -> None:
        self.stream = stream or sys.stdout.buffer
        self.option = orjson.OPT_INDENT_2 if pretty else 0
        # Documents may be orjson.Fragment (JSON text: flow reports, per-packet documents),
        # except when pretty-printed: a fragment is written as it is, not indented.
        self.accepts_fragments = not pretty
        self.accepts_blocks = not pretty     # a Block's lines are compact JSON
        self.block_bytes = BLOCK_SMALL_BYTES    # written as they come: small blocks stay in cache
        # Set when worker processes write their documents to the same stream themselves
        # (wirebeat.workers): a descriptor whose POSIX lock every writer holds while it
        # writes, so that lines of different processes never interleave.
        self.lock_fd: int | None = None

    def send(self, batch: Batch | Block, stopping: threading.Event) -> int:
        if batch.__class__ is Block:
            return self._write(batch.data)      # type: ignore[union-attr]
        dumps, option = orjson.dumps, self.option
        # A list, not a generator (join makes one anyway). Each line is a copy with its
        # newline, not `b"\n".join` of the bare texts: that keeps a batch of ~1 KiB
        # allocations alive at once and, freed together, glibc hands them back to the
        # kernel, to be faulted in again for the next batch (4x the page faults of a run).
        return self._write(b"".join([dumps(doc, option=option) + b"\n" for _, doc in batch]))

    def _write(self, data: bytes) -> int:
        try:
            if self.lock_fd is None:
                self.stream.write(data)
                self.stream.flush()
            else:
                with _Locked(self.lock_fd):
                    self.stream.write(data)
                    self.stream.flush()
        except BrokenPipeError:
            # `wirebeat run ... --console | head`: the reader left, nothing more to deliver.
            raise OutputStopped() from None
        return 0

    def close(self) -> None:
        try:
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass


class _Locked:
    """Hold the POSIX lock of a descriptor shared with other processes (fcntl.lockf: the
    lock is the process's, so forked processes exclude each other)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)


class FileOutput:
    """NDJSON files rotated by size: name, name.1, ... name.(number_of_files - 1)."""

    name = "file"
    accepts_fragments = True    # documents may be orjson.Fragment (JSON text)
    accepts_blocks = True       # and Blocks (NDJSON text)
    block_bytes = BLOCK_SMALL_BYTES     # written as they come: small blocks stay in cache

    def __init__(self, path: str, filename: str, rotate_every_kb: int, number_of_files: int) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as err:
            raise OutputError(f"output.file.path {path}: {err.strerror}") from None
        self.file_path = os.path.join(path, filename)
        self.max_bytes = max(1, rotate_every_kb) * 1024
        self.keep = max(1, number_of_files)
        self.fh = self._open()
        self.size = self.fh.tell()

    def _open(self) -> BinaryIO:
        try:
            return open(self.file_path, "ab")
        except OSError as err:
            raise OutputError(f"output file {self.file_path}: {err.strerror}") from None

    def _rotate(self) -> None:
        self.fh.close()
        for n in range(self.keep - 1, 0, -1):
            older = f"{self.file_path}.{n}" if n > 1 else f"{self.file_path}.1"
            newer = f"{self.file_path}.{n - 1}" if n > 1 else self.file_path
            if n == self.keep - 1 and os.path.exists(older):
                os.remove(older)
            if os.path.exists(newer):
                os.replace(newer, older)
        if self.keep == 1:
            os.remove(self.file_path)
        self.fh = self._open()
        self.size = 0

    def send(self, batch: Batch | Block, stopping: threading.Event) -> int:
        dumps, max_bytes = orjson.dumps, self.max_bytes
        if batch.__class__ is Block:
            data = batch.data       # type: ignore[union-attr]
            if self.size + len(data) <= max_bytes:      # no rotation inside: written whole
                self.fh.write(data)
                self.size += len(data)
                self.fh.flush()
                return 0
            texts = [line + b"\n" for line in data.split(b"\n")[:-1]]
        else:
            texts = [dumps(doc) + b"\n" for _, doc in batch]      # type: ignore[union-attr]
        lines: list[bytes] = []
        size = self.size
        for line in texts:
            if size and size + len(line) > max_bytes:
                self.fh.write(b"".join(lines))     # the lines before the rotation, in the old file
                lines = []
                self._rotate()
                size = 0
            lines.append(line)
            size += len(line)
        self.fh.write(b"".join(lines))
        self.size = size
        self.fh.flush()
        return 0

    def close(self) -> None:
        self.fh.close()


class DeadLetterFile:
    """Documents Elasticsearch rejected for good, one JSON line each, with the reason.

    Appended and flushed per document; each line holds `index`, `_id`, `status`,
    `error` and `document`, so the document can be fixed and indexed by hand.
    """

    def __init__(self, path: str) -> None:
        try:
            self.fh = open(path, "ab")
        except OSError as err:
            raise OutputError(f"output.elasticsearch.dead_letter.path {path}: {err.strerror}") from None

    def write(self, index: str, doc_id: str, status: int, error: Any, doc: dict[str, Any]) -> None:
        self.fh.write(orjson.dumps({"index": index, "_id": doc_id, "status": status,
                                    "error": error, "document": doc}) + b"\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


# The Elasticsearch output lives in wirebeat.elasticsearch_output, imported on first use:
# the client library takes about half a second to import, which a console or file run
# (a benchmark, `-I - --console`) need not pay.
_ELASTICSEARCH_NAMES = frozenset({"ElasticsearchOutput", "check_connection", "make_client", "redact_hosts",
                                  "SUPPORTED_ES_MAJOR"})


def __getattr__(name: str) -> Any:
    if name in _ELASTICSEARCH_NAMES:
        from wirebeat import elasticsearch_output
        return getattr(elasticsearch_output, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
