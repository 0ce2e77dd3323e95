"""Real sipp calls (pcaps/sip/make_captures.sh): SIP documents, and RTP reports linked to
their call by sip.call_id through the SDP the calls carried."""
from __future__ import annotations

import functools

import pytest

from conftest import PCAPS, decode_file

SIP = PCAPS / "sip"
CALLS = ["call_pcmu.pcap", "call_two_codecs.pcap", "call_dtmf.pcap", "call_tcp.pcap"]


@functools.cache
def docs(name: str) -> list[dict]:
    return decode_file(SIP / name)


def sip_docs(name: str) -> list[dict]:
    return [d for d in docs(name) if d["type"] == "sip"]


def rtp_finals(name: str) -> dict[int, dict]:
    return {d["rtp"]["ssrc"]: d for d in docs(name) if d["type"] == "rtp" and d["rtp"]["final"]}


@pytest.mark.parametrize("name", CALLS)
def test_every_call_gives_its_six_messages_and_two_linked_streams(name):
    messages = sip_docs(name)
    assert [d["sip"].get("method") or d["sip"]["code"] for d in messages] == \
        ["INVITE", 180, 200, "ACK", "BYE", 200]
    [call_id] = {d["sip"]["call_id"] for d in messages}
    streams = rtp_finals(name)
    assert len(streams) == 2
    for d in streams.values():
        assert d["sip"]["call_id"] == call_id
        assert (d["rtp"]["packets"], d["rtp"]["lost"], d["rtp"]["setup"]) == (200, 0, "sdp")
        assert d["rtp"]["end_reason"] == "sip_bye"
    # Each party's stream goes to the media port its own SDP did not name.
    assert {(d["source"]["port"], d["destination"]["port"]) for d in streams.values()} == \
        {(20000, 30000), (30000, 20000)}
    assert all(d["status"] == "OK" for d in messages)
    invite = messages[0]
    assert invite["sip"]["sdp"]["connection"]["address"] == "127.0.0.1"
    assert invite["event"]["action"] == "sip-invite" and invite["sip"]["from"]["display_info"] == "Alice"


def test_the_first_call_carries_the_callers_rtcp_sender_report():
    caller = rtp_finals("call_pcmu.pcap")[0x5A5A0001]
    assert caller["rtcp"] == {"sender_reports": 1, "receiver_reports": 0, "sender_packets": 100,
                              "sender_octets": 16000, "cname": "caller@wirebeat.test"}


def test_two_codecs_each_direction_with_its_own_clock_rate():
    streams = rtp_finals("call_two_codecs.pcap")
    assert (streams[0x5A5A0003]["rtp"]["codec"], streams[0x5A5A0003]["rtp"]["clock_rate"]) == \
        ("PCMU", 8000)
    callee = streams[0x5A5A0004]["rtp"]
    assert (callee["codec"], callee["clock_rate"], callee["payload_type"]) == ("opus", 48000, 111)
    assert "jitter" in callee


def test_dtmf_events_are_counted_in_the_callers_stream():
    caller = rtp_finals("call_dtmf.pcap")[0x5A5A0005]["rtp"]
    assert (caller["telephone_events"], caller["payload_types"], caller["codec"]) == \
        (2, [0, 101], "PCMU")
    assert caller["marker_packets"] == 2
    assert rtp_finals("call_dtmf.pcap")[0x5A5A0006]["rtp"]["telephone_events"] == 0


def test_sip_over_tcp_is_framed_and_linked_like_udp():
    messages = sip_docs("call_tcp.pcap")
    assert {d["network"]["transport"] for d in messages} == {"tcp"}
    assert {d["network"]["iana_number"] for d in messages} == {"6"}
    assert {d["sip"]["via"]["original"][0].split()[0] for d in messages} == {"SIP/2.0/TCP"}


