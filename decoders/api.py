"""The decoder API: all that a protocol decoder, built-in or plug-in, imports.

A decoder is sans-IO. The engine owns capture, defragmentation, TCP reassembly,
flows and time; it hands a decoder bytes with their packet time and gets
`Transaction`s back. A decoder never opens files or sockets, never reads the
clock and keeps no module-level state, so replaying a capture always gives the
same documents. docs/decoders.md walks through writing one.

Two shapes of decoder exist:

- `DatagramDecoder`: one instance per (decoder, capture source); it sees every
  datagram of every flow the engine routes to it (UDP by port, or whole IP
  protocols such as ICMP) and keys its own state by `Datagram.flow`.
- `StreamDecoder`: one instance per TCP connection; the engine reassembles each
  direction and delivers bytes in order, or a gap notice where bytes are lost.

UDP flows on no configured port can still reach a decoder two ways: another
decoder announced the endpoint in-band (`Expectations`: SIP's SDP names the
RTP address and port), or the decoder's `probe` recognised the flow's first
datagram (`wirebeat.protocols.<name>.heuristic`). The engine caches the answer
per flow, so later datagrams cost one dict lookup; a "no" is reconsidered on
a bounded schedule (`reprobe_due`), since WebRTC sends STUN and DTLS first.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from wirebeat.accel import speedups

__all__ = [
    "iso_time",
    "Datagram",
    "DatagramDecoder",
    "DecodeError",
    "DecoderSpec",
    "Expectation",
    "Expectations",
    "FlowKey",
    "format_mac",
    "is_ip_literal",
    "Option",
    "reprobe_due",
    "StreamDecoder",
    "Transaction",
    "Truncated",
    "WireReader",
]


# The records below are built per packet or per transaction, where a frozen
# dataclass costs four times as much to construct (every field goes through
# object.__setattr__). They are plain slotted dataclasses instead: treat them
# as immutable all the same.


@dataclass(slots=True, unsafe_hash=True)    # hashable: decoders key their state by flow
class FlowKey:
    """Who talks to whom. Client side first: the side that sent the request."""

    transport: str      # "udp", "tcp", "icmp" or "ipv6-icmp" (ECS network.transport)
    client_ip: str
    client_port: int    # 0 where the transport has no ports (ICMP)
    server_ip: str
    server_port: int
    source: str = ""    # capture source: collector client name, file path or interface

    def reversed(self) -> FlowKey:
        """The same flow seen from the other side."""
        return FlowKey(self.transport, self.server_ip, self.server_port,
                       self.client_ip, self.client_port, self.source)


@dataclass(slots=True)
class Datagram:
    """One UDP datagram (or IP payload) handed to a DatagramDecoder."""

    ts: float            # capture time of this packet, seconds since the epoch
    flow: FlowKey        # addresses and ports, client side first as first seen
    from_client: bool
    payload: bytes       # the transport payload (for IP-protocol decoders: the IP payload)
    reprobed: bool = False   # a heuristic routed the flow only now: it turned down earlier datagrams


@dataclass(slots=True)
class Transaction:
    """One request/response pair, or one lone message, ready to become a document.

    `detail` is the decoder's own record; the spec's `document()` turns it into
    the protocol's fields. The engine adds endpoints, network.*, event timing,
    capture.source and the document id.
    """

    flow: FlowKey                   # client (requester) first
    ts: float                       # time of the first packet of the transaction
    end_ts: float | None            # time of the last packet, None for a lone message
    status: str                     # "OK" or "Error", packetbeat's rules per protocol
    detail: Any
    request_bytes: int | None = None     # source.bytes: size of the request message
    response_bytes: int | None = None    # destination.bytes: size of the response
    notes: tuple[str, ...] = ()          # become error.message
    identity: str = ""    # tells apart transactions of one flow starting at the same ts


class DatagramDecoder(Protocol):
    def on_datagram(self, dgram: Datagram) -> list[Transaction]: ...

    def expire(self, now: float) -> list[Transaction]:
        """Report what timed out by packet time `now`; `now` is +inf at end of input."""
        ...


class StreamDecoder(Protocol):    # one per TCP connection; the engine reassembles
    """One TCP connection's decoder.

    Two optional attributes (absent means True) let a decoder that is done
    with a connection make it cheap; the engine reads them after its calls:

    - `needs_bytes`: set it False once no later byte of the connection can
      change what the decoder reports or counts (TLS after its session was
      reported). The engine then stops reassembling the connection: no more
      `on_data` or `on_gap`. It still tracks the connection (FIN, RST, idle
      timeout) and still calls `expire` and, once, `on_close`.
    - `needs_expire`: set it False once `expire` can report nothing more; the
      engine then stops calling it (`on_close` still comes).
    """

    def on_data(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]: ...

    def on_gap(self, from_client: bool, missing: int, ts: float) -> list[Transaction]: ...

    def on_close(self, ts: float) -> list[Transaction]: ...

    def expire(self, now: float) -> list[Transaction]: ...


@dataclass(frozen=True, slots=True)
class Option:
    """One decoder-specific config key under wirebeat.protocols.<name>."""

    kind: str          # "bool", "int", "float", "str", "duration", "list[str]", "list[int]"
    default: Any
    doc: str = ""


@dataclass(slots=True)
class Expectation:
    """A UDP endpoint one decoder learnt about in-band, and for which decoder."""

    decoder: str        # name of the decoder that gets flows to or from the endpoint
    context: Any        # what the announcer tells that decoder (SDP: call id, payload types)
    until_ts: float     # packet time after which new flows no longer match


class Expectations:
    """UDP endpoints announced in-band on one capture source: where related flows will appear.

    One instance per capture source, handed to the factories of decoders whose
    spec sets `expectations=True`. A decoder that reads in the traffic where a
    related flow will be (SDP names the RTP address and port; later FTP PASV,
    TFTP) calls `expect`; when the first datagram of a UDP flow on no configured
    port goes to or comes from that endpoint, the engine routes the flow to the
    named decoder, which reads the context back with `find`. Plain data: no
    I/O, packet time only. At most `max_entries` are held; past that the oldest
    announcement is dropped and counted in `evicted`.
    """

    __slots__ = ("udp", "max_entries", "evicted")

    def __init__(self, max_entries: int = 65536) -> None:
        # (packed address, port) -> Expectation; the engine reads this dict directly.
        # Oldest first: an OrderedDict, whose oldest entry is found in O(1) (a plain dict's
        # first entry is found by stepping over every entry deleted before it).
        self.udp: OrderedDict[tuple[bytes, int], Expectation] = OrderedDict()
        self.max_entries = max_entries
        self.evicted = 0

    def expect(self, ip: str, port: int, decoder: str, context: Any, until_ts: float) -> bool:
        """Route new UDP flows touching ip:port to `decoder` until packet time `until_ts`.

        A later call for the same endpoint replaces the earlier one (a re-INVITE
        moves the media). False, and nothing stored, for an address that is not
        an IPv4/IPv6 literal or a port outside 1..65535 (SDP may carry anything).
        """
        key = _endpoint(ip, port)
        if key is None:
            return False
        udp = self.udp
        udp.pop(key, None)               # re-inserted last: dict order is age order
        if len(udp) >= self.max_entries:
            udp.popitem(last=False)
            self.evicted += 1
        udp[key] = Expectation(decoder, context, until_ts)
        return True

    def find(self, ip: str, port: int) -> Expectation | None:
        """The announcement for ip:port, if any (expired ones included until swept)."""
        key = _endpoint(ip, port)
        return None if key is None else self.udp.get(key)

    def expire(self, now: float) -> None:
        """Forget announcements whose `until_ts` is before packet time `now`."""
        stale = [key for key, exp in self.udp.items() if exp.until_ts < now]
        for key in stale:
            del self.udp[key]


def _endpoint(ip: str, port: int) -> tuple[bytes, int] | None:
    if not 0 < port < 65536:
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    except (OSError, ValueError):
        return None
    return packed, port


DatagramFactory = Callable[..., DatagramDecoder]   # (options) or (options, expectations)
StreamFactory = Callable[..., StreamDecoder]       # (flow, options) or (flow, options, expectations)


@dataclass(frozen=True, slots=True)
class DecoderSpec:
    """How the engine finds, configures and routes to a decoder.

    Factories get the decoder's resolved options: the common ones (`ports`,
    `transaction_timeout` in seconds, `send_request`, `send_response`, and
    `heuristic` for a spec with a `probe`) plus the decoder's own `options`,
    every value already type-checked; with `expectations=True` also the capture
    source's `Expectations`.
    """

    name: str                                    # also `type` and event.dataset
    document: Callable[[Transaction], dict[str, Any]]
    datagram: DatagramFactory | None = None      # UDP by port, and `ip_protocols`
    stream: StreamFactory | None = None          # TCP by port
    ports: tuple[int, ...] = ()                  # default for .ports
    ip_protocols: tuple[int, ...] = ()           # whole IP protocols (1 = ICMP, 58 = ICMPv6)
    options: Mapping[str, Option] = field(default_factory=dict)
    mappings: Mapping[str, Any] | None = None    # template properties; built-ins use index_templates/<name>.json
    network_protocol: str | None = None          # ECS network.protocol; None = name, "" = not set
    # Heuristic routing: asked about the first datagram of a UDP flow that no port,
    # no expectation routes, when wirebeat.protocols.<name>.heuristic is true.
    # Must be cheap, pure and never raise; the answer is cached per flow.
    probe: Callable[[bytes], bool] | None = None
    # True: the factories get the capture source's Expectations as a last argument.
    expectations: bool = False
    # Detection for streams: asked about the first payload of a TCP connection that no
    # port routes, when wirebeat.protocols.<name>.detect is true. Same contract as `probe`.
    detect: Callable[[bytes], bool] | None = None
    # Optional fast path for decoders of many small documents (NetFlow): the whole
    # document at once instead of `document()` deep-merged into the engine's common
    # fields. Called as whole_document(txn, network, related_ip, common): `network` is
    # the flow's network.* (transport, type, community_id; shared, copy it before
    # changing), `related_ip` the flow's addresses, `common` the capture/agent/ecs
    # fields to include as they are. Must give the document the generic path gives
    # (tests/bench/same_output.py); such documents carry no flow.id.
    whole_document: Callable[..., dict[str, Any]] | None = None
    # Its JSON text (bytes) directly, used instead when the output takes ready JSON and
    # nothing edits documents (no processors, fields under the root): called as
    # whole_text(txn, network, related_ip, common, tail) -> str or bytes: `network` the
    # JSON text of network.* without its closing brace (and without transport when the
    # flow has none), `common` the text
    # ',"capture":...,"agent":...,"ecs":...' and `tail` what closes the document
    # (',"fields":...,"tags":[...]}' or '}'). Same bytes as orjson.dumps(whole_document(...)).
    whole_text: Callable[..., str | bytes] | None = None
    # Optional fast path beside `document()` for transaction documents written as JSON
    # text (the output takes ready JSON, nothing edits documents, no tunnel): called as
    # document_text(txn) -> (event, own, related), `own` the bytes orjson.dumps makes of
    # document(txn) without its "event" and "related" keys, `event` those of the event's
    # value and `related` the JSON text (str) of related's ({"ip": [...]}, the flow's
    # addresses first), each None without one; or None: use document(). For decoders
    # whose part sets no other common object (network, the endpoints). Must give
    # document()'s bytes: tests/beat/test_doctext.py compares the documents made with and
    # without it.
    document_text: Callable[[Transaction], tuple[bytes | None, bytes, str | None] | None] | None = None
    # Modules the decoder imports only when it needs them (a library slow to import):
    # `wirebeat run` imports them before it switches user, while it can still read them.
    lazy_imports: tuple[str, ...] = ()


class DecodeError(Exception):
    """These bytes are not valid for the protocol being decoded."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} at byte {offset}")
        self.reason = reason    # stable id "<decoder>.<what_went_wrong>"; a counter label
        self.offset = offset


