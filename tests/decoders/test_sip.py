"""SIP decoder, sans-IO: message, URI, address and SDP parsing; documents; TCP framing;
the media it announces to the RTP decoder."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirebeat.decoders.api import Datagram, DecodeError, Expectations, FlowKey
from wirebeat.decoders.rtp import MediaEndpoint
from wirebeat.decoders.sip import (SIPDecoder, SIPStream, decode_message, decode_sdp, document,
                          parse_address, parse_uri)

FLOW = FlowKey("udp", "10.0.0.1", 5062, "10.0.0.2", 5060, "test")
TCP_FLOW = FlowKey("tcp", "10.0.0.1", 40000, "10.0.0.2", 5060, "test")
OPTIONS = {"keep_original": True, "parse_authorization": True, "parse_body": True,
           "max_dialogs": 100, "dialog_timeout": 3600.0, "max_message_bytes": 65536}
T0 = 1_767_225_600.0

SDP_OFFER = ("v=0\r\n"
             "o=alice 2890844526 2890844527 IN IP4 10.0.0.1\r\n"
             "s=call\r\n"
             "c=IN IP4 10.0.0.1\r\n"
             "t=0 0\r\n"
             "m=audio 49170 RTP/AVP 0 111 101\r\n"
             "a=rtpmap:111 opus/48000/2\r\n"
             "a=rtpmap:101 telephone-event/8000\r\n"
             "a=fmtp:101 0-15\r\n"
             "m=video 0 RTP/AVP 96\r\n")


def message(start: str, *headers: str, body: str = "") -> bytes:
    head = "\r\n".join([start, *headers, f"Content-Length: {len(body.encode())}"])
    return (head + "\r\n\r\n" + body).encode()


INVITE = message(
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK1, SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK2",
    "Max-Forwards: 70",
    'To: "Bob" <sip:bob@biloxi.example.com>',
    'From: "Alice Liddell" <sip:alice@atlanta.example.com:5070>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com;transport=TCP;line=7>;expires=60;q=0.7",
    "Allow: INVITE, ACK, cancel",
    "Supported: replaces, timer",
    "Accept: Application/SDP",
    "User-Agent: softphone 1.0",
    "Content-Type: application/sdp",
    body=SDP_OFFER)

OK = message(
    "SIP/2.0 200 OK",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "To: <sip:bob@biloxi.example.com>;tag=a6c85cf",
    "From: <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Content-Type: application/sdp",
    body="v=0\r\no=bob 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
         "m=audio 3456 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=rtcp:3460\r\n")


def sip_doc(payload: bytes, from_client: bool = True, flow: FlowKey = FLOW) -> dict:
    [txn] = SIPDecoder(OPTIONS).on_datagram(Datagram(T0, flow, from_client, payload))
    return document(txn)


# -- parsing ---------------------------------------------------------------------

def test_request_line_headers_and_body_are_split():
    msg = decode_message(INVITE)
    assert (msg.is_request, msg.method, msg.version) == (True, "INVITE", "2.0")
    assert msg.uri.host == "biloxi.example.com" and msg.uri.username == "bob"
    assert msg.header("call-id") == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.body.decode() == SDP_OFFER and msg.size == len(INVITE)


def test_a_response_takes_its_method_from_cseq():
    msg = decode_message(OK)
    assert (msg.is_request, msg.code, msg.reason, msg.method) == (False, 200, "OK", "INVITE")


def test_compact_header_names_and_folded_lines_are_understood():
    msg = decode_message(b"OPTIONS sip:x@y SIP/2.0\r\ni: abc\r\nf: <sip:a@b>;tag=1\r\n"
                         b"Subject: first\r\n  second\r\nl: 0\r\n\r\n")
    assert msg.header("call-id") == "abc" and msg.header("from") == "<sip:a@b>;tag=1"
    assert msg.header("subject") == "first second"


def test_bytes_after_content_length_are_not_part_of_the_message():
    msg = decode_message(message("BYE sip:a@b SIP/2.0", "Call-ID: 1", body="") + b"junk")
    assert msg.body == b"" and msg.size == len(message("BYE sip:a@b SIP/2.0", "Call-ID: 1"))


@pytest.mark.parametrize("payload, reason", [
    (b"HELLO WORLD\r\n\r\n", "sip.bad_start_line"),
    (b"SIP/2.0 2000 OK\r\n\r\n", "sip.bad_start_line"),
    (b"INVITE sip:a@b SIP/2.0\r\nno colon here\r\n\r\n", "sip.bad_header"),
    (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: ten\r\n\r\n", "sip.bad_content_length"),
    (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nshort", "sip.truncated"),
    (b"INVITE sip:a@b SIP/2.0\r\n" + b"X-A: 1\r\n" * 300 + b"\r\n", "sip.too_many_headers"),
])
def test_bad_messages_raise_decode_error_with_a_stable_reason(payload, reason):
    with pytest.raises(DecodeError) as err:
        decode_message(payload)
    assert err.value.reason == reason


@pytest.mark.parametrize("text, expected", [
    ("sip:alice@atlanta.com", ("sip", "alice", "atlanta.com", None)),
    ("sips:alice:secret@atlanta.com:5061;transport=tcp", ("sips", "alice", "atlanta.com", 5061)),
    ("sip:[2001:db8::1]:5060", ("sip", "", "2001:db8::1", 5060)),
    ("sip:bob@[2001:db8::2]", ("sip", "bob", "2001:db8::2", None)),
    ("tel:+1-201-555-0123", ("tel", "+1-201-555-0123", "", None)),
    ("sip:host:99999", ("sip", "", "host", None)),
    ("not a uri", ("", "", "", None)),
])
def test_uris_split_into_scheme_user_host_and_port(text, expected):
    uri = parse_uri(text)
    assert (uri.scheme, uri.username, uri.host, uri.port) == expected
    assert uri.original == text and "secret" not in uri.username


def test_name_addr_and_addr_spec_keep_their_header_parameters_apart():
    a = parse_address('"Alice Liddell" <sip:alice@a.com;transport=tcp>;tag=88sja8x;expires=60')
    assert (a.display, a.uri.host, a.uri.params, a.params) == \
        ("Alice Liddell", "a.com", {"transport": "tcp"}, {"tag": "88sja8x", "expires": "60"})
    b = parse_address("sip:bob@b.com;tag=x")          # addr-spec: ;tag belongs to the header
    assert (b.display, b.uri.original, b.params) == ("", "sip:bob@b.com", {"tag": "x"})


def test_sdp_media_lines_give_address_port_rtpmap_and_rtcp():
    sdp = decode_sdp(SDP_OFFER)
    assert (sdp.version, sdp.owner_username, sdp.owner_session_id, sdp.owner_version,
            sdp.owner_ip, sdp.session_name) == ("0", "alice", "2890844526", "2890844527",
                                                "10.0.0.1", "call")
    audio, video = sdp.media
    assert (audio.media, audio.address, audio.port, audio.proto, audio.formats) == \
        ("audio", "10.0.0.1", 49170, "RTP/AVP", ["0", "111", "101"])
    assert audio.rtpmap == {111: ("opus", 48000), 101: ("telephone-event", 8000)}
    assert audio.rtcp_port == 49171 and video.port == 0


def test_sdp_rtcp_attribute_mux_and_media_level_connection():
    sdp = decode_sdp("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 5000 RTP/AVP 0\r\nc=IN IP4 2.2.2.2/127\r\n"
                     "a=rtcp:6000\r\nm=audio 7000 RTP/SAVPF 0\r\na=rtcp-mux\r\na=sendonly\r\n")
    first, second = sdp.media
    assert (first.address, first.rtcp_port) == ("2.2.2.2", 6000)
    assert (second.address, second.rtcp_port, second.direction) == ("1.1.1.1", None, "sendonly")


@given(st.binary(max_size=600))
def test_decode_message_parses_or_raises_decode_error(payload):
    try:
        decode_message(payload)
    except DecodeError:
        pass


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["v=0", "o=a 1 2 IN IP4 1.2.3.4", "c=IN IP4 9.9.9.9", "m=audio",
                                 "m=audio 70000 RTP/AVP 0", "m=audio 5 RTP/AVP 0",
                                 "a=rtpmap:", "a=rtpmap:96 x/", "a=rtpmap:96 opus/48000",
                                 "a=rtcp:", "a=rtcp:0", "a=rtcp-mux", "c=", "o=", "s=-", "x"])
                | st.text(max_size=30), max_size=20))
def test_decode_sdp_never_raises(lines):
    decode_sdp("\r\n".join(lines))


@given(st.text(max_size=80))
def test_uri_and_address_parsing_never_raise(text):
    parse_uri(text)
    parse_address(text)


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=80), max_size=10))
def test_the_udp_decoder_and_documents_take_any_datagram(datagrams):
    decoder = SIPDecoder(OPTIONS)
    for n, payload in enumerate([INVITE[:n * 37] for n in range(8)] + datagrams):
        try:
            for txn in decoder.on_datagram(Datagram(T0 + n, FLOW, True, payload)):
                document(txn)
        except DecodeError:
            pass


# -- documents ----------------------------------------------------------------------

def test_a_request_document_has_packetbeats_sip_fields():
    doc = sip_doc(INVITE)
    sip = doc["sip"]
    assert sip["type"] == "request" and sip["method"] == "INVITE" and sip["version"] == "2.0"
    assert sip["uri"] == {"original": "sip:bob@biloxi.example.com", "scheme": "sip",
                          "username": "bob", "host": "biloxi.example.com"}
    assert sip["from"] == {"display_info": "Alice Liddell", "tag": "1928301774",
                           "uri": {"original": "sip:alice@atlanta.example.com:5070",
                                   "scheme": "sip", "username": "alice",
                                   "host": "atlanta.example.com", "port": 5070}}
    assert sip["to"]["display_info"] == "Bob" and "tag" not in sip["to"]
    assert sip["cseq"] == {"code": 314159, "method": "INVITE"}
    assert sip["via"]["original"] == ["SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
                                      "SIP/2.0/UDP proxy.example.com;branch=z9hG4bK1",
                                      "SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK2"]
    assert sip["contact"]["transport"] == "tcp" and sip["contact"]["line"] == "7"
    assert sip["contact"]["expires"] == 60 and sip["contact"]["q"] == 0.7
    assert sip["allow"] == ["INVITE", "ACK", "CANCEL"] and sip["supported"] == ["replaces", "timer"]
    assert sip["accept"] == "application/sdp" and sip["content_type"] == "application/sdp"
    assert sip["max_forwards"] == 70 and sip["content_length"] == len(SDP_OFFER)
    assert sip["user_agent"] == {"original": "softphone 1.0"}
    assert sip["sdp"]["owner"] == {"username": "alice", "session_id": "2890844526",
                                   "version": "2890844527", "ip": "10.0.0.1"}
    assert sip["sdp"]["connection"] == {"info": "IN IP4 10.0.0.1", "address": "10.0.0.1"}
    assert sip["sdp"]["session"] == {"name": "call"} and sip["sdp"]["body"]["original"] == SDP_OFFER
    event = doc["event"]
    assert event["action"] == "sip-invite" and event["type"] == ["info"]
    assert event["category"] == ["network", "protocol"] and event["sequence"] == 314159
    assert "outcome" not in event and event["original"] == INVITE.decode()
    assert doc["network"] == {"application": "sip", "iana_number": "17"}
    assert doc["related"]["user"] == ["bob", "alice"]
    assert doc["related"]["hosts"] == ["biloxi.example.com", "atlanta.example.com",
                                       "pc33.atlanta.example.com", "10.0.0.1"]
    assert doc["related"]["ip"] == ["10.0.0.1", "10.0.0.2"]


def test_a_response_document_has_code_status_and_outcome_from_the_responder():
    [txn] = SIPDecoder(OPTIONS).on_datagram(Datagram(T0, FLOW, False, OK))
    doc = document(txn)
    assert (doc["sip"]["type"], doc["sip"]["code"], doc["sip"]["status"]) == ("response", 200, "OK")
    assert "method" not in doc["sip"] and doc["event"]["action"] == "sip-invite"
    assert doc["event"]["outcome"] == "success" and doc["event"]["reason"] == "OK"
    assert txn.status == "OK" and txn.flow.client_ip == "10.0.0.2"      # the sender is the source
    assert (txn.ts, txn.end_ts) == (T0, T0)                              # event.duration 0


@pytest.mark.parametrize("code, status, outcome", [(180, "OK", None), (302, "OK", "failure"),
                                                   (486, "Error", "failure"),
                                                   (503, "Error", "failure")])
def test_status_is_error_from_400_and_outcome_failure_from_300(code, status, outcome):
    [txn] = SIPDecoder(OPTIONS).on_datagram(Datagram(T0, FLOW, False, message(
        f"SIP/2.0 {code} Whatever", "Call-ID: x", "CSeq: 1 INVITE")))
    assert txn.status == status and document(txn)["event"].get("outcome") == outcome


def test_authorization_gives_auth_fields_user_name_and_the_authentication_category():
    doc = sip_doc(message("REGISTER sip:registrar.example.com SIP/2.0", "Call-ID: r1",
                          "CSeq: 2 REGISTER",
                          'Authorization: Digest username="alice", realm="example.com", '
                          'nonce="ab", uri="sip:registrar.example.com:5060", response="cd"'))
    assert doc["sip"]["auth"] == {"scheme": "Digest", "realm": "example.com",
                                  "uri": {"original": "sip:registrar.example.com:5060",
                                          "scheme": "sip", "host": "registrar.example.com",
                                          "port": 5060}}
    assert doc["user"] == {"name": "alice"} and "alice" in doc["related"]["user"]
    assert doc["event"]["category"] == ["network", "protocol", "authentication"]


def test_options_turn_off_original_body_and_authorization():
    decoder = SIPDecoder({**OPTIONS, "keep_original": False, "parse_body": False,
                          "parse_authorization": False})
    [txn] = decoder.on_datagram(Datagram(T0, FLOW, True, INVITE))
    doc = document(txn)
    assert "original" not in doc["event"] and "sdp" not in doc["sip"]


def test_keep_alive_datagrams_are_not_messages():
    assert SIPDecoder(OPTIONS).on_datagram(Datagram(T0, FLOW, True, b"\r\n\r\n")) == []


# -- media announced to the RTP decoder ----------------------------------------------

def test_offer_and_answer_announce_rtp_and_rtcp_endpoints_with_the_call():
    expectations = Expectations()
    decoder = SIPDecoder(OPTIONS, expectations)
    decoder.on_datagram(Datagram(T0, FLOW, True, INVITE))
    decoder.on_datagram(Datagram(T0 + 0.1, FLOW, False, OK))
    offer = expectations.find("10.0.0.1", 49170)
    answer = expectations.find("10.0.0.2", 3456)
    assert offer.decoder == answer.decoder == "rtp"
    assert isinstance(offer.context, MediaEndpoint)
    assert offer.context.session is answer.context.session
    assert offer.context.session.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert offer.context.payload_types[111] == ("opus", 48000)
    assert expectations.find("10.0.0.1", 49171).context.rtcp         # port + 1
    assert expectations.find("10.0.0.2", 3460).context.rtcp          # a=rtcp
    assert expectations.find("10.0.0.1", 0) is None                  # the refused video line


def test_bye_ends_the_calls_media_and_its_announcements():
    expectations = Expectations()
    decoder = SIPDecoder(OPTIONS, expectations)
    decoder.on_datagram(Datagram(T0, FLOW, True, INVITE))
    decoder.on_datagram(Datagram(T0 + 0.1, FLOW, False, OK))
    decoder.on_datagram(Datagram(T0 + 9, FLOW, True, message(
        "BYE sip:bob@b SIP/2.0", "Call-ID: a84b4c76e66710@pc33.atlanta.example.com", "CSeq: 2 BYE")))
    session = expectations.find("10.0.0.1", 49170).context.session
    assert session.ended_ts == T0 + 9
    assert expectations.find("10.0.0.2", 3456).until_ts == T0 + 9


def test_a_refused_invite_ends_its_media():
    expectations = Expectations()
    decoder = SIPDecoder(OPTIONS, expectations)
    decoder.on_datagram(Datagram(T0, FLOW, True, INVITE))
    decoder.on_datagram(Datagram(T0 + 1, FLOW, False, message(
        "SIP/2.0 486 Busy Here", "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        "CSeq: 314159 INVITE")))
    assert expectations.find("10.0.0.1", 49170).context.session.ended_ts == T0 + 1


def test_dialogs_are_capped_and_forgotten_when_idle():
    decoder = SIPDecoder({**OPTIONS, "max_dialogs": 2, "dialog_timeout": 60.0}, Expectations())
    for n in range(3):
        decoder.on_datagram(Datagram(T0 + n, FLOW, True,
                                     INVITE.replace(b"a84b4c76e66710", b"call%d" % n)))
    assert len(decoder.dialogs.calls) == 2 and decoder.counters["dialogs_evicted"] == 1
    decoder.expire(T0 + 61.5)
    assert list(decoder.dialogs.calls) == ["call2@pc33.atlanta.example.com"]


def test_the_dialog_evicted_is_the_one_idle_longest_not_the_one_opened_first():
    decoder = SIPDecoder({**OPTIONS, "max_dialogs": 2, "dialog_timeout": 60.0}, Expectations())
    invite = [INVITE.replace(b"a84b4c76e66710", b"call%d" % n) for n in range(3)]
    decoder.on_datagram(Datagram(T0, FLOW, True, invite[0]))
    decoder.on_datagram(Datagram(T0 + 1, FLOW, True, invite[1]))
    decoder.on_datagram(Datagram(T0 + 2, FLOW, False, OK.replace(b"a84b4c76e66710", b"call0")))
    decoder.on_datagram(Datagram(T0 + 3, FLOW, True, invite[2]))      # full: call1 goes
    assert list(decoder.dialogs.calls) == ["call0@pc33.atlanta.example.com",
                                           "call2@pc33.atlanta.example.com"]
    assert decoder.counters["dialogs_evicted"] == 1


def test_hold_and_non_rtp_media_announce_nothing():
    expectations = Expectations()
    body = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 5000 RTP/AVP 0\r\nm=image 6000 udptl t38\r\n"
    SIPDecoder(OPTIONS, expectations).on_datagram(Datagram(T0, FLOW, True, message(
        "INVITE sip:a@b SIP/2.0", "Call-ID: hold", "CSeq: 1 INVITE",
        "Content-Type: application/sdp", body=body)))
    assert expectations.udp == {}


# -- SIP over TCP --------------------------------------------------------------------

def feed(chunks: list[bytes]) -> list:
    stream = SIPStream(TCP_FLOW, OPTIONS, Expectations())
    out = []
    for chunk in chunks:
        out += stream.on_data(True, chunk, T0)
    return out


@pytest.mark.parametrize("split", [
    lambda data: [data],
    lambda data: [data[i:i + 1] for i in range(len(data))],
    lambda data: [data[:len(data) // 3], data[len(data) // 3:]],
], ids=["whole", "byte_by_byte", "two_segments"])
def test_tcp_messages_are_framed_by_content_length_however_tcp_splits_them(split):
    data = INVITE + b"\r\n\r\n" + OK                   # a keep-alive CRLF pair between them
    txns = feed(split(data))
    assert [document(t)["sip"]["type"] for t in txns] == ["request", "response"]
    assert document(txns[0])["network"]["iana_number"] == "6"
    assert txns[0].detail.message.body.decode() == SDP_OFFER


def test_tcp_resynchronises_on_the_next_message_after_a_gap():
    stream = SIPStream(TCP_FLOW, OPTIONS, Expectations())
    assert stream.on_data(True, INVITE[:100], T0) == []
    stream.on_gap(True, 50, T0)
    [txn] = stream.on_data(True, INVITE[200:] + OK, T0)
    assert txn.detail.message.code == 200


def test_tcp_refuses_a_message_over_the_size_cap():
    stream = SIPStream(TCP_FLOW, {**OPTIONS, "max_message_bytes": 200}, Expectations())
    with pytest.raises(DecodeError) as err:
        stream.on_data(True, INVITE, T0)
    assert err.value.reason == "sip.too_large"
    # The rest of the big message is skipped; the next one decodes.
    [txn] = stream.on_data(True, message("BYE sip:a@b SIP/2.0", "Call-ID: 1", "CSeq: 2 BYE"), T0)
    assert txn.detail.message.method == "BYE"


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=120), max_size=8), st.lists(st.booleans(), max_size=8))
def test_the_tcp_stream_takes_any_bytes_and_raises_only_decode_error(chunks, gaps):
    stream = SIPStream(TCP_FLOW, {**OPTIONS, "max_message_bytes": 400}, Expectations())
    for n, chunk in enumerate([INVITE[:77]] + chunks):
        try:
            if n < len(gaps) and gaps[n]:
                stream.on_gap(True, 10, T0)
            for txn in stream.on_data(True, chunk, T0 + n):
                document(txn)
        except DecodeError:
            pass


def test_a_bad_message_between_good_ones_is_skipped_and_counted_at_close():
    stream = SIPStream(TCP_FLOW, OPTIONS, Expectations())
    txns = stream.on_data(True, INVITE + b"GARBAGE LINE\r\nno header\r\n\r\n" + OK, T0)
    # The response after the garbage is found again by its start line.
    assert [t.detail.message.method for t in txns] == ["INVITE", "INVITE"]
    assert [t.detail.message.code for t in txns] == [0, 200]
    with pytest.raises(DecodeError) as err:
        stream.on_close(T0)
    assert err.value.reason == "sip.bad_start_line"
    assert stream.on_close(T0) == []
