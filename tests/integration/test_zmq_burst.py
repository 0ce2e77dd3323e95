"""A collector's burst over real sockets: everything received, or every loss counted.

The publisher (tests/burst_publisher.py) is a process of its own with
ZeroMQ's default send high-water mark. Where osmo-pcap-server would drop a
message because wirebeat's side is full, it waits instead (and counts a
stall): so the burst test holds wirebeat to the rate it was sent at, and no
loss upstream can hide a loss in wirebeat. Its messages are DNS query/answer
pairs whose number and content are fixed in advance: the ground truth is
what it was asked to send, not what wirebeat reports.
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from running import Wirebeat, wait_until

HERE = Path(__file__).resolve().parent.parent
TARGET_RATE = 60_000            # messages/s the publisher is asked for


class Burst:
    """tests/burst_publisher.py running: its endpoint, then what it sent."""

    def __init__(self, pairs: int, rate: float, clients: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "burst_publisher.py"), "--pairs", str(pairs),
             "--rate", str(rate), "--clients", ",".join(clients)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("port "), line
        self.endpoint = f"tcp://127.0.0.1:{int(line.split()[1])}"

    def sent(self) -> tuple[int, float, int]:
        """(messages, seconds, stalls) once the burst is over."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        got = re.fullmatch(r"sent (\d+) messages in ([\d.]+) seconds, (\d+) stalls\n", line)
        assert got, line
        return int(got[1]), float(got[2]), int(got[3])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _dns_per_source(docs: list[dict]) -> dict[str, set[tuple[int, int]]]:
    out: dict[str, set[tuple[int, int]]] = {}
    for doc in docs:
        if doc["event"]["dataset"] == "dns":
            out.setdefault(doc["capture"]["source"], set()).add((doc["dns"]["id"], doc["client"]["port"]))
    return out


def _settled(wb: Wirebeat, total: int) -> dict[str, int] | None:
    """The counters once every one of `total` messages is decoded or dropped, else None."""
    now = wb.stats()["counters"]
    handled = now.get("zmq.frames", 0) + sum(v for k, v in now.items() if k.startswith("zmq.dropped."))
    return now if handled >= total else None


def _burst_through_wirebeat(pairs: int, clients: list[str], *options: str) -> tuple[Wirebeat, dict[str, int]]:
    """Send the burst to `wirebeat run --zmq ... --console OPTIONS`, wait until every
    message is decoded or dropped, stop it; (wirebeat, its counters by then)."""
    total = 2 * pairs * len(clients)
    burst = Burst(pairs, TARGET_RATE, clients)
    wb = Wirebeat("--zmq", burst.endpoint, "--console", "-E", "wirebeat.flows.enabled=false", *options)
    try:
        sent, seconds, stalls = burst.sent()
        assert sent == total
        # Speed is the benchmark's to measure (tests/bench/zmq_burst.py): a busy host
        # sends slower, and the test still holds wirebeat to whatever rate it reached.
        print(f"burst: {sent / seconds:.0f} messages/s, {stalls} stalls")
        # Decoding lags behind the burst; the receive queue holds the difference.
        counters = wait_until(lambda: _settled(wb, total), 300, "every message decoded or dropped")
        code, _ = wb.stop()
    finally:
        wb.kill()
        burst.close()
    assert code == 0, wb.stderr_text()[-3000:]
    return wb, counters


def test_a_burst_of_200000_messages_is_received_whole():
    pairs, clients = 50_000, ["edge1", "edge2"]
    total = 2 * pairs * len(clients)
    wb, counters = _burst_through_wirebeat(pairs, clients)
    assert {k: v for k, v in counters.items() if k.startswith("zmq.dropped.") and v} == {}
    assert {k: v for k, v in counters.items() if k.startswith("zmq.received.")} == {
        f"zmq.received.{name}": 2 * pairs for name in clients}
    assert counters["zmq.frames"] == total
    summary = wb.summary()
    assert "dropped" not in summary, summary
    assert f"{total} packets" in summary, summary
    expected = {(i % 65536, 10000 + i % 20000) for i in range(pairs)}
    found = _dns_per_source(wb.documents())
    assert found.keys() == set(clients)
    for name in clients:
        assert found[name] == expected, name


def test_a_queue_too_small_for_the_burst_counts_every_message_it_drops():
    pairs = 20_000
    total = 2 * pairs
    # 256 messages held by the receiver, two batches of 256 in the decoding process.
    wb, counters = _burst_through_wirebeat(pairs, ["edge1"], "-E", "wirebeat.sources.zmq.queue_messages=256",
                                           "-E", "wirebeat.limits.max_queued_frames=512")
    dropped = counters.get("zmq.dropped.edge1", 0)
    assert counters["zmq.received.edge1"] == total
    assert dropped > 0, counters
    assert counters["zmq.frames"] + dropped == total, counters
    summary = wb.summary()
    assert f"{dropped} dropped" in summary, summary
    assert f"edge1 {total}" in summary, summary
    # What was decoded is whole transactions or halves of them, never more than the frames.
    docs = _dns_per_source(wb.documents()).get("edge1", set())
    assert 0 < len(docs) <= counters["zmq.frames"]
