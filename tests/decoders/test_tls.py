"""The TLS decoder on its own: fingerprints against FoxIO's published examples,
record framing however TCP cuts it, caps, gaps, detection, and malformed bytes.

Field values against an independent dissector are in
tests/integration/test_tls_tshark.py; here the captures only supply real bytes.
"""
from __future__ import annotations

from functools import lru_cache

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PCAPS
from wirebeat.decoders.api import DecodeError, FlowKey
from wirebeat.decoders.tls import (DECODER, ClientHello, ServerHello, TLSStream, _ja4_alpn, document,
                                   ja4, ja4s, looks_like_client_hello, parse_client_hello,
                                   parse_server_hello)
from wirebeat.testing import decode_pcap

FLOW = FlowKey("tcp", "127.0.0.1", 40000, "127.0.0.1", 8443, "test")
OPTIONS = {"transaction_timeout": 10.0, "max_handshake_message_bytes": 65536}


@lru_cache(maxsize=None)
def connection_segments(name: str, index: int = 0) -> tuple[tuple[bool, bytes], ...]:
    """(from_client, payload) of the index-th connection of a capture, in capture order."""
    conns: dict[tuple, list[tuple[bool, bytes]]] = {}
    with open(PCAPS / "tls" / name, "rb") as fh:
        for _, frame in dpkt.pcap.Reader(fh):
            tcp = dpkt.ethernet.Ethernet(frame).data.data
            if tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK:
                conns[(tcp.sport, tcp.dport)] = []
            for (cport, sport), segs in conns.items():
                if tcp.data and {tcp.sport, tcp.dport} == {cport, sport}:
                    segs.append((tcp.sport == cport, bytes(tcp.data)))
    return tuple(list(conns.values())[index])


def feed(segments: list[tuple[bool, bytes]], options: dict = OPTIONS) -> tuple[TLSStream, list]:
    stream = TLSStream(FLOW, options)
    txns = []
    for i, (from_client, data) in enumerate(segments):
        txns += stream.on_data(from_client, data, 1000.0 + i)
    txns += stream.on_close(2000.0)
    return stream, txns


def byte_by_byte(segments):
    return [(c, data[i:i + 1]) for c, data in segments for i in range(len(data))]


def merged(segments):
    out: list[tuple[bool, bytes]] = []
    for c, data in segments:
        if out and out[-1][0] == c:
            out[-1] = (c, out[-1][1] + data)
        else:
            out.append((c, data))
    return out


def _fields(txns):
    assert len(txns) == 1
    doc = document(txns[0])
    return doc, txns[0].status


# -- fingerprints: FoxIO's published examples ----------------------------------------

# technical_details/JA4.md: ciphers and extensions of its example, in wire order.
SPEC_CIPHERS = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013,
                0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
SPEC_EXTENSIONS = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005,
                   0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]
SPEC_SIGNATURES = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def spec_hello(**changes) -> ClientHello:
    hello = ClientHello(0x0303, bytes(32), b"", [0x0A0A, *SPEC_CIPHERS], [0],
                        [0x1A1A, *SPEC_EXTENSIONS], server_names=["example.com"], alpn=["h2", "http/1.1"],
                        supported_versions=[0x2A2A, 0x0304, 0x0303],
                        signature_algorithms=SPEC_SIGNATURES)
    for key, value in changes.items():
        setattr(hello, key, value)
    return hello


def test_ja4_equals_the_published_example_grease_ignored():
    assert ja4(spec_hello()) == "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_ja4_without_signature_algorithms_hashes_the_extensions_alone():
    assert ja4(spec_hello(signature_algorithms=[])).endswith("_6d807ffa2a79")


def test_ja4_without_ciphers_or_extensions_uses_zeros():
    hello = spec_hello(ciphers=[], extensions=[], alpn=[], supported_versions=[])
    assert ja4(hello) == "t12i000000_000000000000_000000000000"


