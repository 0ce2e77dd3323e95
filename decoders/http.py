"""HTTP/1.0 and HTTP/1.1 (RFC 9110 semantics, RFC 9112 message syntax), as packetbeat reports it.

One `HTTPStream` per TCP connection. The engine reassembles each direction and
hands over bytes in order (`on_data`), a notice where bytes were lost
(`on_gap`) and the end of the connection (`on_close`). One document per
request/response pair.

Framing (RFC 9112 §6.3): Transfer-Encoding with chunked last (chunk extensions
skipped, trailers read and counted), else Content-Length, else a request has no
body and a response runs until the connection closes. Responses to HEAD, 1xx,
204 and 304 have no body. Interim 1xx responses (100-continue, 102, 103) are
not transactions: the final response answers the request. A 2xx answer to
CONNECT and a 101 answer to an Upgrade switch the connection to a tunnel whose
bytes are not parsed; the client's bytes after such a request are held
(bounded) until the answer shows whether they are tunnel or HTTP. Once both
directions are tunnel and every exchange is reported, the decoder tells the
engine it needs no more bytes (`needs_bytes`, as TLS does after its handshake):
the tunnel is no longer reassembled, and only flows count its bytes.

Pairing: requests are queued as soon as their headers are complete, and each
final response answers the oldest unanswered request, so keep-alive and
pipelining pair in order, and a response that comes before its request's body
is complete (an early 413) still pairs. A pair is reported when both messages
are complete, in request order. A request with no response within
`transaction_timeout` of its last byte is reported alone with "Unmatched
request"; a response without a request (capture started mid-connection) alone
with "Unmatched response"; both with status Error, as packetbeat does. Time
stamps follow packetbeat: @timestamp/event.start is the first packet of the
request, event.end the first packet of the response.

Loss (`on_gap`): a gap inside a length-delimited or chunk body keeps the
message (status from its headers) and adds packetbeat's note "Packet loss while
capturing the request" (or response); the lost bytes are counted into the body
size. A gap in a start line or headers, or one that swallows chunk framing,
loses the message: the stream resynchronises where the next message starts
(`HTTP/1.x nnn`; `METHOD target HTTP/1.x` at a line start, or anywhere for the
common methods; the window searched is bounded), and the request
whose response was lost (or the response whose request was lost) is reported
with that note so that pairing stays aligned. A connection picked up
mid-stream resynchronises the same way, silently.

Malformed messages (a bad start line, header line, Content-Length, chunk size,
or a header block over `max_header_bytes`) raise `DecodeError` with reasons
"http.*" for the engine to count; the stream then resynchronises and stays
usable, and transactions completed in the same call are returned by the next
call (on_data, on_gap, on_close or expire).

Memory per connection is bounded by options: the header block (and the
trailers) by `max_header_bytes`, stored headers by `max_headers`, a captured
body by `max_body_bytes` (body bytes past it are only counted; a huge
Content-Length or chunk size is a number, never a buffer), chunk-size lines by
4 KiB, resynchronisation windows by 8 KiB, bytes held after CONNECT/Upgrade by
`max_header_bytes`, queued requests by `max_pending`.

packetbeat 8's options and fields (facts read from packetbeat's http.go):
url.query re-encodes the target's parameters as Go's url.Values does (keys
sorted, QueryEscape), a form-urlencoded request body's parameters replacing
same-named ones (the body is kept for that even without include_body_for);
hide_keywords masks values by lower-cased name; redact_authorization turns
every byte of Authorization/Proxy-Authorization values into '*' in the raw
request and the header into "*"; redact_headers and both maskings apply to
requests only; decode_body inflates gzip/deflate before a body is reported
(at most max_body_bytes come out); max_message_size stops keeping a message's
body past that size; http.*.mime_type is sniffed from a reported body
(wirebeat.decoders.mime), as packetbeat's shipped detect_mime_type processors do.

Parser choice: our own, not httptools (llhttp). Measured with
tests/bench/http_parser_compare.py on one keep-alive stream of 3000
browser-like requests and responses (Content-Length and chunked, 0-24 KiB
bodies, 19.5 MB) cut into 1448-byte segments, CPython 3.11, medians of 9 runs
over 3 runs: our parser 310 MB/s, 95,000 messages/s; httptools 0.9 driven
through its callbacks to collect the same fields 390-650 MB/s, 120,000-200,000
messages/s, so up to 2x faster. The whole decoder (both directions, pairing,
records) does 21,000-27,000 transactions/s, and a whole `wirebeat run
--console` on a 3000-transaction capture 5,000-6,000 transactions/s (tshark
-T ek: 660/s); the parser is under a fifth of that run, so httptools would
gain under 10% end to end. It cannot be driven through our loss handling,
though: llhttp's state (bytes left in a body or a chunk) can be neither read
nor set, so a parser cannot resume after a gap inside a body or chunk; a
response parser cannot be told that the request was HEAD (it reads the next
response as the body: "Expected HTTP/" error); it refuses bare-LF line ends
and whitespace before a colon, which servers accept; and it has no header size
limit (a 2 MB header value is taken in without complaint). Keeping our own
framing beside it for those cases would duplicate the parser it replaces.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import string
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_to_bytes, urlsplit

from wirebeat.decoders.api import DecodeError, DecoderSpec, FlowKey, Option, Transaction, is_ip_literal
from wirebeat.decoders.mime import sniff_mime_type
from wirebeat.records import maker, new_transaction as _new_transaction

__all__ = ["DECODER", "HTTPExchange", "HTTPMessage", "HTTPStream", "document"]

# Notes as packetbeat words them, so existing searches on error.message still match.
NOTE_UNMATCHED_REQUEST = "Unmatched request"
NOTE_UNMATCHED_RESPONSE = "Unmatched response"
NOTE_LOSS_REQUEST = "Packet loss while capturing the request"
NOTE_LOSS_RESPONSE = "Packet loss while capturing the response"
NOTE_HOST_PORT_MISMATCH = "Host header port number mismatch"
# Our own notes.
NOTE_REQUEST_INCOMPLETE = "http.request_incomplete"      # connection ended or timed out mid-message
NOTE_RESPONSE_INCOMPLETE = "http.response_incomplete"
NOTE_TOO_MANY_HEADERS = "http.too_many_headers"          # headers past max_headers not reported
NOTE_BODY_DECODE_FAILED = "http.body_decode_failed"      # decode_body: a gzip/deflate body that does not inflate

MAX_CHUNK_LINE_BYTES = 4096      # chunk-size line with extensions; nginx and llhttp accept far less
RESYNC_WINDOW_BYTES = 8192       # a request line longer than this is not found when resynchronising
REDACTED = "REDACTED"

# parser states
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _TUNNEL, \
    _RESYNC, _HOLD = range(10)

_METHOD_PREFIX = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}(?: |$)")
_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^ ]+) HTTP/(\d)\.(\d)")
# Lenient second try: runs of spaces, and spaces inside the target (seen from broken clients).
_REQUEST_LINE_LENIENT = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) +(.+?) +HTTP/(\d)\.(\d) *")
_STATUS_LINE = re.compile(r"HTTP/(\d)\.(\d) +(\d{3})(?: (.*))?")
# Resynchronisation: where a message starts. Methods are upper case here (all
# registered ones are) so that body text is less likely to match; any such
# method at a line start, the common ones anywhere (a body need not end in a
# newline). A status line is distinctive enough to be taken anywhere.
_RESYNC_REQUEST = re.compile(rb"[A-Z][A-Z_-]{1,19} [^ \r\n]{1,8000} HTTP/1\.[0-9]\r?\n")
_RESYNC_REQUEST_ANYWHERE = re.compile(
    rb"(?:(?<=\n)[A-Z][A-Z_-]{1,19}|GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE)"
    rb" [^ \r\n]{1,8000} HTTP/1\.[0-9]\r?\n")
_RESYNC_RESPONSE = re.compile(rb"HTTP/1\.[0-9] [1-5][0-9][0-9][ \r\n]")
_RESYNC_RESPONSE_ANYWHERE = _RESYNC_RESPONSE
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(slots=True)      # one per message: not frozen, whose __init__ costs a call per field
class HTTPMessage:
    """One request or response, with what the options asked to keep of it."""

    ts: float                 # first packet of the message
    version: str              # "1.1"
    method: str               # requests; "" for responses
    target: str               # request-target as sent; "" for responses
    status_code: int          # responses; 0 for requests
    status_phrase: str        # lower-cased, as packetbeat reports it
    headers: dict[str, Any]   # lower-cased names: content-length and content-type always, others per options
    content_type: str
    host: str                 # Host header
    user_agent: str
    referer: str
    user_name: str            # from Authorization: Basic
    forwarded_ip: str         # first address of real_ip_header, when it is an IP
    size: int                 # bytes on the wire: start line, headers, body, chunk framing, trailers
    body_bytes: int           # body length (decoded from chunking), lost bytes included
    body: str | None          # captured body (include_body_for), at most max_body_bytes
    raw: str | None           # send_request / send_response text: header block plus captured body
    path: str                 # url.path, percent-decoded
    query: str                # url.query, re-encoded with keys sorted, hide_keywords applied
    notes: tuple[str, ...]
    mime_type: str = ""       # sniffed from the captured body (include_mime), "" when unknown


@dataclass(slots=True)
class HTTPExchange:
    """A request and its response; either is None when not seen."""

    request: HTTPMessage | None
    response: HTTPMessage | None


@dataclass(frozen=True, slots=True)
class _Settings:
    """Options resolved once per connection."""

    timeout_s: float
    send_request: bool
    send_response: bool
    send_all_headers: bool
    send_headers: frozenset[str]
    split_cookie: bool
    body_types_request: tuple[str, ...]
    body_types_response: tuple[str, ...]
    max_body_bytes: int
    max_header_bytes: int
    max_headers: int
    max_pending: int
    redact_authorization: bool
    redact_headers: frozenset[str]
    real_ip_header: str
    hide_keywords: frozenset[str]
    max_message_bytes: int
    decode_body: bool
    include_mime: bool

    @staticmethod
    def from_options(options: Mapping[str, Any]) -> _Settings:
        """The settings of `options`; the last options' are reused while they compare equal
        (every connection of a route passes the same options: one dict compare, not ~20
        look-ups and conversions per connection)."""
        last = _LAST_SETTINGS
        if last and last[0] == options:
            return last[1]
        settings = _Settings._resolve(options)
        _LAST_SETTINGS[:] = (dict(options), settings)
        return settings

    @staticmethod
    def _resolve(options: Mapping[str, Any]) -> _Settings:
        def lowered(key: str) -> tuple[str, ...]:
            return tuple(str(v).lower() for v in options.get(key, ()) or ())

        both = lowered("include_body_for")
        return _Settings(
            timeout_s=float(options.get("transaction_timeout", 10.0)),
            send_request=bool(options.get("send_request", False)),
            send_response=bool(options.get("send_response", False)),
            send_all_headers=bool(options.get("send_all_headers", False)),
            send_headers=frozenset(lowered("send_headers")),
            split_cookie=bool(options.get("split_cookie", False)),
            body_types_request=both + lowered("include_request_body_for"),
            body_types_response=both + lowered("include_response_body_for"),
            max_body_bytes=max(0, int(options.get("max_body_bytes", 65536))),
            max_header_bytes=max(64, int(options.get("max_header_bytes", 65536))),
            max_headers=max(1, int(options.get("max_headers", 100))),
            max_pending=max(1, int(options.get("max_pending", 64))),
            redact_authorization=bool(options.get("redact_authorization", False)),
            redact_headers=frozenset(lowered("redact_headers")),
            real_ip_header=str(options.get("real_ip_header", "") or "").lower(),
            hide_keywords=frozenset(str(v).lower() for v in options.get("hide_keywords", ()) or ()),
            max_message_bytes=max(0, int(options.get("max_message_size", 10485760))),
            decode_body=bool(options.get("decode_body", True)),
            include_mime=bool(options.get("include_mime", True)),
        )


# (a copy of the options last resolved, their settings): derived from configuration only
_LAST_SETTINGS: list[Any] = []


class _Exchange:
    """A request and its response while they are being received."""

    __slots__ = ("seq", "request", "response", "request_done", "response_done",
                 "request_lost", "response_lost", "last_ts", "emitted")

    def __init__(self, seq: int, ts: float) -> None:
        self.seq = seq
        self.request: HTTPMessage | _Draft | None = None
        self.response: HTTPMessage | _Draft | None = None
        self.request_done = False
        self.response_done = False
        self.request_lost = False      # a gap swallowed the request's headers
        self.response_lost = False
        self.last_ts = ts
        self.emitted = False


class _Draft:
    """A message whose headers are parsed and whose body is still arriving."""

    __slots__ = ("ts", "is_request", "version", "method", "target", "status_code", "status_phrase",
                 "fields", "head_text", "start", "body_bytes", "body", "notes", "exchange",
                 "declared_length", "send_body", "capture_limit")

    def __init__(self, ts: float, is_request: bool, start: int) -> None:
        self.ts = ts
        self.is_request = is_request
        self.start = start                  # stream offset of the first byte
        self.version = "1.1"
        self.method = ""
        self.target = ""
        self.status_code = 0
        self.status_phrase = ""
        self.fields: dict[str, str] = {}    # lower-cased name -> value, repeats joined with ", "
        self.head_text = ""
        self.body_bytes = 0
        self.body: bytearray | None = None  # set when the body is to be captured
        self.notes: list[str] = []
        self.exchange: _Exchange | None = None
        self.declared_length: int | None = None
        self.send_body = False              # include_body_for matched: body goes in the document
        self.capture_limit = 0              # body bytes kept (max_body_bytes, max_message_size)


class _Direction:
    """Framing of one direction of the connection: bytes in, drafts out to the stream."""

    __slots__ = ("stream", "is_request", "settings", "state", "buf", "scan_from", "offset",
                 "draft", "head_start", "head_ts", "remaining", "trailer_bytes", "synced",
                 "boundary", "hold_ts", "hold_after")

    def __init__(self, stream: HTTPStream, is_request: bool, settings: _Settings) -> None:
        self.stream: HTTPStream = stream    # (None once the stream is closed: on_close)
        self.is_request = is_request
        self.settings = settings
        self.state = _HEAD
        self.buf = bytearray()       # partial header block, line, resync window or held bytes
        self.scan_from = 0           # where the search for the header end resumes in buf
        self.offset = 0              # stream offset of data[0] in the current feed
        self.draft: _Draft | None = None
        self.head_start = 0          # stream offset where the buffered header block starts
        self.head_ts = 0.0
        self.remaining = 0           # body or chunk bytes still to come
        self.trailer_bytes = 0
        self.synced = False          # a message start has been seen since the start or a loss
        self.boundary = True         # buf/data starts at a possible message start (resync)
        self.hold_ts = 0.0
        self.hold_after = False      # this request was CONNECT/Upgrade: hold what follows

    # -- bytes in --------------------------------------------------------------

    def feed(self, data: bytes, ts: float) -> DecodeError | None:
        """Consume `data`; returns the first malformation met (already recovered from)."""
        error: DecodeError | None = None
        pos, end = 0, len(data)
        while pos < end:
            state = self.state
            try:
                if state == _BODY or state == _CHUNK_DATA:
                    pos = self._body(data, pos, ts)
                elif state == _HEAD:
                    pos = self._head(data, pos, ts)
                elif state == _CHUNK_SIZE or state == _CHUNK_END or state == _TRAILERS:
                    pos = self._chunk_framing(data, pos, ts)
                elif state == _UNTIL_CLOSE:
                    self._count_body(data, pos, end - pos)
                    self.draft.exchange.last_ts = ts
                    pos = end
                elif state == _TUNNEL:
                    pos = end
                elif state == _RESYNC:
                    pos = self._resync(data, pos, ts)
                else:   # _HOLD
                    pos = self._hold(data, pos, ts)
            except DecodeError as err:
                # Recover at once (look for the next message after what was read)
                # so that the stream stays usable; the error is reported after.
                error = error or err
                head_error = state == _HEAD and self.state == _HEAD
                resume = err.offset if err.offset is not None and pos <= err.offset <= end else end
                self._abandon(ts, self.offset + resume, head_error)
                pos = resume
        self.offset += end
        return error

    def _head(self, data: bytes, pos: int, ts: float) -> int:
        end = len(data)
        cap = self.settings.max_header_bytes
        buf = self.buf
        if not buf:
            # RFC 9112 §2.2: empty lines before a message are ignored.
            while pos < end and data[pos] in (13, 10):
                pos += 1
            if pos == end:
                return end
            if not self.synced:
                # The first bytes seen, or the first after a loss: they must look
                # like a message start, else the capture began mid-message. (A stream's
                # first message, the usual case, is taken here as _resync would take it.)
                if (_RESYNC_REQUEST if self.is_request else _RESYNC_RESPONSE).match(data, pos) is None:
                    self.state, self.boundary = _RESYNC, True
                    return pos
                self.boundary = self.synced = True
            head_end = _find_head_end(data, pos)
            if head_end >= 0:
                if head_end - pos > cap:
                    raise DecodeError("http.headers_too_large", head_end)
                self._on_head(data[pos:head_end], self.offset + pos, ts)
                return head_end
            # Incomplete: reject garbage now rather than after max_header_bytes of it.
            if not self._looks_like_start(data[pos:pos + 24]):
                return self._not_a_start(data, pos, ts)
            if end - pos > cap:
                raise DecodeError("http.headers_too_large", end)
            self.head_start, self.head_ts = self.offset + pos, ts
            buf += data[pos:]
            self.scan_from = max(0, len(buf) - 3)
            return end
        old = len(buf)
        room = cap + 4 - old
        buf += data[pos:pos + room]
        if old < 24 and not self._looks_like_start(bytes(buf[:24])):
            del buf[:]
            return self._not_a_start(data, pos, ts)
        head_end = _find_head_end(buf, self.scan_from)
        if head_end < 0:
            if len(buf) > cap:
                del buf[:]
                raise DecodeError("http.headers_too_large", min(end, pos + room))
            self.scan_from = max(0, len(buf) - 3)
            return end
        head = bytes(buf[:head_end])
        del buf[:]
        if head_end > cap:
            raise DecodeError("http.headers_too_large", pos + head_end - old)
        self._on_head(head, self.head_start, self.head_ts)
        return pos + head_end - old

    def _looks_like_start(self, prefix: bytes) -> bool:
        """Could these first bytes begin a message (a method token, or "HTTP/")?"""
        if not self.is_request:
            return b"HTTP/".startswith(prefix[:5])
        return _METHOD_PREFIX.match(prefix) is not None

    def _not_a_start(self, data: bytes, pos: int, ts: float) -> int:
        """Bytes where a message should start, in a stream we were following, but none does."""
        self.state, self.boundary = _RESYNC, False
        raise DecodeError("http.bad_start_line", pos + 1)

    def _on_head(self, head: bytes, start: int, ts: float) -> None:
        settings = self.settings
        text = head.decode("utf-8", "replace")
        lines = text.rstrip("\r\n").split("\n")
        first = lines[0].rstrip("\r")
        draft = _Draft(ts, self.is_request, start)
        if self.is_request:
            match = _REQUEST_LINE.fullmatch(first) or _REQUEST_LINE_LENIENT.fullmatch(first)
            if match is None:
                raise DecodeError("http.bad_request_line", self._data_pos(start + len(head)))
            draft.method, draft.target, major, minor = match.groups()
        else:
            match = _STATUS_LINE.fullmatch(first)
            if match is None:
                raise DecodeError("http.bad_status_line", self._data_pos(start + len(head)))
            major, minor, code, phrase = match.groups()
            draft.status_code = int(code)
            draft.status_phrase = (phrase or "").strip().lower()
        if major != "1":
            raise DecodeError("http.unsupported_version", self._data_pos(start + len(head)))
        draft.version = "1.0" if minor == "0" else "1.1"
        fields = draft.fields
        del lines[0]
        if "\n " in text or "\n\t" in text:
            lines = _unfold(lines, self._data_pos(start + len(head)))
        for line in lines:
            name, colon, value = line.partition(":")
            # Whitespace before the colon is tolerated (the server decides), a missing colon is not.
            if not colon:
                raise DecodeError("http.bad_header_line", self._data_pos(start + len(head)))
            name = name.lower()
            if name in fields:
                fields[name] += ", " + value.strip()
            else:
                fields[name] = value.strip()
        count = len(lines)
        if count > settings.max_headers:
            draft.notes.append(NOTE_TOO_MANY_HEADERS)
        draft.head_text = text
        self.synced = True
        self.draft = draft
        self._frame(draft, fields, start + len(head))

    def _data_pos(self, stream_offset: int) -> int:
        return max(0, stream_offset - self.offset)

    def _frame(self, draft: _Draft, fields: dict[str, str], body_start: int) -> None:
        """RFC 9112 §6.3: how the body of this message is delimited."""
        stream = self.stream
        data_pos = self._data_pos(body_start)
        length: int | None = None
        chunked = False
        coding = fields.get("transfer-encoding")
        if coding is not None:
            codings = [c.strip().lower() for c in coding.split(",")]
            if codings[-1] == "chunked":
                chunked = True
            elif self.is_request:
                # §6.3 rule 4: the request's length cannot be determined.
                raise DecodeError("http.bad_transfer_encoding", data_pos)
        elif "content-length" in fields:
            value = fields["content-length"]
            if "," in value:        # repeated (or a list): one value when all agree
                values = {v.strip() for v in value.split(",")}
                value = values.pop() if len(values) == 1 else ""
            else:
                value = value.strip()
            # 19 digits: an int64, as llhttp allows; larger is malformed, not memory.
            if not value.isdigit() or not value.isascii() or len(value) > 19:
                raise DecodeError("http.bad_content_length", data_pos)
            length = int(value)
            draft.declared_length = length
        self._decide_capture(draft)
        if self.is_request:
            stream.on_request_head(draft)
            # After CONNECT or an Upgrade offer the client's next bytes may be
            # tunnel bytes: they wait for the answer (see release()).
            self.hold_after = draft.method == "CONNECT" or "upgrade" in fields
            if chunked:
                self.state = _CHUNK_SIZE
            elif length:
                self.state, self.remaining = _BODY, length
            else:
                self._complete(draft.ts, body_start)
            return
        code = draft.status_code
        if code < 200 and code != 101:
            # An interim response: counted, not a transaction.
            stream.on_interim(draft)
            self.draft = None
            self.state = _HEAD
            return
        request_method = stream.on_response_head(draft)
        if code == 101 or (request_method == "CONNECT" and code < 300):
            stream.on_tunnel()
            self._complete(draft.ts, body_start)
            self.state = _TUNNEL
            return
        if request_method == "HEAD" or code == 204 or code == 304:
            self._complete(draft.ts, body_start)
        elif chunked:
            self.state = _CHUNK_SIZE
        elif length is not None:
            if length:
                self.state, self.remaining = _BODY, length
            else:
                self._complete(draft.ts, body_start)
        else:
            self.state = _UNTIL_CLOSE

    def _decide_capture(self, draft: _Draft) -> None:
        """Keep the body when include_body_for matches, or (as packetbeat does) when a
        request body is form-urlencoded, so that its parameters reach url.query."""
        settings = self.settings
        types = settings.body_types_request if self.is_request else settings.body_types_response
        content_type = draft.fields.get("content-type", "").lower()
        draft.send_body = bool(types) and bool(content_type) and any(t in content_type for t in types)
        form = self.is_request and "urlencoded" in content_type
        # max_message_size counts the header block too; past it packetbeat keeps
        # tracking the message but stores none of the rest. (ASCII text: as many bytes as characters)
        head = draft.head_text
        draft.capture_limit = min(settings.max_body_bytes, settings.max_message_bytes
                                  - (len(head) if head.isascii() else len(head.encode("utf-8", "replace"))))
        if (draft.send_body or form) and draft.capture_limit > 0:
            draft.body = bytearray()

    def _count_body(self, data: bytes, pos: int, n: int) -> None:
        draft = self.draft
        draft.body_bytes += n
        if draft.body is not None:
            self._capture(draft.body, data, pos, n)

    def _capture(self, body: bytearray, data: bytes, pos: int, n: int) -> None:
        room = self.draft.capture_limit - len(body)
        if room > 0:
            body += data[pos:pos + min(room, n)]

    def _body(self, data: bytes, pos: int, ts: float) -> int:
        take = min(self.remaining, len(data) - pos)
        draft = self.draft
        draft.body_bytes += take
        if draft.body is not None:
            self._capture(draft.body, data, pos, take)
        draft.exchange.last_ts = ts
        pos += take
        self.remaining -= take
        if self.remaining == 0:
            if self.state == _BODY:
                self._complete(ts, self.offset + pos)
            else:
                self.state = _CHUNK_END
        return pos

    def _read_line(self, data: bytes, pos: int, cap: int) -> tuple[bytes | None, int]:
        """A line ending in LF (CR stripped), or None with the rest buffered."""
        newline = data.find(b"\n", pos)
        buf = self.buf
        if newline < 0:
            if len(buf) + len(data) - pos > cap:
                raise DecodeError("http.line_too_long", len(data))
            buf += data[pos:]
            return None, len(data)
        if buf:
            buf += data[pos:newline]
            line = bytes(buf)
            del buf[:]
        else:
            line = data[pos:newline]
        if len(line) > cap:
            raise DecodeError("http.line_too_long", newline + 1)
        if line.endswith(b"\r"):
            line = line[:-1]
        return line, newline + 1

    def _chunk_framing(self, data: bytes, pos: int, ts: float) -> int:
        state = self.state
        if state == _TRAILERS:
            cap = self.settings.max_header_bytes - self.trailer_bytes
            before = len(self.buf)
            line, new_pos = self._read_line(data, pos, max(cap, 0))
            if line is None:
                return new_pos
            self.trailer_bytes += before + new_pos - pos
            if self.trailer_bytes > self.settings.max_header_bytes:
                raise DecodeError("http.headers_too_large", new_pos)
            if not line:
                self._complete(ts, self.offset + new_pos)
            return new_pos
        line, new_pos = self._read_line(data, pos, MAX_CHUNK_LINE_BYTES)
        if line is None:
            return new_pos
        if self.draft is not None and self.draft.exchange is not None:
            self.draft.exchange.last_ts = ts
        if state == _CHUNK_END:
            if line.strip():
                raise DecodeError("http.bad_chunk", new_pos)
            self.state = _CHUNK_SIZE
            return new_pos
        size_text = line.split(b";", 1)[0].strip().decode("latin-1")
        # 16 hex digits: a 64-bit size. It is only ever counted down.
        if not size_text or len(size_text) > 16 or not _HEX.issuperset(size_text):
            raise DecodeError("http.bad_chunk_size", new_pos)
        size = int(size_text, 16)
        if size == 0:
            self.state, self.trailer_bytes = _TRAILERS, 0
        else:
            self.state, self.remaining = _CHUNK_DATA, size
        return new_pos

    def _hold(self, data: bytes, pos: int, ts: float) -> int:
        """Client bytes after CONNECT/Upgrade, until the response tells what they are."""
        if not self.buf:
            self.hold_ts = ts
        room = self.settings.max_header_bytes - len(self.buf)
        if len(data) - pos > room:
            # Too much to be a pipelined request: it is tunnel traffic.
            del self.buf[:]
            self.state = _TUNNEL
            return len(data)
        self.buf += data[pos:]
        return len(data)

    def release(self, tunnel: bool) -> DecodeError | None:
        """The answer to CONNECT/Upgrade came: held bytes are tunnel or HTTP."""
        if self.state != _HOLD:
            return None
        held = bytes(self.buf)
        del self.buf[:]
        if tunnel:
            self.state = _TUNNEL
            return None
        self.state = _HEAD
        if not held:
            return None
        self.offset -= len(held)
        return self.feed(held, self.hold_ts)

    def _resync(self, data: bytes, pos: int, ts: float) -> int:
        """Skip to the next line that starts like a message (after a loss, or mid-stream)."""
        tail = bytes(self.buf)
        window = tail + data[pos:] if tail else data[pos:]
        if self.is_request:
            at_start, anywhere = _RESYNC_REQUEST, _RESYNC_REQUEST_ANYWHERE
        else:
            at_start, anywhere = _RESYNC_RESPONSE, _RESYNC_RESPONSE_ANYWHERE
        found = -1
        if self.boundary and at_start.match(window):
            found = 0
        else:
            match = anywhere.search(window)
            if match is not None:
                found = match.start()
            elif self.boundary and len(window) < 24 and self._looks_like_start(window):
                found = -2          # too short to tell yet: keep it
        if found < 0:
            keep = window if found == -2 else window[-RESYNC_WINDOW_BYTES:]
            self.stream.counters["bytes_skipped"] += len(window) - len(keep)
            if len(keep) < len(window):
                self.boundary = False
            self.buf[:] = keep
            return len(data)
        self.stream.counters["bytes_skipped"] += found
        del self.buf[:]
        self.state = _HEAD
        self.boundary = True
        self.synced = True
        if found >= len(tail):
            return pos + found - len(tail)
        # The message starts in the kept tail: it becomes the buffered header start.
        self.buf += tail[found:]
        self.head_start = self.offset + pos - (len(tail) - found)
        self.head_ts = ts
        self.scan_from = 0
        return pos

    # -- message ends ----------------------------------------------------------

    def _complete(self, ts: float, end_offset: int) -> None:
        draft = self.draft
        self.draft = None
        self.state = _HEAD
        if self.hold_after:
            self.hold_after = False
            stream = self.stream
            exchange = draft.exchange if draft is not None else None
            if stream.tunneled:
                self.state = _TUNNEL
            elif exchange is not None and not exchange.response_done:
                self.state = _HOLD
                stream.hold_exchange = exchange
        if draft is not None:
            self.stream.on_complete(draft, end_offset - draft.start)

    def on_gap(self, missing: int, ts: float) -> None:
        state = self.state
        draft = self.draft
        self.stream.counters["gaps"] += 1
        if state in (_BODY, _CHUNK_DATA) and draft is not None:
            draft.notes.append(NOTE_LOSS_REQUEST if self.is_request else NOTE_LOSS_RESPONSE)
            if missing < self.remaining:
                draft.body_bytes += missing
                self.remaining -= missing
                self.offset += missing
                return
            # The body ended inside the gap; what follows it was lost too.
            draft.body_bytes += self.remaining
            self.offset += self.remaining
            excess = missing - self.remaining
            if state == _BODY:
                self._complete(ts, self.offset)
                if excess:
                    self._lose(excess, ts)
                return
            # Chunk framing was lost: the message ends here, the rest is unknown.
            self._complete(ts, self.offset)
            self.offset += excess
            self._start_resync()
            return
        if state == _UNTIL_CLOSE and draft is not None:
            draft.notes.append(NOTE_LOSS_REQUEST if self.is_request else NOTE_LOSS_RESPONSE)
            draft.body_bytes += missing
            self.offset += missing
            return
        if state in (_CHUNK_SIZE, _CHUNK_END, _TRAILERS) and draft is not None:
            draft.notes.append(NOTE_LOSS_REQUEST if self.is_request else NOTE_LOSS_RESPONSE)
            del self.buf[:]
            self.offset += missing
            self._complete(ts, self.offset)
            self._start_resync()
            return
        if state == _TUNNEL:
            self.offset += missing
            return
        if state == _RESYNC:
            if self.boundary and self.buf and self._looks_like_start(bytes(self.buf[:24])):
                # What was kept is the start of a message that the gap cut.
                self.stream.on_lost(self.is_request, ts)
            del self.buf[:]
            self.offset += missing
            self.boundary = True
            return
        if state == _HOLD:
            del self.buf[:]
            self.state = _TUNNEL
            self.offset += missing
            return
        # _HEAD: a header block (or the start of the next message) was lost.
        self._lose(missing, ts)

    def _lose(self, missing: int, ts: float) -> None:
        """`missing` bytes from a message start (or inside its headers) are gone."""
        del self.buf[:]
        self.draft = None
        self.offset += missing
        self.stream.on_lost(self.is_request, ts)
        self._start_resync()

    def _start_resync(self) -> None:
        del self.buf[:]
        self.draft = None
        self.synced = False
        self.state = _RESYNC
        self.boundary = True     # the bytes after a gap may start a message

    def _abandon(self, ts: float, at_offset: int, head_error: bool) -> None:
        """After a malformation: keep pairing aligned, then resynchronise."""
        draft = self.draft
        del self.buf[:]
        self.hold_after = False
        if draft is not None and draft.exchange is not None:
            # The headers were fine, the chunk framing after them is not: report what we have.
            draft.notes.append(NOTE_REQUEST_INCOMPLETE if self.is_request else NOTE_RESPONSE_INCOMPLETE)
            self._complete(ts, at_offset)
        elif head_error:
            # A malformed start line or header block: that message is lost.
            self.stream.on_lost(self.is_request, ts, note=False)
        self.draft = None
        self.state = _RESYNC
        self.boundary = True

    def finish(self, ts: float, closed: bool) -> None:
        """End of the connection (or of input): close-delimited bodies end here."""
        draft = self.draft
        if draft is None:
            return
        if self.state == _UNTIL_CLOSE:
            self._complete(ts, self.offset)
        elif closed:
            draft.notes.append(NOTE_REQUEST_INCOMPLETE if self.is_request else NOTE_RESPONSE_INCOMPLETE)
            self._complete(ts, self.offset)


def _unfold(lines: list[str], offset: int) -> list[str]:
    """RFC 9112 §5.2: an obsolete folded line continues the previous one, joined by a space."""
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not out:
                raise DecodeError("http.bad_header_line", offset)
            out[-1] = out[-1].rstrip("\r") + " " + line.strip()
        else:
            out.append(line)
    return out


def _find_head_end(data: bytes | bytearray, start: int) -> int:
    """Index just past the empty line that ends a header block, or -1.

    Accepts CRLF and bare LF line ends (RFC 9112 §2.2 allows a recipient to).
    """
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start)
    if crlf < 0:
        return lf + 2 if lf >= 0 else -1
    if lf < 0 or crlf < lf:
        return crlf + 3
    return lf + 2


class HTTPStream:
    """Decodes one TCP connection: HTTP messages both ways, paired into transactions."""

    def __init__(self, flow: FlowKey, options: Mapping[str, Any]) -> None:
        self.flow = flow
        self.settings = settings = _Settings.from_options(options)
        self.requests = _Direction(self, True, settings)
        self.responses = _Direction(self, False, settings)
        self.exchanges: deque[_Exchange] = deque()
        self.answered = 0          # exchanges[:answered] have a response (or lost it)
        self.seq = 0
        self.out: list[Transaction] = []
        self.closed = False
        self.tunneled = False      # CONNECT or Upgrade succeeded: no more HTTP here
        # Read by the engine (decoders/api.py): False once the tunnel carries every later
        # byte both ways and nothing is pending, so the rest is not reassembled.
        self.needs_bytes = self.needs_expire = True
        self.hold_exchange: _Exchange | None = None
        self.pending_error: DecodeError | None = None
        self.counters = {"bytes_skipped": 0, "gaps": 0, "interim_responses": 0,
                         "pending_evicted": 0, "tunnels": 0, "lost_messages": 0}

    # -- StreamDecoder -----------------------------------------------------------

    def on_data(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]:
        direction = self.requests if from_client else self.responses
        error = direction.feed(data, ts)
        if self.tunneled:
            self._check_tunnel_only()
        return self._flush(error)

    def on_gap(self, from_client: bool, missing: int, ts: float) -> list[Transaction]:
        if missing > 0:
            (self.requests if from_client else self.responses).on_gap(missing, ts)
        if self.tunneled:
            self._check_tunnel_only()
        return self._flush(None)

    def _check_tunnel_only(self) -> None:
        """After CONNECT/Upgrade: once both directions are tunnel and every exchange
        is reported, no later byte changes a document (tunnel gaps stop being counted)."""
        if not self.exchanges and self.requests.state == _TUNNEL and self.responses.state == _TUNNEL:
            self.needs_bytes = self.needs_expire = False

    def on_close(self, ts: float) -> list[Transaction]:
        if not self.closed:
            self.closed = True
            self.requests.finish(ts, closed=True)
            self.responses.finish(ts, closed=True)
            self._expire(float("inf"))
            # No bytes come after the close (the StreamDecoder contract): the directions let
            # go of the stream, so that the stream and its directions are freed with their
            # last reference instead of waiting, a cycle, for the garbage collector (~6
            # objects a connection; they made 1 of every 3 collector passes of the dense mix).
            self.requests.stream = self.responses.stream = None
        return self._flush(None)

    def expire(self, now: float) -> list[Transaction]:
        if now == float("inf"):
            return self.on_close(now) if not self.closed else self._flush(None)
        self._expire(now - self.settings.timeout_s)
        return self._flush(None)

    def _flush(self, error: DecodeError | None) -> list[Transaction]:
        error = error or self.pending_error
        self.pending_error = None
        if error is not None:
            raise error          # self.out is kept and returned by the next call
        out, self.out = self.out, []
        return out

    # -- called by the directions ------------------------------------------------

    def on_request_head(self, draft: _Draft) -> None:
        if len(self.exchanges) >= self.settings.max_pending:
            # Cap reached: the oldest request is reported now rather than
            # holding memory for a response that a flood will never get.
            self.counters["pending_evicted"] += 1
            self._pop_emit()
        exchange = _Exchange(self.seq, draft.ts)
        self.seq += 1
        exchange.request = draft
        draft.exchange = exchange
        self.exchanges.append(exchange)

    def on_response_head(self, draft: _Draft) -> str:
        """Attach a final response to the oldest unanswered request; returns its method."""
        exchanges = self.exchanges
        if self.answered < len(exchanges):
            exchange = exchanges[self.answered]
        else:
            exchange = _Exchange(self.seq, draft.ts)
            self.seq += 1
            exchange.request_done = True       # none: a response without request
            exchanges.append(exchange)
        self.answered += 1
        exchange.response = draft
        exchange.last_ts = draft.ts
        draft.exchange = exchange
        request = exchange.request
        return request.method if request is not None else ""

    def on_interim(self, draft: _Draft) -> None:
        self.counters["interim_responses"] += 1
        if self.answered < len(self.exchanges):
            self.exchanges[self.answered].last_ts = draft.ts

    def on_tunnel(self) -> None:
        self.counters["tunnels"] += 1
        self.tunneled = True
        self.requests.release(tunnel=True)

    def on_complete(self, draft: _Draft, size: int) -> None:
        exchange = draft.exchange
        if exchange is None or exchange.emitted:
            return          # reported already (timeout or cap): the rest is only counted
        message = self._finish_message(draft, size)
        if draft.is_request:
            exchange.request = message
            exchange.request_done = True
        else:
            exchange.response = message
            exchange.response_done = True
            if exchange is self.hold_exchange and not self.tunneled:
                # The CONNECT/Upgrade was refused: the held bytes are HTTP again.
                self.hold_exchange = None
                self.pending_error = self.pending_error or self.requests.release(tunnel=False)
        self._drain()

    def on_lost(self, is_request: bool, ts: float, note: bool = True) -> None:
        """A message was lost to a gap (or malformed); keep the pairing aligned."""
        self.counters["lost_messages"] += 1
        if is_request:
            exchange = _Exchange(self.seq, ts)
            self.seq += 1
            exchange.request_done = True
            exchange.request_lost = note
            self.exchanges.append(exchange)
            return
        if self.answered < len(self.exchanges):
            exchange = self.exchanges[self.answered]
            self.answered += 1
            exchange.response_lost = note
            exchange.response_done = True
            exchange.last_ts = ts
            self._drain()

    # -- pairing and reporting -----------------------------------------------------

    def _drain(self) -> None:
        exchanges = self.exchanges
        while exchanges:
            first = exchanges[0]
            if not (first.request_done and first.response_done):
                return
            self._pop_emit()

    def _expire(self, deadline: float) -> None:
        exchanges = self.exchanges
        while exchanges and exchanges[0].last_ts <= deadline:
            self._pop_emit()

    def _pop_emit(self) -> None:
        exchange = self.exchanges.popleft()
        if self.answered:
            self.answered -= 1
        exchange.emitted = True
        request, response = exchange.request, exchange.response
        if isinstance(request, _Draft):     # still arriving: report what we have
            request.notes.append(NOTE_REQUEST_INCOMPLETE)
            request = self._finish_message(request, self.requests.offset - request.start)
        if isinstance(response, _Draft):
            response.notes.append(NOTE_RESPONSE_INCOMPLETE)
            response = self._finish_message(response, self.responses.offset - response.start)
        if request is None and response is None:
            return          # a lost request that nobody answered: nothing to report
        notes: list[str] = []
        status = "OK"
        if request is not None:
            notes += request.notes
            if response is None:
                status = "Error"
                notes.append(NOTE_LOSS_RESPONSE if exchange.response_lost else NOTE_UNMATCHED_REQUEST)
        if response is not None:
            notes += response.notes
            if response.status_code >= 400:
                status = "Error"
            if request is None:
                status = "Error"
                notes.append(NOTE_LOSS_REQUEST if exchange.request_lost else NOTE_UNMATCHED_RESPONSE)
        if request is not None and request.host:
            port = _host_port(request.host)[1]
            if port is not None and port != self.flow.server_port:
                notes.append(NOTE_HOST_PORT_MISMATCH)
        first = request or response
        self.out.append(_new_transaction(     # (flow, ts, end_ts, status, detail, request_bytes, response_bytes, notes, identity)
            self.flow, first.ts, response.ts if request is not None and response is not None else None,
            status, _new_exchange(request, response),
            request.size if request is not None else None, response.size if response is not None else None,
            tuple(dict.fromkeys(notes)) if notes else (), str(exchange.seq),
        ))

    def _finish_message(self, draft: _Draft, size: int) -> HTTPMessage:
        """From a draft to the frozen record, applying the options."""
        settings = self.settings
        fields = draft.fields
        content_type = fields.get("content-type", "")
        headers: dict[str, Any] = {}
        if draft.declared_length is not None:
            headers["content-length"] = draft.declared_length
        else:
            headers["content-length"] = draft.body_bytes
        if content_type:
            headers["content-type"] = content_type
        # packetbeat masks only requests (hideHeaders returns early for responses).
        redact = settings.redact_headers if draft.is_request else frozenset()
        secret = _AUTHORIZATION_HEADERS if settings.redact_authorization and draft.is_request else ()
        if settings.send_all_headers or settings.send_headers:
            wanted = settings.send_headers
            kept = 0
            for name, value in fields.items():
                if name in ("content-length", "content-type"):
                    continue
                if not settings.send_all_headers and name not in wanted:
                    continue
                if kept >= settings.max_headers:
                    break
                kept += 1
                if name in secret:
                    value = "*"
                elif name in redact:
                    value = REDACTED
                elif settings.split_cookie and name == ("cookie" if draft.is_request else "set-cookie"):
                    headers[name] = _split_cookie(value, draft.is_request)
                    continue
                headers[name] = value
        notes = list(draft.notes)
        body_bytes = bytes(draft.body) if draft.body else b""
        if body_bytes and settings.decode_body:
            codings = [c.strip().lower() for c in fields.get("content-encoding", "").split(",") if c.strip()]
            if codings:
                decoded = _decode_body(body_bytes, codings, settings.max_body_bytes)
                if decoded is None:
                    notes.append(NOTE_BODY_DECODE_FAILED)
                else:
                    body_bytes = decoded
        body: str | None = None
        mime_type = ""
        if draft.send_body and body_bytes:
            body = body_bytes.decode("utf-8", "replace")
            if settings.include_mime:
                mime_type = sniff_mime_type(body_bytes)
        raw: str | None = None
        if settings.send_request if draft.is_request else settings.send_response:
            raw = _redact_raw(draft.head_text, secret, redact)
            if body is not None:
                raw += body
        host = fields.get("host", "")
        forwarded = ""
        if settings.real_ip_header and draft.is_request:
            candidate = fields.get(settings.real_ip_header, "").split(",", 1)[0].strip()
            forwarded = _ip_or_empty(candidate)
        path, query = "", ""
        if draft.is_request:
            path, query = _split_target(draft.method, draft.target)
            form = body_bytes if "urlencoded" in content_type.lower() else None
            query = _encode_query(query, settings.hide_keywords, form)
        authorization = fields.get("authorization")
        # HTTPMessage's fields in their order (_new_message: no keyword call, no __init__)
        return _new_message(
            draft.ts, draft.version, draft.method, draft.target, draft.status_code, draft.status_phrase,
            headers, content_type, host, fields.get("user-agent", ""), fields.get("referer", ""),
            _basic_auth_user(authorization) if authorization else "", forwarded, size,
            draft.body_bytes, body, raw, path, query, tuple(notes), mime_type,
        )


# -- helpers ----------------------------------------------------------------------

# Made once per message and transaction without their Python __init__ (wirebeat.records),
# every field in order.
_new_message, _new_exchange = maker(HTTPMessage), maker(HTTPExchange)

_AUTHORIZATION_HEADERS = ("authorization", "proxy-authorization")


def _redact_raw(head: str, secret: tuple[str, ...], redact: frozenset[str]) -> str:
    if not secret and not redact:
        return head
    out = []
    for line in head.split("\n"):
        name, colon, value = line.partition(":")
        lowered = name.strip().lower()
        if colon and secret and name.lower().endswith("uthorization"):
            # packetbeat's masking: it finds "uthorization:" and turns every byte
            # after the colon up to the line end into '*', the space included.
            stripped = value.rstrip("\r")
            line = name + ":" + "*" * len(stripped) + value[len(stripped):]
        elif colon and lowered in redact:
            line = name + ": " + REDACTED + ("\r" if value.endswith("\r") else "")
        out.append(line)
    return "\n".join(out)


def _split_cookie(value: str, is_request: bool) -> dict[str, str]:
    cookies: dict[str, str] = {}
    # Cookie: a=1; b=2.  Set-Cookie headers were joined with ", ": keep the name=value of each.
    parts = value.split(";") if is_request else [c.split(";", 1)[0] for c in value.split(", ")]
    for part in parts:
        name, _, val = part.strip().partition("=")
        if name:
            cookies[name.lower()] = val
    return cookies


def _basic_auth_user(authorization: str) -> str:
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return ""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""
    return decoded.partition(":")[0]


def _ip_or_empty(text: str) -> str:
    text = text.strip()
    if text.startswith("[") and "]" in text:        # [2001:db8::1]:443
        text = text[1:text.index("]")]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    host, colon, port = text.rpartition(":")          # 192.0.2.1:443
    if colon and port.isdigit():
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
    return ""


def _split_target(method: str, target: str) -> tuple[str, str]:
    """(percent-decoded path, raw query) of a request-target (RFC 9112 §3.2)."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
        path = path.partition("#")[0]
        query = query.partition("#")[0]
    elif "://" in target:        # absolute-form, sent to proxies
        try:
            parts = urlsplit(target)
        except ValueError:
            return target, ""
        path, query = parts.path or "/", parts.query
    elif method == "CONNECT" or target == "*":
        return target, ""        # authority-form or asterisk-form
    else:
        path, _, query = target.partition("?")
    return unquote(path, errors="replace"), query


