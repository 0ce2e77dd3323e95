"""The number of capture sources with decoding state is capped, and nothing is lost at the cap."""
from __future__ import annotations

import pcapgen as g
from wirebeat.engine import Engine
from wirebeat.pipeline import Pipeline
from wirebeat.decoders.icmp import DECODER as ICMP
from wirebeat.testing import ListOutput, make_engine


def _engine(max_sources: int) -> tuple[Engine, Pipeline, ListOutput]:
    engine, pipeline, output, _stats = make_engine([ICMP], overrides={"wirebeat.limits.max_sources": max_sources})
    return engine, pipeline, output


def _echo(reply: bool) -> bytes:
    src, dst = ("10.0.0.2", "10.0.0.1") if reply else ("10.0.0.1", "10.0.0.2")
    return g.ethernet(g.ipv4(src, dst, 1, g.icmp_echo(1, 1, reply=reply)))


def test_the_idlest_source_is_finished_when_a_new_one_exceeds_the_cap():
    engine, pipeline, output = _engine(max_sources=2)
    engine.on_frame(1.0, 1, _echo(False), "edge-a")      # a's request, then a goes quiet
    engine.on_frame(2.0, 1, _echo(False), "edge-b")
    engine.on_frame(3.0, 1, _echo(False), "edge-c")      # third source: a is finished
    assert sorted(engine.sources) == ["edge-b", "edge-c"]
    counters = engine.counters()
    assert counters["sources.evicted"] == 1 and counters["sources.open"] == 2
    engine.on_frame(3.5, 1, _echo(True), "edge-b")       # b still pairs normally
    engine.finish()
    pipeline.close()
    by_source = {d["capture"]["source"]: d for d in output.docs}
    # a's request was reported (unanswered) when a was finished, not dropped.
    assert by_source["edge-a"]["status"] == "Error" and "response" not in by_source["edge-a"]["icmp"]
    assert by_source["edge-b"]["status"] == "OK"
    assert len(output.docs) == 3
    assert engine.counters()["transactions"] == 3


def test_finished_sources_keep_their_counts_but_not_their_tables():
    engine, pipeline, _ = _engine(max_sources=10)
    whole = g.ipv4("10.0.0.1", "10.0.0.2", 1, g.icmp_echo(1, 1, b"x" * 64), ident=7)
    first, _rest = g.fragment_ipv4(whole, 40)
    engine.on_frame(1.0, 1, g.ethernet(first), "file-1")     # a fragment held by file-1's table
    assert engine.counters()["ip.fragments.fragments"] == 1
    engine.finish("file-1")
    pipeline.close()
    assert engine.sources == {}
    assert engine.counters()["ip.fragments.fragments"] == 1
