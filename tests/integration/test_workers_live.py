"""Worker processes behind a live source (a real ZeroMQ feed in osmo-pcap's format):
SIGTERM flushes every worker; a worker killed with SIGKILL is reported,
restarted, and the frames it had not decoded are counted, never silent."""
from __future__ import annotations

import os
import signal
import time
import zlib
from ipaddress import ip_address

import pytest

import pcapgen as g
from osmo_publisher import Client, Publisher
from running import Wirebeat, wait_until

T0 = 1_760_000_000_000_000_000
HOSTS = 60


def _pair(n: int) -> tuple[str, str]:
    return f"10.{n // 200}.{n % 200}.1", f"10.{n // 200}.{n % 200}.2"


def _echo(n: int, seq: int, reply: bool = False) -> bytes:
    a, b = _pair(n)
    src, dst = (b, a) if reply else (a, b)
    return g.ethernet(g.ipv4(src, dst, g.IPPROTO_ICMP, g.icmp_echo(n, seq, b"p" * 24, reply=reply)))


def _worker_of(source: str, n: int, workers: int) -> int:
    """The documented hash: crc32(source, unordered address pair) % N."""
    x, y = (ip_address(a).packed for a in _pair(n))
    return zlib.crc32(min(x, y) + max(x, y), zlib.crc32(source.encode())) % workers


@pytest.fixture
def publisher():
    pub = Publisher()
    yield pub
    pub.close()


def _start(publisher: Publisher, *extra: str) -> Wirebeat:
    wb = Wirebeat("--zmq", publisher.endpoint, "--console", "--workers", "2",
                  "-E", "wirebeat.flows.enabled=false",
                  "-E", "wirebeat.protocols.icmp.transaction_timeout=1h",
                  "-E", "wirebeat.shutdown_timeout=20s", *extra)
    publisher.wait_for_subscriber()
    return wb


def _send_round(publisher: Publisher, client: Client, seq: int, answered: bool = True) -> None:
    for n in range(HOSTS):
        ts = T0 + seq * 10**9 + n * 10**6
        publisher.send(client.message(ts, _echo(n, seq)))
        if answered:
            publisher.send(client.message(ts + 10**5, _echo(n, seq, reply=True)))


def test_sigterm_flushes_every_worker(publisher):
    assert {_worker_of("edge1", n, 2) for n in range(HOSTS)} == {0, 1}
    wb = _start(publisher)
    try:
        client = Client("edge1")
        _send_round(publisher, client, 0)
        _send_round(publisher, client, 1, answered=False)     # only the shutdown reports these
        wb.wait_for_counter("zmq.received.edge1", HOSTS * 3)
        code, took = wb.stop(signal.SIGTERM)
    finally:
        wb.kill()
    assert code == 0, wb.stderr_text()
    icmp = [d for d in wb.documents() if d["event"]["dataset"] == "icmp"]
    assert sorted(d["status"] for d in icmp) == ["Error"] * HOSTS + ["OK"] * HOSTS
    assert {d["source"]["ip"] for d in icmp if d["status"] == "Error"} == {_pair(n)[0] for n in range(HOSTS)}
    assert f"{HOSTS * 2} documents ({HOSTS * 2} acknowledged" in wb.summary()


def test_a_killed_worker_is_reported_restarted_and_its_loss_counted(publisher):
    wb = _start(publisher)
    victim = None
    try:
        pids = wb.wait_for_log("workers started")["pids"]
        client = Client("edge1")
        _send_round(publisher, client, 0)
        wait_until(lambda: wb.counter("packets.read") >= HOSTS * 2, 60, "round 0 decoded")
        # Stopped, the worker holds what it is sent next: frames it will never decode.
        victim = pids[1]
        os.kill(victim, signal.SIGSTOP)
        _send_round(publisher, client, 1)
        wb.wait_for_counter("zmq.received.edge1", HOSTS * 4)
        time.sleep(1.5)                 # housekeeping hands partial batches over
        os.kill(victim, signal.SIGKILL)
        died = wb.wait_for_log("worker died", 30)
        restarted = wb.wait_for_log("worker restarted", 30)
        _send_round(publisher, client, 2)
        sent = HOSTS * 6
        wait_until(lambda: wb.counter("packets.read") + wb.counter("workers.frames_lost") >= sent, 60,
                   "every frame decoded or counted as lost")
        counters = wb.stats()["counters"]
        code, _took = wb.stop(signal.SIGTERM)
    finally:
        if victim is not None:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wb.kill()
    assert code == 0, wb.stderr_text()
    assert died["worker"] == 1 and died["how"] == "killed by SIGKILL" and died["pid"] == victim
    assert restarted["pid"] != victim
    on_victim = sum(1 for n in range(HOSTS) if _worker_of("edge1", n, 2) == 1)
    assert counters["workers.crashed"] == 1
    # Round 1's frames for the stopped worker were never decoded: all of them counted lost.
    assert counters["workers.frames_lost"] >= on_victim * 2
    assert counters["packets.read"] + counters["workers.frames_lost"] == sent
    assert "1 worker(s) died and were restarted" in wb.summary()
    # The restarted worker decodes its share again: round 2 is complete.
    icmp = [d for d in wb.documents() if d["event"]["dataset"] == "icmp"]
    by_round = {r: sorted(d["source"]["ip"] for d in icmp
                          if d["@timestamp"].startswith(_iso_second(r))) for r in (0, 2)}
    assert by_round[2] == sorted(_pair(n)[0] for n in range(HOSTS))
    assert all(d["status"] == "OK" for d in icmp)


def _iso_second(seq: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 // 10**9 + seq))


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for its new parent to reap it counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_forked_workers_hold_only_their_own_pipes_and_leave_with_the_reader(publisher):
    """Workers are forked from the reader: each must close what it inherited (the
    reader's sockets, the other workers' pipes), or a worker would keep another's
    input open and never see it end when the reader dies."""
    wb = _start(publisher)
    pids = []
    try:
        pids = wb.wait_for_log("workers started")["pids"]
        client = Client("edge1")
        _send_round(publisher, client, 0)
        wait_until(lambda: wb.counter("packets.read") >= HOSTS * 2, 60, "round 0 decoded")
        inodes = {}
        for pid in pids:
            fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            extra = {fd: target for fd, target in fds.items() if fd > 2}
            assert len(extra) == 2 and all(t.startswith("pipe:") for t in extra.values()), (pid, fds)
            inodes[pid] = set(extra.values())
        assert not inodes[pids[0]] & inodes[pids[1]]        # no pipe shared between workers
        os.kill(wb.pid, signal.SIGKILL)         # the reader dies without telling anyone
        wb.proc.wait(10)
        wait_until(lambda: all(_gone(pid) for pid in pids), 20, "both workers exited")
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wb.kill()
