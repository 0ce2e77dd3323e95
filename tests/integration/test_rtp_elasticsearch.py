"""Per-call RTP quality and SIP messages in the real Elasticsearch node, linked by Call-ID."""
from __future__ import annotations

import uuid

import pytest
from elasticsearch import Elasticsearch

from conftest import PCAPS

pytestmark = pytest.mark.elasticsearch


def _index(es_url: str, wirebeat, *captures: str) -> tuple[Elasticsearch, str]:
    index = f"wbtest-{uuid.uuid4().hex[:8]}"
    args = [a for c in captures for a in ("-I", str(PCAPS / c))]
    proc = wirebeat("run", *args, "-E", f"output.elasticsearch.hosts=[{es_url}]",
                    "-E", f"output.elasticsearch.index={index}")
    assert proc.returncode == 0, proc.stderr.decode()
    es = Elasticsearch(es_url)
    es.indices.refresh(index=index)
    return es, index


def test_rtp_reports_and_sip_messages_are_typed_and_joined_by_call_id(es_url, wirebeat):
    es, index = _index(es_url, wirebeat, "rtp/rtcp_call.pcap", "sip/call_dtmf.pcap",
                       "sip/register_busy.pcap")
    mapping = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    rtp = mapping["rtp"]["properties"]
    assert rtp["ssrc"]["type"] == "long" and rtp["final"]["type"] == "boolean"
    assert rtp["jitter"]["properties"]["max_ms"]["type"] == "double"
    assert mapping["rtcp"]["properties"]["rtt_ms"]["type"] == "double"
    assert mapping["sip"]["properties"]["sdp"]["properties"]["owner"]["properties"]["ip"]["type"] == "ip"

    # Every call's final RTP reports, found from its INVITE's Call-ID.
    invites = es.search(index=index, query={"term": {"sip.method": "INVITE"}}, size=10)["hits"]["hits"]
    call_ids = sorted({hit["_source"]["sip"]["call_id"] for hit in invites})
    assert len(call_ids) == 3
    finals = {}
    for call_id in call_ids:
        hits = es.search(index=index, size=10, query={"bool": {"filter": [
            {"term": {"type": "rtp"}}, {"term": {"rtp.final": True}},
            {"term": {"sip.call_id": call_id}}]}})["hits"]["hits"]
        finals[call_id] = sorted(h["_source"]["rtp"]["packets"] for h in hits)
    assert sorted(finals.values()) == [[], [200, 200], [1250, 1250]]    # the busy call had none

    # Numbers are searchable as numbers: the RTCP round trip of 50 ms, DTMF events.
    assert es.count(index=index, query={"range": {"rtcp.rtt_ms": {"gte": 49.9, "lte": 50.1}}})["count"] == 4
    assert es.count(index=index, query={"bool": {"filter": [
        {"term": {"rtp.final": True}}, {"range": {"rtp.telephone_events": {"gte": 2}}}]}})["count"] == 1
    # sip.status_code (the name) is an alias of packetbeat's sip.code.
    assert es.count(index=index, query={"term": {"sip.status_code": 486}})["count"] == 1
    assert es.count(index=index, query={"term": {"status": "Error"}})["count"] == 2
