"""The disk queue: a kill -9 during an outage loses nothing, and a full disk queue is never silent.

A ZeroMQ run (a source that cannot wait) indexes through a TCP forwarder in
front of the real node. Some documents are delivered, then the path refuses
connections; more documents arrive and go to the disk queue; wirebeat is
killed with SIGKILL. Restarted on the same queue directory with the path
healed, it delivers what was on disk, then new traffic. The index then holds
exactly the documents of a clean run of the same frames (count and `_id`s).
"""
from __future__ import annotations

import signal
import uuid

import pytest
from elasticsearch import Elasticsearch, helpers

from echo import echo_pair
from forwarder import Forwarder
from osmo_publisher import Client, Publisher
from running import Wirebeat, wait_until

pytestmark = pytest.mark.elasticsearch

T0 = 1_769_000_000_000_000_000
BEFORE, DURING, AFTER = 20, 30, 10      # pairs before the outage, during it, after the restart


def _pair(seq: int) -> list[tuple[int, bytes]]:
    return echo_pair("10.7.0.1", "10.7.0.2", 7, seq, T0 + seq * 10**7)


def _ids(es: Elasticsearch, index: str) -> list[str]:
    es.indices.refresh(index=index)
    return [hit["_id"] for hit in helpers.scan(es, index=index, query={"_source": False})]


def _run(url: str, index: str, *extra: str) -> tuple[Wirebeat, Publisher]:
    publisher = Publisher()
    wb = Wirebeat("--zmq", publisher.endpoint, "-E", f"output.elasticsearch.hosts=[{url}]",
                  "-E", f"output.elasticsearch.index={index}", "-E", "queue.mem.flush.timeout=100ms",
                  "-E", "output.elasticsearch.backoff.max=2s", *extra)
    publisher.wait_for_subscriber()
    return wb, publisher


def _publish(publisher: Publisher, seqs: range) -> None:
    client = Client("edge1")
    for seq in seqs:
        for ts, frame in _pair(seq):
            publisher.send(client.message(ts, frame))


def test_kill_9_during_an_outage_loses_nothing_with_the_disk_queue(es_url, tmp_path):
    es = Elasticsearch(es_url)
    tag = uuid.uuid4().hex[:8]
    index, clean_index = f"reliability-disk-{tag}", f"reliability-diskclean-{tag}"
    host, port = es_url.split("//")[1].split(":")
    fwd = Forwarder(host, int(port))
    disk = ["-E", f"queue.disk.path={tmp_path / 'queue'}", "-E", "queue.disk.fsync=always"]
    runs: list[tuple[Wirebeat, Publisher]] = []
    try:
        wb, publisher = _run(fwd.url, index, *disk)
        runs.append((wb, publisher))
        _publish(publisher, range(BEFORE))
        wb.wait_for_counter("events.acked", BEFORE)
        fwd.refuse()
        _publish(publisher, range(BEFORE, BEFORE + DURING))
        wb.wait_for_counter("zmq.received.edge1", 2 * (BEFORE + DURING))
        wb.wait_for_counter("queue.disk.events", DURING)      # on disk, fsynced
        assert wb.counter("events.acked") == BEFORE
        wb.proc.send_signal(signal.SIGKILL)
        assert wb.proc.wait(10) == -signal.SIGKILL
        fwd.forward()
        wb2, publisher2 = _run(fwd.url, index, *disk)
        runs.append((wb2, publisher2))
        _publish(publisher2, range(BEFORE + DURING, BEFORE + DURING + AFTER))
        wb2.wait_for_counter("events.acked", DURING + AFTER, timeout_s=60)
        replayed = wb2.counter("queue.disk.replayed")
        code, _ = wb2.stop()
        assert code == 0, wb2.stderr_text()[-2000:]
        assert replayed >= DURING
        # A clean run of the same frames, straight into the node.
        clean, clean_publisher = _run(es_url, clean_index)
        runs.append((clean, clean_publisher))
        _publish(clean_publisher, range(BEFORE + DURING + AFTER))
        clean.wait_for_counter("events.acked", BEFORE + DURING + AFTER, timeout_s=60)
        assert clean.stop()[0] == 0
        ids, clean_ids = _ids(es, index), _ids(es, clean_index)
        assert len(clean_ids) == BEFORE + DURING + AFTER
        assert len(ids) == len(set(ids)) == len(clean_ids)
        assert set(ids) == set(clean_ids)
    finally:
        for wb, publisher in runs:
            wb.kill()
            publisher.close()
        fwd.close()
        es.indices.delete(index=f"{index},{clean_index}", ignore_unavailable=True)
        for name in (index, clean_index):
            es.options(ignore_status=404).indices.delete_index_template(name=name)


def test_a_full_disk_queue_drops_counts_and_logs(es_url, tmp_path):
    host, port = es_url.split("//")[1].split(":")
    fwd = Forwarder(host, int(port))
    fwd.refuse()
    wb, publisher = _run(fwd.url, f"reliability-diskfull-{uuid.uuid4().hex[:8]}",
                         "-E", f"queue.disk.path={tmp_path / 'queue'}", "-E", "queue.disk.max_size=3000",
                         "-E", "wirebeat.shutdown_timeout=1s")
    try:
        _publish(publisher, range(0, 100))
        wb.wait_for_counter("queue.disk.events", 1)     # the first batch fills the queue
        _publish(publisher, range(100, 200))
        wb.wait_for_counter("queue.dropped", 1)
        event = wb.wait_for_log("disk queue full, documents dropped")
        assert event["level"] == "warning" and event["max_size"] == 3000
        # Every document is on disk or counted as dropped (the first batch is
        # larger than the whole cap: an empty queue takes any one batch).
        wait_until(lambda: (lambda c: c.get("queue.disk.events", 0) + c.get("queue.dropped", 0))(
            wb.stats()["counters"]) == 200, 10, "every document on disk or dropped")
        code, _ = wb.stop()
    finally:
        wb.kill()
        publisher.close()
        fwd.close()
    assert code == 1          # documents were dropped: not a clean success
    assert "dropped (output behind)" in wb.summary()
