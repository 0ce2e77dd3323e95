"""A 60 s Elasticsearch outage in the middle of a run loses and duplicates nothing.

The real node stays up (others use it); the outage is on the TCP path: a
forwarder in front of it first resets every connection and refuses new ones
for 30 s (a stopped node), then accepts connections and never answers for
30 s (a hung node or a silent middlebox), then forwards again. One outage is
shared by two runs at once: a capture file and an osmo-pcap ZeroMQ feed.
Afterwards each index holds exactly the documents of a clean run of the same
input (same count, same `_id`s), none failed, the counters show the
retries, and delivery resumed within 10 s of the path healing.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch, helpers

import pcapgen as g
from echo import echo_pair
from forwarder import Forwarder
from osmo_publisher import Client, Publisher
from running import Wirebeat, wait_until

# These tests count transaction documents; flow reports would add to every count.
FLOWS_OFF = "wirebeat.flows.enabled=false"

pytestmark = pytest.mark.elasticsearch

T0 = 1_765_000_000_000_000_000
REFUSE_S = 30.0
HANG_S = 30.0
RESUME_WITHIN_S = 10.0
FILE_PAIRS = 6000
ZMQ_PAIRS_PER_S = 20


def _echo_pair(client_no: int, seq: int) -> list[tuple[int, bytes]]:
    return echo_pair(f"10.{client_no}.0.1", f"10.{client_no}.0.2", seq // 65536, seq % 65536, T0 + seq * 10**7)


def _ids(es: Elasticsearch, index: str) -> list[str]:
    es.indices.refresh(index=index)
    return [hit["_id"] for hit in helpers.scan(es, index=index, query={"_source": False})]


def _es_args(url: str, index: str) -> list[str]:
    return ["-E", f"output.elasticsearch.hosts=[{url}]", "-E", f"output.elasticsearch.index={index}"]


def _outage(forwarders: list[Forwarder], log: dict[str, float]) -> None:
    log["refuse"] = time.monotonic()
    for f in forwarders:
        f.refuse()
    time.sleep(REFUSE_S)
    log["hang"] = time.monotonic()
    for f in forwarders:
        f.hang()
    time.sleep(HANG_S)
    for f in forwarders:
        f.forward()
    log["healed"] = time.monotonic()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle_during_refusal(times: dict[str, float], runs: list[Wirebeat], used: dict[int, float]) -> None:
    """CPU each run used per second while every connection is refused (the node is down
    and probes fail at once): the output must wait out its backoff, not resend in a loop."""
    wait_until(lambda: "refuse" in times, 300, "the outage to start")
    time.sleep(5)                       # the first failures and their logs
    before = {wb.pid: _cpu_s(wb.pid) for wb in runs}
    started = time.monotonic()
    time.sleep(REFUSE_S - 10)
    took = time.monotonic() - started
    for wb in runs:
        used[wb.pid] = (_cpu_s(wb.pid) - before[wb.pid]) / took


def _publish_paced(publisher: Publisher, client: Client, frames: list[tuple[int, bytes]],
                   stop: threading.Event, sent: list[int]) -> None:
    """Pairs at ZMQ_PAIRS_PER_S until told to stop; `sent` counts the pairs."""
    seq = 0
    while not stop.is_set():
        for ts, frame in _echo_pair(1, seq):
            publisher.send(client.message(ts, frame))
        frames.extend(_echo_pair(1, seq))
        seq += 1
        sent[0] = seq
        stop.wait(1.0 / ZMQ_PAIRS_PER_S)


def _zmq_clean_run(es_url: str, index: str, frames: list[tuple[int, bytes]]) -> None:
    publisher = Publisher()
    client = Client("edge1")
    wb = Wirebeat("-E", FLOWS_OFF, "--zmq", publisher.endpoint, *_es_args(es_url, index),
                  "-E", "queue.mem.flush.timeout=200ms")
    try:
        publisher.wait_for_subscriber()
        for ts, frame in frames:
            publisher.send(client.message(ts, frame))
        wb.wait_for_counter("events.acked", len(frames) // 2, timeout_s=60)
        code, _ = wb.stop()
    finally:
        wb.kill()
        publisher.close()
    assert code == 0, wb.stderr_text()


def test_a_60_s_outage_loses_and_duplicates_nothing_for_files_and_zmq(es_url, tmp_path: Path):
    es = Elasticsearch(es_url)
    tag = uuid.uuid4().hex[:8]
    # Each name is no prefix of another: wirebeat installs a template per index pattern.
    index = {kind: f"reliability-outage-{kind}-{tag}" for kind in
             ("file", "file-clean", "zmq", "zmq-clean")}
    host, port = es_url.split("//")[1].split(":")
    fwd_file, fwd_zmq = Forwarder(host, int(port)), Forwarder(host, int(port))
    capture = tmp_path / "outage.pcap"
    g.write_pcap(capture, [p for seq in range(FILE_PAIRS) for p in _echo_pair(2, seq)])
    publisher = Publisher()
    client = Client("edge1")
    frames: list[tuple[int, bytes]] = []
    sent = [0]
    stop_publishing = threading.Event()
    times: dict[str, float] = {}
    outage = threading.Thread(target=_outage, args=([fwd_file, fwd_zmq], times), daemon=True)
    # The outage starts exactly when the file run sends its sixth bulk request.
    fwd_file.trip_after_bulks = 5
    fwd_file.on_trip = outage.start
    small_batches = ["-E", "queue.mem.flush.min_events=500", "-E", "output.elasticsearch.bulk_max_size=500"]
    zmq_wb = Wirebeat("-E", FLOWS_OFF, "--zmq", publisher.endpoint, *_es_args(fwd_zmq.url, index["zmq"]),
                      "-E", "queue.mem.flush.timeout=200ms", *small_batches)
    file_wb = None
    publishing = threading.Thread(target=_publish_paced,
                                  args=(publisher, client, frames, stop_publishing, sent), daemon=True)
    try:
        publisher.wait_for_subscriber()
        publishing.start()
        zmq_wb.wait_for_counter("events.acked", 20)
        file_wb = Wirebeat("-E", FLOWS_OFF, "-I", str(capture), *_es_args(fwd_file.url, index["file"]),
                           "-E", "queue.mem.events=2000", *small_batches, http=False)
        cpu_per_s: dict[int, float] = {}
        sampler = threading.Thread(target=_idle_during_refusal, args=(times, [file_wb, zmq_wb], cpu_per_s),
                                   daemon=True)
        sampler.start()
        wait_until(lambda: "healed" in times, REFUSE_S + HANG_S + 60, "the outage to end")
        sampler.join(10)
        time.sleep(3)
        stop_publishing.set()
        publishing.join()
        file_code = file_wb.proc.wait(120)
        zmq_wb.wait_for_counter("events.acked", sent[0], timeout_s=60)
        zmq_counters = zmq_wb.stats()["counters"]
        zmq_code, _ = zmq_wb.stop()
    finally:
        stop_publishing.set()
        for wb in (zmq_wb, file_wb):
            if wb is not None:
                wb.kill()
        publisher.close()
        fwd_file.close()
        fwd_zmq.close()
    try:
        # The outage really was in the middle of both runs.
        assert fwd_file.bulks > 5 and times["refuse"] > 0
        file_summary = file_wb.summary()
        assert file_code == 0, file_wb.stderr_text()[-3000:]
        assert (f"{FILE_PAIRS} documents ({FILE_PAIRS} acknowledged, 0 failed, 0 unacknowledged)"
                in file_summary), file_summary
        assert zmq_code == 0, zmq_wb.stderr_text()[-3000:]
        assert f"{sent[0]} documents ({sent[0]} acknowledged, 0 failed, 0 unacknowledged)" in zmq_wb.summary()
        file_counters = next(e for e in file_wb.logs() if e.get("event") == "summary")
        for counters in (file_counters, zmq_counters):
            assert counters.get("output.retries", 0) >= 2, counters
            assert counters.get("output.recoveries", 0) >= 1, counters
            # The hang phase: the node, down since the refuse phase, gets no bulk
            # request until it answers a probe; the probes into the hang go unanswered.
            assert counters.get("output.probes_failed", 0) >= 1, counters
            assert counters.get("events.failed", 0) == 0 and counters.get("queue.dropped", 0) == 0
        # Waiting for the node cost next to nothing: before the fix an output with every
        # node down resent at once in a loop, a whole core per process through the outage.
        assert len(cpu_per_s) == 2 and all(v < 0.3 for v in cpu_per_s.values()), cpu_per_s
        # Delivery resumed promptly once the path healed.
        print(f"\noutage figures: file {FILE_PAIRS} docs, zmq {sent[0]} docs; first bulk after healing: "
              f"file +{fwd_file.first_bulk_after_resume - times['healed']:.2f} s, "
              f"zmq +{fwd_zmq.first_bulk_after_resume - times['healed']:.2f} s; "
              f"file counters { {k: v for k, v in file_counters.items() if k.startswith('output.')} }; "
              f"zmq counters { {k: v for k, v in zmq_counters.items() if k.startswith('output.')} }")
        for fwd in (fwd_file, fwd_zmq):
            assert fwd.first_bulk_after_resume is not None
            assert fwd.first_bulk_after_resume - times["healed"] < RESUME_WITHIN_S, \
                fwd.first_bulk_after_resume - times["healed"]
        # Clean runs of the same input, straight into the node.
        clean = Wirebeat("-E", FLOWS_OFF, "-I", str(capture), *_es_args(es_url, index["file-clean"]), http=False)
        assert clean.proc.wait(120) == 0, clean.stderr_text()
        _zmq_clean_run(es_url, index["zmq-clean"], list(frames))
        for kind in ("file", "zmq"):
            ids, clean_ids = _ids(es, index[kind]), _ids(es, index[f"{kind}-clean"])
            expected = FILE_PAIRS if kind == "file" else sent[0]
            assert len(clean_ids) == expected
            assert len(ids) == len(set(ids)) == expected      # every document, once
            assert set(ids) == set(clean_ids)
    finally:
        es.indices.delete(index=",".join(index.values()), ignore_unavailable=True)
        for name in index.values():
            es.options(ignore_status=404).indices.delete_index_template(name=name)


def test_a_node_that_accepts_and_never_answers_holds_neither_the_start_nor_delivery(es_url, tmp_path):
    """Hung from the very start: the version check gives up after the probe timeout, not 90 s."""
    es = Elasticsearch(es_url)
    index = f"reliability-hung-{uuid.uuid4().hex[:8]}"
    host, port = es_url.split("//")[1].split(":")
    fwd = Forwarder(host, int(port))
    fwd.hang()
    capture = tmp_path / "hung.pcap"
    g.write_pcap(capture, [p for seq in range(5) for p in _echo_pair(3, seq)])
    wb = Wirebeat("-E", FLOWS_OFF, "-I", str(capture), *_es_args(fwd.url, index), http=False)
    try:
        # Probe timeout 3 s, then the first backoff: well inside the 90 s request timeout.
        wb.wait_for_log("elasticsearch unreachable, will retry", timeout_s=20)
        fwd.forward()
        assert wb.proc.wait(60) == 0, wb.stderr_text()
        es.indices.refresh(index=index)
        assert es.count(index=index)["count"] == 5
    finally:
        wb.kill()
        fwd.close()
        es.indices.delete(index=index, ignore_unavailable=True)
        es.options(ignore_status=404).indices.delete_index_template(name=index)


def test_a_hung_node_among_healthy_ones_does_not_stall_delivery(es_url, tmp_path):
    """Two hosts, one of which goes silent mid-run (accepts, never answers). Its probes
    (5 s timeout, due every 0.05 s of backoff) run beside delivery to the healthy node: had
    each one held the sending thread, the 100 bulk requests of this run would take over
    100 s of probe timeouts. Every document is indexed once, and the run ends well before."""
    es = Elasticsearch(es_url)
    index = f"reliability-hungpeer-{uuid.uuid4().hex[:8]}"
    host, port = es_url.split("//")[1].split(":")
    fwd = Forwarder(host, int(port))
    fwd.trip_after_bulks = 2
    fwd.on_trip = fwd.hang
    capture = tmp_path / "hungpeer.pcap"
    pairs = 2000
    g.write_pcap(capture, [p for seq in range(pairs) for p in _echo_pair(5, seq)])
    args = ["-E", f"output.elasticsearch.hosts=[{es_url},{fwd.url}]", "-E", f"output.elasticsearch.index={index}",
            "-E", "output.elasticsearch.bulk_max_size=20", "-E", "queue.mem.flush.min_events=20",
            "-E", "output.elasticsearch.backoff.init=0.05s", "-E", "output.elasticsearch.backoff.max=0.05s",
            "-E", "output.elasticsearch.health_probe.timeout=5s",
            "-E", "output.elasticsearch.health_probe.interval=0.2s"]
    started = time.monotonic()
    wb = Wirebeat("-E", FLOWS_OFF, "-I", str(capture), *args, http=False)
    try:
        assert wb.proc.wait(100) == 0, wb.stderr_text()
        took = time.monotonic() - started
        assert fwd.mode == "hang", "the second node never went silent: the test did not test"
        assert f"{pairs} acknowledged, 0 failed" in wb.stderr_text(), wb.stderr_text()
        ids = _ids(es, index)
        assert len(ids) == len(set(ids)) == pairs
        assert took < 30, f"delivery to the healthy node waited on the hung one's probes ({took:.0f} s)"
    finally:
        wb.kill()
        fwd.close()
        es.indices.delete(index=index, ignore_unavailable=True)
        es.options(ignore_status=404).indices.delete_index_template(name=index)