def test_register_challenge_and_busy_call():
    messages = sip_docs("register_busy.pcap")
    summary = [(d["sip"].get("method") or d["sip"]["code"], d["status"], d["event"].get("outcome"))
               for d in messages]
    assert summary == [("REGISTER", "OK", None), (401, "Error", "failure"), ("REGISTER", "OK", None),
                       (200, "OK", "success"), ("INVITE", "OK", None), (100, "OK", None),
                       (486, "Error", "failure"), ("ACK", "OK", None)]
    authorized = messages[2]
    assert authorized["sip"]["auth"]["scheme"] == "Digest"
    assert authorized["sip"]["auth"]["realm"] == "wirebeat.test"
    assert authorized["user"] == {"name": "alice"}
    assert "authentication" in authorized["event"]["category"]
    assert messages[1]["event"]["reason"] == "Unauthorized"
    assert [d for d in docs("register_busy.pcap") if d["type"] == "rtp"] == []


@pytest.mark.parametrize("name", CALLS + ["register_busy.pcap"])
def test_sip_documents_have_packetbeats_shape(name):
    for d in sip_docs(name):
        assert d["event"]["type"] == ["info"] and d["event"]["dataset"] == "sip"
        assert d["event"]["duration"] == 0 and d["event"]["start"] == d["event"]["end"]
        assert d["network"]["protocol"] == "sip" and d["network"]["application"] == "sip"
        assert d["event"]["original"].startswith(d["sip"].get("method", "SIP/2.0"))
        assert d["related"]["ip"] == ["127.0.0.1"]
        assert d["sip"]["cseq"]["code"] == d["event"]["sequence"]


def _g107(expected: int, lost: int, discarded: int) -> tuple[float, float]:
    """R and MOS of a G.711 stream (Ie 0, Bpl 25.1, G.113 App. I) at a one-way delay
    up to 100 ms (Id 0), from the G.107 formulas: R = 93.2 - Ie,eff, random loss
    (BurstR 1), MOS by Annex B."""
    ppl = 100.0 * (lost + discarded) / expected
    r = 93.2 - 95.0 * ppl / (ppl + 25.1)
    return r, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


@pytest.mark.parametrize("name", CALLS)
def test_every_call_gives_one_quality_document_over_its_streams(name):
    """A 1 ms jitter buffer makes sipp's real send timing cost a few packets, so the
    streams differ: the call's worst and mean follow from the G.107 formulas
    applied here to each stream's counters, and match its stream documents."""
    found = decode_file(SIP / name, "wirebeat.protocols.rtp.jitter_buffer=1ms")
    [call_id] = {d["sip"]["call_id"] for d in found if d["type"] == "sip"}
    streams = [d["rtp"] for d in found if d["type"] == "rtp" and d["rtp"]["final"]]
    [call] = [d for d in found if d["type"] == "rtp.call"]
    assert call["event"]["dataset"] == "rtp.call" and call["sip"]["call_id"] == call_id
    c = call["rtp"]["call"]
    scores = {}
    for s in streams:
        r, mos = _g107(s["expected"], s["lost"], s["quality"]["discarded"])
        assert (s["quality"]["r_factor"], s["quality"]["mos"]) == (round(r, 2), round(mos, 2))
        scores[s["ssrc"]] = (r, mos)
    assert c["streams"] == 2 and sorted(c["ssrcs"]) == sorted(scores)
    assert (c["packets"], c["expected"], c["lost"]) == (400, 400, 0)
    assert c["discarded"] == sum(s["quality"]["discarded"] for s in streams)
    worst_r = min(r for r, _ in scores.values())
    assert c["r_factor"] == round(worst_r, 2) and scores[c["worst_ssrc"]][0] == worst_r
    assert c["mos"] == round(min(m for _, m in scores.values()), 2)
    assert c["mean_r_factor"] == pytest.approx(sum(round(r, 2) for r, _ in scores.values()) / 2, abs=0.006)
    assert c["mean_mos"] == pytest.approx(sum(round(m, 2) for _, m in scores.values()) / 2, abs=0.006)
    # The streams that ended with the call point at its worst one.
    assert all(s["call"] == {"streams": 2, "r_factor": c["r_factor"], "mos": c["mos"],
                             "worst_ssrc": c["worst_ssrc"]} for s in streams)
    # The call document spans its streams: first packet to last.
    assert call["@timestamp"] == min(d["@timestamp"] for d in found
                                     if d["type"] == "rtp" and d["rtp"]["final"])


def test_a_failed_call_without_media_gives_no_quality_document():
    assert not [d for d in decode_file(SIP / "register_busy.pcap") if d["type"] == "rtp.call"]
