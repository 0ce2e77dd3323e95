"""Final flow reports of every bundled capture against tshark's conversation tables.

tshark (`-q -z conv,tcp -z conv,udp`) is the independent oracle for which
TCP/UDP conversations a capture holds and how many frames each side sent.
Its byte columns round to kB above 10 kB, so exact bytes per direction come
from tshark too, summing `frame.len` per TCP/UDP endpoint pair (ICMP errors,
which quote a UDP or TCP header, are left out there as in the tables).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import uuid

import pytest
from elasticsearch import Elasticsearch

from conftest import PCAPS, decode_file

# Tunneled captures are left out: tshark tables the outer UDP/GRE conversation
# and the inner ones alike, where a flow is the inner conversation keyed by both.
# pcaps/dedup/*_any.pcap hold every packet twice: tshark counts both copies, flows
# one (dedup); tests/integration/test_dedup_captures.py compares them with dedup off.
CAPTURES = sorted(p for p in PCAPS.rglob("*") if p.suffix in (".pcap", ".pcapng")
                  and p.parent.name != "tunnels" and not p.name.endswith("_any.pcap"))
# "10.0.0.1:5060   <-> 10.0.0.2:5060   3 1383 bytes   3 1433 bytes   6 2816 bytes ..."
_ROW = re.compile(r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\S+)")

Endpoint = tuple[str, int]
Conversations = dict[tuple[str, frozenset], dict[Endpoint, list[int]]]


def _tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is not installed (scripts/install-deps.sh installs it)")
        pytest.skip("tshark is not installed")
    return path


def _empty() -> Conversations:
    return defaultdict(lambda: defaultdict(lambda: [0, 0]))


def tshark_rows(path: Path) -> list[tuple[str, Endpoint, Endpoint, int, int]]:
    """tshark's conversation rows: (transport, A, B, frames B -> A, frames A -> B).

    A is the side whose packet tshark saw first."""
    tables = subprocess.run([_tshark(), "-n", "-q", "-r", str(path), "-z", "conv,tcp",
                             "-z", "conv,udp"], capture_output=True, text=True, check=True).stdout
    rows = []
    transport = ""
    for line in tables.splitlines():
        if line.startswith(("TCP Conversations", "UDP Conversations")):
            transport = line[:3].lower()
        row = _ROW.match(line)
        if row is not None:
            rows.append((transport, (row.group(1), int(row.group(2))),
                         (row.group(3), int(row.group(4))), int(row.group(5)), int(row.group(8))))
    return rows


def tshark_conversations(path: Path) -> Conversations:
    """{(transport, {a, b}): {sender: [frames, bytes]}} from tshark alone."""
    tshark = _tshark()
    out = _empty()
    for transport, a, b, frames_to_a, frames_to_b in tshark_rows(path):
        sides = out[(transport, frozenset((a, b)))]
        sides[b][0] += frames_to_a
        sides[a][0] += frames_to_b
    fields = subprocess.run(
        [tshark, "-n", "-r", str(path), "-Y", "(tcp or udp) and not icmp and not icmpv6",
         "-T", "fields", "-E", "separator=,", "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst",
         "-e", "ipv6.dst", "-e", "tcp.srcport", "-e", "udp.srcport", "-e", "tcp.dstport",
         "-e", "udp.dstport", "-e", "frame.len"],
        capture_output=True, text=True, check=True).stdout
    for line in fields.splitlines():
        src4, src6, dst4, dst6, tsport, usport, tdport, udport, length = line.split(",")
        transport = "tcp" if tsport else "udp"
        src = (src4 or src6, int(tsport or usport))
        dst = (dst4 or dst6, int(tdport or udport))
        out[(transport, frozenset((src, dst)))][src][1] += int(length)
    return out


def wirebeat_conversations(path: Path, *overrides: str) -> Conversations:
    """The same shape from wirebeat's final flow reports (TCP and UDP)."""
    out = _empty()
    for doc in decode_file(path, *overrides, flows=True):
        if (doc["type"] != "flow" or not doc["flow"]["final"]
                or doc["network"]["transport"] not in ("tcp", "udp")):
            continue        # periodic reports repeat what the final one totals
        src = (doc["source"]["ip"], doc["source"]["port"])
        dst = (doc["destination"]["ip"], doc["destination"]["port"])
        sides = out[(doc["network"]["transport"], frozenset((src, dst)))]
        for endpoint, side in ((src, doc["source"]), (dst, doc["destination"])):
            sides[endpoint][0] += side["packets"]
            sides[endpoint][1] += side["bytes"]
    return out


