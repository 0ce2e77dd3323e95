"""SIP (RFC 3261) over UDP and TCP, with SDP (RFC 4566, RFC 3264) media announcements.

One document per SIP message, request or response, as packetbeat's sip does
(`sip.type` tells which), with packetbeat's field names: `sip.method`,
`sip.code`, `sip.call_id`, `sip.from.*`, `sip.to.*`, `sip.cseq.*`,
`sip.via.*`, `sip.contact.*`, `sip.auth.*` and `sip.sdp.*`; `status` is Error
for responses of 400 and above. Over UDP a datagram is a message; over TCP the
engine reassembles and messages are framed by Content-Length (RFC 3261 §18.3).

Dialogs are tracked by Call-ID for their media: every SDP offer and answer
announces its RTP (and RTCP) address and port to the RTP decoder of the same
capture source (`wirebeat.decoders.api.Expectations`, context `wirebeat.decoders.rtp.MediaEndpoint`
with the rtpmap payload types), so RTP on any port is decoded and each RTP
report carries the call's `sip.call_id`. A BYE or CANCEL, or a final failure
to the INVITE, ends the call's media. Not decoded: multipart bodies, SIP over
TLS or WebSocket, compressed (SigComp) messages.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wirebeat.decoders.api import (Datagram, DecodeError, DecoderSpec, Expectations, FlowKey, Option,
                          Transaction, Truncated, is_ip_literal)
from wirebeat.decoders.rtp import MediaEndpoint, MediaSession

__all__ = ["DECODER", "SDP", "SDPMedia", "SIPMessage", "SIPStream", "SIPURI", "SIPDecoder",
           "decode_message", "decode_sdp", "document", "parse_address", "parse_uri"]

MAX_HEADERS = 200              # a message with more header lines is refused (memory per message)
_COMPACT = {"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
            "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
            "v": "via", "u": "allow-events", "o": "event", "r": "refer-to", "b": "referred-by",
            "x": "session-expires", "a": "accept-contact", "j": "reject-contact",
            "d": "request-disposition", "y": "identity", "n": "identity-info"}
_METHOD = re.compile(rb"[A-Za-z]+\Z")
_MESSAGE_START = re.compile(rb"(?:^|\r\n)(SIP/2\.0 \d{3} |[A-Z]+ \S+ SIP/2\.0\r\n)")
_RTP_PROTOS = ("RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVP",
               "UDP/TLS/RTP/SAVPF")


@dataclass(slots=True)
class SIPURI:
    """A SIP URI taken apart (RFC 3261 section 19.1)."""

    original: str
    scheme: str = ""
    username: str = ""
    host: str = ""
    port: int | None = None
    params: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class SIPAddress:
    """A From/To/Contact value: display name, URI and header parameters (tag, expires...)."""

    display: str
    uri: SIPURI
    params: dict[str, str]


@dataclass(slots=True)
class SDPMedia:
    """One m= section of an SDP body."""

    media: str               # audio, video, ...
    port: int
    proto: str               # RTP/AVP ...
    formats: list[str]
    address: str             # c= of the media, else of the session
    rtpmap: dict[int, tuple[str, int]]   # payload type -> (encoding name, clock rate)
    rtcp_port: int | None    # a=rtcp, else port + 1; None with rtcp-mux
    direction: str           # sendrecv, sendonly, recvonly, inactive


@dataclass(slots=True)
class SDP:
    """An SDP body (RFC 4566): the session lines and its media."""

    version: str = ""
    owner_username: str = ""
    owner_session_id: str = ""
    owner_version: str = ""
    owner_ip: str = ""
    session_name: str = ""
    connection_info: str = ""
    connection_address: str = ""
    media: list[SDPMedia] = field(default_factory=list)


@dataclass(slots=True)
class SIPMessage:
    """One SIP request or response."""

    is_request: bool
    method: str              # requests: the method; responses: the CSeq method
    uri: SIPURI | None       # Request-URI
    version: str             # "2.0"
    code: int                # responses
    reason: str              # responses: reason phrase
    headers: list[tuple[str, str]]   # (lower-case full name, value), in order
    body: bytes
    size: int                # bytes of the whole message
    text: str                # the whole message, for event.original

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def parse_uri(text: str) -> SIPURI:
    """Split a SIP/SIPS/TEL URI into scheme, user, host, port and parameters. Never raises."""
    uri = SIPURI(text)
    rest = text
    scheme, sep, after = rest.partition(":")
    if not sep or not scheme.isalpha():
        return uri
    uri.scheme = scheme.lower()
    rest = after
    rest, _, _headers = rest.partition("?")
    rest, *params = rest.split(";")
    for param in params:
        name, _, value = param.partition("=")
        if name:
            uri.params[name.strip().lower()] = value.strip()
    if uri.scheme == "tel":
        uri.username = rest
        return uri
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        uri.username = user.partition(":")[0]     # never keep a password from the URI
    if rest.startswith("["):                      # IPv6 reference
        host, _, port = rest[1:].partition("]")
        port = port[1:] if port.startswith(":") else ""
    else:
        host, _, port = rest.partition(":")
    uri.host = host
    if port.isdigit() and int(port) < 65536:
        uri.port = int(port)
    return uri


def parse_address(value: str) -> SIPAddress:
    """A name-addr or addr-spec with header parameters (RFC 3261 §20.10). Never raises."""
    value = value.strip()
    display = ""
    if "<" in value:
        before, _, rest = value.partition("<")
        display = before.strip().strip('"')
        uri_text, _, params_text = rest.partition(">")
    else:
        # addr-spec: parameters after the URI belong to the header (RFC 3261 §20)
        uri_text, _, params_text = value.partition(";")
        params_text = ";" + params_text if params_text else ""
    params: dict[str, str] = {}
    for param in params_text.split(";"):
        name, _, v = param.partition("=")
        if name.strip():
            params[name.strip().lower()] = v.strip().strip('"')
    return SIPAddress(display, parse_uri(uri_text.strip()), params)


def decode_sdp(text: str) -> SDP:
    """Parse an SDP body: the fields packetbeat reports plus every m= line's media endpoint.

    Lenient by design (a bad line is skipped): never raises.
    """
    sdp = SDP()
    media: SDPMedia | None = None
    session_address = ""
    mux = False
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:].strip()
        if kind == "v":
            sdp.version = value
        elif kind == "o":
            parts = value.split()
            if len(parts) >= 6:
                sdp.owner_username, sdp.owner_session_id, sdp.owner_version = parts[0:3]
                sdp.owner_ip = parts[5]
        elif kind == "s" and media is None:
            sdp.session_name = "" if value == "-" else value
        elif kind == "c":
            parts = value.split()
            address = parts[2].split("/")[0] if len(parts) >= 3 else ""
            if media is None:
                sdp.connection_info = value
                sdp.connection_address = session_address = address
            else:
                media.address = address
        elif kind == "m":
            if media is not None and mux:
                media.rtcp_port = None
            parts = value.split()
            mux = False
            if len(parts) < 3:
                media = None
                continue
            port_text = parts[1].split("/")[0]
            port = int(port_text) if port_text.isdigit() and int(port_text) < 65536 else 0
            media = SDPMedia(parts[0].lower(), port, parts[2], parts[3:], session_address, {},
                             port + 1 if 0 < port < 65535 else None, "sendrecv")
            sdp.media.append(media)
        elif kind == "a" and media is not None:
            name, _, attr = value.partition(":")
            if name == "rtpmap":
                pt_text, _, encoding = attr.partition(" ")
                parts = encoding.strip().split("/")
                if pt_text.isdigit() and len(parts) >= 2 and parts[1].isdigit():
                    media.rtpmap[int(pt_text)] = (parts[0], int(parts[1]))
            elif name == "rtcp":
                port_text = attr.split()[0] if attr.split() else ""
                if port_text.isdigit() and 0 < int(port_text) < 65536:
                    media.rtcp_port = int(port_text)
            elif name == "rtcp-mux":
                mux = True
            elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                media.direction = name
    if media is not None and mux:
        media.rtcp_port = None
    return sdp


def _start_line(line: bytes) -> tuple[bool, str, SIPURI | None, str, int, str]:
    if line.startswith(b"SIP/"):
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) != 3:
            raise DecodeError("sip.bad_start_line", 0)
        return (False, "", None, _text(parts[0][4:]), int(parts[1]),
                _text(parts[2]) if len(parts) > 2 else "")
    parts = line.split(b" ")
    if len(parts) != 3 or not _METHOD.match(parts[0]) or not parts[2].startswith(b"SIP/"):
        raise DecodeError("sip.bad_start_line", 0)
    return True, _text(parts[0]).upper(), parse_uri(_text(parts[1])), _text(parts[2][4:]), 0, ""


def _parse_head(head: bytes) -> tuple[bool, str, SIPURI | None, str, int, str, list[tuple[str, str]]]:
    lines = head.split(b"\r\n") if b"\r\n" in head else head.split(b"\n")
    is_request, method, uri, version, code, reason = _start_line(lines[0].strip())
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line.strip():
            continue
        if line[:1] in (b" ", b"\t") and headers:          # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, value + " " + _text(line.strip()))
            continue
        name, sep, value = line.partition(b":")
        name = name.strip()
        if not sep or not name:
            raise DecodeError("sip.bad_header", 0)
        key = _text(name).lower()
        headers.append((_COMPACT.get(key, key), _text(value.strip())))
        if len(headers) > MAX_HEADERS:
            raise DecodeError("sip.too_many_headers", 0)
    return is_request, method, uri, version, code, reason, headers


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for key, value in headers:
        if key == "content-length":
            value = value.strip()
            if not value.isdigit():
                raise DecodeError("sip.bad_content_length", 0)
            return int(value)
    return None


def decode_message(data: bytes) -> SIPMessage:
    """Parse one SIP message (a UDP datagram): start line, headers, body.

    The body is Content-Length bytes, or the rest of the datagram without one.
    Raises DecodeError: "sip.bad_start_line", "sip.bad_header",
    "sip.bad_content_length", "sip.too_many_headers", "sip.truncated".
    """
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = data.find(b"\n\n"), 2
    if end < 0:
        end, sep = len(data), 0          # headers only, no blank line (tolerated over UDP)
    is_request, method, uri, version, code, reason, headers = _parse_head(data[:end])
    body = data[end + sep:]
    length = _content_length(headers)
    if length is not None:
        if length > len(body):
            raise Truncated("sip.truncated", len(data))
        body = body[:length]
    size = end + sep + len(body)
    return _message(is_request, method, uri, version, code, reason, headers, body,
                    data[:size])


def _message(is_request: bool, method: str, uri: SIPURI | None, version: str, code: int,
             reason: str, headers: list[tuple[str, str]], body: bytes, raw: bytes) -> SIPMessage:
    if not is_request:
        cseq = next((v for k, v in headers if k == "cseq"), "")
        method = cseq.split()[1].upper() if len(cseq.split()) > 1 else ""
    return SIPMessage(is_request, method, uri, version, code, reason, headers, body, len(raw),
                      _text(raw))


# ---------------------------------------------------------------------------
# Dialogs and their media
# ---------------------------------------------------------------------------

@dataclass(slots=True)
class _Call:
    """A dialog's media: the RTP endpoints it announced."""

    session: MediaSession
    endpoints: list[tuple[str, int]]
    established: bool
    last_ts: float