class Truncated(DecodeError):
    """The bytes end before the message's own lengths say they should."""


_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class WireReader:
    """Bounds-checked big-endian reading; every overrun raises `Truncated`.

    `prefix` names the decoder in reason ids ("dns" gives "dns.truncated").
    """

    __slots__ = ("data", "offset", "end", "prefix")

    def __init__(self, data: bytes, prefix: str, offset: int = 0) -> None:
        self.data = data
        self.offset = offset
        self.end = len(data)
        self.prefix = prefix

    def remaining(self) -> int:
        return self.end - self.offset

    def _need(self, n: int) -> int:
        start = self.offset
        if n < 0 or start + n > self.end:
            raise Truncated(f"{self.prefix}.truncated", start)
        self.offset = start + n
        return start

    def u8(self) -> int:
        return self.data[self._need(1)]

    def u16(self) -> int:
        return _U16.unpack_from(self.data, self._need(2))[0]

    def u32(self) -> int:
        return _U32.unpack_from(self.data, self._need(4))[0]

    def take(self, n: int) -> bytes:
        start = self._need(n)
        return bytes(self.data[start:start + n])

    def skip(self, n: int) -> None:
        self._need(n)

    def rest(self) -> bytes:
        return self.take(self.remaining())

    @contextmanager
    def exactly(self, n: int) -> Iterator[WireReader]:
        """Hold reads to the next `n` bytes, then continue right after them.

        A part that declares its length cannot read into what follows it, and a
        part that reads less than its length does not shift what follows.
        """
        start = self._need(n)
        outer_end = self.end
        self.offset, self.end = start, start + n
        try:
            yield self
        finally:
            self.offset, self.end = start + n, outer_end


