"""Test helpers for decoder authors: an Engine built in-process, every key at its default, documents collected in a list; `decode_pcap` runs a capture through it.

The output here stands in for nothing a user runs (console, file and
Elasticsearch outputs have tests of their own); it only lets a test read the
documents the engine published.
"""
from __future__ import annotations

import threading
from typing import Any

from wirebeat.config import Config, base_schema, protocol_schema
from wirebeat.document import DocumentBuilder
from wirebeat.engine import Engine
from wirebeat.pipeline import Pipeline
from wirebeat.registry import Registered
from wirebeat.stats import Stats
from wirebeat.decoders.api import DecoderSpec


class ListOutput:
    name = "list"

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def send(self, batch: list[tuple[str, dict[str, Any]]], stopping: threading.Event) -> int:
        self.docs.extend(doc for _, doc in batch)
        return 0

    def close(self) -> None:
        pass


def make_engine(specs: list[DecoderSpec], strict: bool = True,
                overrides: dict[str, Any] | None = None,
                output: ListOutput | None = None) -> tuple[Engine, Pipeline, ListOutput, Stats]:
    """(engine, pipeline, output, stats); `overrides` are dotted config keys; `output`
    replaces the ListOutput.

    Flow reports are off unless `overrides` turn them on
    (`{"wirebeat.flows.enabled": True}`)."""
    values = {key: option.default for key, option in base_schema().items()}
    values["wirebeat.flows.enabled"] = False     # a decoder's tests see its own documents
    for spec in specs:
        values.update({key: option.default for key, option in protocol_schema(spec).items()})
    values.update(overrides or {})
    output = ListOutput() if output is None else output
    pipeline = Pipeline(output)
    stats = Stats()
    builder = DocumentBuilder({"type": "wirebeat", "version": "test", "name": "test"}, [], {},
                              False, [])
    engine = Engine(Config(values, set(), None), [Registered(s, "test") for s in specs], builder,
                    pipeline, stats, strict=strict)
    return engine, pipeline, output, stats


def decode_pcap(path: str, specs: list[DecoderSpec], strict: bool = True,
                overrides: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(documents, counters) for one pcap/pcapng file decoded by an engine of `specs` only.

    What a plug-in's tests need: its own decoder on its own capture, in the
    real engine (reassembly, routing, documents), without installing anything.
    `counters` are the engine's statistics (zeros left out).
    """
    engine, pipeline, output, stats = make_engine(specs, strict, overrides)
    run_capture(engine, pipeline, path)
    return output.docs, stats.snapshot()


def run_capture(engine: Engine, pipeline: Pipeline, path: str) -> None:
    """Every frame of a pcap/pcapng file through `engine`, then its end; the pipeline closed."""
    from wirebeat.sources.pcapfile import open_capture

    reader = open_capture(str(path))
    try:
        for frame in reader:
            engine.on_frame(frame.ts, frame.linktype, frame.data, reader.name)
    finally:
        reader.close()
    engine.finish(reader.name)
    pipeline.close()
