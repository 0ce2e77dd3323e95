"""Live capture (-i) on veth pairs in network namespaces the tests create; traffic from ping.

Namespace "a" holds one end of each veth pair and runs wirebeat; namespace "b"
holds the other ends. IPv6 is off in both so the kernel's own router
solicitations do not add documents.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from running import Wirebeat, require_root_and_tools, wait_until

pytestmark = pytest.mark.root


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Namespaces:
    a: str
    b: str
    links: list[tuple[str, str, str]]        # (device in a, address in a, address in b)

    def exec(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def ping(self, address: str, count: int = 3) -> None:
        subprocess.run([*self.exec(self.a), "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2",
                        address], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    require_root_and_tools("ip", "ping")
    tag = uuid.uuid4().hex[:6]
    a, b = f"wba{tag}", f"wbb{tag}"
    _ip("netns", "add", a)
    _ip("netns", "add", b)
    links = []
    try:
        for i in (1, 2):
            dev_a, dev_b = f"wb{i}a{tag}", f"wb{i}b{tag}"
            _ip("link", "add", dev_a, "netns", a, "type", "veth", "peer", "name", dev_b, "netns", b)
            _ip("-n", a, "addr", "add", f"10.{i}9.0.1/24", "dev", dev_a)
            _ip("-n", b, "addr", "add", f"10.{i}9.0.2/24", "dev", dev_b)
            _ip("-n", b, "addr", "add", f"10.{i}9.0.3/24", "dev", dev_b)
            links.append((dev_a, f"10.{i}9.0.1", f"10.{i}9.0.2"))
        for ns in (a, b):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                            "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
                           check=True, capture_output=True)
            _ip("-n", ns, "link", "set", "lo", "up")
        for i in (1, 2):
            _ip("-n", a, "link", "set", f"wb{i}a{tag}", "up")
            _ip("-n", b, "link", "set", f"wb{i}b{tag}", "up")
        yield Namespaces(a, b, links)
    finally:
        _ip("netns", "del", a)
        _ip("netns", "del", b)


def _icmp(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d.get("event", {}).get("dataset") == "icmp"]


def test_ping_is_captured_decoded_and_counted(netns):
    dev, mine, peer = netns.links[0]
    wb = Wirebeat("-i", dev, "--console", prefix=netns.exec(netns.a))
    try:
        wb.wait_for_log("capturing")
        netns.ping(peer, count=3)
        wb.wait_for_counter(f"interface.{dev}.frames", 6)
        code, _ = wb.stop()
    finally:
        wb.kill()
    assert code == 0, wb.stderr_text()
    docs = _icmp(wb.documents())
    assert len(docs) == 3 and all(d["status"] == "OK" for d in docs), docs
    assert {d["capture"]["source"] for d in docs} == {dev}
    assert {(d["source"]["ip"], d["destination"]["ip"]) for d in docs} == {(mine, peer)}
    assert all(0 < d["event"]["duration"] < 2_000_000_000 for d in docs)
    assert f"interface {dev}: " in wb.summary() and "dropped by the kernel" in wb.summary()


def test_user_switch_drops_every_capability_and_capture_goes_on(netns):
    dev, _mine, peer = netns.links[0]
    wb = Wirebeat("-i", dev, "--console", "--user", "nobody", prefix=netns.exec(netns.a))
    try:
        wb.wait_for_log("running unprivileged")
        status = wb.status()
        assert [int(u) for u in status["Uid"].split()] != [0, 0, 0, 0]
        assert all(int(u) == 65534 for u in status["Uid"].split()), status["Uid"]
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
        assert int(status["CapAmb"], 16) == 0 and int(status["CapBnd"], 16) == 0
        assert status["NoNewPrivs"] == "1"
        # The traffic comes after the switch: the handle opened as root keeps capturing.
        netns.ping(peer, count=2)
        wb.wait_for_counter(f"interface.{dev}.frames", 4)
        code, _ = wb.stop()
    finally:
        wb.kill()
    assert code == 0, wb.stderr_text()
    assert [d["status"] for d in _icmp(wb.documents())] == ["OK", "OK"]


def test_bpf_filter_and_two_interfaces_at_once(netns):
    (dev1, _, peer1), (dev2, _, peer2) = netns.links
    other1 = peer1.rsplit(".", 1)[0] + ".3"           # same wire, filtered out
    wb = Wirebeat("-i", dev1, "-i", dev2, "--console",
                  "-E", f"wirebeat.interfaces.bpf_filter=icmp and not host {other1}",
                  prefix=netns.exec(netns.a))
    try:
        wb.wait_for_log("capturing")
        netns.ping(peer1, count=2)
        netns.ping(other1, count=2)
        netns.ping(peer2, count=2)
        wb.wait_for_counter(f"interface.{dev2}.frames", 4)
        wb.wait_for_counter(f"interface.{dev1}.frames", 4)
        code, _ = wb.stop()
    finally:
        wb.kill()
    assert code == 0, wb.stderr_text()
    docs = _icmp(wb.documents())
    assert Counter((d["capture"]["source"], d["destination"]["ip"]) for d in docs) == {
        (dev1, peer1): 2, (dev2, peer2): 2}


def test_the_any_device_gives_linux_cooked_frames(netns):
    _, _, peer = netns.links[0]
    wb = Wirebeat("-i", "any", "--console", "-E", "wirebeat.interfaces.bpf_filter=icmp",
                  "-E", "wirebeat.interfaces.promiscuous=false", prefix=netns.exec(netns.a))
    try:
        event = wb.wait_for_log("capturing")
        assert event["link"] == "LINUX_SLL" and event["linktype"] == 113
        netns.ping(peer, count=2)
        wb.wait_for_counter("interface.any.frames", 4)
        code, _ = wb.stop()
    finally:
        wb.kill()
    assert code == 0
    assert [d["capture"]["source"] for d in _icmp(wb.documents())] == ["any", "any"]


# What deploy/systemd/wirebeat-live.conf gives: a non-root user holding only CAP_NET_RAW.
# Everything is imported while still root: the interpreter may live in a directory
# (e.g. /root/.pyenv) that uid 65534 cannot read. (A real service user can read its
# interpreter, so what wirebeat imports only when used, like the stats endpoint's
# http.server that Wirebeat turns on, is imported here too.)
PRELOAD = ("import encodings.ascii, encodings.idna, http.server\n"
           # and what `run` imports when an input needs it: live capture's module, and
           # ZeroMQ's standard-library imports (zmq's pickle, the receive queue's tempfile)
           "import wirebeat.sources.live, pickle, tempfile\n"
           "from wirebeat.cli import main\n"
           "from wirebeat.registry import discover\n"
           "discover()\n")

_AS_SERVICE_USER = PRELOAD + r"""
import ctypes, os, sys
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(8, 1, 0, 0, 0) == 0                # PR_SET_KEEPCAPS across setuid
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
data = (Data * 2)()
data[0].effective = data[0].permitted = 1 << 13      # CAP_NET_RAW
assert libc.capset(ctypes.byref(Header(0x20080522, 0)), data) == 0
sys.exit(main(sys.argv[1:]))
"""


def test_cap_net_raw_alone_opens_a_promiscuous_capture_then_is_dropped(netns, tmp_path):
    dev, _, peer = netns.links[0]
    launcher = tmp_path / "as_service_user.py"
    launcher.write_text(_AS_SERVICE_USER)
    os.chmod(tmp_path, 0o755)
    wb = Wirebeat("-i", dev, "--console", "-E", "wirebeat.interfaces.promiscuous=true",
                  prefix=netns.exec(netns.a), command=[sys.executable, str(launcher)])
    try:
        wb.wait_for_log("running unprivileged")
        link = subprocess.run(["ip", "-n", netns.a, "-d", "link", "show", dev], capture_output=True,
                              text=True, check=True).stdout
        assert "promiscuity 1" in link, link
        status = wb.status()
        assert status["Uid"].split()[0] == "65534"
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
        netns.ping(peer, count=2)
        wb.wait_for_counter(f"interface.{dev}.frames", 4)
        code, _ = wb.stop()
    finally:
        wb.kill()
    assert code == 0, wb.stderr_text()
    assert len(_icmp(wb.documents())) == 2


def test_opening_errors_are_one_line_exit_2(wirebeat, netns):
    require_root_and_tools("ip")
    proc = wirebeat("run", "-i", "wbnosuch0", "--console")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().splitlines() == ["wirebeat: interface wbnosuch0: no such device"]
    dev = netns.links[0][0]
    proc = subprocess.run([*netns.exec(netns.a), sys.executable, "-m", "wirebeat.cli", "run", "-i", dev,
                           "--console", "-E", "wirebeat.interfaces.bpf_filter=icmp and nonsense"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 2
    [line] = proc.stderr.decode().strip().splitlines()
    assert line.startswith(f"wirebeat: interface {dev}: bad bpf_filter 'icmp and nonsense': ")
    proc = wirebeat("run", "-i", "lo", "--user", "wbnosuchuser", "--console")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().splitlines() == [
        "wirebeat: cannot switch to user 'wbnosuchuser': no such user"]


def test_a_user_switch_that_is_not_permitted_is_refused(tmp_path):
    """Not root and asked to become someone else: refuse, exit 2, one line."""
    require_root_and_tools()
    script = tmp_path / "nonroot.py"
    script.write_text(
        PRELOAD + "import os, sys\n"
        "os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n"
        "sys.exit(main(['run', '--zmq', 'tcp://127.0.0.1:9', '--console', '--user', 'root']))\n")
    os.chmod(tmp_path, 0o755)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.decode().strip().splitlines() == [
        "wirebeat: cannot switch to user 'root': only root can (running as uid 65534); "
        "start as root or leave out --user / wirebeat.user"]



def test_an_interface_that_disappears_ends_the_run_with_exit_1(netns):
    dev, _, peer = netns.links[0]
    wb = Wirebeat("-i", dev, "--console", "-E", "wirebeat.interfaces.bpf_filter=icmp",
                  prefix=netns.exec(netns.a))
    try:
        wb.wait_for_log("capturing")
        netns.ping(peer, count=1)
        wb.wait_for_counter(f"interface.{dev}.frames", 2)
        subprocess.run(["ip", "-n", netns.a, "link", "del", dev], check=True)
        code = wb.proc.wait(20)
        for t in wb.threads:
            t.join(5)
    finally:
        wb.kill()
    assert code == 1
    assert any(e.get("event") == "source failed" and dev in e["detail"] for e in wb.logs())
    assert [d["status"] for d in _icmp(wb.documents())] == ["OK"]


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _packets(wb: Wirebeat) -> list[dict]:
    return [d for d in wb.documents() if d["event"]["dataset"] == "packet"]


def _mac(ns: str, dev: str) -> str:
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show", dev], check=True, capture_output=True,
                         text=True).stdout
    return out.split("link/ether ", 1)[1].split()[0]


def test_the_watch_list_recipe_on_a_live_interface_follows_a_table_edit(netns, tmp_path):
    """examples/watchlist/wirebeat.yml on a live capture: only the watched machine's
    frames are kept, with its employee; an edit of the employees table (atomic rename)
    moves the watch to the other machine while capturing."""
    dev, mine, peer = netns.links[0]
    mac_a = _mac(netns.a, dev)
    mac_b = _mac(netns.b, dev[:3] + "b" + dev[4:])           # wb1a<tag> <-> wb1b<tag>
    (tmp_path / "computers.csv").write_text(f"macaddr,hostname,empkey\n{mac_a.upper()},ws-a,e1\n"
                                            f"{mac_b.replace(':', '')},ws-b,e2\n")
    (tmp_path / "employees.csv").write_text("key,name,department,watch_flag\n"
                                            "e1,Alice Martin,Finance,YES\ne2,Bob Chen,Sales,NO\n")
    recipe = (Path(__file__).resolve().parents[2] / "examples" / "watchlist" / "wirebeat.yml").read_text()
    (tmp_path / "wirebeat.yml").write_text(recipe.replace("reload_period: 2s", "reload_period: 0.3s"))
    wb = Wirebeat("-i", dev, "-c", str(tmp_path / "wirebeat.yml"), "--console",
                  "-E", "wirebeat.flows.enabled=false", prefix=netns.exec(netns.a))
    try:
        wb.wait_for_log("capturing")
        netns.ping(peer, count=3)
        wait_until(lambda: sum(d["network"].get("transport") == "icmp" for d in _packets(wb)) >= 3,
                   20, "Alice's three echo requests")
        new = tmp_path / "employees.new"
        new.write_text("key,name,department,watch_flag\ne1,Alice Martin,Finance,NO\ne2,Bob Chen,Sales,YES\n")
        edited_at = time.time()
        os.replace(new, tmp_path / "employees.csv")
        # the table is looked at when documents pass (at most every 0.3 s): keep traffic going
        wait_until(lambda: netns.ping(peer, count=1) or "lookup table reloaded" in wb.stderr_text(),
                   20, "the reload")
        reloaded_at = time.time()
        netns.ping(peer, count=3)
        wait_until(lambda: sum(d["network"].get("transport") == "icmp" and d["source"]["ip"] == peer
                               and _epoch(d["@timestamp"]) > reloaded_at for d in _packets(wb)) >= 3,
                   20, "Bob's three echo replies")
        code, _ = wb.stop()
    finally:
        wb.kill()
    assert code == 0, wb.stderr_text()
    docs = wb.documents()       # per-packet documents, and the watched machine's transactions
    assert {d["event"]["dataset"] for d in docs} == {"packet", "icmp"}
    assert {(d["source"]["mac"], d["employee"]["name"]) for d in docs} <= {
        (mac_a.upper().replace(":", "-"), "Alice Martin"), (mac_b.upper().replace(":", "-"), "Bob Chen")}
    packets = [d for d in docs if d["event"]["dataset"] == "packet"]
    before = [d for d in packets if _epoch(d["@timestamp"]) < edited_at]
    after = [d for d in packets if _epoch(d["@timestamp"]) > reloaded_at]
    assert before and {d["employee"]["name"] for d in before} == {"Alice Martin"}
    assert after and {d["employee"]["name"] for d in after} == {"Bob Chen"}
    icmp_before = [d for d in before if d["network"].get("transport") == "icmp"]
    assert len(icmp_before) == 3 and {(d["source"]["ip"], d["destination"]["ip"]) for d in icmp_before} == {(mine, peer)}
