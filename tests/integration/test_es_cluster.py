"""Past one machine: a 3-node Elasticsearch cluster loses a node mid-run, nothing is lost.

scripts/esnode.py starts a real 3-node cluster on this machine (ports 9230+,
its own data; the shared node on 9200 is left alone), once for this module.
wirebeat gets all three nodes as `hosts`, with small bulk requests and two
at a time. First a clean run of an echo capture (an exact, independent
count: one document per answered pair) shows the requests spread over all
three nodes (each node's own `/_bulk` route counter). Then the same capture
runs again into an index with one replica per shard, and once a third of it
is acknowledged one node that is not the elected master gets `kill -9`.
That run must end with every document acknowledged, none failed, and the
index must hold exactly the `_id`s of the clean run, each once.
"""
from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch, helpers

from conftest import run_wirebeat
from echo import write_echo_capture
from running import Wirebeat, wait_until

pytestmark = pytest.mark.elasticsearch

FLOWS_OFF = "wirebeat.flows.enabled=false"
NODES = 3
PAIRS = 30_000
T0 = 1_767_000_000_000_000_000
CLUSTER = "test"


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[str]]:
    """The member URLs; the cluster is started fresh for this module (fails, never skips)."""
    import esnode
    try:
        urls = esnode.start_cluster(NODES, CLUSTER)
    except Exception as err:
        pytest.fail(f"the {NODES}-node cluster could not be started by scripts/esnode.py: {err}")
    yield urls
    if os.environ.get("WIREBEAT_KEEP_ES") != "1":
        esnode.stop_cluster(CLUSTER)


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return write_echo_capture(tmp_path_factory.mktemp("cluster") / "cluster.pcap",
                              "10.7.0.1", "10.7.0.2", 7, PAIRS, T0, gap_ns=10**6)


def _args(urls: list[str], index: str) -> list[str]:
    return ["-E", FLOWS_OFF, "-E", f"output.elasticsearch.hosts=[{','.join(urls)}]",
            "-E", f"output.elasticsearch.index={index}",
            "-E", "output.elasticsearch.bulk_max_size=250", "-E", "output.elasticsearch.worker=2",
            "-E", "queue.mem.flush.min_events=1000", "-E", "queue.mem.events=4000"]


def _ids(es: Elasticsearch, index: str) -> list[str]:
    es.indices.refresh(index=index)
    return [hit["_id"] for hit in helpers.scan(es, index=index, query={"_source": False}, size=5000)]


def _bulk_requests_per_node(urls: list[str]) -> list[int]:
    """How many /_bulk requests each node received over HTTP, by its own count."""
    counts = []
    for url in urls:
        stats = Elasticsearch(url, request_timeout=60).nodes.stats(node_id="_local", metric="http")
        routes = next(iter(stats["nodes"].values()))["http"].get("routes", {})
        counts.append(routes.get("/_bulk", {}).get("requests", {}).get("count", 0))
    return counts


def test_a_node_killed_mid_run_loses_and_duplicates_nothing(cluster, capture):
    import esnode
    es = Elasticsearch(cluster, request_timeout=120)
    tag = uuid.uuid4().hex[:8]
    clean_index, index = f"esmulti-clean-{tag}", f"esmulti-kill-{tag}"

    before = _bulk_requests_per_node(cluster)
    clean = Wirebeat(*_args(cluster, clean_index), "-I", str(capture), http=False)
    assert clean.proc.wait(300) == 0, clean.stderr_text()[-3000:]
    assert f"{PAIRS} documents ({PAIRS} acknowledged, 0 failed, 0 unacknowledged)" in clean.summary()
    spread = [after - was for after, was in zip(_bulk_requests_per_node(cluster), before)]
    # 120 requests or more over 3 nodes: each node got a fair share.
    assert all(n >= PAIRS // 250 // NODES // 2 for n in spread), spread
    clean_ids = _ids(es, clean_index)
    assert len(clean_ids) == PAIRS == len(set(clean_ids))

    # One replica per shard, so the index survives the loss of any one node.
    setup = run_wirebeat("setup", *_args(cluster, index)[2:6])
    assert setup.returncode == 0, setup.stderr.decode()
    es.indices.create(index=index, settings={"number_of_shards": NODES, "number_of_replicas": 1},
                      wait_for_active_shards="all")
    master = es.cat.master(format="json")[0]["node"]
    members = esnode.cluster_info(CLUSTER, NODES)
    victim = next(m for m in members if f"{CLUSTER}-{m['member']}" != master)
    victim_pid = int(victim["pid"])      # type: ignore[arg-type]

    wb = Wirebeat(*_args(cluster, index), "-I", str(capture))
    try:
        wb.wait_for_counter("events.acked", PAIRS // 3, timeout_s=300)
        acked_at_kill = wb.counter("events.acked")
        os.kill(victim_pid, signal.SIGKILL)
        code = wb.proc.wait(600)
    finally:
        wb.kill()
    survivors = [url for url in cluster if url != victim["url"]]
    wait_until(lambda: not esnode.is_our_node(victim_pid, esnode.cluster_layout(CLUSTER, int(victim["member"]))),
               10, "the killed node to be gone")
    summary = wb.summary()
    assert code == 0, wb.stderr_text()[-3000:]
    assert acked_at_kill < PAIRS, "the node was killed after the run, not during it"
    assert f"{PAIRS} documents ({PAIRS} acknowledged, 0 failed, 0 unacknowledged)" in summary, summary
    counters = next(e for e in wb.logs() if e.get("event") == "summary")
    assert counters.get("output.node_failures", 0) >= 1, counters
    assert counters.get("events.failed", 0) == 0, counters
    ids = _ids(Elasticsearch(survivors, request_timeout=120), index)
    print(f"\ncluster figures: killed {victim['url']} at {acked_at_kill}/{PAIRS} acknowledged; "
          f"requests per node in the clean run {spread}; "
          f"counters { {k: v for k, v in counters.items() if k.startswith('output.')} }")
    assert len(ids) == PAIRS == len(set(ids))
    assert set(ids) == set(clean_ids)
