"""osmo-pcap ZeroMQ messages decoded without sockets: formats, events, every skip reason."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pcapgen as g
from wirebeat.sources.pcapfile import Frame
from wirebeat.sources.zmq import CollectorEvent, MessageDecoder

T0 = 1_700_000_000_123_456_789          # ns
FRAME = g.ethernet(g.ipv4("192.0.2.1", "192.0.2.2", g.IPPROTO_ICMP, g.icmp_echo(1, 1)))
TOPIC = b"data.v1.edge1"


def _frame(got) -> Frame:
    assert got.__class__ is tuple, got
    name, frame = got
    assert name == "edge1"
    return frame


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
def test_classic_pcap_in_both_byte_orders_and_resolutions(big_endian, nanosecond):
    header = g.pcap_header(g.LINKTYPE_LINUX_SLL, nanosecond=nanosecond, big_endian=big_endian)
    record = g.pcap_record(T0, FRAME, nanosecond=nanosecond, big_endian=big_endian)
    frame = _frame(MessageDecoder().decode([TOPIC, header, record]))
    assert frame.linktype == g.LINKTYPE_LINUX_SLL and frame.data == FRAME
    expected_ns = T0 if nanosecond else T0 // 1000 * 1000
    assert abs(frame.ts - expected_ns / 1e9) < 1e-6


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcapng_interfaces_choose_link_type_and_resolution(big_endian):
    header = (g.pcapng_shb(big_endian=big_endian)
              + g.pcapng_idb(g.LINKTYPE_ETHERNET, big_endian=big_endian)
              + g.pcapng_idb(g.LINKTYPE_LINUX_SLL2, 9, big_endian=big_endian))
    decoder = MessageDecoder()
    first = _frame(decoder.decode([TOPIC, header, g.pcapng_epb(0, T0, FRAME, big_endian=big_endian)]))
    second = _frame(decoder.decode([TOPIC, header, g.pcapng_epb(1, T0, b"sll2", tsresol=9,
                                                                  big_endian=big_endian)]))
    assert (first.linktype, second.linktype) == (g.LINKTYPE_ETHERNET, g.LINKTYPE_LINUX_SLL2)
    assert abs(first.ts - T0 // 1000 / 1e6) < 1e-6 and abs(second.ts - T0 / 1e9) < 1e-6


def test_a_header_change_mid_stream_is_followed_at_once():
    decoder = MessageDecoder()
    ethernet = g.pcap_header(g.LINKTYPE_ETHERNET)
    cooked = g.pcap_header(g.LINKTYPE_LINUX_SLL)
    record = g.pcap_record(T0, FRAME)
    kinds = [_frame(decoder.decode([TOPIC, h, record])).linktype for h in (ethernet, cooked, ethernet)]
    assert kinds == [g.LINKTYPE_ETHERNET, g.LINKTYPE_LINUX_SLL, g.LINKTYPE_ETHERNET]
    assert decoder.header_changes == 2


def test_clients_keep_their_own_headers():
    decoder = MessageDecoder()
    a = decoder.decode([b"data.v1.a", g.pcap_header(g.LINKTYPE_ETHERNET), g.pcap_record(T0, FRAME)])
    b = decoder.decode([b"data.v1.b.x", g.pcap_header(g.LINKTYPE_RAW), g.pcap_record(T0, FRAME)])
    assert (a[0], a[1].linktype, b[0], b[1].linktype) == ("a", 1, "b.x", 101)


def _bad_record_with_caplen(caplen: int, data: bytes) -> bytes:
    return struct.pack("<IIII", T0 // 10**9, 0, caplen, caplen) + data


@pytest.mark.parametrize("parts, reason", [
    ([TOPIC, g.pcap_header()], "parts"),
    ([TOPIC, g.pcap_header(), g.pcap_record(T0, FRAME), b""], "parts"),
    ([TOPIC, b"\x00" * 24, g.pcap_record(T0, FRAME)], "header"),
    ([TOPIC, g.pcap_header()[:20], g.pcap_record(T0, FRAME)], "header"),
    ([TOPIC, g.pcap_header() + b"\0", g.pcap_record(T0, FRAME)], "header"),
    ([TOPIC, g.pcapng_shb()[:-4], g.pcapng_epb(0, T0, FRAME)], "header"),
    ([TOPIC, g.pcap_header(), g.pcap_record(T0, FRAME)[:-1]], "truncated"),
    ([TOPIC, g.pcap_header(), g.pcap_record(T0, FRAME)[:10]], "truncated"),
    ([TOPIC, g.pcap_header(), g.pcap_record(T0, FRAME) + b"\0"], "record_length"),
    ([TOPIC, g.pcap_header(snaplen=64), _bad_record_with_caplen(100, b"x" * 100)], "caplen_over_snaplen"),
    ([TOPIC, g.pcapng_shb() + g.pcapng_idb(1, snaplen=64), g.pcapng_epb(0, T0, b"x" * 100)],
     "caplen_over_snaplen"),
    ([TOPIC, g.pcapng_shb() + g.pcapng_idb(1), g.pcapng_epb(1, T0, FRAME)], "unknown_interface"),
    ([TOPIC, g.pcapng_shb() + g.pcapng_idb(1), g.pcapng_epb(0, T0, FRAME)[:-4]], "truncated"),
    ([TOPIC, g.pcapng_shb() + g.pcapng_idb(1), g.pcapng_idb(1)], "not_a_packet_block"),
    ([b"data.v1.", g.pcap_header(), g.pcap_record(T0, FRAME)], "topic"),
    ([b"data.v2.edge1", g.pcap_header(), g.pcap_record(T0, FRAME)], "topic"),
    ([b"event.v1.connect.edge1", b"extra"], "parts"),
    ([b"event.v1.closingtracefile.edge1"], "parts"),
    ([b"event.v1.exploded.edge1"], "unknown_event"),
    ([b"event.v1.connect"], "topic"),
])
def test_malformed_messages_give_their_reason(parts, reason):
    decoder = MessageDecoder()
    assert decoder.decode(parts) == reason
    assert decoder.last_error


def test_events_split_the_topic_on_its_first_three_dots_only():
    decoder = MessageDecoder()
    assert decoder.decode([b"event.v1.connect.edge.site.1"]) == CollectorEvent("edge.site.1", "connect", None)
    assert decoder.decode([b"event.v1.closingtracefile.e1", b"/var/lib/osmo-pcap/e1/trace.pcap"]) == \
        CollectorEvent("e1", "closingtracefile", "/var/lib/osmo-pcap/e1/trace.pcap")


def test_a_client_list_is_an_exact_match_not_a_prefix():
    decoder = MessageDecoder(frozenset({"edge1"}))
    header, record = g.pcap_header(), g.pcap_record(T0, FRAME)
    assert decoder.decode([b"data.v1.edge10", header, record]) is None
    assert decoder.decode([b"event.v1.connect.edge10"]) is None
    assert decoder.decode([b"data.v1.edge1", header, record])[0] == "edge1"
    assert decoder.decode([b"event.v1.connect.edge1"]) == CollectorEvent("edge1", "connect", None)


_parts = st.lists(st.binary(max_size=200), min_size=1, max_size=4)


@given(st.sampled_from([TOPIC, b"event.v1.connect.x", b"event.v1.closingtracefile.x", b"data.v1."]),
       _parts)
def test_any_bytes_decode_or_give_a_reason(topic, rest):
    got = MessageDecoder().decode([topic, *rest])
    assert got is None or isinstance(got, (str, tuple, CollectorEvent))


@given(st.binary(min_size=0, max_size=300), st.binary(min_size=0, max_size=300))
def test_any_header_and_record_after_a_valid_pcapng_start_give_a_frame_or_a_reason(header_tail, record):
    header = g.pcapng_shb() + header_tail
    got = MessageDecoder().decode([TOPIC, header, record])
    assert isinstance(got, (str, tuple))