def _parse_query(text: str | bytes) -> tuple[dict[bytes, list[bytes]], bool]:
    """Parameters as Go's url.ParseQuery reads them, and whether every pair was valid.

    Pairs are split on '&' only; a pair holding ';' or a bad %-escape is skipped
    (and makes the result not valid); '+' is a space. Keys keep first-seen order,
    values their order.
    """
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    params: dict[bytes, list[bytes]] = {}
    valid = True
    for pair in raw.split(b"&"):
        if b";" in pair:
            valid = False
            continue
        if not pair:
            continue
        key, _, value = pair.partition(b"=")
        key_bytes, value_bytes = _query_unescape(key), _query_unescape(value)
        if key_bytes is None or value_bytes is None:
            valid = False
            continue
        params.setdefault(key_bytes, []).append(value_bytes)
    return params, valid


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _query_unescape(part: bytes) -> bytes | None:
    if _BAD_ESCAPE.search(part):
        return None
    return unquote_to_bytes(part.replace(b"+", b" "))


def _encode_query(query: str, hide: frozenset[str], form_body: bytes | None) -> str:
    """packetbeat's url.query (extractParameters): the target's parameters, then a
    form body's parameters replacing those of the same name; values of parameters
    named in hide_keywords (compared lower-cased) become xxxxx; re-encoded as Go's
    url.Values.Encode does (keys sorted, QueryEscape, space as '+').

    A form body with an invalid pair makes packetbeat give up: no url.query at all.
    """
    if not query and not form_body:
        return ""                         # (no parameters)
    params, _ = _parse_query(query)       # url.Query() drops bad pairs silently
    if form_body:
        form, valid = _parse_query(form_body)
        if not valid:
            return ""
        params.update(form)
    parts: list[str] = []
    for key in sorted(params):
        hidden = key.decode("utf-8", "replace").lower() in hide
        for value in params[key]:
            parts.append(quote_plus(key, safe="") + "=" + ("xxxxx" if hidden else quote_plus(value, safe="")))
    return "&".join(parts)


