"""Self-monitoring: the JSON endpoint on 127.0.0.1 (off by default) and the metrics log line."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import psutil
import pytest

import pcapgen as g
from osmo_publisher import Client, Publisher
from running import Wirebeat

T0 = 1_760_000_000_000_000_000


@pytest.fixture
def publisher():
    pub = Publisher()
    yield pub
    pub.close()


def _listening(pid: int) -> list[tuple[str, int]]:
    return [c.laddr[:2] for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN]


def test_the_endpoint_is_off_by_default(publisher):
    wb = Wirebeat("--zmq", publisher.endpoint, "--console", http=False)
    try:
        publisher.wait_for_subscriber()
        assert _listening(wb.pid) == []
    finally:
        wb.stop()
        wb.kill()


def test_stats_endpoint_serves_counters_and_process_stats_on_loopback_only(publisher):
    wb = Wirebeat("--zmq", publisher.endpoint, "--console", "-E", "wirebeat.sources.zmq.receive_hwm=5000",
                  "-E", "logging.metrics.period=1s")
    try:
        [(address, port)] = _listening(wb.pid)
        assert address == "127.0.0.1"
        publisher.wait_for_subscriber()
        client = Client("edge1")
        publisher.send(client.message(T0, g.ethernet(g.ipv4("10.0.0.1", "10.0.0.2", 1, g.icmp_echo(1, 1)))))
        wb.wait_for_counter("packets.read", 1)
        stats = wb.stats()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            info = json.loads(response.read())
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=5)
        metrics = wb.wait_for_log("metrics")
    finally:
        wb.stop()
        wb.kill()
    assert info["beat"] == "wirebeat" and info["version"]
    assert err.value.code == 404
    assert stats["counters"]["zmq.received.edge1"] == 1
    process = stats["process"]
    assert process["rss_bytes"] > 0 and process["open_fds"] > 0 and process["cpu_user_s"] >= 0
    [source] = stats["sources"]
    assert source["kind"] == "zmq" and source["receive_hwm"] == 5000
    assert source["received_per_client"] == {"edge1": 1}
    assert metrics["rss_bytes"] > 0 and "open_fds" in metrics


def test_a_taken_port_is_exit_2(wirebeat):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = wirebeat("run", "--zmq", "tcp://127.0.0.1:9", "--console",
                        "-E", "http.enabled=true", "-E", f"http.port={port}")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().splitlines() == [
        f"wirebeat: http.port {port}: cannot listen on 127.0.0.1: Address already in use"]

