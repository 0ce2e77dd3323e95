"""TLS documents are accepted by the real Elasticsearch under the template and searchable by type.

The template test proves every field is mapped; this proves the values fit
their mapping (x509 dates parse as dates, key sizes as numbers, booleans as
booleans) and that the usual TLS questions can be asked of the index.
"""
from __future__ import annotations

import uuid

import pytest
from elasticsearch import Elasticsearch

from conftest import PCAPS

pytestmark = pytest.mark.elasticsearch


def test_tls_captures_index_and_answer_typed_queries(es_url, wirebeat):
    index = f"tls-{uuid.uuid4().hex[:8]}"
    inputs = [a for p in sorted((PCAPS / "tls").glob("*.pcap")) for a in ("-I", str(p))]
    proc = wirebeat("run", *inputs, "-E", "wirebeat.flows.enabled=false", "-E", f"output.elasticsearch.hosts=[{es_url}]",
                    "-E", f"output.elasticsearch.index={index}")
    assert proc.returncode == 0, proc.stderr.decode()
    es = Elasticsearch(es_url)
    try:
        es.indices.refresh(index=index)

        def count(query: dict) -> int:
            return es.count(index=index, query=query)["count"]

        # 2 + 2 + 4 + 3 + 1 + 2 sessions in the six captures (pcaps/tls/README.md)
        assert count({"match_all": {}}) == 14
        assert count({"term": {"tls.established": False}}) == 2
        assert count({"term": {"tls.resumed": True}}) == 3
        assert count({"term": {"tls.version": "1.3"}}) == 5
        assert count({"term": {"tls.client.server_name": "rsa.wirebeat.test"}}) == 10
        # server certificates in the clear: 6 full TLS 1.2 handshakes; the capture
        # script makes them valid for 10 years
        assert count({"range": {"tls.server.x509.not_after": {"gte": "now+5y"}}}) == 6
        assert count({"range": {"tls.server.x509.public_key_size": {"gte": 2048}}}) == 5
        assert count({"term": {"tls.client.x509.subject.common_name": "alice"}}) == 1
        assert count({"term": {"tls.detailed.alert_types": "unknown_ca"}}) == 1
        # clients offering TLS 1.3 with SNI: all but the two TLS 1.2-only curls, the
        # TLS 1.2-only s_client and the s_client without SNI
        assert count({"prefix": {"tls.client.ja4": "t13d"}}) == 10
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
        es.options(ignore_status=404).indices.delete_index_template(name=index)
