"""ICMP decoder, sans-IO: pairing, timeouts, orphans, caps, malformed input."""
from __future__ import annotations

import struct

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirebeat.decoders.api import Datagram, DecodeError, FlowKey
from wirebeat.decoders.icmp import (NOTE_DUPLICATE, NOTE_NO_REQUEST, NOTE_NO_RESPONSE, ICMPDecoder,
                           decode_message, document, document_text)

OPTIONS = {"transaction_timeout": 10.0, "max_pending": 100}


def _msg(type_: int, code: int = 0, ident: int = 1, seq: int = 1, data: bytes = b"") -> bytes:
    return struct.pack("!BBHHH", type_, code, 0, ident, seq) + data


def _dgram(ts: float, src: str, dst: str, payload: bytes, v6: bool = False) -> Datagram:
    transport = "ipv6-icmp" if v6 else "icmp"
    return Datagram(ts, FlowKey(transport, src, payload[0], dst, payload[1], "t"), True, payload)


def test_echo_request_and_reply_pair_into_one_ok_transaction():
    dec = ICMPDecoder(OPTIONS)
    assert dec.on_datagram(_dgram(100.0, "10.0.0.1", "10.0.0.2", _msg(8, data=b"a" * 10))) == []
    [txn] = dec.on_datagram(_dgram(100.25, "10.0.0.2", "10.0.0.1", _msg(0, data=b"a" * 10)))
    assert txn.status == "OK" and txn.notes == ()
    assert (txn.flow.client_ip, txn.flow.server_ip) == ("10.0.0.1", "10.0.0.2")
    assert (txn.ts, txn.end_ts) == (100.0, 100.25)
    assert (txn.request_bytes, txn.response_bytes) == (10, 10)
    fields = document(txn)
    assert fields["icmp"] == {"version": 4,
                              "request": {"message": "EchoRequest", "type": 8, "code": 0},
                              "response": {"message": "EchoReply", "type": 0, "code": 0}}
    assert fields["path"] == "10.0.0.2"


def test_reply_with_other_sequence_does_not_pair():
    dec = ICMPDecoder(OPTIONS)
    dec.on_datagram(_dgram(1.0, "10.0.0.1", "10.0.0.2", _msg(8, seq=1)))
    [orphan] = dec.on_datagram(_dgram(1.1, "10.0.0.2", "10.0.0.1", _msg(0, seq=2)))
    assert orphan.status == "Error" and orphan.notes == (NOTE_NO_REQUEST,)
    # The orphan reply is reported from the requester's side, as packetbeat does.
    assert orphan.flow.client_ip == "10.0.0.1"
    assert document(orphan)["icmp"].keys() == {"version", "response"}


def test_unanswered_request_is_reported_after_the_timeout_only():
    dec = ICMPDecoder(OPTIONS)
    dec.on_datagram(_dgram(50.0, "10.0.0.1", "10.0.0.9", _msg(8)))
    assert dec.expire(59.9) == []
    [txn] = dec.expire(60.0)
    assert txn.status == "Error" and txn.notes == (NOTE_NO_RESPONSE,)
    assert txn.end_ts is None and txn.response_bytes is None


def test_end_of_input_reports_every_pending_request():
    dec = ICMPDecoder(OPTIONS)
    for seq in range(3):
        dec.on_datagram(_dgram(1.0 + seq, "10.0.0.1", "10.0.0.9", _msg(8, seq=seq)))
    assert len(dec.expire(float("inf"))) == 3


def test_duplicate_request_closes_the_first_one():
    dec = ICMPDecoder(OPTIONS)
    dec.on_datagram(_dgram(1.0, "10.0.0.1", "10.0.0.2", _msg(8)))
    [closed] = dec.on_datagram(_dgram(2.0, "10.0.0.1", "10.0.0.2", _msg(8)))
    assert closed.ts == 1.0 and closed.notes == (NOTE_DUPLICATE,)
    [paired] = dec.on_datagram(_dgram(2.5, "10.0.0.2", "10.0.0.1", _msg(0)))
    assert paired.ts == 2.0 and paired.status == "OK"


