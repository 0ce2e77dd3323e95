"""NetFlow documents into the real Elasticsearch: every one accepted, typed as mapped."""
from __future__ import annotations

import uuid

import pytest
from elasticsearch import Elasticsearch

from conftest import PCAPS, decode_file

pytestmark = pytest.mark.elasticsearch


@pytest.mark.parametrize("version", ["v5", "v9", "ipfix"])
def test_recorded_exports_index_completely_and_aggregate_like_the_documents(es_url, wirebeat, version):
    capture = PCAPS / "netflow" / f"softflowd_{version}.pcap"
    docs = [d for d in decode_file(capture) if d["event"]["dataset"] == "netflow"]
    index = f"netflow-wbtest-{uuid.uuid4().hex[:8]}"
    es = Elasticsearch(es_url)
    try:
        proc = wirebeat("run", "-I", str(capture), "-E", f"output.elasticsearch.hosts=[{es_url}]",
                        "-E", f"output.elasticsearch.index={index}")
        assert proc.returncode == 0, proc.stderr.decode()
        assert "0 failed" in proc.stderr.decode()
        es.indices.refresh(index=index)
        assert es.count(index=index, query={"term": {"event.dataset": "netflow"}})["count"] == len(docs)
        flows = [d for d in docs if d["netflow"]["type"] == "netflow_flow"]
        result = es.search(index=index, size=0, query={"term": {"netflow.type": "netflow_flow"}},
                           aggs={"bytes": {"sum": {"field": "network.bytes"}},
                                 "packets": {"sum": {"field": "netflow.packet_delta_count"}},
                                 "first": {"min": {"field": "event.start"}}})
        assert result["hits"]["total"]["value"] == len(flows)
        assert result["aggregations"]["bytes"]["value"] == sum(d["network"]["bytes"] for d in flows)
        assert result["aggregations"]["packets"]["value"] == sum(d["network"]["packets"] for d in flows)
        assert result["aggregations"]["first"]["value_as_string"][:19] == \
            min(d["event"]["start"] for d in flows)[:19]
        mapping = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        netflow = mapping["netflow"]["properties"]
        assert netflow["source_ipv4_address"]["type"] == "ip"
        assert netflow["octet_delta_count"]["type"] == "long"
        assert netflow["exporter"]["properties"]["timestamp"]["type"] == "date"
        assert mapping["observer"]["properties"]["ip"]["type"] == "ip"
        version_number = {"v5": 5, "v9": 9, "ipfix": 10}[version]
        assert es.count(index=index, query={"term": {"netflow.exporter.version": version_number}})["count"] \
            == len(docs)
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