def _decode_body(body: bytes, codings: list[str], max_bytes: int) -> bytes | None:
    """Undo gzip/deflate content codings (decode_body), last applied first.

    At most `max_bytes` come out (a small compressed body can inflate to
    gigabytes). None when a coding is unknown or the bytes do not inflate; a
    body cut short (max_body_bytes) yields what inflates of it.
    """
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            attempts = (31,)
        elif coding in ("deflate", "x-deflate"):
            attempts = (15, -15)         # zlib-wrapped as RFC 9110 says; raw from some servers
        elif coding == "identity":
            continue
        else:
            return None
        for wbits in attempts:
            try:
                inflater = zlib.decompressobj(wbits)
                out = inflater.decompress(body, max_bytes)
                break
            except zlib.error:
                out = None
        if out is None:
            return None
        body = out
    return body


def _host_port(host: str) -> tuple[str, int | None]:
    """Split a Host header into host and port (None when absent or not a number)."""
    # A site's Host header recurs in every request to it (looked up twice per transaction):
    # cached when it is no longer than a DNS name with a port, so the cache stays small.
    return _host_port_cached(host) if len(host) <= 270 else _split_host_port(host)


def _split_host_port(host: str) -> tuple[str, int | None]:
    host = host.strip()
    if host.startswith("["):
        close = host.find("]")
        if close > 0:
            rest = host[close + 1:]
            port = rest[1:] if rest.startswith(":") else ""
            return host[1:close], int(port) if port.isdigit() and len(port) <= 5 else None
    name, colon, port = host.rpartition(":")
    if colon and ":" not in name:
        return name, int(port) if port.isdigit() and len(port) <= 5 else None
    return host, None


