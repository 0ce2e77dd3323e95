"""`--workers 2` into the real Elasticsearch: the documents the workers serialise are
indexed under the same `_id`s, with the same sources, as one process's console output."""
from __future__ import annotations

import json
import uuid

from elasticsearch import Elasticsearch

CAPTURES = ["pcaps/sip/call_pcmu.pcap", "pcaps/http/keepalive.pcap", "pcaps/dns/udp_queries.pcap"]


def test_two_workers_index_what_one_process_prints(es_url, wirebeat):
    files = [a for c in CAPTURES for a in ("-I", c)]
    one = wirebeat("run", *files, "--console")
    assert one.returncode == 0, one.stderr.decode()
    expected = [json.loads(line) for line in one.stdout.splitlines()]
    assert len(expected) > 20
    index = f"wbtest-workers-{uuid.uuid4().hex[:8]}"
    proc = wirebeat("run", *files, "--workers", "2", "-E", f"output.elasticsearch.hosts=[{es_url}]",
                    "-E", f"output.elasticsearch.index={index}")
    assert proc.returncode == 0, proc.stderr.decode()
    es = Elasticsearch(es_url)
    try:
        es.indices.refresh(index=index)
        hits = es.search(index=index, size=1000, query={"match_all": {}})["hits"]["hits"]
        assert len(hits) == len(expected)
        indexed = sorted(json.dumps(h["_source"], sort_keys=True) for h in hits)
        assert indexed == sorted(json.dumps(d, sort_keys=True) for d in expected)
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
