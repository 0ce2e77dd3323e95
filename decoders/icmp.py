"""ICMP for IPv4 (RFC 792) and IPv6 (RFC 4443, RFC 4861), as packetbeat reports it.

Request types that expect a reply are paired with it on (addresses, identifier,
sequence): echo, timestamp, information and address-mask requests for IPv4;
echo, router and neighbour solicitation for IPv6. A request left unanswered for
`transaction_timeout` is reported alone with status Error. Every other message
(destination unreachable, time exceeded, ...) is a transaction of its own,
reported at once; error-type messages have status Error. A reply without a
request is reported with the reply alone, status Error.

The engine hands over whole IP payloads of protocols 1 and 58. Following the
Community ID spec, an ICMP flow's ports are the message's type and code.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from wirebeat.decoders.api import Datagram, DecoderSpec, FlowKey, Option, Transaction, Truncated
from wirebeat.records import maker, new_flow_key as _new_flow_key, new_transaction as _new_transaction

__all__ = ["DECODER", "ICMPMessage", "decode_message", "document", "message_name"]

# request type -> reply type
_PAIRS = {
    4: {8: 0, 13: 14, 15: 16, 17: 18},
    6: {128: 129, 133: 134, 135: 136},
}
_REPLIES = {version: {reply: request for request, reply in pairs.items()}
            for version, pairs in _PAIRS.items()}
# Error reports (packetbeat's status rule): v4 unreachable, source quench,
# redirect, time exceeded, parameter problem; v6 unreachable, packet too big,
# time exceeded, parameter problem.
_ERRORS = {4: frozenset({3, 4, 5, 11, 12}), 6: frozenset({1, 2, 3, 4})}

_NAMES = {
    4: {0: "EchoReply", 3: "DestinationUnreachable", 4: "SourceQuench", 5: "Redirect",
        8: "EchoRequest", 9: "RouterAdvertisement", 10: "RouterSolicitation",
        11: "TimeExceeded", 12: "ParameterProblem", 13: "TimestampRequest",
        14: "TimestampReply", 15: "InfoRequest", 16: "InfoReply",
        17: "AddressMaskRequest", 18: "AddressMaskReply"},
    6: {1: "DestinationUnreachable", 2: "PacketTooBig", 3: "TimeExceeded",
        4: "ParameterProblem", 128: "EchoRequest", 129: "EchoReply",
        130: "MulticastListenerQuery", 131: "MulticastListenerReport",
        132: "MulticastListenerDone", 133: "RouterSolicitation",
        134: "RouterAdvertisement", 135: "NeighborSolicitation",
        136: "NeighborAdvertisement", 137: "Redirect", 143: "MulticastListenerReportV2"},
}
_UNREACHABLE_CODES = {
    4: {0: "Net", 1: "Host", 2: "Protocol", 3: "Port", 4: "FragmentationNeeded",
        5: "SourceRoutingFailed", 9: "NetAdminProhibited", 10: "HostAdminProhibited",
        13: "CommAdminProhibited"},
    6: {0: "NoRouteToDst", 1: "AdminProhibited", 2: "BeyondScopeOfSrc",
        3: "AddressUnreachable", 4: "PortUnreachable"},
}

# Notes as packetbeat words them, so existing searches on error.message still match.
NOTE_DUPLICATE = ("Another request with the same Id and Seq was received so this "
                  "request was closed without receiving a response.")
NOTE_NO_RESPONSE = "Request was received without an associated response."
NOTE_NO_REQUEST = "Response was received without an associated request."

_HEADER = struct.Struct("!BBHHH")   # type, code, checksum, identifier, sequence


@dataclass(slots=True)      # per packet: not frozen, which costs 4x to build
class ICMPMessage:
    """One ICMP or ICMPv6 message's header."""

    version: int          # 4 or 6
    type: int
    code: int
    identifier: int       # echo id; 0 where the type has none
    sequence: int
    payload_bytes: int    # bytes after the 8-byte header

    @property
    def name(self) -> str:
        return message_name(self.version, self.type, self.code)


@dataclass(slots=True)
class ICMPExchange:
    """A request and its reply (echo and the like), or one message alone."""

    request: ICMPMessage | None
    response: ICMPMessage | None
    request_dst: str      # packetbeat's `path`


@lru_cache(maxsize=4096)    # a handful of (version, type, code) values recur in all traffic
def message_name(version: int, type_: int, code: int) -> str:
    """packetbeat-style readable name: EchoRequest, DestinationUnreachable(Port), ..."""
    name = _NAMES[version].get(type_, f"Type{type_}")
    if type_ == (3 if version == 4 else 1):
        name += "(" + _UNREACHABLE_CODES[version].get(code, f"Code{code}") + ")"
    return name


