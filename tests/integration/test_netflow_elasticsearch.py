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


def test_a_time_past_year_9999_does_not_cost_the_record_its_document(es_url, wirebeat, tmp_path):
    """An exporter's 64-bit flowStartMilliseconds (152) can name year 19988, which no
    Elasticsearch date takes: the record is kept with that element null (and no
    event.start), instead of the bulk request rejecting the whole document."""
    import struct

    import pcapgen

    wild_ms = 19_988 * 365 * 86_400 * 1000
    good_ms = 1_700_000_000_000
    template = struct.pack("!HHHHHHHHHHHH", 2, 24, 300, 4, 8, 4, 12, 4, 152, 8, 153, 8)
    rows = b"".join(struct.pack("!4s4sQQ", bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), start, good_ms + 5)
                    for start in (wild_ms, good_ms))
    sets = template + struct.pack("!HH", 300, 4 + len(rows)) + rows
    export = struct.pack("!HHIII", 10, 16 + len(sets), 1_700_000_001, 0, 1) + sets
    frame = pcapgen.ethernet(pcapgen.ipv4("192.0.2.10", "192.0.2.1", 17,
                                          pcapgen.udp("192.0.2.10", "192.0.2.1", 40000, 4739, export)))
    capture = tmp_path / "wild.pcap"
    pcapgen.write_pcap(capture, [(1_700_000_001.0, frame)])
    index = f"netflow-wbtest-{uuid.uuid4().hex[:8]}"
    es = Elasticsearch(es_url)
    try:
        proc = wirebeat("run", "-I", str(capture), "-E", "wirebeat.flows.enabled=false",
                        "-E", f"output.elasticsearch.hosts=[{es_url}]",
                        "-E", f"output.elasticsearch.index={index}")
        assert proc.returncode == 0, proc.stderr.decode()
        assert "2 documents (2 acknowledged, 0 failed" in proc.stderr.decode()
        es.indices.refresh(index=index)
        hits = es.search(index=index, query={"term": {"netflow.type": "netflow_flow"}},
                         sort=[{"netflow.flow_end_milliseconds": "asc"}])["hits"]["hits"]
        assert len(hits) == 2
        starts = sorted((h["_source"]["netflow"]["flow_start_milliseconds"] or "") for h in hits)
        assert starts == ["", "2023-11-14T22:13:20.000000Z"]
        wild = next(h["_source"] for h in hits if h["_source"]["netflow"]["flow_start_milliseconds"] is None)
        assert "start" not in wild["event"]
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