def test_destination_unreachable_is_reported_at_once_as_error():
    dec = ICMPDecoder(OPTIONS)
    [txn] = dec.on_datagram(_dgram(1.0, "10.0.0.2", "10.0.0.1", _msg(3, code=3, data=b"q" * 28)))
    assert txn.status == "Error"
    assert document(txn)["icmp"]["request"] == {"message": "DestinationUnreachable(Port)",
                                                "type": 3, "code": 3}


def test_icmpv6_echo_and_neighbour_solicitation_types():
    dec = ICMPDecoder(OPTIONS)
    dec.on_datagram(_dgram(1.0, "fe80::1", "fe80::2", _msg(128), v6=True))
    [txn] = dec.on_datagram(_dgram(1.001, "fe80::2", "fe80::1", _msg(129), v6=True))
    assert document(txn)["icmp"]["version"] == 6 and txn.status == "OK"
    [too_big] = dec.on_datagram(_dgram(2.0, "fe80::2", "fe80::1", _msg(2), v6=True))
    assert too_big.status == "Error"


def test_pending_cap_reports_the_oldest_request_and_counts_it():
    dec = ICMPDecoder({"transaction_timeout": 10.0, "max_pending": 3})
    out = []
    for seq in range(5):
        out += dec.on_datagram(_dgram(1.0 + seq / 100, "10.0.0.1", "10.0.0.2", _msg(8, seq=seq)))
    assert [t.identity for t in out] == ["8/0/1/0", "8/0/1/1"]
    assert all(t.notes == (NOTE_NO_RESPONSE,) for t in out)
    assert dec.counters["pending_evicted"] == 2
    assert len(dec.pending) == 3


@pytest.mark.parametrize("payload", [b"", b"\x08", b"\x08\x00\x00", b"\x08\x00\x00\x00\x00\x01"])
def test_short_echo_is_truncated_decode_error(payload):
    with pytest.raises(DecodeError) as err:
        decode_message(payload, 4)
    assert err.value.reason == "icmp.truncated"


@given(st.binary(max_size=64), st.sampled_from([4, 6]))
def test_decode_message_parses_or_raises_decode_error(payload: bytes, version: int) -> None:
    try:
        decode_message(payload, version)
    except DecodeError:
        pass


def test_document_text_is_documents_json_for_every_kind_of_transaction():
    """The text path's document_text against document(): echo pairs (v4, v6, codes and
    payloads of every kind), unanswered, duplicate, orphan and lone error messages."""
    dec = ICMPDecoder(OPTIONS)
    txns = []
    for n, (v6, src, dst) in enumerate([(False, "10.0.0.1", "10.0.0.2"), (True, "fe80::1", "2001:db8::2")]):
        request, reply = (128, 129) if v6 else (8, 0)
        for seq in range(3):
            txns += dec.on_datagram(_dgram(n + seq, src, dst, _msg(request, code=seq, seq=seq), v6))
            txns += dec.on_datagram(_dgram(n + seq + 0.1, dst, src, _msg(reply, code=seq, seq=seq, data=b"x" * seq), v6))
        txns += dec.on_datagram(_dgram(n + 5, src, dst, _msg(request, seq=9), v6))
        txns += dec.on_datagram(_dgram(n + 5.1, src, dst, _msg(request, seq=9), v6))      # duplicate
        txns += dec.on_datagram(_dgram(n + 6, dst, src, _msg(reply, seq=77), v6))          # orphan
        txns += dec.on_datagram(_dgram(n + 7, dst, src, _msg(1 if v6 else 3, code=3), v6))
        txns += dec.on_datagram(_dgram(n + 8, src, dst, _msg(135 if v6 else 13, seq=5), v6))
    txns += dec.expire(float("inf"))
    assert len(txns) == 16
    for txn in txns:
        doc = document(txn)
        assert document_text(txn) == (orjson.dumps(doc.pop("event")), orjson.dumps(doc), None)