def _plain(conversations: Conversations) -> dict:
    return {key: {ep: tuple(v) for ep, v in sides.items() if v != [0, 0]}
            for key, sides in conversations.items()}


@pytest.mark.parametrize("capture", CAPTURES, ids=[str(p.relative_to(PCAPS)) for p in CAPTURES])
def test_final_flow_reports_match_tsharks_conversations(capture: Path):
    expected = _plain(tshark_conversations(capture))
    assert expected, "tshark sees no TCP/UDP conversation: the check would be empty"
    # These hold identical packets a few ms apart that dedup takes as copies; tshark counts them.
    repeated = capture.name in ("reorder_duplicate.pcap", "short_streams.pcap")
    overrides = ["wirebeat.dedup.enabled=false"] if repeated else []
    assert _plain(wirebeat_conversations(capture, *overrides)) == expected


def test_the_oracle_parses_tshark_rows_with_both_units():
    row = _ROW.match("2001:db8::a:40002          <-> 2001:db8::b:50002"
                     "                0 0 bytes       970 149 kB        970 149 kB   0.1  19.9")
    assert row and (row.group(1), row.group(2), row.group(5), row.group(8)) == (
        "2001:db8::a", "40002", "0", "970")


# Captures between several addresses, with one tshark row per endpoint pair.
ES_CAPTURES = [PCAPS / "http" / "keepalive.pcap", PCAPS / "dns" / "unanswered.pcap",
               PCAPS / "dhcpv4" / "dora_nak_release.pcap", PCAPS / "icmp" / "ping.pcap",
               PCAPS / "rtp" / "not_rtp.pcap", PCAPS / "rtp" / "jitter.pcap"]


@pytest.mark.elasticsearch
def test_flows_in_elasticsearch_sum_to_tsharks_bytes_per_source_ip(es_url, wirebeat):
    """terms on source.ip with a sum of network.bytes over final TCP/UDP flow reports."""
    expected: dict[str, int] = defaultdict(int)
    for capture in ES_CAPTURES:
        exact = tshark_conversations(capture)
        for transport, a, b, _, _ in tshark_rows(capture):
            sides = exact.pop((transport, frozenset((a, b))), None)   # a row per pair
            if sides is not None:
                expected[a[0]] += sum(side[1] for side in sides.values())
    assert len(expected) >= 2
    index = f"flows-test-{uuid.uuid4().hex[:8]}"
    inputs = [arg for capture in ES_CAPTURES for arg in ("-I", str(capture))]
    proc = wirebeat("run", *inputs, "-E", f"output.elasticsearch.hosts=[{es_url}]",
                    "-E", f"output.elasticsearch.index={index}")
    assert proc.returncode == 0, proc.stderr.decode()
    es = Elasticsearch(es_url)
    try:
        es.indices.refresh(index=index)
        result = es.search(index=index, size=0, query={"bool": {"filter": [
            {"term": {"type": "flow"}}, {"term": {"flow.final": True}},
            {"terms": {"network.transport": ["tcp", "udp"]}}]}},
            aggs={"by_source": {"terms": {"field": "source.ip", "size": 100},
                                "aggs": {"bytes": {"sum": {"field": "network.bytes"}}}}})
        got = {bucket["key"]: int(bucket["bytes"]["value"])
               for bucket in result["aggregations"]["by_source"]["buckets"]}
        assert got == dict(expected)
        # The aliases packetbeat's dashboards still use resolve to the same fields.
        assert es.count(index=index, query={"term": {"final": True}})["count"] == es.count(
            index=index, query={"term": {"flow.final": True}})["count"] > 0
        sums = es.search(index=index, size=0, query={"term": {"type": "flow"}}, aggs={
            name.replace(".", "_"): {"sum": {"field": name}} for name in (
                "source.bytes", "source.stats.net_bytes_total",
                "destination.packets", "dest.stats.net_packets_total")})["aggregations"]
        assert sums["source_bytes"]["value"] == sums["source_stats_net_bytes_total"]["value"] > 0
        assert (sums["destination_packets"]["value"]
                == sums["dest_stats_net_packets_total"]["value"] > 0)
    finally:
        es.indices.delete(index=index)
