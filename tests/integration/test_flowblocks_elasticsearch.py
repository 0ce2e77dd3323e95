"""Flow reports in NDJSON blocks (Pipeline.publish_block) reach the real Elasticsearch whole.

With the C flow core, a sweep's reports travel from the reporter to the output
as one bytes block per chunk; the Elasticsearch output turns a block back into
per-document bulk items, so retries, node failover and dead letters stay per
document. The reference is the same capture run with WIREBEAT_PURE_PYTHON=1
(one object per report, no blocks) into another index: the same `_id`s and
the same documents must arrive. Indices are named `flowbuf-*`.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
from elasticsearch import Elasticsearch, helpers

import pcapgen as g
from conftest import run_wirebeat
from forwarder import Forwarder

pytestmark = pytest.mark.elasticsearch

T0 = 1_700_000_000.125
FLOWS = 400
SECONDS = 45


def _capture(path) -> int:
    """FLOWS UDP conversations repeating every 7 s over SECONDS: several report periods,
    each with hundreds of live flows (blocks of many reports)."""
    frames = []
    for i in range(FLOWS):
        a, b = f"10.77.{i // 250}.{i % 250 + 1}", "192.0.2.53"
        for rep in range(SECONDS // 7 + 1):
            t = round(T0 + i * 7.0 / FLOWS + rep * 7, 6)
            frames.append((t, g.ethernet(g.ipv4(a, b, 17, g.udp(a, b, 30000 + i, 5300, b"ping")))))
            frames.append((round(t + 0.01, 6), g.ethernet(g.ipv4(b, a, 17, g.udp(b, a, 5300, 30000 + i, b"pong")))))
    frames.sort(key=lambda f: f[0])
    return g.write_pcap(path, frames)


def _documents(es: Elasticsearch, index: str) -> dict[str, dict]:
    es.indices.refresh(index=index)
    return {hit["_id"]: hit["_source"] for hit in helpers.scan(es, index=index)}


def _summary(stderr: bytes) -> dict:
    logs = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    return next(e for e in logs if e.get("event") == "summary")


def _es_args(url: str, index: str) -> list[str]:
    return ["-E", f"output.elasticsearch.hosts=[{url}]", "-E", f"output.elasticsearch.index={index}",
            "-E", "output.elasticsearch.backoff.init=0.5s", "-E", "queue.mem.flush.min_events=200"]


def test_blocks_arrive_whole_through_a_refused_connection(es_url, tmp_path):
    """The node is unreachable for the first seconds (connections refused): blocks wait in
    the output's retry loop and arrive once it answers; every report exactly once, the
    same _ids and documents as the pure-Python run, nothing failed or unacknowledged."""
    capture = tmp_path / "flows.pcap"
    _capture(capture)
    es = Elasticsearch(es_url)
    ours, reference = f"flowbuf-blocks-{uuid.uuid4().hex[:8]}", f"flowbuf-ref-{uuid.uuid4().hex[:8]}"
    host, port = es_url.rsplit("//", 1)[1].split(":")
    forwarder = Forwarder(host, int(port))
    try:
        ref = run_wirebeat("run", "-I", str(capture), *_es_args(es_url, reference), timeout=300,
                           env={"WIREBEAT_PURE_PYTHON": "1"})
        assert ref.returncode == 0, ref.stderr.decode()[-2000:]
        ref_summary = _summary(ref.stderr)
        assert ref_summary.get("queue.blocks", 0) == 0

        forwarder.refuse()
        timer = threading.Timer(4.0, forwarder.forward)
        timer.start()
        started = time.monotonic()
        run = run_wirebeat("run", "-I", str(capture), *_es_args(forwarder.url, ours),
                           timeout=300,
                           env={"WIREBEAT_PURE_PYTHON": "0"})
        timer.join()
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        assert time.monotonic() - started >= 4.0
        summary = _summary(run.stderr)
        if os.environ.get("CI") == "true" or summary.get("queue.blocks", 0):
            assert summary["queue.blocks"] > 3, summary      # the reports did travel in blocks
        assert summary["output.retries"] >= 1, summary
        assert summary["events.published"] == ref_summary["events.published"] == summary["events.acked"]
        assert summary.get("events.failed", 0) == 0

        got, expected = _documents(es, ours), _documents(es, reference)
        flow_reports = sum(1 for doc in expected.values() if doc["type"] == "flow")
        # Every conversation is reported in each period it lives through, then once more.
        assert flow_reports >= FLOWS * (SECONDS // 10) and len(expected) == ref_summary["events.published"]
        assert sorted(got) == sorted(expected)
        assert got == expected
    finally:
        forwarder.close()
        es.indices.delete(index=f"{ours},{reference}", ignore_unavailable=True)


def test_rejected_reports_from_blocks_are_dead_lettered_one_by_one(es_url, tmp_path):
    """`flow` mapped as a number: every flow report is refused for good (400 on its item).
    Each is counted failed and written to the dead-letter file with its _id and document,
    as one document, not as a block."""
    capture = tmp_path / "flows.pcap"
    _capture(capture)
    es = Elasticsearch(es_url)
    index = f"flowbuf-rejected-{uuid.uuid4().hex[:8]}"
    es.indices.create(index=index, mappings={"properties": {"flow": {"type": "long"}}})
    dead_letter = tmp_path / "dead.ndjson"
    try:
        run = run_wirebeat("run", "-I", str(capture), *_es_args(es_url, index),
                           "-E", f"output.elasticsearch.dead_letter.path={dead_letter}", timeout=300)
        summary = _summary(run.stderr)
        assert run.returncode == 1, run.stderr.decode()[-2000:]
        lines = [json.loads(line) for line in dead_letter.read_text().splitlines()]
        assert len(lines) == summary["events.failed"] == summary["output.dead_lettered"] > FLOWS
        assert all(line["status"] == 400 and line["document"]["type"] == "flow" for line in lines)
        assert all(line["_id"].startswith(line["document"]["flow"]["id"] + "-") for line in lines)
        assert len({line["_id"] for line in lines}) == len(lines)
        if os.environ.get("CI") == "true":
            assert summary["queue.blocks"] > 0, summary
        es.indices.refresh(index=index)
        # What is not a flow report (none here: no decoder claims this UDP) was indexed.
        assert es.count(index=index)["count"] == summary.get("events.acked", 0) == 0
        assert summary["events.failed"] == summary["events.published"]
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
