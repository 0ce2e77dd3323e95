"""ICMP documents of the real ping capture agree with tshark's dissection of it.

pcaps/icmp/ping.pcap was recorded from real ping between two namespaces
(pcaps/icmp/make_captures.sh). tshark is the independent oracle: its echo
pairing and response times (icmp.resptime) must equal our pairs and
event.duration, its unanswered requests our Error documents.
"""
from __future__ import annotations

import subprocess

import pytest

from conftest import PCAPS, decode_file

CAPTURE = PCAPS / "icmp" / "ping.pcap"
FIELDS = ["frame.time_epoch", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "icmp.type", "icmpv6.type",
          "icmp.code", "icmpv6.code", "icmp.seq", "icmpv6.echo.sequence_number",
          "icmp.resptime", "icmpv6.resptime"]


def _tshark_rows() -> list[dict[str, str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(CAPTURE), "-T", "fields", "-E", "separator=|",
                          *[a for f in FIELDS for a in ("-e", f)]],
                         capture_output=True, check=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        values = line.split("|")
        row = dict(zip(FIELDS, values))
        # An ICMP error quotes the offending packet: keep the outer header's values.
        rows.append({k: v.split(",")[0] for k, v in row.items()})
    return rows


def _get(row: dict[str, str], v4: str, v6: str) -> str:
    return row[v4] or row[v6]


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return decode_file(CAPTURE)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return [r for r in _tshark_rows() if r["icmp.type"] or r["icmpv6.type"]]


def test_every_echo_pair_matches_tsharks_pairing_and_response_time(docs, rows):
    expected = set()
    for reply in rows:
        resptime = _get(reply, "icmp.resptime", "icmpv6.resptime")
        if resptime:
            requester = _get(reply, "ip.dst", "ipv6.dst")
            responder = _get(reply, "ip.src", "ipv6.src")
            expected.add((requester, responder, round(float(resptime) * 1e6)))
    ours = {(d["source"]["ip"], d["destination"]["ip"], d["event"]["duration"])
            for d in docs if d.get("icmp", {}).get("response")}
    assert len(expected) == 8          # 4 IPv4 + 4 IPv6, as pcaps/icmp/README.md says
    assert ours == expected
    assert all(d["status"] == "OK" for d in docs if d["icmp"].get("response"))


def test_unanswered_requests_are_errors_with_packetbeats_note(docs, rows):
    answered = {(_get(r, "ip.dst", "ipv6.dst"), _get(r, "ip.src", "ipv6.src"),
                 _get(r, "icmp.seq", "icmpv6.echo.sequence_number"))
                for r in rows if _get(r, "icmp.type", "icmpv6.type") in ("0", "129")}
    unanswered = sorted((_get(r, "ip.src", "ipv6.src"), _get(r, "ip.dst", "ipv6.dst"))
                        for r in rows if _get(r, "icmp.type", "icmpv6.type") in ("8", "128")
                        and (_get(r, "ip.src", "ipv6.src"), _get(r, "ip.dst", "ipv6.dst"),
                             _get(r, "icmp.seq", "icmpv6.echo.sequence_number")) not in answered)
    ours = sorted((d["source"]["ip"], d["destination"]["ip"]) for d in docs
                  if d["icmp"].get("request", {}).get("type") in (8, 128) and "response" not in d["icmp"])
    assert len(unanswered) == 5 and ours == unanswered
    for d in docs:
        if d["icmp"].get("request", {}).get("type") in (8, 128) and "response" not in d["icmp"]:
            assert d["status"] == "Error"
            assert d["error"]["message"] == "Request was received without an associated response."
            assert "duration" not in d["event"]


def test_port_unreachable_messages_are_single_error_documents(docs, rows):
    expected = sorted((_get(r, "ip.src", "ipv6.src"), int(_get(r, "icmp.type", "icmpv6.type")),
                       int(_get(r, "icmp.code", "icmpv6.code")))
                      for r in rows if _get(r, "icmp.type", "icmpv6.type") in ("3", "1"))
    ours = sorted((d["source"]["ip"], d["icmp"]["request"]["type"], d["icmp"]["request"]["code"])
                  for d in docs if d["icmp"].get("request", {}).get("type") in (3, 1))
    assert expected == [("10.99.0.2", 3, 3), ("fd00:99::2", 1, 4)]
    assert ours == expected


def test_documents_carry_the_fields_packetbeat_users_expect(docs):
    for d in docs:
        assert d["type"] == "icmp" and d["event"]["dataset"] == "icmp"
        assert d["event"]["type"] == ["connection"] and d["event"]["kind"] == "event"
        assert d["network"]["transport"] in ("icmp", "ipv6-icmp")
        assert d["network"]["community_id"].startswith("1:")
        assert "protocol" not in d["network"]        # packetbeat sets none for ICMP
        assert d["client"]["ip"] == d["source"]["ip"] and d["server"]["ip"] == d["destination"]["ip"]
        assert "port" not in d["source"]
        assert d["capture"]["source"] == str(CAPTURE)
        assert d["path"] == (d["destination"]["ip"] if "request" in d["icmp"] else d["source"]["ip"])
    assert {d["icmp"]["version"] for d in docs} == {4, 6}
    assert len(docs) == 15
