#!/usr/bin/env python3
"""How fast wirebeat's ZeroMQ receive path takes a collector's burst.

    python tests/bench/zmq_burst.py [--pairs 50000] [--clients 2] [--rate 50000 --rate 0]...

For each rate (messages/s; 0: as fast as the publisher can), the burst
publisher (tests/burst_publisher.py: DNS query/answer pairs in osmo-pcap's
wire format, ZeroMQ's default send high-water mark, stalls counted where
osmo-pcap-server would drop) sends 2 * pairs * clients messages to a real
`wirebeat run --zmq ... --console` (documents to /dev/null). Reported per
rate: the rate the publisher reached, its stalls (messages osmo-pcap-server
would have dropped because wirebeat's side was full), what wirebeat counted
as received and dropped, how long decoding took to catch up, and the
receiver process's CPU time (messages per CPU second: its own capacity, the
number least disturbed by other load on the host). A
benchmark, not a timed test: numbers depend on the machine and on what else
runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def counters(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["counters"]


def one(pairs: int, clients: int, rate: float) -> dict[str, object]:
    names = ",".join(f"edge{i}" for i in range(1, clients + 1))
    pub = subprocess.Popen([sys.executable, str(ROOT / "tests" / "burst_publisher.py"), "--pairs", str(pairs),
                            "--rate", str(rate or 1e12), "--clients", names],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert pub.stdout is not None and pub.stdin is not None
    port = int(pub.stdout.readline().split()[1])
    wb = subprocess.Popen([sys.executable, "-m", "wirebeat.cli", "run", "--zmq", f"tcp://127.0.0.1:{port}",
                           "--console", "-E", "wirebeat.flows.enabled=false", "-E", "http.enabled=true",
                           "-E", "http.port=0"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    assert wb.stderr is not None
    url, receiver = "", 0
    while not url:
        event = json.loads(wb.stderr.readline())
        receiver = event.get("receiver_pid", receiver)
        url = event.get("url", "") if event.get("event") == "stats endpoint listening" else ""
    try:
        line = pub.stdout.readline()
        done = time.monotonic()
        got = re.fullmatch(r"sent (\d+) messages in ([\d.]+) seconds, (\d+) stalls\n", line)
        assert got, line
        sent, seconds, stalls = int(got[1]), float(got[2]), int(got[3])
        last: dict[str, int] = {}
        while True:       # until every message is decoded or dropped, or nothing moves for 10 s
            now = counters(url)
            handled = now.get("zmq.frames", 0) + sum(v for k, v in now.items() if k.startswith("zmq.dropped."))
            if handled >= sent:
                break
            if now == last and time.monotonic() - moved > 10:
                break
            if now != last:
                last, moved = now, time.monotonic()
            time.sleep(0.1)
        caught_up = time.monotonic() - done
        receiver_cpu = cpu_seconds(receiver)
    finally:
        wb.terminate()
        wb.wait(60)
        pub.stdin.close()
        pub.wait(60)
    return {"asked": rate, "sent": sent, "rate": round(sent / seconds), "stalls": stalls,
            "received": sum(v for k, v in now.items() if k.startswith("zmq.received.")),
            "dropped": sum(v for k, v in now.items() if k.startswith("zmq.dropped.")),
            "decoded": now.get("zmq.frames", 0), "caught_up_s": round(caught_up, 1),
            "receiver_cpu_s": round(receiver_cpu, 2),
            "receiver_messages_per_cpu_s": round(sent / receiver_cpu) if receiver_cpu else None}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (its receiver, here)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=50_000, help="DNS transactions per client")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rate", type=float, action="append", help="messages/s; 0: as fast as possible")
    args = parser.parse_args()
    for rate in args.rate or [50_000, 0]:
        print(json.dumps(one(args.pairs, args.clients, rate)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
