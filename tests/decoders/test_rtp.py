"""RTP/RTCP decoder, sans-IO: parsers, sequence and loss counters, jitter by hand, reports."""
from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtp_oracle import rfc3550_jitter
from wirebeat.decoders.api import Datagram, DecodeError, Expectations, FlowKey
from wirebeat.decoders.rtp import (DECODER, PROBATION_PACKETS, CallReport, MediaEndpoint, MediaSession, RTPDecoder,
                          decode_header, decode_rtcp, document, lone_rtp, probe)

FLOW = FlowKey("udp", "10.0.0.1", 4000, "10.0.0.2", 5000, "test")
T0 = 1_767_225_600.0
OPTIONS = {"report_interval": 0.0, "stream_timeout": 30.0, "max_streams": 100}


def rtp(seq: int, ts: int, ssrc: int = 0x1234, pt: int = 0, marker: bool = False,
        payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def rtcp(packet_type: int, count: int, body: bytes) -> bytes:
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


def block(ssrc: int, fraction: int, cumulative: int, jitter: int, lsr: int, dlsr: int) -> bytes:
    return struct.pack("!IIIIII", ssrc, (fraction << 24) | (cumulative & 0xFFFFFF), 1000,
                       jitter, lsr, dlsr)


def dgram(t: float, payload: bytes, from_client: bool = True, flow: FlowKey = FLOW) -> Datagram:
    return Datagram(t, flow, from_client, payload)


def announced(payload_types: dict[int, tuple[str, int]] | None = None,
              call_id: str = "call-1") -> tuple[Expectations, MediaSession]:
    """Expectations as the SIP decoder leaves them: the receiver's endpoint announced."""
    expectations = Expectations()
    session = MediaSession(call_id)
    expectations.expect(FLOW.server_ip, FLOW.server_port, "rtp",
                        MediaEndpoint(session, payload_types or {}), T0 + 3600)
    return expectations, session


def run(packets: list[tuple[float, bytes]], options: dict | None = None,
        expectations: Expectations | None = None) -> list:
    """Feed (arrival time, payload) pairs; return the stream report documents."""
    decoder = RTPDecoder({**OPTIONS, **(options or {})},
                         expectations if expectations is not None else announced()[0])
    txns = []
    for t, payload in packets:
        txns += decoder.on_datagram(dgram(t, payload))
    txns += decoder.expire(float("inf"))
    return [document(t) for t in txns if not isinstance(t.detail, CallReport)]


def streams_only(txns: list) -> list:
    """Stream reports, without the call report a SIP call's end adds."""
    return [t for t in txns if not isinstance(t.detail, CallReport)]


def final(docs: list) -> dict:
    [doc] = [d for d in docs if d["rtp"]["final"]]
    return doc["rtp"]


def regular(n: int, offsets_ms: dict[int, float] | None = None, **kw) -> list[tuple[float, bytes]]:
    """n PCMU packets every 20 ms; offsets_ms shifts given packets' arrival."""
    offsets_ms = offsets_ms or {}
    return [(T0 + i * 0.02 + offsets_ms.get(i, 0) / 1000, rtp(100 + i, 8000 + 160 * i, **kw))
            for i in range(n)]


# -- header and RTCP parsers -------------------------------------------------

def test_header_fields_are_read_from_the_fixed_header():
    h = decode_header(rtp(65535, 0xFFFFFFFF, ssrc=0xDEADBEEF, pt=8, marker=True))
    assert (h.version, h.marker, h.payload_type, h.sequence, h.timestamp, h.ssrc) == \
        (2, True, 8, 65535, 0xFFFFFFFF, 0xDEADBEEF)
    assert (h.header_bytes, h.payload_bytes) == (12, 160)


def test_csrcs_extension_and_padding_are_not_payload():
    packet = bytearray(rtp(1, 1, payload=b""))
    packet[0] = 0x80 | 0x20 | 0x10 | 2                  # P, X, two CSRCs
    packet += struct.pack("!II", 7, 8)                  # CSRCs
    packet += struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\0\0"   # one-word extension
    packet += b"x" * 20 + b"\0\0\0\x04"                 # 20 payload bytes, 4 of padding
    h = decode_header(bytes(packet))
    assert (h.csrc_count, h.header_bytes, h.payload_bytes, h.padding) == (2, 28, 20, True)


@pytest.mark.parametrize("payload, reason", [
    (b"\x80\x00\x00", "rtp.truncated"),
    (rtp(1, 1)[:11], "rtp.truncated"),
    (b"\x40" + rtp(1, 1)[1:], "rtp.bad_version"),
    (b"\x83" + rtp(1, 1, payload=b"")[1:], "rtp.truncated"),       # 3 CSRCs announced, none sent
    (b"\xa0" + rtp(1, 1, payload=b"ab\0")[1:], "rtp.bad_padding"),  # padding count 0
    (b"\xa0" + rtp(1, 1, payload=b"ab\x40")[1:], "rtp.bad_padding"),  # past the header
])
def test_bad_headers_raise_decode_error_with_a_stable_reason(payload, reason):
    with pytest.raises(DecodeError) as err:
        decode_header(payload)
    assert err.value.reason == reason


def test_sender_report_with_a_block_sdes_and_bye_in_one_compound():
    sr = rtcp(200, 1, struct.pack("!IIIIII", 0xA, 0xE000_0001, 0x8000_0000, 1234, 50, 8000)
              + block(0xB, 64, -2, 80, 0x1234_5678, 65536))
    cname = b"\x01\x0ealice@10.0.0.1\x00"
    sdes = rtcp(202, 1, struct.pack("!I", 0xA) + cname + b"\0" * (-(4 + len(cname)) % 4))
    bye = rtcp(203, 1, struct.pack("!I", 0xA))
    [sender, names, goodbye] = decode_rtcp(sr + sdes + bye)
    assert (sender.packet_type, sender.ssrc, sender.sender_packets, sender.sender_octets) == \
        (200, 0xA, 50, 8000)
    assert sender.ntp_middle == 0x0001_8000          # low 16 bits of seconds, high 16 of fraction
    [b] = sender.blocks
    assert (b.ssrc, b.fraction_lost, b.cumulative_lost, b.jitter, b.last_sr,
            b.delay_since_last_sr) == (0xB, 64, -2, 80, 0x1234_5678, 65536)
    assert names.cnames == {0xA: "alice@10.0.0.1"}
    assert goodbye.bye_ssrcs == [0xA]


@pytest.mark.parametrize("payload, reason", [
    (b"\x80\xc8", "rtcp.truncated"),
    (rtcp(201, 1, struct.pack("!I", 1)), "rtcp.bad_length"),            # block announced, absent
    (b"\x80\xc9\x00\x09" + b"\0" * 8, "rtcp.bad_length"),               # length past the end
    (b"\x40\xc9\x00\x01" + b"\0" * 4, "rtcp.bad_version"),
    (rtcp(202, 1, struct.pack("!I", 1) + b"\x01\x09ab\0"), "rtcp.bad_length"),   # item past the end
])
def test_bad_rtcp_raises_decode_error(payload, reason):
    with pytest.raises(DecodeError) as err:
        decode_rtcp(payload)
    assert err.value.reason == reason


@given(st.binary(max_size=200))
def test_decode_header_parses_or_raises_decode_error(payload):
    try:
        decode_header(payload)
    except DecodeError:
        pass


@given(st.binary(max_size=300))
def test_decode_rtcp_parses_or_raises_decode_error(payload):
    try:
        decode_rtcp(payload)
    except DecodeError:
        pass


@given(st.lists(st.binary(min_size=2, max_size=40), max_size=8))
def test_decode_rtcp_of_packets_with_valid_headers_never_crashes(bodies):
    # Valid versions and lengths, arbitrary bodies: the per-type parsers get exercised.
    compound = b"".join(rtcp(200 + (len(b) % 5), b[0] & 0x1F, b + b"\0" * (-len(b) % 4))
                        for b in bodies)
    try:
        decode_rtcp(compound)
    except DecodeError:
        pass


@given(st.binary(max_size=200))
def test_probe_never_raises(payload):
    assert probe(payload) in (True, False)


# -- the heuristic probe ----------------------------------------------------------

def test_probe_accepts_rtp_and_rtcp():
    assert probe(rtp(1, 1000, pt=0))
    assert probe(rtp(1, 1000, pt=111))
    assert probe(rtcp(201, 0, struct.pack("!I", 5)))


@pytest.mark.parametrize("payload", [
    struct.pack("!HHHHHH", 0x8123, 0x0100, 1, 0, 0, 0) + b"\x03foo\x00\x00\x01\x00\x01",   # DNS query
    struct.pack("!HHHHHH", 0x80a5, 0x8180, 1, 2, 0, 0) + b"\x03foo\x00\x00\x01\x00\x01",   # DNS answer
    bytes([0xC3, 0, 0, 0, 1]) + b"\x08" * 30,           # QUIC long header
    bytes([0x47]) + b"\x11" * 30,                        # QUIC short header
    bytes([22, 0xFE, 0xFD]) + b"\0" * 30,                # DTLS handshake
    struct.pack("!HHI", 1, 0, 0x2112A442) + b"\0" * 12,  # STUN binding request
    rtp(1, 1, pt=72, marker=False),                      # 72-76: RTCP's range
    rtp(1, 1, pt=76, marker=False),
    rtp(1, 1, ssrc=0),
    b"\x80\x00\x01\x02",
])
def test_probe_turns_down_what_is_not_rtp(payload):
    assert not probe(payload)


# -- sequence, loss, duplicates, reordering, restarts -------------------------

def test_a_clean_stream_counts_every_packet_and_loses_none():
    r = final(run(regular(50)))
    assert (r["packets"], r["expected"], r["lost"], r["loss_pct"], r["sequence_errors"]) == \
        (50, 50, 0, 0.0, 0)
    assert (r["codec"], r["clock_rate"], r["payload_type"], r["ssrc"]) == ("PCMU", 8000, 0, 0x1234)
    assert r["delta"] == {"max_ms": 20.0, "mean_ms": 20.0}


def test_lost_packets_are_expected_minus_received_and_gaps_are_sequence_errors():
    packets = [p for i, p in enumerate(regular(100)) if i not in (10, 11, 50)]
    r = final(run(packets))
    assert (r["packets"], r["expected"], r["lost"], r["loss_pct"], r["sequence_errors"]) == \
        (97, 100, 3, 3.0, 2)
    assert r["delta"]["max_ms"] == 60.0


def test_sequence_wraparound_keeps_counting():
    packets = [(T0 + i * 0.02, rtp(65530 + i, 160 * i)) for i in range(20) if i != 7]  # 65537 lost
    r = final(run(packets))
    assert (r["packets"], r["expected"], r["lost"], r["sequence_errors"]) == (19, 20, 1, 1)


def test_a_late_packet_is_reordered_not_lost_and_a_repeat_is_a_duplicate():
    order = [0, 1, 3, 2, 4, 4, 5]
    packets = [(T0 + slot * 0.02, rtp(100 + i, 160 * i)) for slot, i in enumerate(order)]
    r = final(run(packets))
    assert (r["packets"], r["expected"], r["reordered"], r["duplicates"]) == (7, 6, 1, 1)
    # RFC 3550 A.3 (and Wireshark): lost = expected - received, duplicates included.
    assert r["lost"] == -1
    assert r["sequence_errors"] == 3          # the jump to 3, the late 2, the repeated 4


def test_late_packets_across_the_wrap_are_reordered():
    order = [65533, 65534, 0, 65535, 1]
    packets = [(T0 + slot * 0.02, rtp(seq, 160 * slot)) for slot, seq in enumerate(order)]
    r = final(run(packets))
    assert (r["expected"], r["lost"], r["reordered"]) == (5, 0, 1)


def test_a_sender_restart_is_counted_and_not_taken_for_loss():
    packets = [(T0 + i * 0.02, rtp(1000 + i, 160 * i)) for i in range(10)]
    packets += [(T0 + i * 0.02, rtp(30000 + i, 160 * i)) for i in range(10, 20)]
    r = final(run(packets))
    assert (r["packets"], r["expected"], r["lost"], r["restarts"]) == (20, 20, 0, 1)


def test_a_single_stray_packet_is_not_a_restart():
    packets = [(T0 + i * 0.02, rtp(1000 + i, 160 * i)) for i in range(10)]
    packets.insert(5, (T0 + 0.091, rtp(40000, 800)))
    r = final(run(packets))
    assert (r["packets"], r["expected"], r["restarts"], r["lost"]) == (11, 10, 0, -1)


def test_an_ssrc_change_starts_a_new_stream_and_is_counted():
    packets = regular(10) + [(T0 + (10 + i) * 0.02, rtp(7 + i, 99 + 160 * i, ssrc=0x9999))
                             for i in range(10)]
    docs = [d for d in run(packets) if d["rtp"]["final"]]
    assert sorted((d["rtp"]["ssrc"], d["rtp"]["packets"], d["rtp"]["ssrc_changes"])
                  for d in docs) == [(0x1234, 10, 1), (0x9999, 10, 1)]


# -- jitter, delta and the clock rate ----------------------------------------

def test_one_packet_16_ms_late_gives_jitter_1_then_1_9375_ms():
    # By hand: D = 16 ms at the late packet, J = 16/16 = 1; the next packet is on
    # time again, D = -16 ms, J = 1 + (16 - 1)/16 = 1.9375; then J decays by 15/16.
    r = final(run(regular(300, {100: 16})))
    assert r["jitter"]["max_ms"] == 1.9375
    mean = (1 + 31 * (1 - (15 / 16) ** 199)) / 299
    assert r["jitter"]["mean_ms"] == pytest.approx(mean, abs=1e-4)
    assert r["delta"] == {"max_ms": 36.0, "mean_ms": 20.0}


def test_jitter_follows_the_rfc_3550_estimate_for_any_arrival_pattern():
    offsets = {i: (0, 3, 1, 5, 2)[i % 5] for i in range(200)}
    packets = regular(200, offsets)
    r = final(run(packets))
    arrivals = [(t - T0) * 1000 for t, _ in packets]
    estimates = rfc3550_jitter(arrivals, [8000 + 160 * i for i in range(200)], 8000)
    assert r["jitter"]["max_ms"] == pytest.approx(max(estimates), abs=1e-4)
    assert r["jitter"]["mean_ms"] == pytest.approx(sum(estimates) / len(estimates), abs=1e-4)
    assert r["jitter"]["last_ms"] == pytest.approx(estimates[-1], abs=1e-4)


def test_a_dynamic_payload_type_gets_its_clock_rate_from_sdp():
    expectations, _ = announced({111: ("opus", 48000)})
    packets = [(T0 + i * 0.02 + (0.001 if i == 10 else 0), rtp(i, 960 * i, pt=111))
               for i in range(30)]
    r = final(run(packets, expectations=expectations))
    assert (r["codec"], r["clock_rate"]) == ("opus", 48000)
    assert r["jitter"]["max_ms"] == pytest.approx(1 / 16 + (1 - 1 / 16) / 16, abs=1e-4)


def test_without_a_clock_rate_there_is_no_jitter():
    r = final(run([(T0 + i * 0.02, rtp(i, 960 * i, pt=111)) for i in range(30)]))
    assert "jitter" not in r and "clock_rate" not in r and "codec" not in r
    assert r["packets"] == 30


def test_marker_packets_stay_out_of_delta_and_jitter_statistics():
    # Packet 5 (marker: a talkspurt starts) comes after 100 ms of silence.
    packets = [(T0 + i * 0.02 + (0.1 if i >= 5 else 0), rtp(i, 160 * i, marker=i == 5))
               for i in range(10)]
    r = final(run(packets))
    assert r["marker_packets"] == 1
    assert r["delta"]["max_ms"] == 20.0
    assert r["jitter"]["max_ms"] < 100 / 16      # the estimate saw it; the maximum did not


def test_telephone_events_are_counted_once_each_and_left_out_of_jitter():
    expectations, _ = announced({101: ("telephone-event", 8000)})
    packets = []
    t, seq = T0, 0
    for i in range(10):                                   # audio
        packets.append((t, rtp(seq, 160 * i))); t += 0.02; seq += 1
    for n in range(6):                                    # one event, same timestamp throughout
        packets.append((t, rtp(seq, 1600, pt=101, marker=n == 0, payload=b"\x05\x0a\x00\xa0")))
        t += 0.02; seq += 1
    for i in range(16, 26):                               # audio again, on its 20 ms grid
        packets.append((t, rtp(seq, 160 * i))); t += 0.02; seq += 1
    r = final(run(packets, expectations=expectations))
    assert (r["telephone_events"], r["packets"], r["lost"]) == (1, 26, 0)
    assert r["payload_types"] == [0, 101] and r["codec"] == "PCMU"
    assert r["jitter"]["max_ms"] == 0.0


def test_comfort_noise_and_the_packet_after_it_stay_out_of_delta_statistics():
    packets = regular(5) + [(T0 + 0.1, rtp(105, 800, pt=13, payload=b"\x40")),
                            (T0 + 0.5, rtp(106, 4000))] + \
        [(T0 + 0.5 + i * 0.02, rtp(106 + i, 4000 + 160 * i)) for i in range(1, 5)]
    r = final(run(packets))
    assert r["delta"]["max_ms"] == 20.0


# -- RTCP attached to its stream ----------------------------------------------

def test_rtcp_reports_are_attached_to_the_stream_they_are_about():
    decoder = RTPDecoder(OPTIONS, announced()[0])
    back = FLOW.reversed()
    for t, payload in regular(20):
        decoder.on_datagram(dgram(t, payload))
    ntp = struct.pack("!II", 0xE000_0001, 0x8000_0000)      # NTP middle: 0x0001_8000
    sr = rtcp(200, 0, struct.pack("!I", 0x1234) + ntp + struct.pack("!III", 0, 20, 3200))
    cname = b"\x01\x03a@b\x00\x00\x00"                    # item, terminator, padding
    sr += rtcp(202, 1, struct.pack("!I", 0x1234) + cname)
    decoder.on_datagram(Datagram(T0 + 0.5, FLOW, True, sr))
    # The receiver answers 300 ms later, having held the SR for 0.25 s (16384/65536).
    rr = rtcp(201, 1, struct.pack("!I", 0x7777) + block(0x1234, 26, 2, 16, 0x0001_8000, 16384))
    decoder.on_datagram(Datagram(T0 + 0.8, back, False, rr))
    [txn] = streams_only(decoder.expire(float("inf")))
    r = document(txn)["rtcp"]
    assert r == {"sender_reports": 1, "receiver_reports": 1, "sender_packets": 20,
                 "sender_octets": 3200, "fraction_lost": 26 / 256, "cumulative_lost": 2,
                 "cname": "a@b", "jitter_ms": 2.0, "rtt_ms": 50.0, "max_rtt_ms": 50.0}


def test_rtcp_bye_ends_the_stream_with_its_final_report_at_once():
    decoder = RTPDecoder(OPTIONS, announced()[0])
    for t, payload in regular(5):
        decoder.on_datagram(dgram(t, payload))
    [txn] = streams_only(decoder.on_datagram(dgram(T0 + 0.2, rtcp(203, 1, struct.pack("!I", 0x1234)))))
    doc = document(txn)
    assert doc["rtp"]["final"] and doc["rtp"]["end_reason"] == "rtcp_bye" and doc["rtcp"]["bye"]
    assert decoder.expire(float("inf")) == []


def test_rtcp_multiplexed_on_the_rtp_port_is_told_apart_by_its_type():
    decoder = RTPDecoder(OPTIONS, announced()[0])
    for t, payload in regular(5):
        decoder.on_datagram(dgram(t, payload))
    decoder.on_datagram(dgram(T0 + 0.2, rtcp(201, 0, struct.pack("!I", 0x1234))))
    [txn] = streams_only(decoder.expire(float("inf")))
    assert document(txn)["rtp"]["packets"] == 5


# -- reports ---------------------------------------------------------------------

def test_interval_reports_tile_the_stream_and_the_final_covers_it_all():
    decoder = RTPDecoder({**OPTIONS, "report_interval": 1.0}, announced()[0])
    txns = []
    for t, payload in [p for i, p in enumerate(regular(130)) if i != 60]:
        txns += decoder.on_datagram(dgram(t, payload))
    txns += streams_only(decoder.expire(float("inf")))
    docs = [document(t) for t in txns]
    intervals = [d["rtp"] for d in docs if not d["rtp"]["final"]]
    assert [r["packets"] for r in intervals] == [50, 49, 30]
    assert [r["lost"] for r in intervals] == [0, 1, 0]
    assert [txn.ts - T0 for txn in txns][:3] == pytest.approx([0.0, 1.0, 2.0])
    r = final(docs)
    assert (r["packets"], r["lost"]) == (129, 1)
    assert sum(i["packets"] for i in intervals) == r["packets"]


def test_a_quiet_stream_ends_after_the_stream_timeout():
    decoder = RTPDecoder({**OPTIONS, "stream_timeout": 5.0}, announced()[0])
    for t, payload in regular(10):
        decoder.on_datagram(dgram(t, payload))
    assert decoder.expire(T0 + 5.0) == []
    [txn] = streams_only(decoder.expire(T0 + 5.2))
    assert document(txn)["rtp"]["end_reason"] == "timeout"


def test_the_end_of_the_call_ends_its_streams_and_links_them_to_it():
    expectations, session = announced(call_id="abc@host")
    decoder = RTPDecoder(OPTIONS, expectations)
    for t, payload in regular(10):
        decoder.on_datagram(dgram(t, payload))
    session.ended_ts = T0 + 0.3                  # the SIP decoder saw the BYE
    assert decoder.expire(T0 + 0.5) == []        # packets may still be in flight
    [txn] = streams_only(decoder.expire(T0 + 1.3))
    doc = document(txn)
    assert doc["rtp"]["end_reason"] == "sip_bye" and doc["sip"] == {"call_id": "abc@host"}
    assert doc["rtp"]["setup"] == "sdp"


def test_the_end_of_a_call_adds_one_call_report_over_its_streams():
    expectations, session = announced(call_id="abc@host")
    expectations.expect(FLOW.client_ip, FLOW.client_port, "rtp", MediaEndpoint(session, {}),
                        T0 + 3600)
    decoder = RTPDecoder(OPTIONS, expectations)
    txns = []
    for i, (t, payload) in enumerate(regular(100)):
        if i not in (10, 20, 30, 40, 50):                  # 5 % lost one way
            txns += decoder.on_datagram(dgram(t, payload))
        txns += decoder.on_datagram(dgram(t + 0.001, rtp(500 + i, 160 * i, ssrc=0x77), False))
    session.ended_ts = T0 + 2.0
    txns += decoder.expire(T0 + 3.1)
    [call] = [document(t) for t in txns if isinstance(t.detail, CallReport)]
    assert call["type"] == "rtp.call" and call["sip"] == {"call_id": "abc@host"}
    c = call["rtp"]["call"]
    # G.711: Ppl 5 -> Ie,eff = 95 * 5 / 30.1 = 15.781, R = 77.419, MOS 1 + 2.7097 +
    # 77.419 * 17.419 * 22.581 * 7e-6 = 3.9228; the other way R 93.2, MOS 4.4093.
    assert (c["r_factor"], c["mos"], c["worst_ssrc"]) == (77.42, 3.92, 0x1234)
    assert (c["mean_r_factor"], c["mean_mos"]) == (round((77.42 + 93.2) / 2, 2), round((3.92 + 4.41) / 2, 2))
    assert (c["streams"], c["packets"], c["expected"], c["lost"]) == (2, 195, 200, 5)
    assert decoder.calls == {}


def test_documents_never_carry_payload_bytes():
    marker = b"SECRET-VOICE-SAMPLES-" * 8
    decoder = RTPDecoder({**OPTIONS, "report_interval": 0.1}, announced()[0])
    txns = []
    for i in range(20):
        txns += decoder.on_datagram(dgram(T0 + i * 0.02, rtp(i, 160 * i, payload=marker)))
    txns += decoder.expire(float("inf"))
    text = json.dumps([document(t) for t in txns])
    assert "SECRET" not in text and len(txns) > 2


# -- heuristic streams -----------------------------------------------------------

def test_a_heuristic_stream_is_reported_once_it_passed_probation():
    no_sdp = Expectations()
    decoder = RTPDecoder(OPTIONS, no_sdp)
    for t, payload in regular(PROBATION_PACKETS - 1):
        assert decoder.on_datagram(dgram(t, payload)) == []
    # Held, not forgotten: alone on a clean 5-tuple it is a stream when the flow ends.
    assert decoder.expire(T0 + 1) == []
    [lone] = decoder.expire(float("inf"))
    assert document(lone)["rtp"]["packets"] == PROBATION_PACKETS - 1
    r = final(run(regular(PROBATION_PACKETS), expectations=no_sdp))
    assert r["packets"] == PROBATION_PACKETS and r["setup"] == "heuristic"
    assert "sip" not in run(regular(10), expectations=no_sdp)[0]


def test_a_heuristic_flow_of_random_ssrcs_is_given_up():
    decoder = RTPDecoder(OPTIONS, Expectations())
    for i in range(50):
        decoder.on_datagram(dgram(T0 + i * 0.01, rtp(i * 7919, i * 104729, ssrc=i + 1)))
    assert decoder.expire(float("inf")) == []
    assert decoder.counters["heuristic_rejected"] == 1


def test_a_heuristic_flow_that_is_not_rtp_is_ignored_without_errors():
    decoder = RTPDecoder(OPTIONS, Expectations())
    assert decoder.on_datagram(dgram(T0, b"\x00\x01garbage")) == []
    assert decoder.on_datagram(dgram(T0 + 0.1, rtp(1, 1))) == []      # one packet proves nothing
    assert decoder.expire(float("inf")) == []


@pytest.mark.parametrize("junk", [
    b"\x00\x01garbage-that-is-no-rtp",      # before, on the same side
    rtp(5, 5, pt=73),                        # RTCP's payload type range
])
@pytest.mark.parametrize("reverse", [False, True])
def test_a_lone_packet_is_a_stream_only_on_a_5_tuple_of_nothing_else(junk, reverse):
    """Wireshark lists a lone RTP packet; wirebeat too, unless the 5-tuple (either way)
    carried a datagram Wireshark's heuristic would not take for RTP."""
    decoder = RTPDecoder(OPTIONS, Expectations())
    decoder.on_datagram(dgram(T0, junk, from_client=not reverse))
    decoder.on_datagram(dgram(T0 + 0.1, rtp(1, 1)))
    assert decoder.expire(float("inf")) == []
    decoder = RTPDecoder(OPTIONS, Expectations())
    decoder.on_datagram(dgram(T0, rtp(9, 9, ssrc=0x99), from_client=not reverse))
    decoder.on_datagram(dgram(T0 + 0.1, rtp(1, 1)))
    docs = [document(t)["rtp"] for t in decoder.expire(float("inf"))]
    assert sorted((d["ssrc"], d["packets"], d["lost"]) for d in docs) == [(0x99, 1, 0),
                                                                          (0x1234, 1, 0)]


def test_a_lone_packet_on_a_flow_routed_late_is_not_a_stream():
    """The engine routed the flow on a later datagram: earlier ones were not RTP."""
    decoder = RTPDecoder(OPTIONS, Expectations())
    decoder.on_datagram(Datagram(T0, FLOW, True, rtp(1, 1), reprobed=True))
    assert decoder.expire(float("inf")) == []


def test_a_short_stream_with_gaps_is_counted_when_its_flow_ends():
    """Three packets, never two in sequence: seq 10, 12, 14 is 3 received, 2 lost."""
    packets = [(T0 + i * 0.04, rtp(10 + 2 * i, 320 * i)) for i in range(3)]
    r = final(run(packets, expectations=Expectations()))
    assert (r["packets"], r["expected"], r["lost"], r["end_reason"]) == (3, 5, 2, "end_of_input")


def test_a_lone_packet_goes_out_when_its_flow_times_out():
    decoder = RTPDecoder(OPTIONS, Expectations())
    decoder.on_datagram(dgram(T0, rtp(1, 1)))
    assert decoder.expire(T0 + 29) == []
    [txn] = streams_only(decoder.expire(T0 + 31))
    assert document(txn)["rtp"]["end_reason"] == "timeout"


# What tshark 4.0 lists as a one-packet stream, measured: (first byte, second byte,
# total length, last byte) -> listed. Header: 12 bytes + 4 per CSRC + extension.
@pytest.mark.parametrize("b0, b1, length, last, listed", [
    (0x80, 0, 172, 0, True), (0x80, 71, 172, 0, True), (0x80, 72, 172, 0, False),
    (0x80, 76, 172, 0, False), (0x80, 77, 172, 0, True), (0x80, 0xC0, 172, 0, False),
    (0x80, 0xC8, 172, 0, False), (0x80, 0xDF, 172, 0, False), (0x80, 0xE0, 172, 0, True),
    (0x80, 0xFF, 172, 0, True), (0x40, 0, 172, 0, False), (0xC0, 0, 172, 0, False),
    (0x80, 0, 12, 0, True), (0x80, 0, 11, 0, False),
    (0xA0, 0, 172, 0, False), (0xA0, 0, 172, 1, True), (0xA0, 0, 172, 160, True),
    (0xA0, 0, 172, 161, False), (0xA4, 0, 172, 144, True), (0xA4, 0, 172, 145, False),
    (0x8F, 0, 72, 0, True), (0x8F, 0, 71, 0, False),
])
def test_lone_rtp_takes_what_tshark_lists_as_a_one_packet_stream(b0, b1, length, last, listed):
    data = bytearray(struct.pack("!BBHII", b0, b1, 1, 2, 3) + bytes(max(0, length - 12)))[:length]
    if length > 12:
        data[-1] = last
    assert lone_rtp(bytes(data)) is listed


@pytest.mark.parametrize("words, listed", [(0, True), (40, True), (41, False)])
def test_lone_rtp_wants_the_extension_inside_the_datagram(words, listed):
    data = struct.pack("!BBHIIHH", 0x90, 0, 1, 2, 3, 0xBEDE, words) + bytes(160)
    assert lone_rtp(data) is listed


def test_malformed_rtp_on_an_announced_flow_raises_decode_error():
    decoder = RTPDecoder(OPTIONS, announced()[0])
    with pytest.raises(DecodeError):
        # 0x50: version 1, and none of RFC 7983's STUN/DTLS/ZRTP/TURN ranges either.
        decoder.on_datagram(dgram(T0, b"\x50\x00garbage-garbage"))


def test_the_stream_cap_reports_the_oldest_stream_early():
    decoder = RTPDecoder({**OPTIONS, "max_streams": 2}, announced()[0])
    out = []
    for n, ssrc in enumerate((1, 2, 3)):
        out += decoder.on_datagram(dgram(T0 + n, rtp(1, 1, ssrc=ssrc)))
    [evicted] = out
    assert document(evicted)["rtp"]["ssrc"] == 1 and document(evicted)["rtp"]["end_reason"] == "evicted"
    assert decoder.counters["streams_evicted"] == 1


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=60)), max_size=30))
def test_the_decoder_takes_any_datagrams_and_raises_only_decode_error(datagrams):
    decoder = RTPDecoder({**OPTIONS, "report_interval": 0.05}, announced({96: ("x", 1000)})[0])
    for n, (from_client, payload) in enumerate(datagrams):
        try:
            for txn in streams_only(decoder.on_datagram(dgram(T0 + n * 0.01, payload, from_client))):
                document(txn)
        except DecodeError:
            pass
    for txn in streams_only(decoder.expire(float("inf"))):
        document(txn)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
                          st.sampled_from([0, 8, 13, 101, 111]), st.booleans()), max_size=40))
def test_any_sequence_of_valid_rtp_packets_gives_consistent_counters(packets):
    expectations, _ = announced({101: ("telephone-event", 8000), 111: ("opus", 48000)})
    decoder = RTPDecoder(OPTIONS, expectations)
    for n, (seq, ts, pt, marker) in enumerate(packets):
        decoder.on_datagram(dgram(T0 + n * 0.02, rtp(seq, ts, pt=pt, marker=marker)))
    docs = [document(t) for t in streams_only(decoder.expire(float("inf")))]
    assert sum(d["rtp"]["packets"] for d in docs) == len(packets)
    for d in docs:
        r = d["rtp"]
        assert r["lost"] == r["expected"] - r["packets"]
        assert r["delta"]["max_ms"] >= 0 and r.get("jitter", {}).get("max_ms", 0) >= 0


def test_the_spec_names_the_issue_options():
    assert DECODER.name == "rtp" and DECODER.probe is probe and DECODER.expectations
    assert set(DECODER.options) >= {"report_interval", "stream_timeout"}
