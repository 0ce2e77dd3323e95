"""No dashboard panel is blank on the demo: each panel's aggregation, run on the indexed captures.

The bundled captures (pcaps/) are indexed into an index of this test's own
with the real `wirebeat run` (monitoring on, so the collector health
documents are there too), and each panel's Elasticsearch request (the one
the Lens object and the report are generated from) must return buckets with
documents, or hits for a saved search, and each metric's field must have
values there. Parametrized per panel: flows-*,
netflow-* and *-flow panels need the flow and NetFlow branches' documents.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from elasticsearch import Elasticsearch

from conftest import PCAPS, run_wirebeat
from wirebeat.kibana.panels import Panel, all_panels, pick_interval

pytestmark = pytest.mark.elasticsearch

CAPTURES = sorted(str(p) for p in PCAPS.rglob("*.pcap*"))


def index_captures(es_url: str, name: str) -> None:
    """`wirebeat run` every bundled capture into index `name` (template of its own), refreshed."""
    args = [a for path in CAPTURES for a in ("-I", path)]
    proc = run_wirebeat("run", *args, "-E", f"output.elasticsearch.hosts=[{es_url}]",
                        "-E", f"output.elasticsearch.index={name}", "-E", f"setup.template.name={name}",
                        "-E", "wirebeat.protocols.rtp.heuristic=true", "-E", "monitoring.enabled=true",
                        "-E", "wirebeat.flows.enabled=true",
                        "-E", "logging.level=warning", timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    Elasticsearch(es_url).indices.refresh(index=name)


@pytest.fixture(scope="module")
def demo_index(es_url: str) -> Iterator[tuple[Elasticsearch, str]]:
    name = f"kibana-demo-{uuid.uuid4().hex[:8]}"
    es = Elasticsearch(es_url)
    index_captures(es_url, name)
    yield es, name
    es.indices.delete(index=name, ignore_unavailable=True)
    es.options(ignore_status=404).indices.delete_index_template(name=name)


def interval(es: Elasticsearch, index: str) -> str:
    span = es.search(index=index, size=0, aggs={"a": {"min": {"field": "@timestamp"}},
                                                "b": {"max": {"field": "@timestamp"}}})["aggregations"]
    return pick_interval(span["a"]["value"], span["b"]["value"])


PANELS = [p for _, p in all_panels()]


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: p.id)
def test_panel_has_data_on_the_demo_captures(demo_index, panel: Panel):
    es, index = demo_index
    response = es.search(index=index, **panel.request(interval=interval(es, index)))
    assert response["hits"]["total"]["value"] > 0, f"{panel.id}: no document matches {panel.where}"
    rows = panel.rows(response)
    assert rows, f"{panel.id}: the aggregation returned no bucket with documents"
    # A metric's field must have values in those documents (a sum over a field
    # no document has is 0, not an error, so the buckets alone do not show it).
    for metric in panel.metrics:
        if metric.op != "count":
            query = {"bool": {"filter": [panel.request()["query"], {"exists": {"field": metric.field}}]}}
            assert es.count(index=index, query=query)["count"] > 0, f"{panel.id}: no value of {metric.field}"
