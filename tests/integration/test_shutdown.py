"""A clean stop says what happened and nothing else: no error line on a normal SIGTERM.

The liveness check of live sources ("every live source has stopped") used to
race with the signal: the signal stops the source threads on purpose, and
when the check ran before the loop saw the signal, a normal stop logged an
error with an empty error list (about 1 run in 6 with two collector
clients). The stop is repeated here often enough to catch that race.
"""
from __future__ import annotations

import random
import signal
import time

import pcapgen as g
from osmo_publisher import Client, Publisher
from running import Wirebeat, wait_until

T0 = 1_767_000_000_000_000_000
RUNS = 20


def _echo(client_no: int, seq: int, reply: bool = False) -> bytes:
    a, b = f"10.{client_no}.0.1", f"10.{client_no}.0.2"
    src, dst = (b, a) if reply else (a, b)
    return g.ethernet(g.ipv4(src, dst, g.IPPROTO_ICMP, g.icmp_echo(client_no, seq, reply=reply)))


def test_a_normal_sigterm_of_a_zmq_run_never_logs_an_error():
    clients = [Client("edge1"), Client("edge2")]
    for run in range(RUNS):
        publisher = Publisher()
        wb = Wirebeat("--zmq", publisher.endpoint, "--console", http=False)
        try:
            # Generous: on a loaded machine starting Python alone took over 20 s once.
            publisher.wait_for_subscriber(timeout_s=90)
            for seq in range(5):
                for number, client in enumerate(clients, 1):
                    publisher.send(client.message(T0 + seq * 10**6, _echo(number, seq)))
                    publisher.send(client.message(T0 + seq * 10**6 + 1000, _echo(number, seq, reply=True)))
            # Documents on stdout: the loop runs, its signal handlers are in place.
            wait_until(lambda: len(wb.documents()) >= 10, 60, "ten documents")
            # At a different point of the loop's 0.2 s waits and 0.5 s housekeeping each time.
            time.sleep(random.uniform(0.0, 1.0))
            code, _ = wb.stop(signal.SIGTERM, timeout_s=30)
        finally:
            wb.kill()
            publisher.close()
        errors = [e for e in wb.logs() if e.get("level") in ("error", "critical")]
        assert code == 0 and not errors, (run, code, errors, wb.stderr_text()[-2000:])
        events = [e.get("event") for e in wb.logs()]
        assert "stopping" in events and "every live source has stopped" not in events, (run, events)