@pytest.mark.parametrize("raw, expected", [
    (b"h2", "h2"), (b"http/1.1", "h1"), (b"x", "xx"),
    # the spec's examples for values that do not start and end alphanumeric
    (b"\xab", "ab"), (b"\xab\xcd", "ad"), (b"\x30\xab", "3b"), (b"\x30\x31\xab\xcd", "3d"),
    (b"\x30\xab\xcd\x31", "01")])
def test_ja4_alpn_characters_follow_the_spec(raw, expected):
    assert _ja4_alpn(raw.decode("latin-1")) == expected


def test_ja4s_equals_the_published_example():
    hello = ServerHello(0x0303, bytes(32), b"", 0xC030, 0, [0x0005, 0x0017, 0xFF01, 0x0000])
    assert ja4s(hello) == "t120400_c030_4e8089b08790"


# -- framing ----------------------------------------------------------------------------

@pytest.mark.parametrize("capture", ["tls12_client_cert.pcap", "tls12_rsa.pcap", "tls13_resumption_hrr.pcap"])
@pytest.mark.parametrize("cut", [byte_by_byte, merged], ids=["byte_by_byte", "merged"])
def test_a_session_decodes_the_same_however_tcp_cuts_it(capture, cut):
    segments = connection_segments(capture, index=-1)
    expected, status = _fields(feed(segments)[1])
    got, got_status = _fields(feed(cut(segments))[1])
    assert got == expected and got_status == status == "OK"
    assert expected["tls"]["established"] is True


def test_several_handshake_messages_in_one_record_and_one_message_over_many_records():
    # The server's first flight (ServerHello, Certificate, ServerKeyExchange,
    # CertificateRequest, ServerHelloDone) shares records; re-cut it into
    # records of at most 50 bytes each, as a TLS stack may.
    segments = connection_segments("tls12_client_cert.pcap")
    reframed = []
    for from_client, data in segments:
        if from_client or data[0] != 22:
            reframed.append((from_client, data))
            continue
        out, i = b"", 0
        while i < len(data):
            length = int.from_bytes(data[i + 3:i + 5], "big")
            body = data[i + 5:i + 5 + length]
            if data[i] == 22:
                for j in range(0, len(body), 50):
                    piece = body[j:j + 50]
                    out += data[i:i + 3] + len(piece).to_bytes(2, "big") + piece
            else:
                out += data[i:i + 5 + length]
            i += 5 + length
        reframed.append((from_client, out))
    doc, status = _fields(feed(reframed)[1])
    assert status == "OK" and doc["tls"]["detailed"]["client_certificate_requested"] is True
    assert doc["tls"]["server"]["x509"]["subject"]["common_name"] == "ec.wirebeat.test"
    assert doc["tls"]["client"]["x509"]["subject"]["common_name"] == "alice"


def test_application_data_is_skipped_not_kept():
    segments = connection_segments("tls12_rsa.pcap")
    stream = TLSStream(FLOW, OPTIONS)
    for from_client, data in segments[:2]:     # ClientHello, server flight: not done yet
        assert stream.on_data(from_client, data, 1000.0) == []
    record = b"\x17\x03\x03\x40\x00" + bytes(0x4000)
    stream.server.encrypted = True
    for _ in range(64):                        # 1 MiB of "application data"
        stream.on_data(False, record, 1001.0)
    assert stream.server.skip == 0 and not stream.server.body and not stream.server.handshake


# -- caps, gaps, bad bytes ------------------------------------------------------------

def test_a_handshake_message_over_the_cap_ends_that_direction_counted():
    segments = connection_segments("tls12_client_cert.pcap")
    stream, txns = feed(segments, {**OPTIONS, "max_handshake_message_bytes": 1500})
    doc, status = _fields(txns)
    assert status == "Error" and txns[0].notes == ("tls.handshake_message_too_large",)
    assert stream.counters["oversized_messages"] == 2     # the server's and alice's Certificate
    assert "x509" not in doc["tls"].get("server", {}) and "x509" not in doc["tls"]["client"]
    assert doc["tls"]["client"]["server_name"] == "ec.wirebeat.test"      # read before the cap


