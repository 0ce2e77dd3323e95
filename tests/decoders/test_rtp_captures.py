"""The generated RTP captures (pcaps/rtp/make_captures.py) decode to their hand-computed values.

Each capture's ground truth is written in the generator and in pcaps/rtp/README.md;
the values here are derived from those choices by hand (closed forms) or by the
textbook RFC 3550 estimate over the chosen arrival pattern, never by the decoder.
Runs the real command line (`wirebeat run -I ... --console --strict`).
"""
from __future__ import annotations

import functools
import random

import pytest

from conftest import PCAPS, decode_file
from rtp_oracle import rfc3550_jitter

RTP = PCAPS / "rtp"
HEURISTIC = "wirebeat.protocols.rtp.heuristic=true"


@functools.cache
def docs(name: str, *overrides: str) -> list[dict]:
    return decode_file(RTP / name, *overrides)


def finals(name: str, *overrides: str) -> dict[int, dict]:
    """Final reports by SSRC."""
    out = {}
    for d in docs(name, *overrides):
        if d["type"] == "rtp" and d["rtp"]["final"]:
            assert d["rtp"]["ssrc"] not in out
            out[d["rtp"]["ssrc"]] = d
    return out


def test_jitter_one_late_packet_gives_the_closed_form_values():
    r = finals("jitter.pcap", HEURISTIC)[0x11111111]["rtp"]
    assert (r["packets"], r["expected"], r["lost"], r["codec"], r["clock_rate"]) == \
        (300, 300, 0, "PCMU", 8000)
    # 16 ms late: J = 16/16 = 1 ms, then 1 + (16 - 1)/16 = 1.9375 ms, then x 15/16 per packet.
    assert r["jitter"]["max_ms"] == 1.9375
    assert r["jitter"]["mean_ms"] == pytest.approx((1 + 31 * (1 - (15 / 16) ** 199)) / 299, abs=1e-4)
    assert r["delta"] == {"max_ms": 36.0, "mean_ms": 20.0}
    assert r["setup"] == "heuristic"


def test_jitter_repeating_arrival_pattern_matches_the_rfc_3550_estimate():
    r = finals("jitter.pcap", HEURISTIC)[0x22222222]["rtp"]
    arrivals = [7 + 20 * i + (0, 3, 1, 5, 2)[i % 5] for i in range(300)]
    estimates = rfc3550_jitter(arrivals, [123456 + 160 * i for i in range(300)], 8000)
    assert r["jitter"]["max_ms"] == pytest.approx(max(estimates), abs=1e-4)
    assert r["jitter"]["mean_ms"] == pytest.approx(sum(estimates) / 299, abs=1e-4)
    assert r["delta"]["max_ms"] == 24.0              # 20 + 5 - 1
    assert r["delta"]["mean_ms"] == pytest.approx((arrivals[-1] - arrivals[0]) / 299, abs=1e-4)


def test_three_percent_random_loss_at_48_khz_over_ipv6_with_sdp():
    found = finals("loss_opus48k_ipv6.pcap")
    dropped = sorted(random.Random(3).sample(range(1, 999), 30))
    runs, longest, length = 0, 0, 0
    for i, n in enumerate(dropped):
        length = 1 if i == 0 or dropped[i - 1] != n - 1 else length + 1
        runs += length == 1
        longest = max(longest, length)
    caller = found[0x0A0A0A0A]
    r = caller["rtp"]
    assert (r["packets"], r["expected"], r["lost"], r["loss_pct"]) == (970, 1000, 30, 3.0)
    assert r["sequence_errors"] == runs
    assert r["delta"]["max_ms"] == 20.0 * (longest + 1)
    assert (r["codec"], r["clock_rate"], r["payload_type"], r["setup"]) == ("opus", 48000, 111, "sdp")
    assert r["jitter"]["max_ms"] == 0.0
    assert caller["sip"]["call_id"] == "loss-3pct@wirebeat.test"
    assert caller["source"]["ip"] == "2001:db8::a" and caller["network"]["type"] == "ipv6"
    assert r["end_reason"] == "sip_bye"
    back = found[0x0B0B0B0B]["rtp"]
    arrivals = [105 + 20 * i + (0, 1, 0, 2)[i % 4] for i in range(1000)]
    estimates = rfc3550_jitter(arrivals, [5000 + 960 * i for i in range(1000)], 48000)
    assert back["packets"] == 1000 and back["lost"] == 0
    assert back["jitter"]["max_ms"] == pytest.approx(max(estimates), abs=1e-4)
    assert back["jitter"]["mean_ms"] == pytest.approx(sum(estimates) / 999, abs=1e-4)
    assert len([d for d in docs("loss_opus48k_ipv6.pcap") if d["type"] == "sip"]) == 6


