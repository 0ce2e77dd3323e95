"""Per-packet documents' fast path (wirebeat.packets): JSON filled into per-flow templates.

The oracle is the general path: the same capture through an engine whose
output takes dicts, each document serialised with orjson here. The fast
path must give the same bytes, the same `_id`s, in the same order.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from wirebeat.document import DocumentBuilder
from wirebeat.outputs import ConsoleOutput, FileOutput
from wirebeat import packets
from wirebeat.packets import PacketDocuments
from wirebeat.registry import discover
from wirebeat.sources.pcapfile import open_capture
from wirebeat.testing import ListOutput, make_engine

ROOT = Path(__file__).resolve().parent.parent.parent
CAPTURES = sorted((ROOT / "pcaps").glob("**/*.pcap*"))
SPECS = [r.spec for r in discover()]


@pytest.fixture(autouse=True)
def _pure_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """These are the Python templates' tests: the C accelerator, which would write these
    documents instead, is compared with that path in tests/beat/test_speedups.py."""
    monkeypatch.setattr(packets, "_speedups", None)


class JSONOutput(ListOutput):
    """Takes pre-serialised documents, as the console and file outputs do."""

    accepts_fragments = True

    def send(self, batch: list[tuple[str, Any]], stopping: threading.Event) -> int:
        self.docs.extend((doc_id, orjson.dumps(doc)) for doc_id, doc in batch)
        return 0


class DictOutput(ListOutput):
    def send(self, batch: list[tuple[str, Any]], stopping: threading.Event) -> int:
        assert all(isinstance(doc, dict) for _, doc in batch)
        self.docs.extend((doc_id, orjson.dumps(doc)) for doc_id, doc in batch)
        return 0


def _documents(path: Path, output: ListOutput, **overrides: Any) -> tuple[list, Any]:
    engine, pipeline, output, _ = make_engine(
        SPECS, overrides={"wirebeat.packets.enabled": True, **overrides}, output=output)
    reader = open_capture(str(path))
    for frame in reader:
        engine.on_frame(frame.ts, frame.linktype, frame.data, reader.name)
    reader.close()
    engine.finish(reader.name)
    pipeline.close()
    return output.docs, engine.packet_docs


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(ROOT / "pcaps")))
def test_fast_path_writes_what_the_general_path_writes(path: Path) -> None:
    general, general_docs = _documents(path, DictOutput())
    fast, fast_docs = _documents(path, JSONOutput())
    assert not general_docs.raw_json and fast_docs.raw_json
    assert fast == general


def test_fast_path_is_taken_for_repeated_flows() -> None:
    # A TCP conversation: every frame after a flow's first per direction comes from a template.
    path = ROOT / "pcaps" / "http" / "keepalive.pcap"
    fast, packet_docs = _documents(path, JSONOutput())
    general, _ = _documents(path, DictOutput())
    assert fast == general
    templates = packet_docs.templates
    assert templates and len(templates) < packet_docs.published


def test_tunnels_and_vlans_stay_on_the_general_path() -> None:
    path = ROOT / "pcaps" / "tunnels" / "vxlan.pcap"
    fast, packet_docs = _documents(path, JSONOutput())
    general, _ = _documents(path, DictOutput())
    assert fast == general
    # The outer VXLAN flow is a tunnel: no template for it (its documents show the inner one).
    assert all(not packet_docs.flows[key[0]][4] for key in packet_docs.templates)


def test_anything_that_edits_documents_turns_the_fast_path_off() -> None:
    agent = {"type": "wirebeat", "version": "test", "name": "test"}
    drop = [{"drop_event": {"when": {"equals": {"type": "packet"}}}}]
    for processors, fields, under_root, tags in (([], {}, False, []), (drop, {}, False, []),
                                                 ([], {"site": "a"}, False, []),
                                                 ([], {}, True, []), ([], {}, False, ["x"])):
        builder = DocumentBuilder(agent, processors, fields, under_root, tags)
        docs = PacketDocuments(builder, lambda *_: None, {}, True, raw_json=True)
        assert docs.raw_json == (not (processors or fields or under_root or tags))
        assert not PacketDocuments(builder, lambda *_: None, {}, True).raw_json


def test_console_accepts_fragments_unless_pretty(tmp_path: Path) -> None:
    assert ConsoleOutput(stream=open(tmp_path / "c", "wb")).accepts_fragments
    assert not ConsoleOutput(pretty=True, stream=open(tmp_path / "p", "wb")).accepts_fragments


@pytest.mark.parametrize("make", [
    lambda d: ConsoleOutput(stream=open(d / "console.ndjson", "wb")),
    lambda d: FileOutput(str(d), "file.ndjson", 1024, 2),
])
def test_outputs_write_fragments_verbatim(tmp_path: Path, make: Any) -> None:
    output = make(tmp_path)
    doc = {"@timestamp": "2026-11-30T00:00:00.000001Z", "network": {"bytes": 60}}
    output.send([("a", orjson.Fragment(orjson.dumps(doc))), ("b", doc)], threading.Event())
    output.close()
    written = next(tmp_path.glob("*.ndjson")).read_bytes().splitlines()
    assert [orjson.loads(line) for line in written] == [doc, doc]
