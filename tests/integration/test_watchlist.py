"""The watch-list recipe end to end: examples/watchlist/ on a real capture, and live reloading.

pcaps/watchlist/office.pcap was recorded from real programs (DHCP, DNS, HTTP,
ping and ARP of three hosts and a server on one bridge; make_captures.sh).
tshark is the oracle for which frames the watched machine sent. The live
test replays the capture through the osmo-pcap ZeroMQ format over real
sockets, switches the watch list from Alice to Bob while frames flow, and
checks that the output is exactly Alice's frames up to one point and Bob's
from there on: nothing lost, nothing mixed around the reload.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import PCAPS, ROOT, run_wirebeat
from osmo_publisher import Client, Publisher
from running import Wirebeat, wait_until

CAPTURE = PCAPS / "watchlist" / "office.pcap"
EXAMPLE = ROOT / "examples" / "watchlist"
ALICE, BOB = "02:00:00:77:00:0a", "02:00:00:77:00:0b"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _frames(path: Path) -> list[tuple[int, bytes]]:
    """(timestamp in us, frame) of a little-endian microsecond pcap, read here independently."""
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack_from("<IIII", data, pos)
        out.append((sec * 1_000_000 + usec, data[pos + 16:pos + 16 + incl]))
        pos += 16 + incl
    return out


def test_only_the_watched_machines_frames_survive_with_the_employee(tmp_path: Path):
    proc = run_wirebeat("run", "-E", "wirebeat.flows.enabled=false", "-c", str(EXAMPLE / "wirebeat.yml"), "-I", str(CAPTURE), "--console")
    assert proc.returncode == 0, proc.stderr.decode()
    everything = [json.loads(line) for line in proc.stdout.splitlines()]
    docs = [d for d in everything if d["event"]["dataset"] == "packet"]
    # transactions carry their conversation's MACs: alice's own survive the recipe too
    assert sorted(d["event"]["dataset"] for d in everything if d not in docs) == [
        "dhcpv4", "dhcpv4", "dns", "http", "icmp", "icmp"]
    out = subprocess.run(["tshark", "-n", "-r", str(CAPTURE), "-T", "fields", "-e", "frame.time_epoch",
                          "-e", "eth.src", "-e", "frame.protocols"],
                         capture_output=True, check=True, text=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    alices = [(round(float(t) * 1e6), p.removeprefix("frame:")) for t, src, p in rows if src == ALICE]
    # the scenario: Alice's machine did DHCP, DNS, HTTP, ping and ARP
    assert {p.split(":")[-1] for _, p in alices} >= {"dhcp", "dns", "http", "data", "arp"}
    assert sorted((round(_epoch(d["@timestamp"]) * 1e6), d["network"]["protocol_stack"]) for d in docs) \
        == sorted((t, p if p.endswith(("arp", "dhcp", "dns")) else ":".join(p.split(":")[:4]))
                  for t, p in alices)
    for doc in everything:
        assert doc["employee"]["name"] == "Alice Martin" and doc["computer"]["hostname"] == "ws-alice"
        assert doc["source"]["mac"] == "02-00-00-77-00-0A"


def test_a_bad_condition_is_exit_2_naming_the_key(tmp_path: Path):
    config = tmp_path / "bad.yml"
    config.write_text("processors:\n  - add_tags: {tags: [x]}\n  - drop_event:\n      when:\n"
                      "        range: {network.bytes: 100}\n")
    proc = run_wirebeat("test", "config", "-c", str(config))
    assert proc.returncode == 2
    [line] = proc.stderr.decode().strip().splitlines()
    assert line.startswith("wirebeat: config key 'processors[1].drop_event.when.range.network.bytes': "
                           "expected a field name followed by .gt")


def test_a_missing_table_is_exit_2(tmp_path: Path):
    config = tmp_path / "wl.yml"
    config.write_text("processors:\n  - lookup: {field: source.mac, table: nope.csv, key: k, target: t}\n")
    proc = run_wirebeat("run", "-E", "wirebeat.flows.enabled=false", "-c", str(config), "-I", str(CAPTURE), "--console")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == (f"wirebeat: config key 'processors[0].lookup.table': "
                                            f"{tmp_path / 'nope.csv'}: No such file or directory")


def test_editing_the_table_during_a_zeromq_run_switches_within_seconds_losing_nothing(tmp_path: Path):
    for name in ("computers.csv", "employees.csv"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    config = tmp_path / "wirebeat.yml"
    config.write_text((EXAMPLE / "wirebeat.yml").read_text().replace("reload_period: 2s",
                                                                      "reload_period: 0.3s"))
    capture = _frames(CAPTURE)
    rounds, rate = 40, 400.0                     # 2880 frames, ~7 s
    stream = [frame for _ in range(rounds) for _, frame in capture]
    t0_us = 1_760_000_000_000_000
    sender = {i: frame[6:12].hex(":") for i, frame in enumerate(stream)}
    client = Client("office")
    publisher = Publisher()
    wb = Wirebeat("-E", "wirebeat.flows.enabled=false", "-c", str(config), "--zmq", publisher.endpoint, "--console")
    try:
        publisher.wait_for_subscriber(b"data.")
        edit_at = 1200
        started = time.monotonic()
        for i, frame in enumerate(stream):
            if i == edit_at:
                new = tmp_path / "employees.new"
                new.write_text((tmp_path / "employees.csv").read_text()
                               .replace("Finance,YES", "Finance,NO").replace("Engineering,NO", "Engineering,YES"))
                os.replace(new, tmp_path / "employees.csv")      # the safe way to edit: atomic rename
            publisher.send(client.message((t0_us + i * 1000) * 1000, frame))
            delay = started + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        last_bob = max(i for i, mac in sender.items() if mac == BOB)
        wait_until(lambda: any(round(_epoch(d["@timestamp"]) * 1e6) == t0_us + last_bob * 1000
                               for d in wb.documents()), 30, "Bob's last frame")
        code, _ = wb.stop()
    finally:
        wb.kill()
        publisher.close()
    assert code == 0, wb.stderr_text()
    packets = [d for d in wb.documents() if d["event"]["dataset"] == "packet"]
    kept = sorted((round(_epoch(d["@timestamp"]) * 1e6) - t0_us) // 1000 for d in packets)
    assert len(kept) == len(set(kept))
    # One switch point s: Alice's frames before it, Bob's from it on, every one of them.
    alice = [i for i in range(len(stream)) if sender[i] == ALICE]
    bob = [i for i in range(len(stream)) if sender[i] == BOB]
    switches = [s for s in range(len(stream) + 1)
                if kept == sorted([i for i in alice if i < s] + [i for i in bob if i >= s])]
    assert switches, (len(kept), wb.summary())
    switch = switches[0]
    # the reload came after the edit, and within seconds of it (0.3 s checks, 1 s settle)
    assert edit_at < switch < edit_at + 4 * rate
    names = {d["employee"]["name"] for d in wb.documents()}
    assert names == {"Alice Martin", "Bob Chen"}
    assert '"lookup table reloaded"' in wb.stderr_text() or "lookup table reloaded" in wb.stderr_text()


@pytest.mark.elasticsearch
def test_the_watch_list_in_elasticsearch_is_searchable_by_employee_and_stack_without_duplicates(es_url):
    import uuid
    from elasticsearch import Elasticsearch
    index = f"watchlists-{uuid.uuid4().hex[:8]}"
    es = Elasticsearch(es_url)
    try:
        for _ in range(2):      # indexed twice: per-packet ids are stable, no duplicates
            proc = run_wirebeat("run", "-E", "wirebeat.flows.enabled=false", "-c", str(EXAMPLE / "wirebeat.yml"), "-I", str(CAPTURE),
                                "-E", f"output.elasticsearch.hosts=[{es_url}]",
                                "-E", f"output.elasticsearch.index={index}")
            assert proc.returncode == 0, proc.stderr.decode()
        es.indices.refresh(index=index)
        mapping = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert mapping["employee"]["type"] == "flattened"
        assert mapping["network"]["properties"]["protocol_stack"]["type"] == "keyword"
        # alice's 13 frames and her 6 transactions (DHCP x2, DNS, HTTP, ping x2)
        assert es.count(index=index, query={"term": {"employee.name": "Alice Martin"}})["count"] == 19
        assert es.count(index=index, query={"term": {"event.dataset": "packet"}})["count"] == 13
        assert es.count(index=index, query={"term": {"network.protocol_stack": "eth:ethertype:arp"}}
                        )["count"] == 1
        assert es.count(index=index, query={"term": {"source.mac": "02-00-00-77-00-0A"}})["count"] == 19
    finally:
        es.options(ignore_status=404).indices.delete(index=index)
        es.options(ignore_status=404).indices.delete_index_template(name=index)


def test_lookup_and_conditions_apply_to_transactions_too(tmp_path: Path):
    (tmp_path / "zones.yml").write_text("- {net: 10.77.0.0/24, zone: office}\n- {net: 10.77.0.1/32, zone: servers}\n")
    config = tmp_path / "zones.yml.conf.yml"
    config.write_text(
        "processors:\n"
        "  - lookup: {field: destination.ip, table: zones.yml, key: net, match: network, target: dst_zone}\n"
        "  - drop_event: {when: {not: {equals: {dst_zone.zone: servers}}}}\n"
        "  - add_tags: {tags: [to-server], when: {has_fields: [dst_zone]}}\n")
    proc = run_wirebeat("run", "-E", "wirebeat.flows.enabled=false", "-c", str(config), "-I", str(CAPTURE), "--console")
    assert proc.returncode == 0, proc.stderr.decode()
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    # every host's DNS query, HTTP fetch and ping went to the server 10.77.0.1 (README.md)
    datasets = sorted(d["event"]["dataset"] for d in docs)
    assert datasets.count("dns") == datasets.count("http") == 3
    assert datasets.count("icmp") == 6
    assert all(d["destination"]["ip"] == "10.77.0.1" and d["tags"] == ["to-server"] for d in docs)


def _conversation_macs(path: Path) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """tshark's (sender IP, receiver IP) -> {(source MAC, destination MAC)} of its frames, ECS spelling."""
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "ip", "-T", "fields", "-e", "ip.src",
                          "-e", "ip.dst", "-e", "eth.src", "-e", "eth.dst"],
                         capture_output=True, check=True, text=True).stdout
    macs: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for line in out.splitlines():
        src, dst, smac, dmac = line.split("\t")
        macs.setdefault((src, dst), set()).add((smac.replace(":", "-").upper(),
                                                dmac.replace(":", "-").upper()))
    return macs