class _Dialogs:
    """Calls by Call-ID, for their media: SDP endpoints announced to the RTP decoder."""

    def __init__(self, expectations: Expectations, max_dialogs: int, timeout_s: float,
                 counters: dict[str, int]) -> None:
        self.expectations = expectations
        self.max_dialogs = max_dialogs
        self.timeout_s = timeout_s
        self.calls: OrderedDict[str, _Call] = OrderedDict()     # least recently active first (O(1))
        self.counters = counters

    def on_message(self, msg: SIPMessage, sdp: SDP | None, ts: float) -> str | None:
        call_id = msg.header("call-id")
        if not call_id:
            return None
        call = self.calls.get(call_id)
        if call is None:
            if sdp is None or not sdp.media:
                return call_id
            if len(self.calls) >= self.max_dialogs:
                self.calls.popitem(last=False)
                self.counters["dialogs_evicted"] += 1
            call = _Call(MediaSession(call_id), [], False, ts)
        else:
            self.calls.move_to_end(call_id)            # order is age of last activity
            if call.session.ended_ts is not None and msg.is_request and msg.method == "INVITE":
                call = _Call(MediaSession(call_id), [], False, ts)     # a new call, same Call-ID
        self.calls[call_id] = call
        call.last_ts = ts
        if sdp is not None:
            self._announce(call, sdp, ts)
        if msg.is_request and msg.method in ("BYE", "CANCEL"):
            self._end(call, ts)
        elif not msg.is_request and msg.method == "INVITE":
            if 200 <= msg.code < 300:
                call.established = True
            elif msg.code >= 300 and not call.established:
                self._end(call, ts)
        return call_id

    def _announce(self, call: _Call, sdp: SDP, ts: float) -> None:
        until = ts + self.timeout_s
        for media in sdp.media:
            if media.port == 0 or media.proto.upper() not in _RTP_PROTOS:
                continue
            address = media.address
            if not address or address in ("0.0.0.0", "::"):      # on hold: nothing to expect
                continue
            endpoint = MediaEndpoint(call.session, dict(media.rtpmap))
            if self.expectations.expect(address, media.port, "rtp", endpoint, until):
                call.endpoints.append((address, media.port))
            if media.rtcp_port is not None:
                rtcp = MediaEndpoint(call.session, endpoint.payload_types, rtcp=True)
                if self.expectations.expect(address, media.rtcp_port, "rtp", rtcp, until):
                    call.endpoints.append((address, media.rtcp_port))

    def _end(self, call: _Call, ts: float) -> None:
        if call.session.ended_ts is None:
            call.session.ended_ts = ts
        # No new media flows for this call from now on.
        for address, port in call.endpoints:
            exp = self.expectations.find(address, port)
            if exp is not None and isinstance(exp.context, MediaEndpoint) \
                    and exp.context.session is call.session:
                exp.until_ts = ts

    def expire(self, now: float) -> None:
        idle_before = now - self.timeout_s
        while self.calls:
            call_id = next(iter(self.calls))
            if self.calls[call_id].last_ts >= idle_before:
                break
            del self.calls[call_id]


