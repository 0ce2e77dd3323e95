"""The monitoring documents the collector health views aggregate, from a real ZeroMQ run.

A publisher speaking osmo-pcap's wire format sends a known number of
messages for two collector clients; after SIGTERM wirebeat's last monitoring
documents must say, per client, exactly that many packets with the endpoint
as capture.collector, and the totals document the sum.
"""
from __future__ import annotations

import pcapgen as g
from osmo_publisher import Client, Publisher
from running import Wirebeat

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
