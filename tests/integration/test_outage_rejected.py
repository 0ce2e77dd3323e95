"""Documents Elasticsearch refuses for good: counted, logged with the reason, dead-lettered, never retried.

The index is created beforehand with `icmp` mapped as a number, so every ICMP
document (an `icmp` object) is a mapping conflict (400 on the item) on the
real node, while the collector has nothing to do with it.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
from elasticsearch import Elasticsearch

import pcapgen as g
from conftest import run_wirebeat
from echo import write_echo_capture

pytestmark = pytest.mark.elasticsearch

T0 = 1_768_000_000_000_000_000
PAIRS = 6


def test_mapping_conflicts_are_counted_logged_dead_lettered_and_not_retried(es_url, tmp_path):
    es = Elasticsearch(es_url)
    index = f"reliability-rejected-{uuid.uuid4().hex[:8]}"
    es.indices.create(index=index, mappings={"properties": {"icmp": {"type": "long"}}})
    capture = write_echo_capture(tmp_path / "rejected.pcap", "10.6.0.1", "10.6.0.2", 6, PAIRS, T0)
    dead_letter = tmp_path / "dead.ndjson"
    try:
        started = time.monotonic()
        proc = run_wirebeat("run", "-I", str(capture), "-E", f"output.elasticsearch.hosts=[{es_url}]",
                            "-E", f"output.elasticsearch.index={index}",
                            "-E", f"output.elasticsearch.dead_letter.path={dead_letter}", timeout=60)
        took = time.monotonic() - started
        err = proc.stderr.decode()
        # Documents that could not be delivered: exit 1, and the summary counts them.
        assert proc.returncode == 1, err
        assert f"{PAIRS} documents (0 acknowledged, {PAIRS} failed, 0 unacknowledged)" in err
        logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        rejected = [e for e in logs if e.get("event") == "document rejected by elasticsearch"]
        assert len(rejected) == PAIRS and all(e["status"] == 400 for e in rejected)
        assert all(e["error"]["type"] == "document_parsing_exception" for e in rejected), rejected[0]
        assert "icmp" in rejected[0]["error"]["reason"]
        summary = next(e for e in logs if e.get("event") == "summary")
        assert summary.get("output.retries", 0) == 0 and summary["output.dead_lettered"] == PAIRS
        assert took < 30        # not retried: no backoff was waited out
        lines = [json.loads(line) for line in dead_letter.read_text().splitlines()]
        assert sorted(line["_id"] for line in lines) == sorted(e["id"] for e in rejected)
        assert {line["index"] for line in lines} == {index}
        assert all(line["status"] == 400 and line["document"]["event"]["dataset"] == "icmp" for line in lines)
        es.indices.refresh(index=index)
        assert es.count(index=index)["count"] == 0
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)


def test_an_unwritable_dead_letter_file_is_one_line(wirebeat, tmp_path):
    capture = tmp_path / "one.pcap"
    g.write_pcap(capture, [(T0, g.ethernet(g.ipv4("10.6.0.1", "10.6.0.2", g.IPPROTO_ICMP, g.icmp_echo(6, 0))))])
    proc = wirebeat("run", "-I", str(capture), "-E", "output.elasticsearch.dead_letter.path=/nonexistent/dir/dead.ndjson")
    assert proc.returncode in (1, 2)
    assert proc.stderr.decode().strip().splitlines()[-1] == (
        "wirebeat: output.elasticsearch.dead_letter.path /nonexistent/dir/dead.ndjson: No such file or directory")
