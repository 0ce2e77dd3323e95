"""End to end into the real Elasticsearch node started by scripts/esnode.py."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

import pcapgen as g
from conftest import ROOT
from running import Wirebeat

pytestmark = pytest.mark.elasticsearch

T0 = 1_750_000_000_000_000_000


def _capture(tmp_path: Path, pairs: int = 20, unanswered: int = 3) -> Path:
    packets = []
    for i in range(pairs):
        packets.append((T0 + i * 10**8, g.ethernet(g.ipv4("10.1.0.1", "10.1.0.2", 1, g.icmp_echo(9, i, b"d" * 16)))))
        packets.append((T0 + i * 10**8 + 2_000_000, g.ethernet(g.ipv4("10.1.0.2", "10.1.0.1", 1, g.icmp_echo(9, i, b"d" * 16, reply=True)))))
    for i in range(unanswered):
        packets.append((T0 + 10**10 + i, g.ethernet(g.ipv4("10.1.0.1", "10.1.0.3", 1, g.icmp_echo(10, i)))))
    path = tmp_path / "es.pcap"
    g.write_pcap(path, packets)
    return path


def _es_args(es_url: str, index: str) -> list[str]:
    # These count transaction documents: flow reports are tested in test_flows_tshark.py.
    return ["-E", f"output.elasticsearch.hosts=[{es_url}]", "-E", f"output.elasticsearch.index={index}",
            "-E", "wirebeat.flows.enabled=false"]


def _count(es: Elasticsearch, index: str, **query) -> int:
    es.indices.refresh(index=index)
    return es.count(index=index, **query)["count"]


def test_indexing_the_same_capture_twice_creates_no_duplicates(es_url, wirebeat, tmp_path):
    index = f"wbtest-{uuid.uuid4().hex[:8]}"
    capture = _capture(tmp_path)
    es = Elasticsearch(es_url)
    for _ in range(2):
        proc = wirebeat("run", "-I", str(capture), *_es_args(es_url, index))
        assert proc.returncode == 0, proc.stderr.decode()
        assert b"23 documents (23 acknowledged, 0 failed, 0 unacknowledged)" in proc.stderr
    assert _count(es, index) == 23
    assert _count(es, index, query={"term": {"status": "Error"}}) == 3


def test_live_index_maps_fields_with_their_types(es_url, wirebeat, tmp_path):
    index = f"wbtest-{uuid.uuid4().hex[:8]}"
    proc = wirebeat("run", "-I", str(_capture(tmp_path, pairs=2, unanswered=0)), *_es_args(es_url, index))
    assert proc.returncode == 0, proc.stderr.decode()
    es = Elasticsearch(es_url)
    mapping = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["@timestamp"]["type"] == "date"
    assert mapping["source"]["properties"]["ip"]["type"] == "ip"
    assert mapping["client"]["properties"]["ip"]["type"] == "ip"
    assert mapping["event"]["properties"]["duration"]["type"] == "long"
    assert mapping["icmp"]["properties"]["request"]["properties"]["type"]["type"] == "long"
    assert mapping["capture"]["properties"]["source"]["type"] == "keyword"
    # A range query only works on the right type: durations are 2 ms = 2e6 ns.
    assert _count(es, index, query={"range": {"event.duration": {"gte": 1_999_000, "lte": 2_001_000}}}) == 2
    assert _count(es, index, query={"term": {"source.ip": "10.1.0.0/24"}}) == 2


def test_setup_installs_the_template_and_test_output_reports_the_version(es_url, wirebeat):
    index = f"wbtest-{uuid.uuid4().hex[:8]}"
    proc = wirebeat("setup", *_es_args(es_url, index))
    assert proc.returncode == 0, proc.stderr.decode()
    es = Elasticsearch(es_url)
    template = es.indices.get_index_template(name=index)["index_templates"][0]["index_template"]
    assert template["index_patterns"] == [index + "*"]
    proc = wirebeat("test", "output", *_es_args(es_url, index))
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"version 9." in proc.stdout


def test_test_output_names_an_unreachable_host_in_one_line(wirebeat):
    proc = wirebeat("test", "output", "-E", "output.elasticsearch.hosts=[http://127.0.0.1:9]")
    assert proc.returncode == 1
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "http://127.0.0.1:9 is unreachable" in lines[0]


def test_unreachable_output_loses_nothing_silently(tmp_path):
    """With Elasticsearch down the documents wait and are reported as unacknowledged."""
    capture = _capture(tmp_path, pairs=5, unanswered=0)
    wb = Wirebeat("-I", str(capture), "-E", "wirebeat.flows.enabled=false",
                  "-E", "output.elasticsearch.hosts=[http://127.0.0.1:9]",
                  "-E", "output.elasticsearch.backoff.init=0.1s", "-E", "wirebeat.shutdown_timeout=1s", http=False)
    try:
        # Signalled only once it retries: on a loaded host the start alone can take seconds.
        wb.wait_for_log("elasticsearch unreachable, will retry", timeout_s=60)
        time.sleep(1)
        assert wb.proc.poll() is None          # still retrying, not dropping
        code, _ = wb.stop(signal.SIGINT, timeout_s=30)
    finally:
        wb.kill()
    err = wb.stderr_text().encode()
    assert code == 1, err.decode()
    assert b"5 documents (0 acknowledged, 0 failed, 5 unacknowledged)" in err
    assert b"elasticsearch unreachable, will retry" in err


def test_documents_reach_the_index_after_elasticsearch_comes_back(es_url, tmp_path):
    """Retries with backoff: an output that starts unreachable delivers once it is reachable.

    A TCP forwarder (tests/forwarder.py) stands between wirebeat and the node;
    it refuses connections until wirebeat has said it will retry, then
    forwards to the real server.
    """
    from forwarder import Forwarder

    index = f"wbtest-{uuid.uuid4().hex[:8]}"
    target_host, target_port = es_url.split("//")[1].split(":")
    forwarder = Forwarder(target_host, int(target_port))
    forwarder.refuse()
    capture = _capture(tmp_path, pairs=4, unanswered=0)
    wb = Wirebeat("-I", str(capture), "-E", "wirebeat.flows.enabled=false",
                  "-E", f"output.elasticsearch.hosts=[{forwarder.url}]",
                  "-E", f"output.elasticsearch.index={index}", "-E", "output.elasticsearch.backoff.init=0.5s",
                  http=False)
    try:
        wb.wait_for_log("elasticsearch unreachable, will retry")
        forwarder.forward()
        assert wb.proc.wait(60) == 0, wb.stderr_text()
    finally:
        wb.kill()
        forwarder.close()
    assert _count(Elasticsearch(es_url), index) == 4


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_http_documents_are_searchable_by_status_code_and_typed_right(es_url, wirebeat):
    """keepalive.pcap holds one 404 and one 500 (tshark counts in pcaps/http/README.md)."""
    capture = ROOT / "pcaps" / "http" / "keepalive.pcap"
    tshark = subprocess.run(["tshark", "-n", "-r", str(capture), "-Y", "http.response", "-T", "fields",
                             "-e", "http.response.code"], capture_output=True, text=True, check=True)
    codes = [int(c) for c in tshark.stdout.split()]
    index = f"wbtest-{uuid.uuid4().hex[:8]}"
    proc = wirebeat("run", "-I", str(capture), *_es_args(es_url, index))
    assert proc.returncode == 0, proc.stderr.decode()
    es = Elasticsearch(es_url)
    mapping = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["http"]["properties"]["response"]["properties"]["status_code"]["type"] == "long"
    assert mapping["client"]["properties"]["ip"]["type"] == "ip"
    assert mapping["url"]["properties"]["full"]["type"] in ("keyword", "wildcard")
    assert _count(es, index, query={"term": {"type": "http"}}) == len(codes)
    for code in (404, 500):
        assert _count(es, index, query={"term": {"http.response.status_code": code}}) == codes.count(code) == 1
    assert _count(es, index, query={"range": {"http.response.status_code": {"gte": 400}}}) == \
        sum(c >= 400 for c in codes)
    assert _count(es, index, query={"term": {"status": "Error"}}) == sum(c >= 400 for c in codes)