# ---------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------

@dataclass(slots=True)
class SIPRecord:
    """What a SIP document says: the message, its SDP and how it travelled."""

    message: SIPMessage
    sdp: SDP | None
    transport: str
    keep_original: bool
    parse_authorization: bool


def _options(options: Mapping[str, Any]) -> tuple[bool, bool, bool]:
    return (options.get("keep_original", True), options.get("parse_authorization", True),
            options.get("parse_body", True))


def _transaction(msg: SIPMessage, flow: FlowKey, from_client: bool, ts: float,
                 options: tuple[bool, bool, bool], dialogs: _Dialogs) -> Transaction:
    keep_original, parse_authorization, parse_body = options
    sdp = None
    content_type = (msg.header("content-type") or "").split(";")[0].strip().lower()
    if msg.body and content_type == "application/sdp":
        sdp = decode_sdp(_text(msg.body))
    dialogs.on_message(msg, sdp, ts)
    sender_flow = flow if from_client else flow.reversed()
    status = "Error" if not msg.is_request and msg.code >= 400 else "OK"
    first_line = msg.text.split("\r\n", 1)[0][:200]
    return Transaction(
        flow=sender_flow, ts=ts, end_ts=ts, status=status,
        detail=SIPRecord(msg, sdp if parse_body else None, flow.transport, keep_original,
                         parse_authorization),
        request_bytes=msg.size,
        identity=f"{msg.header('call-id') or ''}|{msg.header('cseq') or ''}|{first_line}")