_host_port_cached = lru_cache(maxsize=1024)(_split_host_port)


def _extension(path: str) -> str:
    last = path.rsplit("/", 1)[-1]
    stem, dot, ext = last.rpartition(".")
    return ext if dot and stem and ext else ""


_PATH_SAFE = "/:@!$&'()*+,;=-._~%"     # what url.full's path keeps besides letters and digits
_PATH_KEPT = string.ascii_letters + string.digits + "_.-~" + _PATH_SAFE     # all quote() keeps


def _full_url(domain: str, port: int, path: str, query: str) -> str:
    """packetbeat's synthesized url.full: http://host[:port]/path?query."""
    host = f"[{domain}]" if ":" in domain else domain
    if port != 80:
        host = f"{host}:{port}"
    # (a path of characters quote() keeps as they are, the usual case, without its call)
    url = "http://" + host + (path if path.isascii() and not path.rstrip(_PATH_KEPT) else quote(path, safe=_PATH_SAFE))
    return url + "?" + query if query else url


def _message_fields(msg: HTTPMessage) -> dict[str, Any]:
    fields: dict[str, Any] = {"bytes": msg.size, "headers": msg.headers}
    body: dict[str, Any] = {}
    if msg.body_bytes:
        body["bytes"] = msg.body_bytes
    if msg.body:
        body["content"] = msg.body
    if body:
        fields["body"] = body
    if msg.mime_type:
        fields["mime_type"] = msg.mime_type
    return fields


