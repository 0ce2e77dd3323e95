"""Real duplicated captures (pcaps/dedup/, made by make_captures.sh): `any` against the server's own interface.

Each `*_any.pcap` was recorded on Linux's `any` device of a namespace that
bridges or routes between client and server, at the same time as
`*_server.pcap` on the server's interface: the same traffic, every packet
twice in the first and once in the second. tshark is the oracle for the frame
counts and for the conversations; the server capture is the ground truth for
what wirebeat must make of the `any` one.
"""
from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import PCAPS, decode_file, run_wirebeat
from test_flows_tshark import _plain, _tshark, tshark_conversations, wirebeat_conversations

DEDUP = PCAPS / "dedup"
MODES = ["bridged", "routed"]


def frames(path: Path) -> int:
    out = subprocess.run([_tshark(), "-n", "-r", str(path), "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.split())


def transactions(path: Path, *overrides: str) -> Counter:
    out = Counter()
    for d in decode_file(path, *overrides):
        out[(d["type"], d["status"], d.get("method"), d.get("query"),
             d.get("http", {}).get("response", {}).get("status_code"),
             d.get("dns", {}).get("response_code"))] += 1
    return out


def summary(path: Path, *overrides: str) -> dict:
    extra = [a for o in overrides for a in ("-E", o)]
    proc = run_wirebeat("run", "-I", str(path), "--console", "--strict", *extra)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(line) for line in proc.stderr.decode().splitlines() if line.startswith("{")]
    return next(line for line in lines if line.get("event") == "summary")


@pytest.mark.parametrize("mode", MODES)
def test_the_any_capture_holds_every_packet_twice(mode):
    assert frames(DEDUP / f"{mode}_any.pcap") == 2 * frames(DEDUP / f"{mode}_server.pcap") > 50


@pytest.mark.parametrize("mode", MODES)
def test_one_copy_of_each_packet_is_dropped(mode):
    counters = summary(DEDUP / f"{mode}_any.pcap")
    assert counters["dedup.dropped"] == frames(DEDUP / f"{mode}_server.pcap")
    assert "dedup.dropped" not in summary(DEDUP / f"{mode}_server.pcap")


@pytest.mark.parametrize("mode", MODES)
def test_transactions_equal_the_single_copy_capture(mode):
    expected = transactions(DEDUP / f"{mode}_server.pcap")
    assert sum(expected.values()) == 13       # 5 GETs, 7 DNS lookups, the NXDOMAIN; see README.md
    assert transactions(DEDUP / f"{mode}_any.pcap") == expected
    # Without dedup the second copies of DNS answers are answers to nothing.
    phantom = transactions(DEDUP / f"{mode}_any.pcap", "wirebeat.dedup.enabled=false")
    assert phantom != expected
    assert sum(n for t, n in phantom.items() if t[0] == "dns" and t[1] == "Error") > 7


def _packets(conversations) -> dict:
    return {key: {ep: counts[0] for ep, counts in sides.items()} for key, sides in conversations.items()}


@pytest.mark.parametrize("mode", MODES)
def test_flows_count_each_packet_once_and_tsharks_tables_with_dedup_off(mode):
    any_capture = DEDUP / f"{mode}_any.pcap"
    # Packets per direction: the `any` capture with dedup, as tshark counts the server's capture.
    assert _packets(_plain(wirebeat_conversations(any_capture))) == \
        _packets(_plain(tshark_conversations(DEDUP / f"{mode}_server.pcap")))
    # With dedup off, flows count every copy, as tshark's conversation tables do.
    assert _plain(wirebeat_conversations(any_capture, "wirebeat.dedup.enabled=false")) == \
        _plain(tshark_conversations(any_capture))