def is_ip_literal(text: str) -> bool:
    """True for an IPv4 or IPv6 address in text form (a Host header, an SDP owner)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def format_mac(address: bytes) -> str:
    """A hardware address in ECS form: upper-case hex pairs joined by hyphens.

    ECS (and packetbeat 8) spell every MAC field this way ("00-0B-82-01-FC-42"),
    whatever the address length (EUI-48, EUI-64, a DHCP chaddr of any hlen).
    The one place wirebeat formats a MAC: every decoder and the flow table call it.
    """
    return address.hex("-").upper()


# A UDP flow a heuristic turned down is looked at again on every datagram of its
# first REPROBE_WINDOW_S seconds since (and at least its next REPROBE_FIRST
# datagrams), then on the 2^k-th and every REPROBE_EVERY-th datagram: RTP that
# starts after a STUN/DTLS handshake (RFC 7983) or after keep-alives is found
# from its first packet, and a long flow that never turns to RTP costs under
# one look per thousand datagrams.
REPROBE_WINDOW_S = 10.0
REPROBE_FIRST = 32
REPROBE_EVERY = 1024


def reprobe_due(turned_down: int, seconds: float) -> bool:
    """Should a heuristic look again at the `turned_down`-th datagram since it said
    no, `seconds` (packet time) after it said no?"""
    return (seconds <= REPROBE_WINDOW_S or turned_down <= REPROBE_FIRST
            or turned_down & (turned_down - 1) == 0 or turned_down % REPROBE_EVERY == 0)


@lru_cache(maxsize=4096)    # many timestamps share a second, and flow reports mix a few seconds
def _second_text(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def iso_time(ts: float) -> str:
    """RFC 3339 UTC with microseconds: 2026-11-25T22:31:54.123456Z (for times a decoder reads off the wire)."""
    seconds = int(ts // 1)
    micros = round((ts - seconds) * 1e6)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return f"{_second_text(seconds)}.{micros:06d}Z"


iso_time_python = iso_time      # the reference the C version is tested against
if speedups is not None:        # the same text from C (a fifth of the time), this function past 2223
    speedups.set_iso_time_fallback(iso_time_python)
    iso_time = speedups.iso_time    # noqa: F811