def document(txn: Transaction) -> dict[str, Any]:
    """The one place HTTP field names are spelled; mirrors index_templates/http.json."""
    exchange: HTTPExchange = txn.detail
    request, response = exchange.request, exchange.response
    flow = txn.flow
    doc: dict[str, Any] = {}
    http: dict[str, Any] = {}
    related_ip = [flow.client_ip] if flow.client_ip == flow.server_ip else [flow.client_ip, flow.server_ip]
    related_hosts: list[str] = []
    if request is not None:
        http["version"] = request.version
        req = _message_fields(request)
        req["method"] = request.method
        if request.referer:
            req["referrer"] = request.referer
            referer_host = urlsplit(request.referer).hostname if "://" in request.referer else None
            if referer_host:
                related_hosts.append(referer_host)
        http["request"] = req
        domain, host_port = _host_port(request.host) if request.host else ("", None)
        port = host_port if host_port is not None else flow.server_port
        url: dict[str, Any] = {"scheme": "http"}
        if domain:
            url["domain"] = domain
            # (an IPv4 address ends with a digit, an IPv6 one has a colon: most hosts are names)
            if (":" in domain or domain[-1].isdigit()) and is_ip_literal(domain):
                related_ip.append(domain)
            else:
                doc["destination"] = {"domain": domain}
                doc["server"] = {"domain": domain}
                related_hosts.append(domain)
        if port != 80:
            url["port"] = port
        if request.path:
            url["path"] = request.path
            extension = _extension(request.path)
            if extension:
                url["extension"] = extension
        if request.query:
            url["query"] = request.query
        if domain and request.method != "CONNECT":
            url["full"] = _full_url(domain, port, request.path or "/", request.query)
        doc["url"] = url
        doc["method"] = request.method
        doc["query"] = f"{request.method} {request.path}"
        if request.user_agent:
            doc["user_agent"] = {"original": request.user_agent}
        if request.user_name:
            doc["user"] = {"name": request.user_name}
            doc["related"] = {"user": [request.user_name]}
        if request.forwarded_ip:
            doc.setdefault("network", {})["forwarded_ip"] = request.forwarded_ip
            doc["client"] = {"ip": request.forwarded_ip}
            related_ip.append(request.forwarded_ip)
        if request.raw is not None:
            doc["request"] = request.raw
    if response is not None:
        http.setdefault("version", response.version)
        resp = _message_fields(response)
        resp["status_code"] = response.status_code
        if response.status_phrase:
            resp["status_phrase"] = response.status_phrase
        http["response"] = resp
        if response.raw is not None:
            doc["response"] = response.raw
    doc["http"] = http
    related = doc.setdefault("related", {})
    related["ip"] = list(dict.fromkeys(related_ip))
    if related_hosts:
        related["hosts"] = list(dict.fromkeys(related_hosts))
    return doc


