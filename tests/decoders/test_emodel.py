"""The E-model estimate (ITU-T G.107, codec values from G.113 Appendix I).

Expected numbers are worked by hand from the Recommendations' formulas and
tables (shown in the comments), not taken from a run.
"""
from __future__ import annotations

import pytest

from conftest import PCAPS, decode_file
from wirebeat.decoders.emodel import delay_impairment, estimate, mos_from_r


def test_a_perfect_g711_call_scores_the_g107_default_rating() -> None:
    q = estimate("PCMU", expected=1000, lost=0, discarded=0, one_way_delay_ms=60.0)
    # G.107 §7.6: all defaults give R = 93.2; Annex B: MOS = 1 + 0.035R + R(R-60)(100-R)7e-6 = 4.41.
    assert (q.r_factor, q.mos, q.codec_basis) == (93.2, 4.41, "g113")


def test_mos_from_r_follows_annex_b_at_its_edges() -> None:
    assert mos_from_r(-5) == 1.0 and mos_from_r(0) == 1.0 and mos_from_r(100) == 4.5
    # R = 50: 1 + 1.75 + 50 * -10 * 50 * 7e-6 = 2.575
    assert mos_from_r(50) == pytest.approx(2.575)


def test_g729_with_two_percent_loss() -> None:
    # Ie,eff = 11 + (95 - 11) * 2 / (2 + 19) = 19; R = 93.2 - 19 = 74.2
    q = estimate("G729", expected=100, lost=2, discarded=0, one_way_delay_ms=0.0)
    assert q.r_factor == pytest.approx(74.2) and q.effective_loss_pct == 2.0
    # MOS = 1 + 2.597 + 74.2 * 14.2 * 25.8 * 7e-6 = 3.7873
    assert q.mos == pytest.approx(3.79)


def test_discards_count_as_loss_and_delay_past_100_ms_costs() -> None:
    # G.711: Ppl 1 % (5 lost + 5 discarded of 1000): Ie,eff = 95 * 1 / 26.1 = 3.64
    # Ta 200 ms: X = 1, Idd = 25 * (2^(1/6) - 3 * (1 + 3^-6)^(1/6) + 2) = 3.04
    q = estimate("PCMA", expected=1000, lost=5, discarded=5, one_way_delay_ms=200.0)
    assert q.delay_impairment == pytest.approx(3.04, abs=0.01)
    assert q.r_factor == pytest.approx(93.2 - 3.04 - 3.64, abs=0.02)
    assert delay_impairment(100.0) == 0.0


def test_a_codec_g113_does_not_table_is_scored_as_g711_and_says_so() -> None:
    q = estimate("opus", expected=100, lost=0, discarded=0, one_way_delay_ms=0.0)
    assert q.codec_basis == "assumed_g711" and q.codec_impairment == 0.0


def test_stream_reports_carry_the_estimate_and_its_inputs() -> None:
    docs = [d for d in decode_file(PCAPS / "rtp" / "loss_opus48k_ipv6.pcap")
            if d["type"] == "rtp" and d["rtp"]["final"]]
    lossy = next(d["rtp"] for d in docs if d["rtp"]["lost"] == 30)
    q = lossy["quality"]
    # 30 of 1000 lost (README): Ppl 3, opus not in G.113: Ie 0, Bpl 25.1;
    # Ie,eff = 95 * 3 / 28.1 = 10.142; no RTCP: Ta = the 60 ms buffer, Idd 0.
    assert q["codec_basis"] == "assumed_g711" and q["effective_loss_pct"] == 3.0
    assert q["delay_source"] == "jitter_buffer_only" and q["one_way_delay_ms"] == 60.0
    assert q["r_factor"] == pytest.approx(93.2 - 10.142, abs=0.01)


def test_rtcp_round_trip_time_enters_the_delay() -> None:
    docs = [d for d in decode_file(PCAPS / "rtp" / "rtcp_call.pcap")
            if d["type"] == "rtp" and d["rtp"]["final"] and "rtt_ms" in d.get("rtcp", {})]
    assert docs
    for d in docs:
        q = d["rtp"]["quality"]
        # README: RTT 50 ms; Ta = 60 ms buffer + 25 ms one way.
        assert q["delay_source"] == "rtcp_rtt" and q["one_way_delay_ms"] == pytest.approx(85.0)


@pytest.mark.parametrize("buffer_ms,discarded", [(10, 1), (60, 0)])
def test_a_packet_later_than_the_jitter_buffer_is_discarded(buffer_ms: int, discarded: int) -> None:
    docs = decode_file(PCAPS / "rtp" / "jitter.pcap", "wirebeat.protocols.rtp.heuristic=true",
                       f"wirebeat.protocols.rtp.jitter_buffer={buffer_ms}ms")
    # README: A -> B packet 100 arrives 16 ms late, every other one on time.
    [a_to_b] = [d["rtp"] for d in docs if d["type"] == "rtp" and d["rtp"]["final"]
                and d["rtp"]["ssrc"] == 0x11111111]
    assert a_to_b["quality"]["discarded"] == discarded


def test_streams_ending_with_the_call_carry_the_calls_worst_stream() -> None:
    docs = [d["rtp"] for d in decode_file(PCAPS / "rtp" / "loss_opus48k_ipv6.pcap")
            if d["type"] == "rtp" and d["rtp"]["final"]]
    assert len(docs) == 2 and {d["end_reason"] for d in docs} == {"sip_bye"}
    lossy = next(d for d in docs if d["lost"] == 30)
    for d in docs:                 # the caller's 3 % loss is the call's worst direction
        assert d["call"] == {"streams": 2, "r_factor": lossy["quality"]["r_factor"],
                             "mos": lossy["quality"]["mos"], "worst_ssrc": lossy["ssrc"]}
    assert lossy["quality"]["mos"] < min(d["quality"]["mos"] for d in docs if d is not lossy)


def test_heuristic_streams_have_no_call() -> None:
    docs = decode_file(PCAPS / "rtp" / "jitter.pcap", "wirebeat.protocols.rtp.heuristic=true")
    assert all("call" not in d["rtp"] for d in docs if d["type"] == "rtp")


def test_the_call_document_gives_the_worst_and_mean_of_its_streams() -> None:
    found = decode_file(PCAPS / "rtp" / "loss_opus48k_ipv6.pcap")
    [call] = [d["rtp"]["call"] for d in found if d["type"] == "rtp.call"]
    # README: one direction loses 30 of 1000, the other none; opus scored as G.711.
    # Worst: Ie,eff = 95 * 3 / 28.1 = 10.1423, R = 83.0577;
    # MOS = 1 + 2.9070 + 83.0577 * 23.0577 * 16.9423 * 7e-6 = 4.1341.
    # Best: R = 93.2, MOS = 1 + 3.262 + 93.2 * 33.2 * 6.8 * 7e-6 = 4.4093.
    assert (call["r_factor"], call["mos"]) == (83.06, 4.13)
    assert call["mean_r_factor"] == pytest.approx((83.06 + 93.2) / 2, abs=0.006)
    assert call["mean_mos"] == pytest.approx((4.13 + 4.41) / 2, abs=0.006)
    assert (call["packets"], call["expected"], call["lost"], call["loss_pct"]) == (1970, 2000, 30, 1.5)
    assert call["max_effective_loss_pct"] == 3.0 and call["codecs"] == ["opus"]
    assert call["max_one_way_delay_ms"] == 60.0
