"""SIGTERM and SIGINT: stop the sources, report what is in flight, flush, exit in bounded time."""
from __future__ import annotations

import signal
import socket
import time

import pytest

import pcapgen as g
from osmo_publisher import Client, Publisher
from running import Wirebeat

T0 = 1_760_000_000_000_000_000


def _echo(seq: int, reply: bool = False) -> bytes:
    src, dst = ("10.8.0.2", "10.8.0.1") if reply else ("10.8.0.1", "10.8.0.2")
    return g.ethernet(g.ipv4(src, dst, g.IPPROTO_ICMP, g.icmp_echo(8, seq, reply=reply)))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def publisher():
    pub = Publisher()
    yield pub
    pub.close()


def _publish_traffic(publisher: Publisher, wb: Wirebeat) -> None:
    """Ten answered echoes and one request still waiting for its reply."""
    client = Client("edge1")
    publisher.wait_for_subscriber()
    for seq in range(10):
        publisher.send(client.message(T0 + seq * 10**7, _echo(seq)))
        publisher.send(client.message(T0 + seq * 10**7 + 10**5, _echo(seq, reply=True)))
    publisher.send(client.message(T0 + 10**9, _echo(99)))
    wb.wait_for_counter("zmq.received.edge1", 21)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_finishes_transactions_in_flight_flushes_and_exits_0(publisher, sig):
    # A long transaction timeout: only the shutdown can report the unanswered request.
    wb = Wirebeat("--zmq", publisher.endpoint, "--console", "-E", "wirebeat.flows.enabled=false",
                  "-E", "wirebeat.protocols.icmp.transaction_timeout=1h",
                  "-E", "queue.mem.flush.timeout=1h", "-E", "wirebeat.shutdown_timeout=10s")
    try:
        _publish_traffic(publisher, wb)
        code, took = wb.stop(sig)
    finally:
        wb.kill()
    assert code == 0, wb.stderr_text()
    assert took < 5.0
    statuses = [d["status"] for d in wb.documents() if d["event"]["dataset"] == "icmp"]
    assert statuses == ["OK"] * 10 + ["Error"]
    assert "11 documents (11 acknowledged, 0 failed, 0 unacknowledged)" in wb.summary()
    assert any(e.get("event") == "stopping" and e.get("signal") == signal.Signals(sig).name
               for e in wb.logs())


def test_shutdown_is_bounded_when_the_output_is_down(publisher):
    wb = Wirebeat("--zmq", publisher.endpoint, "-E", "wirebeat.flows.enabled=false",
                  "-E", f"output.elasticsearch.hosts=[http://127.0.0.1:{_closed_port()}]",
                  "-E", "queue.mem.flush.timeout=100ms", "-E", "wirebeat.shutdown_timeout=2s")
    try:
        _publish_traffic(publisher, wb)
        wb.wait_for_log("elasticsearch unreachable, will retry")
        code, took = wb.stop()
    finally:
        wb.kill()
    assert code == 1
    assert 2.0 <= took < 2.0 + 8.0, took
    assert "0 acknowledged" in wb.summary() and "11 unacknowledged" in wb.summary()


def test_a_second_signal_exits_at_once(publisher):
    wb = Wirebeat("--zmq", publisher.endpoint,
                  "-E", f"output.elasticsearch.hosts=[http://127.0.0.1:{_closed_port()}]",
                  "-E", "queue.mem.flush.timeout=100ms", "-E", "wirebeat.shutdown_timeout=1m")
    try:
        _publish_traffic(publisher, wb)
        wb.wait_for_log("elasticsearch unreachable, will retry")
        wb.proc.send_signal(signal.SIGTERM)
        wb.wait_for_log("stopping")
        started = time.monotonic()
        code, _ = wb.stop(signal.SIGTERM)
        took = time.monotonic() - started
    finally:
        wb.kill()
    assert code == 1
    assert took < 2.0, took
    assert "wirebeat: SIGTERM again, exiting now" in wb.stderr_text()