DECODER = DecoderSpec(
    name="http",
    document=document,
    stream=HTTPStream,
    ports=(80, 8080, 8000, 5000, 8002),
    options={
        "send_headers": Option("list[str]", [], "header names reported in http.*.headers "
                               "(content-length and content-type always are)"),
        "send_all_headers": Option("bool", False, "report every header"),
        "split_cookie": Option("bool", False, "report Cookie and Set-Cookie as name -> value maps"),
        "include_body_for": Option("list[str]", [], "content types (substrings) whose bodies are "
                                   "captured into http.*.body.content, both directions"),
        "include_request_body_for": Option("list[str]", [], "as include_body_for, requests only"),
        "include_response_body_for": Option("list[str]", [], "as include_body_for, responses only"),
        "max_body_bytes": Option("int", 65536, "captured body bytes per message; the rest is "
                                 "counted, never buffered"),
        "max_header_bytes": Option("int", 65536, "a header block (or trailer block) longer "
                                   "than this is malformed; also caps bytes held after CONNECT"),
        "max_headers": Option("int", 100, "headers reported per message (Apache's LimitRequestFields)"),
        "max_pending": Option("int", 64, "requests awaiting a response per connection; when "
                              "full the oldest is reported unmatched"),
        "redact_authorization": Option("bool", False, "requests: Authorization and "
                                       "Proxy-Authorization become '*' in headers, and every byte "
                                       "of their values becomes '*' in the raw request"),
        "redact_headers": Option("list[str]", [], "request headers whose values are replaced by "
                                 "REDACTED in headers and the raw request"),
        "real_ip_header": Option("str", "", "header whose first address becomes "
                                 "network.forwarded_ip and client.ip (e.g. X-Forwarded-For)"),
        "hide_keywords": Option("list[str]", [], "query parameters whose values become xxxxx "
                                "in url.query (names compared lower-cased)"),
        "max_message_size": Option("int", 10485760, "bytes of a message (header block and body) "
                                   "kept; past it the message is still tracked and reported, "
                                   "without the rest of its body (packetbeat's default)"),
        "decode_body": Option("bool", True, "inflate gzip/deflate (Content-Encoding) bodies "
                              "before they are reported or read for url.query"),
        "include_mime": Option("bool", True, "set http.*.mime_type, sniffed from the captured "
                               "body as packetbeat's shipped detect_mime_type processors do"),
    },
)