def test_transactions_carry_the_macs_tshark_sees_on_their_conversation():
    proc = run_wirebeat("run", "-E", "wirebeat.flows.enabled=false", "-I", str(CAPTURE), "--console")
    assert proc.returncode == 0, proc.stderr.decode()
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    conversations = _conversation_macs(CAPTURE)
    assert {d["event"]["dataset"] for d in docs} == {"dhcpv4", "dns", "http", "icmp"}
    for doc in docs:
        src, dst = doc["source"], doc["destination"]
        seen = conversations.get((src["ip"], dst["ip"]), set()) | {
            (b, a) for a, b in conversations.get((dst["ip"], src["ip"]), set())}
        assert (src["mac"], dst["mac"]) in seen, (doc["event"]["dataset"], src, dst, seen)
        assert doc["client"]["mac"] == src["mac"] and doc["server"]["mac"] == dst["mac"]


def test_the_recipe_without_per_packet_documents_keeps_the_watched_machines_transactions():
    proc = run_wirebeat("run", "-E", "wirebeat.flows.enabled=false", "-E", "wirebeat.packets.enabled=false",
                        "-c", str(EXAMPLE / "wirebeat.yml"), "-I", str(CAPTURE), "--console")
    assert proc.returncode == 0, proc.stderr.decode()
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    # pcaps/watchlist/README.md: alice did DHCP (DISCOVER, REQUEST), one dig, one curl, two pings
    assert sorted(d["event"]["dataset"] for d in docs) == ["dhcpv4", "dhcpv4", "dns", "http", "icmp", "icmp"]
    for doc in docs:
        assert doc["employee"]["name"] == "Alice Martin" and doc["source"]["mac"] == "02-00-00-77-00-0A"


def test_a_full_mac_pair_table_forgets_the_oldest_and_counts_it():
    proc = run_wirebeat("run", "-E", "wirebeat.flows.enabled=false", "-E", "wirebeat.limits.max_mac_pairs=1",
                        "-I", str(CAPTURE), "--console")
    assert proc.returncode == 0, proc.stderr.decode()
    [summary] = [json.loads(line) for line in proc.stderr.decode().splitlines()
                 if line.startswith("{") and '"event": "summary"' in line]
    # 7 address pairs send IP frames in each direction (tshark); one slot keeps one of them
    pairs = len(_conversation_macs(CAPTURE))
    assert summary["macs.pairs_evicted"] >= pairs - 1
    conversations = _conversation_macs(CAPTURE)
    for doc in map(json.loads, proc.stdout.splitlines()):    # forgotten pairs: no MACs, never wrong ones
        src, dst = doc["source"], doc["destination"]
        if "mac" in src:
            assert (src["mac"], dst["mac"]) in conversations.get((src["ip"], dst["ip"]), set()) | {
                (b, a) for a, b in conversations.get((dst["ip"], src["ip"]), set())}