def decode_message(payload: bytes, version: int) -> ICMPMessage:
    """Parse an ICMP header. Raises Truncated ("icmp.truncated") on short input."""
    if len(payload) < 4:
        raise Truncated("icmp.truncated", len(payload))
    if len(payload) < 8:
        # The rest-of-header word is missing; only echo-like types need it.
        type_, code = payload[0], payload[1]
        if type_ in _PAIRS[version] or type_ in _REPLIES[version]:
            raise Truncated("icmp.truncated", len(payload))
        return ICMPMessage(version, type_, code, 0, 0, 0)
    type_, code, _checksum, identifier, sequence = _HEADER.unpack_from(payload)
    return ICMPMessage(version, type_, code, identifier, sequence, len(payload) - 8)


class ICMPDecoder:
    """Pairs requests with replies for every ICMP flow of one capture source."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.timeout_s: float = options["transaction_timeout"]
        self.max_pending: int = options["max_pending"]
        # (version, requester ip, responder ip, id, seq) -> (request time, flow, message)
        # Oldest first; an OrderedDict for the same reason as DNS's pending queries.
        self.pending: OrderedDict[tuple, tuple[float, FlowKey, ICMPMessage]] = OrderedDict()
        self.counters = {"pending_evicted": 0}    # read by the engine's monitoring

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        flow = dgram.flow
        version = 6 if flow.transport == "ipv6-icmp" else 4
        payload = dgram.payload
        if len(payload) < 8:
            msg = decode_message(payload, version)
            if msg.type in _REPLIES[version]:
                return self._on_reply(dgram.ts, flow, msg)
            return self._on_request(dgram.ts, flow, msg)
        # decode_message's whole header, without the call; then the echo pairs (every ICMP
        # packet of a ping) paired here, without _on_request's and _on_reply's calls
        type_, code, _checksum, identifier, sequence = _HEADER.unpack_from(payload)
        msg = _new_message(version, type_, code, identifier, sequence, len(payload) - 8)
        pending = self.pending
        if type_ in _REPLIES[version]:
            found = pending.pop((version, flow.server_ip, flow.client_ip, identifier, sequence), None)
            if found is None:
                return self._on_reply(dgram.ts, flow, msg)
            req_ts, req_flow, req = found
            return [_transaction(req_ts, dgram.ts, req_flow, req, msg, "OK", ())]
        if type_ in _PAIRS[version]:
            key = (version, flow.client_ip, flow.server_ip, identifier, sequence)
            if key not in pending and len(pending) < self.max_pending:
                pending[key] = (dgram.ts, flow, msg)    # no duplicate to close, room left
                return []
        return self._on_request(dgram.ts, flow, msg)

    def _on_request(self, ts: float, flow: FlowKey, msg: ICMPMessage) -> list[Transaction]:
        out: list[Transaction] = []
        if msg.type not in _PAIRS[msg.version]:
            # Needs no reply: one transaction now.
            status = "Error" if msg.type in _ERRORS[msg.version] else "OK"
            out.append(_transaction(ts, None, flow, msg, None, status, ()))
            return out
        key = (msg.version, flow.client_ip, flow.server_ip, msg.identifier, msg.sequence)
        previous = self.pending.pop(key, None)
        if previous is not None:
            out.append(_transaction(previous[0], None, previous[1], previous[2], None,
                                    "Error", (NOTE_DUPLICATE,)))
        if len(self.pending) >= self.max_pending:
            # Cap reached: the oldest request is reported unanswered now rather
            # than holding memory for a reply that a flood will never send.
            req_ts, req_flow, req_msg = self.pending.popitem(last=False)[1]
            self.counters["pending_evicted"] += 1
            out.append(_transaction(req_ts, None, req_flow, req_msg, None, "Error",
                                    (NOTE_NO_RESPONSE,)))
        self.pending[key] = (ts, flow, msg)
        return out

    def _on_reply(self, ts: float, flow: FlowKey, msg: ICMPMessage) -> list[Transaction]:
        # The reply travels responder -> requester.
        key = (msg.version, flow.server_ip, flow.client_ip, msg.identifier, msg.sequence)
        pending = self.pending.pop(key, None)
        if pending is None:
            requester_flow = flow.reversed()
            return [_transaction(ts, None, requester_flow, None, msg, "Error", (NOTE_NO_REQUEST,))]
        req_ts, req_flow, req_msg = pending
        return [_transaction(req_ts, ts, req_flow, req_msg, msg, "OK", ())]

    def expire(self, now: float) -> list[Transaction]:
        deadline = now - self.timeout_s
        out: list[Transaction] = []
        # Requests are kept in arrival order, so the expired ones come first.
        while self.pending:
            key = next(iter(self.pending))
            req_ts, req_flow, req_msg = self.pending[key]
            if req_ts > deadline:
                break
            del self.pending[key]
            out.append(_transaction(req_ts, None, req_flow, req_msg, None, "Error",
                                    (NOTE_NO_RESPONSE,)))
        return out


# Made per packet and per transaction without their Python __init__ (wirebeat.records).
_new_message, _new_exchange = maker(ICMPMessage), maker(ICMPExchange)


def _transaction(ts: float, end_ts: float | None, flow: FlowKey, request: ICMPMessage | None,
                 response: ICMPMessage | None, status: str, notes: tuple[str, ...]) -> Transaction:
    first = request or response
    assert first is not None
    # Community ID: the request's type and code stand in for the ports (the engine's
    # flow of a request already has them: no second key then).
    if flow.client_port != first.type or flow.server_port != first.code:
        flow = _new_flow_key(flow.transport, flow.client_ip, first.type, flow.server_ip, first.code,
                             flow.source)
    return _new_transaction(     # (flow, ts, end_ts, status, detail, request_bytes, response_bytes, notes, identity)
        flow, ts, end_ts, status,
        _new_exchange(request, response, flow.server_ip if request else flow.client_ip),
        request.payload_bytes if request else None,
        response.payload_bytes if response else None,
        notes, f"{first.type}/{first.code}/{first.identifier}/{first.sequence}")


def document(txn: Transaction) -> dict[str, Any]:
    """The one place ICMP field names are spelled; mirrors index_templates/icmp.json."""
    exchange: ICMPExchange = txn.detail
    first = exchange.request or exchange.response
    icmp: dict[str, Any] = {"version": first.version}
    # (each message's fields written here: a helper function cost two calls a transaction)
    msg = exchange.request
    if msg:
        icmp["request"] = {"message": message_name(msg.version, msg.type, msg.code),
                           "type": msg.type, "code": msg.code}
    msg = exchange.response
    if msg:
        icmp["response"] = {"message": message_name(msg.version, msg.type, msg.code),
                            "type": msg.type, "code": msg.code}
    return {"icmp": icmp, "path": exchange.request_dst, "event": {"type": ["connection"]}}


_EVENT_TEXT = orjson.dumps({"type": ["connection"]})     # document()'s event value


@lru_cache(maxsize=1024)    # a handful of (version, request, reply) shapes recur in all traffic
def _shape_text(version: int, request_type: int, request_code: int, response_type: int,
                response_code: int) -> bytes:
    """document()'s text of a request and its reply up to the path's value: '{"icmp":{...},"path":'."""
    exchange = ICMPExchange(ICMPMessage(version, request_type, request_code, 0, 0, 0),
                            ICMPMessage(version, response_type, response_code, 0, 0, 0), "")
    doc = document(Transaction(FlowKey("", "", 0, "", 0), 0.0, None, "OK", exchange))
    del doc["event"]
    text = orjson.dumps(doc)
    assert text.endswith(b',"path":""}')      # (the path last: appended per transaction)
    return text[:-3]


@lru_cache(maxsize=4096)    # pings go to a few destinations: the whole text at once, one look-up
def _pair_text(version: int, request_type: int, request_code: int, response_type: int,
               response_code: int, path: str) -> bytes:
    """document()'s text of a request and its reply, without the event."""
    return (_shape_text(version, request_type, request_code, response_type, response_code)
            + orjson.dumps(path) + b"}")


def document_text(txn: Transaction) -> tuple[bytes, bytes, None]:
    """`document(txn)` as JSON text, its event apart (DecoderSpec.document_text): a
    request and its reply from the text of their shape, anything else from document()."""
    exchange: ICMPExchange = txn.detail
    request, response = exchange.request, exchange.response
    if request is None or response is None:
        doc = document(txn)
        return orjson.dumps(doc.pop("event")), orjson.dumps(doc), None
    return _EVENT_TEXT, _pair_text(request.version, request.type, request.code, response.type,
                                   response.code, exchange.request_dst), None


DECODER = DecoderSpec(
    name="icmp",
    document=document,
    document_text=document_text,
    datagram=ICMPDecoder,
    ip_protocols=(1, 58),
    network_protocol="",
    options={
        "max_pending": Option("int", 10000, "requests awaiting a reply, per capture "
                              "source; when full the oldest is reported unanswered"),
    },
)
