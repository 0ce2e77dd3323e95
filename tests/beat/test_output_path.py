"""The per-document output path: publish -> queue -> output writes the same bytes, cheaper.

Expected bytes come from the standard library's json module (compact separators,
no ASCII escaping), not from orjson, which the code under test uses.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from wirebeat.config import base_schema
from wirebeat.elasticsearch_output import ElasticsearchOutput
from wirebeat.outputs import ConsoleOutput, FileOutput
from wirebeat.pipeline import Pipeline


def _compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


DOCS: list[dict[str, Any]] = [
    {"@timestamp": "2024-01-01T00:00:00.000001Z", "event": {"kind": "event", "category": ["network"]},
     "network": {"bytes": 1234, "transport": "udp"}, "tags": ["a", "b"], "x": None, "ok": True},
    {"dns": {"question": {"name": "ünïcödé.example.\u2603"}}, "quote": 'he said "hi"\n\ttab',
     "nested": {"deep": {"deeper": [1, 2, {"k": False}]}}},
    {"empty": {}, "list": [], "n": -7},
]


class Collect:
    """An output that keeps what it is sent."""

    name = "collect"

    def __init__(self, accepts_fragments: bool) -> None:
        self.accepts_fragments = accepts_fragments
        self.batches: list[list[tuple[str, Any]]] = []

    def send(self, batch, stopping: threading.Event) -> int:
        self.batches.append(list(batch))
        return 0

    def close(self) -> None:
        pass


def test_a_fragment_output_gets_each_dict_as_its_json_text_with_the_same_bytes() -> None:
    output = Collect(accepts_fragments=True)
    pipeline = Pipeline(output, batch_size=2)
    for n, doc in enumerate(DOCS):
        pipeline.publish(f"id{n}", doc)
    assert pipeline.close() == 0
    got = [item for batch in output.batches for item in batch]
    assert [doc_id for doc_id, _ in got] == ["id0", "id1", "id2"]
    assert all(isinstance(doc, orjson.Fragment) for _, doc in got)
    assert [orjson.dumps(doc) for _, doc in got] == [_compact(doc) for doc in DOCS]
    assert (pipeline.published, pipeline.acked) == (3, 3)


def test_an_output_that_takes_no_fragments_gets_the_dicts_themselves() -> None:
    output = Collect(accepts_fragments=False)
    pipeline = Pipeline(output)
    for n, doc in enumerate(DOCS):
        pipeline.publish(f"id{n}", doc)
    assert pipeline.close() == 0
    assert [doc for _, doc in output.batches[0]] == DOCS
    assert all(got is sent for (_, got), sent in zip(output.batches[0], DOCS))


def test_fragments_and_dict_subclasses_pass_through_untouched() -> None:
    output = Collect(accepts_fragments=True)
    pipeline = Pipeline(output)
    text = orjson.Fragment('{"already":"json"}')

    class Doc(dict):
        pass

    special = Doc(a=1)
    pipeline.publish("t", text)
    pipeline.publish("s", special)
    assert pipeline.close() == 0
    assert output.batches[0][0][1] is text
    assert output.batches[0][1][1] is special


def test_a_document_that_is_not_json_still_fails_in_the_output_not_in_publish(tmp_path: Path) -> None:
    sink = open(tmp_path / "out", "wb")
    pipeline = Pipeline(ConsoleOutput(stream=sink))
    pipeline.publish("bad", {"raw": b"\x00bytes are not JSON"})     # must not raise here
    unacked = pipeline.close()
    assert isinstance(pipeline.error, TypeError)
    assert unacked == 1 and pipeline.acked == 0


@pytest.mark.parametrize("pretty", [False, True])
def test_console_writes_one_line_per_document_as_before(tmp_path: Path, pretty: bool) -> None:
    path = tmp_path / "console"
    with open(path, "wb") as sink:
        pipeline = Pipeline(ConsoleOutput(pretty=pretty, stream=sink), batch_size=2)
        for n, doc in enumerate(DOCS):
            pipeline.publish(f"id{n}", doc)
        if not pretty:
            pipeline.publish("frag", orjson.Fragment('{"a":[1,2]}'))
        assert pipeline.close() == 0
    if pretty:
        expected = b"".join(json.dumps(doc, indent=2, ensure_ascii=False).encode() + b"\n" for doc in DOCS)
    else:
        expected = b"".join(_compact(doc) + b"\n" for doc in DOCS) + b'{"a":[1,2]}\n'
    assert path.read_bytes() == expected


def test_file_output_rotates_between_the_same_lines_as_one_write_per_line(tmp_path: Path) -> None:
    docs = [{"n": n, "pad": "x" * (100 + 37 * (n % 7))} for n in range(60)]
    lines = [_compact(doc) + b"\n" for doc in docs]
    output = FileOutput(str(tmp_path), "out.ndjson", rotate_every_kb=1, number_of_files=100)
    output.send([(str(n), doc) for n, doc in enumerate(docs[:25])], threading.Event())
    output.send([(str(n), doc) for n, doc in enumerate(docs[25:])], threading.Event())
    output.close()
    # The oracle: a file takes lines while they fit in 1024 bytes (a first line always fits).
    files: list[bytes] = [b""]
    for line in lines:
        if files[-1] and len(files[-1]) + len(line) > 1024:
            files.append(b"")
        files[-1] += line
    names = ["out.ndjson"] + [f"out.ndjson.{n}" for n in range(1, len(files))]
    written = [(tmp_path / name).read_bytes() for name in reversed(names)]     # oldest first
    assert written == files


@pytest.mark.parametrize("index", ["wirebeat-test", "odd%sname%d-%%"])
def test_bulk_body_is_an_action_line_and_the_document_per_item(index: str) -> None:
    prefix = "output.elasticsearch."
    cfg = {key[len(prefix):]: option.default for key, option in base_schema().items()
           if key.startswith(prefix)}
    output = ElasticsearchOutput(cfg, index)
    try:
        items = [(f"id-{n}", doc) for n, doc in enumerate(DOCS)]
        items.append(('we"ird\\id', orjson.Fragment('{"b":2}')))
        expected = b"".join(_compact({"create": {"_index": index, "_id": doc_id}}) + b"\n"
                            + (_compact(doc) if isinstance(doc, dict) else b'{"b":2}') + b"\n"
                            for doc_id, doc in items)
        assert output._body(items) == expected
    finally:
        output.close()
