"""The monitoring documents the collector health views aggregate.

A publisher speaking osmo-pcap's wire format sends a known number of
messages for two collector clients; after SIGTERM wirebeat's last monitoring
documents must say, per client, exactly that many packets with the endpoint
as capture.collector, and the totals document the sum. A capture cut inside
its last record is counted per file against capinfos' frame count.
"""
from __future__ import annotations

import json
import subprocess

import pcapgen as g
from conftest import PCAPS
from osmo_publisher import Client, Publisher
from running import Wirebeat
from wirebeat.monitor import totals

T0 = 1_760_000_000_000_000_000


def test_per_client_monitoring_documents_count_what_was_sent():
    publisher = Publisher()
    wb = Wirebeat("--zmq", publisher.endpoint, "--console", "-E", "monitoring.enabled=true",
                  "-E", "monitoring.period=1h", http=True)
    sent = {"edge1": 7, "edge2": 3}
    try:
        publisher.wait_for_subscriber()
        for name, n in sent.items():
            client = Client(name)
            for i in range(n):
                frame = g.ethernet(g.ipv4("10.0.0.1", "10.0.0.2", 1, g.icmp_echo(1, i)))
                publisher.send(client.message(T0 + i * 1000, frame))
        wb.wait_for_counter("packets.read", sum(sent.values()))
        code, _ = wb.stop()
    finally:
        wb.kill()
        publisher.close()
    assert code == 0, wb.stderr_text()
    stats = [d for d in wb.documents() if d.get("event", {}).get("dataset") == "wirebeat.stats"]
    per_source = {d["capture"]["source"]: d for d in stats if "source" in d["wirebeat"]["stats"]}
    assert set(per_source) == set(sent)
    for name, n in sent.items():
        doc = per_source[name]
        assert doc["capture"]["collector"] == publisher.endpoint
        assert doc["wirebeat"]["stats"]["source"] == {"kind": "zmq", "packets": n, "dropped": 0}
    [overall] = [d for d in stats if "totals" in d["wirebeat"]["stats"]]
    totals = overall["wirebeat"]["stats"]["totals"]
    assert totals["packets"] == sum(sent.values()) and totals["dropped"] == 0 and totals["malformed"] == 0


def test_a_damaged_file_counts_its_frames_and_its_damage(wirebeat, tmp_path):
    """A capture cut inside its last record: one frame fewer read, one damaged record, per source."""
    original = PCAPS / "dns" / "udp_queries.pcap"
    frames = int(subprocess.run(["capinfos", "-c", "-M", "-T", "-r", str(original)], capture_output=True,
                                text=True, check=True).stdout.split("\t")[-1])
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(original.read_bytes()[:-10])
    proc = wirebeat("run", "-I", str(cut), "--console", "-E", "monitoring.enabled=true")
    assert proc.returncode == 0, proc.stderr.decode()
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    [source] = [d for d in docs if "source" in d.get("wirebeat", {}).get("stats", {})]
    assert source["capture"] == {"source": str(cut)}
    assert source["wirebeat"]["stats"]["source"] == {"kind": "file", "packets": frames - 1, "dropped": 0,
                                                     "malformed": 1}
    [overall] = [d for d in docs if "totals" in d.get("wirebeat", {}).get("stats", {})]
    assert overall["wirebeat"]["stats"]["totals"]["packets"] == frames - 1
    assert overall["wirebeat"]["stats"]["totals"]["malformed"] == 1


def test_totals_sum_every_kind_of_malformed_and_dropped():
    counters = {"packets.read": 100, "packets.bytes": 6400, "events.published": 40,
                "packets.malformed.ipv4.truncated": 2, "decoder.malformed.dns.dns.truncated": 3,
                "zmq.malformed.bad_header": 1, "capture.truncated_records": 1, "capture.garbage_records": 4,
                "zmq.dropped.edge1": 5, "zmq.received.edge1": 50, "queue.dropped": 6,
                "interface.eth0.kernel_dropped": 7, "interface.eth0.interface_dropped": 8,
                "interface.eth0.received": 90, "decoder.crashed.dns": 9}
    assert totals(counters) == {"packets": 100, "bytes": 6400, "documents": 40,
                                "malformed": 2 + 3 + 1 + 1 + 4, "dropped": 5 + 6 + 7 + 8}