def test_a_gap_in_the_handshake_is_noted_and_the_session_reported_at_close():
    segments = connection_segments("tls12_rsa.pcap")
    stream = TLSStream(FLOW, OPTIONS)
    assert stream.on_data(True, segments[0][1], 1.0) == []
    assert stream.on_gap(False, 1200, 2.0) == []
    [txn] = stream.on_close(3.0)
    assert txn.status == "Error" and txn.notes == ("tls.gap",)
    assert document(txn)["tls"]["client"]["server_name"] == "rsa.wirebeat.test"


def test_an_unfinished_handshake_is_reported_after_the_timeout():
    segments = connection_segments("tls12_rsa.pcap")
    stream = TLSStream(FLOW, OPTIONS)
    stream.on_data(True, segments[0][1], 100.0)
    assert stream.expire(105.0) == []
    [txn] = stream.expire(111.0)
    assert txn.status == "Error" and txn.notes == ("tls.handshake_timeout",)
    assert stream.on_close(112.0) == []         # reported once


def test_a_bad_record_header_is_a_note_not_a_crash():
    stream = TLSStream(FLOW, OPTIONS)
    hello = connection_segments("tls12_rsa.pcap")[0][1]
    stream.on_data(True, hello, 1.0)
    stream.on_data(False, b"HTTP/1.1 400 Bad Request\r\n\r\n", 2.0)
    [txn] = stream.on_close(3.0)
    assert txn.notes == ("tls.bad_record_header",)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parse_client_hello_parses_or_raises_decode_error(body):
    try:
        parse_client_hello(body)
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parse_server_hello_parses_or_raises_decode_error(body):
    try:
        parse_server_hello(body)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=8), st.data())
def test_mutated_streams_never_raise(segments, data):
    real = connection_segments("tls12_client_cert.pcap")
    # real bytes with one byte flipped, plus random segments
    i = data.draw(st.integers(0, len(real) - 1))
    from_client, payload = real[i]
    pos = data.draw(st.integers(0, len(payload) - 1))
    flipped = payload[:pos] + bytes([payload[pos] ^ 0xFF]) + payload[pos + 1:]
    stream = TLSStream(FLOW, OPTIONS)
    txns = []
    for c, d in [*real[:i], (from_client, flipped), *segments]:
        txns += stream.on_data(c, d, 1.0)
    txns += stream.on_close(2.0)
    for txn in txns:
        document(txn)


# -- detection --------------------------------------------------------------------------

def test_detection_recognises_a_client_hello_and_nothing_else():
    hello = connection_segments("tls12_rsa.pcap")[0][1]
    server_hello = connection_segments("tls12_rsa.pcap")[1][1]
    assert looks_like_client_hello(hello)
    assert looks_like_client_hello(hello[:6])
    assert not looks_like_client_hello(hello[:5])
    assert not looks_like_client_hello(server_hello)
    assert not looks_like_client_hello(b"GET / HTTP/1.1\r\n\r\n")
    assert not looks_like_client_hello(b"\x16\x03\x01\x00\x00\x01")      # empty record


def test_the_engine_hands_unconfigured_ports_to_tls_only_when_they_start_with_a_client_hello():
    docs, counters = decode_pcap(PCAPS / "tls" / "tls13_ecdsa_anyport.pcap", [DECODER])
    assert [d["destination"]["port"] for d in docs] == [14433, 14433]
    assert counters["tcp.connections_detected"] == 2
    # HTTP on its own ports, with only the TLS decoder enabled: nothing is taken for TLS
    docs, counters = decode_pcap(PCAPS / "http" / "keepalive.pcap", [DECODER])
    assert docs == [] and "tcp.connections_detected" not in counters
    assert counters["packets.tcp_untracked"] > 0