class SIPDecoder:
    """SIP over UDP for one capture source: a document per datagram's message."""

    def __init__(self, options: Mapping[str, Any], expectations: Expectations | None = None) -> None:
        self.options = _options(options)
        self.counters = {"dialogs_evicted": 0}
        self.dialogs = _Dialogs(expectations if expectations is not None else Expectations(),
                                options.get("max_dialogs", 10000),
                                options.get("dialog_timeout", 3600.0), self.counters)

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        payload = dgram.payload
        if not payload.strip(b"\r\n\0 "):
            return []                       # keep-alive (RFC 5626 §4.4.1 CRLF, or zeros)
        msg = decode_message(payload)
        return [_transaction(msg, dgram.flow, dgram.from_client, dgram.ts, self.options,
                             self.dialogs)]

    def expire(self, now: float) -> list[Transaction]:
        self.dialogs.expire(now)
        return []


class SIPStream:
    """SIP over one TCP connection: messages framed by Content-Length (RFC 3261 §18.3)."""

    def __init__(self, flow: FlowKey, options: Mapping[str, Any],
                 expectations: Expectations | None = None) -> None:
        self.flow = flow
        self.options = _options(options)
        self.max_message_bytes: int = options.get("max_message_bytes", 65536)
        self.buffers = {True: bytearray(), False: bytearray()}
        self.synced = {True: True, False: True}
        self.deferred: list[DecodeError] = []     # malformed input met after a reported message
        self.counters = {"dialogs_evicted": 0}
        self.dialogs = _Dialogs(expectations if expectations is not None else Expectations(),
                                options.get("max_dialogs", 10000),
                                options.get("dialog_timeout", 3600.0), self.counters)

    def on_data(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]:
        buf = self.buffers[from_client]
        buf += data
        out: list[Transaction] = []
        error: DecodeError | None = None
        while True:
            if not self.synced[from_client]:
                if not self._resync(buf):
                    break
                self.synced[from_client] = True
            while buf[:2] == b"\r\n":       # keep-alive CRLFs between messages
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_message_bytes:
                    error = error or DecodeError("sip.too_large", 0)
                    self._skip(from_client, len(buf))
                    continue
                break
            try:
                is_request, method, uri, version, code, reason, headers = _parse_head(bytes(buf[:end]))
                length = _content_length(headers) or 0
                if end + 4 + length > self.max_message_bytes:
                    raise DecodeError("sip.too_large", 0)
            except DecodeError as err:
                # Skip the bad head and look for the next start line; the
                # messages before it in this call are still reported.
                error = error or err
                self._skip(from_client, end + 4)
                continue
            if len(buf) < end + 4 + length:
                break
            raw = bytes(buf[:end + 4 + length])
            del buf[:end + 4 + length]
            msg = _message(is_request, method, uri, version, code, reason, headers,
                           raw[end + 4:], raw)
            out.append(_transaction(msg, self.flow, from_client, ts, self.options, self.dialogs))
        if error is not None:
            if not out:
                raise error
            # Raising now would drop this call's messages: it is raised at close instead.
            self.deferred.append(error)
        return out

    def _skip(self, from_client: bool, count: int) -> None:
        del self.buffers[from_client][:count]
        self.synced[from_client] = False

    def _resync(self, buf: bytearray) -> bool:
        """After a gap: skip to the next line that starts a SIP message (False: none yet)."""
        match = _MESSAGE_START.search(buf)
        if match is None:
            del buf[:-64]                   # keep a tail: a start line may be cut across segments
            return False
        del buf[:match.start(1)]
        return True

    def on_gap(self, from_client: bool, missing: int, ts: float) -> list[Transaction]:
        self.buffers[from_client].clear()
        self.synced[from_client] = False
        return []

    def on_close(self, ts: float) -> list[Transaction]:
        if self.deferred:
            error = self.deferred[0]
            self.deferred.clear()
            raise error
        return []

    def expire(self, now: float) -> list[Transaction]:
        self.dialogs.expire(now)
        return []