def test_reordering_and_a_duplicate_are_counted_apart_from_loss():
    # 350 is duplicated by the network: with dedup on (the default) it is seen once.
    r = finals("reorder_duplicate.pcap", HEURISTIC, "wirebeat.dedup.enabled=false")[0x33333333]["rtp"]
    # Arrival order: swaps 100/101 and 250/251, 300 after 303, 350 twice.
    assert (r["packets"], r["expected"], r["lost"]) == (401, 400, -1)
    assert (r["reordered"], r["duplicates"], r["restarts"]) == (3, 1, 0)
    assert r["sequence_errors"] == 7          # 2 per swap, 2 for the late 300, 1 repeat
    order = list(range(400))
    order[100], order[101] = 101, 100
    order[250], order[251] = 251, 250
    order[300:304] = [301, 302, 303, 300]
    order.insert(order.index(350) + 1, 350)
    estimates = rfc3550_jitter([20.0 * slot for slot in range(401)],
                               [0x12345678 + 160 * i for i in order], 8000)
    assert r["jitter"]["max_ms"] == pytest.approx(max(estimates), abs=1e-4)
    assert r["delta"]["max_ms"] == 20.0


def test_sequence_and_timestamp_wraparound_with_two_losses_at_the_wrap():
    r = finals("wraparound.pcap", HEURISTIC)[0x44444444]["rtp"]
    assert (r["packets"], r["expected"], r["lost"], r["sequence_errors"]) == (998, 1000, 2, 1)
    assert r["delta"]["max_ms"] == 60.0 and r["jitter"]["max_ms"] == 0.0


def test_an_ssrc_change_gives_two_streams_on_one_5_tuple():
    found = finals("ssrc_change.pcap", HEURISTIC)
    assert {ssrc: (d["rtp"]["packets"], d["rtp"]["lost"], d["rtp"]["ssrc_changes"])
            for ssrc, d in found.items()} == {0xAAAA0001: (300, 0, 1), 0xBBBB0002: (200, 0, 1)}
    assert {d["source"]["port"] for d in found.values()} == {43000}


def test_a_sender_restart_is_not_loss():
    r = finals("restart.pcap", HEURISTIC)[0x55555555]["rtp"]
    assert (r["packets"], r["expected"], r["lost"], r["restarts"]) == (400, 400, 0, 1)


def test_rtcp_reports_round_trip_and_bye_are_attached_to_the_stream():
    found = finals("rtcp_call.pcap")
    caller = found[0xC0C0C0C0]
    assert caller["rtcp"] == {"sender_reports": 5, "receiver_reports": 4, "sender_packets": 1250,
                              "sender_octets": 200000, "fraction_lost": 12 / 256,
                              "cumulative_lost": 3, "cname": "alice@10.6.0.1", "jitter_ms": 5.0,
                              "rtt_ms": 50.0, "max_rtt_ms": 50.0, "bye": True}
    assert caller["rtp"]["end_reason"] == "rtcp_bye"
    callee = found[0xD0D0D0D0]
    assert callee["rtcp"]["cname"] == "bob@10.6.0.2" and callee["rtp"]["end_reason"] == "sip_bye"
    assert {d["sip"]["call_id"] for d in found.values()} == {"rtcp-call@wirebeat.test"}


def test_interval_reports_every_10_s_tile_the_25_s_streams():
    for ssrc in (0xC0C0C0C0, 0xD0D0D0D0):
        reports = [d for d in docs("rtcp_call.pcap")
                   if d["type"] == "rtp" and d["rtp"]["ssrc"] == ssrc]
        assert [d["rtp"]["packets"] for d in reports] == [500, 500, 250, 1250]
        assert [d["rtp"]["final"] for d in reports] == [False, False, False, True]
        assert [d["event"]["duration"] for d in reports[:2]] == [9_980_000_000] * 2
        assert reports[-1]["event"]["type"] == ["connection", "end"]
    assert len({d["rtp"]["ssrc"] for d in docs("rtcp_call.pcap", "wirebeat.protocols.rtp.report_interval=0")
                if d["type"] == "rtp"}) == 2
    assert len([d for d in docs("rtcp_call.pcap", "wirebeat.protocols.rtp.report_interval=0")
                if d["type"] == "rtp"]) == 2


def test_dns_quic_dtls_stun_and_short_datagrams_are_not_taken_for_rtp():
    assert [d for d in docs("not_rtp.pcap", HEURISTIC) if d["type"] == "rtp"] == []


def test_without_the_heuristic_unannounced_streams_are_not_decoded():
    assert [d for d in docs("jitter.pcap") if d["type"] == "rtp"] == []


def test_decoding_the_same_capture_twice_gives_the_same_documents():
    first = decode_file(RTP / "rtcp_call.pcap")
    again = decode_file(RTP / "rtcp_call.pcap")
    assert first == again
    assert all(d["capture"]["source"] == str(RTP / "rtcp_call.pcap") for d in first)
