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