# ---------------------------------------------------------------------------
# Document
# ---------------------------------------------------------------------------

def _uri_fields(uri: SIPURI) -> dict[str, Any]:
    fields: dict[str, Any] = {"original": uri.original}
    if uri.scheme:
        fields["scheme"] = uri.scheme
    if uri.username:
        fields["username"] = uri.username
    if uri.host:
        fields["host"] = uri.host
    if uri.port:
        fields["port"] = uri.port
    return fields


def _address_fields(address: SIPAddress) -> dict[str, Any]:
    fields: dict[str, Any] = {"uri": _uri_fields(address.uri)}
    if address.display:
        fields["display_info"] = address.display
    if address.params.get("tag"):
        fields["tag"] = address.params["tag"]
    return fields


def _auth(value: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = value.strip().partition(" ")
    params = {}
    for match in re.finditer(r'(\w+)\s*=\s*("([^"]*)"|[^,\s]*)', rest):
        params[match.group(1).lower()] = match.group(3) if match.group(3) is not None else match.group(2)
    return scheme, params


def _list(values: list[str], upper: bool = False) -> list[str]:
    out = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item:
                out.append(item.upper() if upper else item)
    return out


def document(txn: Transaction) -> dict[str, Any]:
    """The one place SIP field names are spelled; mirrors index_templates/sip.json.

    As packetbeat marshals its Go structs: empty strings, zero numbers and empty
    lists are left out.
    """
    record: SIPRecord = txn.detail
    msg = record.message
    sip: dict[str, Any] = {"type": "request" if msg.is_request else "response",
                           "version": msg.version}
    related_users: list[str] = []
    related_hosts: list[str] = []
    related_ips: list[str] = []

    def add(target: list[str], value: str) -> None:
        if value and value not in target:
            target.append(value)

    add(related_ips, txn.flow.client_ip)
    add(related_ips, txn.flow.server_ip)

    if msg.is_request:
        sip["method"] = msg.method
        if msg.uri is not None:
            sip["uri"] = _uri_fields(msg.uri)
            add(related_users, msg.uri.username)
            add(related_hosts, msg.uri.host)
    else:
        sip["code"] = msg.code
        if msg.reason:
            sip["status"] = msg.reason
    for name, key in (("call-id", "call_id"), ("accept", "accept"), ("content-type", "content_type")):
        value = msg.header(name)
        if value:
            sip[key] = value.lower() if key != "call_id" else value
    for name, key in (("content-length", "content_length"), ("max-forwards", "max_forwards")):
        value = (msg.header(name) or "").strip()
        if value.isdigit() and int(value):
            sip[key] = int(value)
    for name, key, upper in (("allow", "allow", True), ("supported", "supported", False)):
        values = _list(msg.all(name), upper)
        if values:
            sip[key] = values
    user_agent = msg.header("user-agent")
    if user_agent:
        sip["user_agent"] = {"original": user_agent}
    private = msg.header("p-associated-uri")
    if private:
        sip["private"] = {"uri": _uri_fields(parse_address(private).uri)}
    cseq = (msg.header("cseq") or "").split()
    sequence = None
    if cseq and cseq[0].isdigit():
        sequence = int(cseq[0])
        sip["cseq"] = {"code": sequence}
        if len(cseq) > 1:
            sip["cseq"]["method"] = cseq[1].upper()
    vias = _list(msg.all("via"))
    if vias:
        sip["via"] = {"original": vias}
    for name in ("from", "to"):
        value = msg.header(name)
        if value:
            address = parse_address(value)
            sip[name] = _address_fields(address)
            add(related_users, address.uri.username)
            add(related_hosts, address.uri.host)
    contact_value = msg.header("contact")
    if contact_value and contact_value.strip() != "*":
        address = parse_address(contact_value.split(",")[0] if "<" not in contact_value
                                else contact_value)
        contact = _address_fields(address)
        contact.pop("tag", None)
        transport = address.uri.params.get("transport")
        if transport:
            contact["transport"] = transport.lower()
        if address.uri.params.get("line"):
            contact["line"] = address.uri.params["line"]
        expires = address.params.get("expires") or (msg.header("expires") or "").strip()
        if expires.isdigit():
            contact["expires"] = int(expires)
        q = address.params.get("q")
        if q:
            try:
                contact["q"] = float(q)
            except ValueError:
                pass
        sip["contact"] = contact
        add(related_users, address.uri.username)
        add(related_hosts, address.uri.host)
    event: dict[str, Any] = {"type": ["info"], "category": ["network", "protocol"],
                             "action": f"sip-{msg.method.lower()}" if msg.method else "sip-unknown"}
    authorization = msg.header("authorization") or msg.header("proxy-authorization")
    user_name = None
    if authorization:
        event["category"].append("authentication")
        scheme, params = _auth(authorization)
        user_name = params.get("username")
        if record.parse_authorization:
            auth: dict[str, Any] = {}
            if scheme:
                auth["scheme"] = scheme
            if params.get("realm"):
                auth["realm"] = params["realm"]
            if params.get("uri"):
                auth_uri = _uri_fields(parse_uri(params["uri"]))
                auth_uri.pop("username", None)
                auth["uri"] = auth_uri
            if auth:
                sip["auth"] = auth
        if user_name:
            add(related_users, user_name)
    sdp = record.sdp
    if sdp is not None:
        fields: dict[str, Any] = {}
        if sdp.version:
            fields["version"] = sdp.version
        owner = {k: v for k, v in (("username", sdp.owner_username),
                                   ("session_id", sdp.owner_session_id),
                                   ("version", sdp.owner_version), ("ip", sdp.owner_ip)) if v}
        if owner:
            fields["owner"] = owner
            if sdp.owner_ip and is_ip_literal(sdp.owner_ip):
                add(related_ips, sdp.owner_ip)
            else:
                owner.pop("ip", None)
        if sdp.session_name:
            fields["session"] = {"name": sdp.session_name}
        if sdp.connection_info:
            fields["connection"] = {"info": sdp.connection_info,
                                    "address": sdp.connection_address}
            add(related_hosts, sdp.connection_address)
        fields["body"] = {"original": _text(msg.body)}
        sip["sdp"] = fields
    if not msg.is_request:
        if 200 <= msg.code < 300:
            event["outcome"] = "success"
        elif msg.code >= 300:
            event["outcome"] = "failure"
        if msg.reason:
            event["reason"] = msg.reason
    if sequence is not None:
        event["sequence"] = sequence
    if record.keep_original:
        event["original"] = msg.text
    doc: dict[str, Any] = {
        "sip": sip,
        "event": event,
        "network": {"application": "sip",
                    "iana_number": "6" if record.transport == "tcp" else "17"},
        "related": {"ip": related_ips},
    }
    if related_users:
        doc["related"]["user"] = related_users
    if related_hosts:
        doc["related"]["hosts"] = related_hosts
    if user_name:
        doc["user"] = {"name": user_name}
    return doc



def _stream(flow: FlowKey, options: Mapping[str, Any], expectations: Expectations) -> SIPStream:
    return SIPStream(flow, options, expectations)


DECODER = DecoderSpec(
    name="sip",
    document=document,
    datagram=SIPDecoder,
    stream=_stream,
    ports=(5060,),
    expectations=True,
    options={
        "parse_authorization": Option("bool", True, "report sip.auth.* from the Authorization header"),
        "parse_body": Option("bool", True, "report sip.sdp.* from SDP bodies (media is "
                             "announced to the RTP decoder either way)"),
        "keep_original": Option("bool", True, "the whole message in event.original"),
        "max_dialogs": Option("int", 10000, "calls tracked for their media, per capture source "
                              "(UDP) or per connection (TCP); when full the oldest is forgotten"),
        "dialog_timeout": Option("duration", 3600.0, "a call without a SIP message this long "
                                 "is forgotten, and its SDP media no longer expected"),
        "max_message_bytes": Option("int", 65536, "TCP: a message larger than this is skipped"),
    },
)
