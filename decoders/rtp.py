"""RTP (RFC 3550) stream quality and RTCP (RFC 3550 §6) reports, per stream.

A stream is what one sender sends on one UDP flow direction under one SSRC.
Streams are found two ways: the SIP decoder announces the media endpoints of
every SDP offer and answer (`wirebeat.decoders.api.Expectations`, with a `MediaEndpoint`
as context: Call-ID, rtpmap payload types, RTCP port), or, with
`wirebeat.protocols.rtp.heuristic`, `probe` recognises a datagram of a flow
(the engine asks again on later datagrams of a flow it turned down) and each
SSRC must then show `PROBATION_PACKETS` packets in sequence before it becomes
a stream; its packets are held meanwhile and counted once it does, or, as
Wireshark lists them, when the flow goes quiet on a 5-tuple that carried
nothing but datagrams Wireshark's heuristic takes for RTP (`lone_rtp`). On a
5-tuple already proven (a stream, a valid RTCP compound) a new SSRC needs no
proof. Datagrams are demultiplexed by their first byte (RFC 7983): STUN, DTLS,
ZRTP and TURN sharing the 5-tuple (WebRTC) are skipped; SRTP/SRTCP headers are
read like RTP's.

Per stream the decoder counts packets, expected packets and loss (RFC 3550
A.1/A.3: extended sequence numbers across 16-bit wraparound, sender restarts,
duplicates and late packets counted apart), sequence errors, interarrival
delta, and interarrival jitter (RFC 3550 §6.4.1) with the payload type's clock
rate (RFC 3551 static types; dynamic types from SDP rtpmap). Delta and jitter
statistics follow Wireshark's RTP stream analysis so the numbers agree with
`tshark -z rtp,streams`; docs/fields-rtp.md lists the few deliberate
differences. Only headers are read: no payload byte is stored or logged
(RFC 4733 telephone events are counted by their RTP timestamp, never decoded).

RTCP compound packets (SR, RR, SDES CNAME, BYE) on the RTCP port or
multiplexed on the RTP port (RFC 5761) are attached to the stream they are
about: a sender report to the sender's stream, a report block to the stream it
reports on (fraction and cumulative lost, jitter as the far end saw it, and the
round trip from LSR/DLSR against the capture time of the matching SR).

Every report carries an ITU-T G.107 E-model estimate (`rtp.quality`, see
wirebeat.decoders.emodel) from the codec, network loss, the packets a fixed
`jitter_buffer` would discard and the RTCP round trip; the final reports of
the streams ending with a SIP call carry the call's worst (`rtp.call`).

Reports: with `report_interval` > 0 a document per interval (counters of that
interval only; the last, partial interval is reported when the stream ends),
and one final document (`rtp.final: true`, counters of the whole stream) when
the stream ends: SIP BYE (or a failed call), RTCP BYE, `stream_timeout` without
packets, or end of input.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wirebeat.decoders.api import (Datagram, DecodeError, DecoderSpec, Expectations, FlowKey, Option,
                                   Transaction, Truncated)
from wirebeat.decoders.emodel import Quality, estimate

__all__ = ["DECODER", "CallReport", "MediaEndpoint", "MediaSession", "RTCPPacket", "RTPDecoder", "RTPHeader",
           "ReportBlock", "decode_header", "decode_rtcp", "document", "lone_rtp", "probe",
           "static_payload_type"]

# RFC 3551 §6 tables 4 and 5 (plus the RFC 1890 types 1, 2 and 19 that Wireshark
# still knows): payload type -> (encoding name, clock rate in Hz).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000), 1: ("1016", 8000), 2: ("G721", 8000), 3: ("GSM", 8000),
    4: ("G723", 8000), 5: ("DVI4", 8000), 6: ("DVI4", 16000), 7: ("LPC", 8000),
    8: ("PCMA", 8000), 9: ("G722", 8000), 10: ("L16", 44100), 11: ("L16", 44100),
    12: ("QCELP", 8000), 13: ("CN", 8000), 14: ("MPA", 90000), 15: ("G728", 8000),
    16: ("DVI4", 11025), 17: ("DVI4", 22050), 18: ("G729", 8000), 19: ("CN", 8000),
    25: ("CelB", 90000), 26: ("JPEG", 90000), 28: ("nv", 90000), 31: ("H261", 90000),
    32: ("MPV", 90000), 33: ("MP2T", 90000), 34: ("H263", 90000),
}
_UNKNOWN = ("", 0)

# RFC 3550 A.1: a jump of MAX_DROPOUT or more is not loss but a stray packet or
# a restart; a packet up to MAX_MISORDER behind the highest is late, not a jump.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
_SEEN_WINDOW = 1024                  # sequence numbers remembered to tell duplicates from late ones
_SEEN_MASK = (1 << _SEEN_WINDOW) - 1
PROBATION_PACKETS = 2                # heuristic streams: packets in sequence before they count
PROBATION_FAILURES = 4               # ... packets held without that before a candidate is dropped
_MAX_CANDIDATES = 8                  # unproven SSRCs held on one flow side at once
_GIVE_UP_AFTER = 2                   # rounds of dropped candidates before a side is set aside
_SR_KEPT = 8                         # sender reports remembered per stream for RTT matching
BYE_GRACE_S = 1.0                    # after a SIP BYE, packets still in flight are counted

_HEADER = struct.Struct("!BBHII")
_RTCP_HEADER = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IIIIII")


@dataclass(slots=True)
class MediaSession:
    """One call's media as SIP saw it; shared by a capture source's SIP and RTP decoders."""

    call_id: str
    ended_ts: float | None = None      # packet time of the BYE, CANCEL or failure ending it


@dataclass(slots=True)
class MediaEndpoint:
    """The context of an SDP-announced endpoint: what the party there said it receives."""

    session: MediaSession
    payload_types: dict[int, tuple[str, int]]   # a=rtpmap: type -> (encoding name, clock rate)
    rtcp: bool = False                          # the RTCP port of the media line


@dataclass(slots=True)
class RTPHeader:
    """The fixed RTP header (RFC 3550 section 5.1)."""

    version: int
    padding: bool
    marker: bool
    payload_type: int
    sequence: int            # seq
    timestamp: int           # RTP timestamp, in the payload type's clock
    ssrc: int
    csrc_count: int          # CC
    header_bytes: int        # fixed header + CSRCs + extension
    payload_bytes: int       # after the header, without padding


@dataclass(slots=True)
class ReportBlock:
    """One reception report block of an SR or RR (RFC 3550 section 6.4.1)."""

    ssrc: int                # the source this block reports on
    fraction_lost: int       # of 256, since the previous report
    cumulative_lost: int     # signed 24 bits
    highest_sequence: int    # extended highest sequence number received
    jitter: int              # in the reported stream's timestamp units
    last_sr: int             # LSR: middle 32 bits of the last SR's NTP time
    delay_since_last_sr: int  # DLSR, in 1/65536 s


@dataclass(slots=True)
class RTCPPacket:
    """One packet of a compound RTCP packet."""

    packet_type: int         # 200 SR, 201 RR, 202 SDES, 203 BYE, others kept as type only
    ssrc: int                # sender (SR/RR); first chunk's SSRC otherwise, 0 if none
    ntp_middle: int = 0      # SR: middle 32 bits of its NTP timestamp, what LSR echoes
    sender_packets: int = 0  # SR
    sender_octets: int = 0   # SR
    blocks: list[ReportBlock] = field(default_factory=list)
    cnames: dict[int, str] = field(default_factory=dict)      # SDES: SSRC -> CNAME
    bye_ssrcs: list[int] = field(default_factory=list)        # BYE


def static_payload_type(payload_type: int) -> tuple[str, int]:
    """(encoding name, clock rate) of an RFC 3551 static type; ("", 0) if it has none."""
    return STATIC_PAYLOAD_TYPES.get(payload_type, _UNKNOWN)


def decode_header(payload: bytes, strict_padding: bool = True) -> RTPHeader:
    """Parse an RTP fixed header, CSRCs and extension header.

    Raises DecodeError: "rtp.truncated", "rtp.bad_version", "rtp.bad_padding".
    With `strict_padding` False a padding count that does not fit is read as no
    padding: in SRTP (RFC 3711) the last byte is the authentication tag's.
    """
    if len(payload) < 12:
        raise Truncated("rtp.truncated", len(payload))
    b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(payload)
    if b0 >> 6 != 2:
        raise DecodeError("rtp.bad_version", 0)
    csrc_count = b0 & 0x0F
    header = 12 + 4 * csrc_count
    if b0 & 0x10:                                  # X: a 4-byte extension header, then its words
        if len(payload) < header + 4:
            raise Truncated("rtp.truncated", len(payload))
        header += 4 + 4 * struct.unpack_from("!H", payload, header + 2)[0]
    if len(payload) < header:
        raise Truncated("rtp.truncated", len(payload))
    padding = 0
    if b0 & 0x20:                                  # P: the last byte counts the padding
        padding = payload[-1]
        if padding == 0 or header + padding > len(payload):
            if strict_padding:
                raise DecodeError("rtp.bad_padding", len(payload) - 1)
            padding = 0
    return RTPHeader(2, bool(b0 & 0x20), bool(b1 & 0x80), b1 & 0x7F, sequence, timestamp, ssrc,
                     csrc_count, header, len(payload) - header - padding)


def decode_rtcp(payload: bytes) -> list[RTCPPacket]:
    """Parse an RTCP compound packet into its packets (RFC 3550 §6.1, A.2).

    Raises DecodeError ("rtcp.truncated", "rtcp.bad_version", "rtcp.bad_length")
    when the compound's lengths do not add up; unknown packet types are kept as
    their type only.
    """
    packets: list[RTCPPacket] = []
    offset, end = 0, len(payload)
    if end < 4:
        raise Truncated("rtcp.truncated", end)
    while offset < end:
        if end - offset < 4:
            raise Truncated("rtcp.truncated", offset)
        b0, packet_type, length_words = _RTCP_HEADER.unpack_from(payload, offset)
        if b0 >> 6 != 2:
            raise DecodeError("rtcp.bad_version", offset)
        size = 4 * (length_words + 1)
        if offset + size > end:
            raise DecodeError("rtcp.bad_length", offset)
        body_end = offset + size
        if b0 & 0x20:                              # padding only on the last packet
            body_end -= payload[body_end - 1]
            if body_end < offset + 4:
                raise DecodeError("rtcp.bad_length", offset)
        count = b0 & 0x1F
        packets.append(_decode_rtcp_packet(payload, packet_type, count, offset + 4, body_end))
        offset += size
    return packets


def _decode_rtcp_packet(data: bytes, packet_type: int, count: int, start: int,
                        end: int) -> RTCPPacket:
    if packet_type in (200, 201):                  # SR, RR
        fixed = 24 if packet_type == 200 else 4
        if end - start < fixed + 24 * count:
            raise DecodeError("rtcp.bad_length", start)
        ssrc = struct.unpack_from("!I", data, start)[0]
        packet = RTCPPacket(packet_type, ssrc)
        if packet_type == 200:
            ntp_high, ntp_low, _rtp_ts, packet.sender_packets, packet.sender_octets = \
                struct.unpack_from("!IIIII", data, start + 4)
            packet.ntp_middle = ((ntp_high & 0xFFFF) << 16) | (ntp_low >> 16)
        at = start + fixed
        for _ in range(count):
            source, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, at)
            cumulative = lost_word & 0xFFFFFF
            if cumulative & 0x800000:              # signed 24 bits (RFC 3550 §6.4.1)
                cumulative -= 0x1000000
            packet.blocks.append(ReportBlock(source, lost_word >> 24, cumulative, highest,
                                             jitter, lsr, dlsr))
            at += 24
        return packet
    if packet_type == 202:                         # SDES: chunks of SSRC + items, 32-bit aligned
        packet = RTCPPacket(202, 0)
        at = start
        for index in range(count):
            if end - at < 4:
                raise DecodeError("rtcp.bad_length", at)
            ssrc = struct.unpack_from("!I", data, at)[0]
            if index == 0:
                packet.ssrc = ssrc
            at += 4
            while True:
                if at >= end:
                    raise DecodeError("rtcp.bad_length", at)
                item = data[at]
                if item == 0:                      # end of the chunk; pad to the next word
                    at = (at + 4) & ~3
                    break
                if at + 2 > end or at + 2 + data[at + 1] > end:
                    raise DecodeError("rtcp.bad_length", at)
                if item == 1:                      # CNAME
                    packet.cnames[ssrc] = data[at + 2:at + 2 + data[at + 1]].decode(
                        "utf-8", "replace")
                at += 2 + data[at + 1]
        return packet
    if packet_type == 203:                         # BYE: SSRC/CSRC list, optional reason
        if end - start < 4 * count:
            raise DecodeError("rtcp.bad_length", start)
        ssrcs = list(struct.unpack_from(f"!{count}I", data, start))
        return RTCPPacket(203, ssrcs[0] if ssrcs else 0, bye_ssrcs=ssrcs)
    ssrc = struct.unpack_from("!I", data, start)[0] if end - start >= 4 else 0
    return RTCPPacket(packet_type, ssrc)


# Payload types a heuristic accepts: all but 72-76, which with the marker bit
# are RTCP's SR, RR, SDES, BYE and APP (RFC 5761 §4), as Wireshark's heuristic.
_PLAUSIBLE_TYPES = frozenset(range(128)) - frozenset(range(72, 77))


def lone_rtp(payload: bytes) -> bool:
    """Would Wireshark's RTP heuristic take this one datagram for RTP on its own?

    What tshark 4.0 (`-o rtp.heuristic_rtp:TRUE -z rtp,streams`) lists as a
    stream of one packet, measured datagram by datagram (see
    tests/integration/test_rtp_parity.py): at least 12 bytes, version 2, a
    second byte outside 72-76 and 192-223 (RFC 5761: RTCP packet types, and
    RTCP's range for the payload types with the marker bit), CSRCs and the
    extension header inside the datagram, and with the padding bit a padding
    count of 1 up to what follows the header. The decoder reports a lone or
    unsequenced SSRC only on a 5-tuple where every datagram passed this.
    """
    n = len(payload)
    if n < 12 or payload[0] & 0xC0 != 0x80:
        return False
    second = payload[1]
    if 72 <= second & 0x7F <= 76 or 192 <= second <= 223:
        return False
    header = _header_bytes(payload)
    if header > n:
        return False
    return not payload[0] & 0x20 or 0 < payload[-1] <= n - header


def _header_bytes(payload: bytes) -> int:
    """Fixed header, CSRCs and extension of an RTP packet of at least 12 bytes; past
    the end of `payload` when they do not fit."""
    header = 12 + 4 * (payload[0] & 0x0F)
    if payload[0] & 0x10:
        if len(payload) < header + 4:
            return header + 4
        header += 4 + 4 * ((payload[header + 2] << 8) | payload[header + 3])
    return header


def probe(payload: bytes) -> bool:
    """Does this first datagram of an unrouted UDP flow look like RTP or RTCP?

    RFC 7983's demultiplexing already keeps STUN (first byte 0-3), DTLS (20-63)
    and QUIC (fixed bit 0x40 set, so 64-127 or 192-255) out: RTP/RTCP needs
    128-191. DNS (a random id may start with 0x80-0xBF) is turned down by its
    header shape: one question and no or few answers, where RTP carries its
    timestamp. Payload types: any but 72-76 (RTCP's with the marker bit, RFC
    5761), as Wireshark. The decoder then wants PROBATION_PACKETS in sequence.
    """
    n = len(payload)
    if n < 8 or payload[0] & 0xC0 != 0x80:
        return False
    second = payload[1]
    if 192 <= second <= 223:                       # RTCP: SR/RR/SDES/BYE/APP first, lengths consistent
        return 200 <= second <= 204 and 4 * (((payload[2] << 8) | payload[3]) + 1) <= n
    if n < 12 or (second & 0x7F) not in _PLAUSIBLE_TYPES:
        return False
    if payload[4] == 0 and payload[5] == 1 and payload[6] == 0:     # DNS: QDCOUNT 1, ANCOUNT < 256
        return False
    if payload[8:12] == b"\0\0\0\0":               # SSRC 0: zeros are not a random identifier
        return False
    # The padding count is not checked: in SRTP the last byte belongs to the auth tag.
    return _header_bytes(payload) <= n


def is_rtp_or_rtcp(first_byte: int) -> bool:
    """RFC 7983 §7: on a multiplexed 5-tuple a first byte of 128-191 is RTP or RTCP;
    0-3 is STUN, 16-19 ZRTP, 20-63 DTLS, 64-79 TURN channel data."""
    return 128 <= first_byte <= 191


# ---------------------------------------------------------------------------
# Stream statistics
# ---------------------------------------------------------------------------

class _Window:
    """Counters over a span of one stream: the whole stream, or one report interval."""

    __slots__ = ("packets", "payload_bytes", "first_ts", "last_ts", "expected_before",
                 "duplicates", "reordered", "restarts", "sequence_errors", "markers",
                 "events", "slots", "max_delta", "mean_delta", "max_jitter", "mean_jitter",
                 "discarded")

    def __init__(self, ts: float, expected_before: int) -> None:
        self.packets = 0
        self.payload_bytes = 0
        self.first_ts = ts
        self.last_ts = ts
        self.expected_before = expected_before    # the stream's expected count when the span began
        self.duplicates = 0
        self.reordered = 0
        self.restarts = 0
        self.sequence_errors = 0
        self.markers = 0
        self.events = 0
        # Wireshark's running means: over the packets after the stream's first
        # (`slots`), a packet left out of the statistics counting as the mean so far.
        self.slots = 0
        self.max_delta = 0.0
        self.mean_delta = 0.0
        self.max_jitter = 0.0
        self.mean_jitter = 0.0
        self.discarded = 0                        # late for the jitter buffer (E-model input)


class _RTCPState:
    __slots__ = ("sender_reports", "receiver_blocks", "sender_packets", "sender_octets",
                 "fraction_lost", "cumulative_lost", "jitter_ms", "rtt_ms", "max_rtt_ms",
                 "cname", "bye", "sr_times")

    def __init__(self) -> None:
        self.sender_reports = 0            # SRs from this stream's sender
        self.receiver_blocks = 0           # report blocks about this stream from its receiver
        self.sender_packets: int | None = None
        self.sender_octets: int | None = None
        self.fraction_lost: float | None = None
        self.cumulative_lost: int | None = None
        self.jitter_ms: float | None = None
        self.rtt_ms: float | None = None
        self.max_rtt_ms: float | None = None
        self.cname: str | None = None
        self.bye = False
        self.sr_times: dict[int, float] = {}    # SR NTP middle 32 bits -> capture time


class _Side:
    """One direction of a flow: the streams its sender sends."""

    __slots__ = ("flow", "streams", "last", "ssrc_changes", "endpoint", "candidates_failed",
                 "given_up", "last_ts", "key", "pinned", "from_client", "proven", "set_aside",
                 "reverse", "pending", "clean")

    def __init__(self, flow: FlowKey, endpoint: MediaEndpoint | None, ts: float) -> None:
        self.flow = flow                   # sender as client
        self.last_ts = ts
        self.key = 0                       # in RTPDecoder.sides
        self.pinned: FlowKey | None = None  # the engine's FlowKey, as delivered
        self.from_client = True
        self.streams: dict[int, _Stream] = {}
        self.last: _Stream | None = None
        self.ssrc_changes = 0
        self.endpoint = endpoint
        self.candidates_failed = 0
        self.given_up = False              # a heuristic flow side that has not proved to be RTP...
        self.set_aside = 0                 # ... datagrams since: looked at again now and then
        self.proven = endpoint is not None  # SDP, a confirmed stream or RTCP seen on this side
        self.reverse: _Side | None = None  # the other direction of the same 5-tuple
        # Unproven SSRCs: their packets as (ts, seq, rtp_ts, b1, payload_bytes), held
        # until two arrive in sequence (then a stream, counting them all) or dropped.
        self.pending: dict[int, list[tuple[float, int, int, int, int]]] = {}
        # A heuristic side whose every datagram Wireshark would take for RTP on its
        # own (`lone_rtp`), on a flow routed from its first datagram, that never
        # dropped a candidate: what it still holds when it goes quiet is reported.
        self.clean = endpoint is None


class _Stream:
    __slots__ = ("side", "ssrc", "setup", "endpoint",
                 "first_ts", "last_ts", "first_rtp_ts", "last_arrival", "last_clocked_arrival",
                 "last_nominal", "jitter", "pt", "kind", "previous_cn", "pt_counts", "pt_info",
                 "max_seq", "last_seq", "cycles", "base_ext", "bad_seq", "expected_done", "seen",
                 "last_event_ts", "total", "interval", "windows", "interval_end", "reports",
                 "rtcp", "min_transit")

    def __init__(self, side: _Side, ssrc: int, ts: float, setup: str,
                 endpoint: MediaEndpoint | None) -> None:
        self.side = side
        self.ssrc = ssrc
        self.setup = setup                 # "sdp" or "heuristic"
        self.endpoint = endpoint
        self.first_ts = ts
        self.last_ts = ts
        self.first_rtp_ts = 0
        self.last_arrival = 0.0            # ms since first_ts, last packet in timestamp order
        self.last_clocked_arrival = 0.0    # ... of a packet with a known clock rate
        self.last_nominal = 0.0            # ms of RTP timestamp since the first packet's
        self.jitter = 0.0                  # RFC 3550 §6.4.1 estimate, ms
        self.pt = -1                       # payload type of the last packet, and its kind:
        self.kind: tuple[int, bool, bool] = (0, False, False)    # (clock rate, event, CN)
        self.previous_cn = False
        self.pt_counts: dict[int, int] = {}
        self.pt_info: dict[int, tuple[str, int]] = {}
        self.max_seq = 0                   # highest sequence number (RFC 3550 A.1 max_seq)
        self.last_seq = 0                  # last in-order one, as Wireshark counts sequence errors
        self.cycles = 0
        self.base_ext = 0
        self.bad_seq = -1
        self.expected_done = 0             # expected packets of segments before a restart
        self.seen = 0                      # bit i: extended sequence max - i was received
        self.last_event_ts = -1
        self.total = _Window(ts, 0)
        self.interval: _Window | None = None
        self.windows: tuple[_Window, ...] = (self.total,)
        self.interval_end = float("inf")
        self.reports = 0
        self.rtcp: _RTCPState | None = None
        self.min_transit = 0.0             # ms, arrival minus RTP time: the fastest packet's

    def open_interval(self, window: _Window, end_ts: float) -> None:
        self.interval = window
        self.windows = (self.total, window)
        self.interval_end = end_ts

    def expected(self) -> int:
        return self.expected_done + self.cycles + self.max_seq - self.base_ext + 1

    def info(self, payload_type: int) -> tuple[str, int]:
        """(encoding name, clock rate) of a payload type: SDP rtpmap first, then RFC 3551."""
        known = self.pt_info.get(payload_type)
        if known is None:
            endpoint = self.endpoint
            known = None if endpoint is None else endpoint.payload_types.get(payload_type)
            if known is None:
                known = STATIC_PAYLOAD_TYPES.get(payload_type, _UNKNOWN)
            self.pt_info[payload_type] = known
        return known


@dataclass(slots=True)
class StreamReport:
    """What a report document says: one interval, or the whole stream (`final`)."""

    ssrc: int
    setup: str
    final: bool
    window: _Window
    expected: int
    payload_type: int
    payload_types: list[int]
    codec: str
    clock_rate: int
    jitter_ms: float | None              # the estimate when the report was made
    ssrc_changes: int
    call_id: str | None
    rtcp: dict[str, Any] | None          # rtcp.* as known when the report was made
    reason: str                          # why the stream ended (final reports)
    quality: Quality | None = None       # E-model estimate over the window
    delay_source: str = ""               # "rtcp_rtt" or "jitter_buffer_only"
    jitter_buffer_ms: float = 0.0
    call: dict[str, Any] | None = None   # rtp.call.*: the SIP call's worst stream, set when it ends


@dataclass(slots=True)
class CallReport:
    """A SIP call's media quality: the final reports of its streams (`rtp.call.*`)."""

    call_id: str
    streams: list[StreamReport]          # in the order the streams ended

    def worst(self) -> StreamReport | None:
        """The stream with the lowest R-factor, None if none was scored."""
        scored = [r for r in self.streams if r.quality is not None]
        return min(scored, key=lambda r: r.quality.r_factor) if scored else None


class RTPDecoder:
    """Every RTP/RTCP flow of one capture source routed here: per-stream counters and reports."""

    def __init__(self, options: Mapping[str, Any], expectations: Expectations | None = None) -> None:
        self.report_interval_s: float = options.get("report_interval", 10.0)
        self.stream_timeout_s: float = options.get("stream_timeout", 30.0)
        self.max_streams: int = options.get("max_streams", 10000)
        self.jitter_buffer_ms: float = 1000.0 * options.get("jitter_buffer", 0.06)
        # SIP calls with streams still live: id(session) -> [live streams, final reports
        # of its ended streams]; as many entries as calls with live streams at most.
        self.calls: dict[int, tuple[list[int], list[Transaction]]] = {}
        self.expectations = expectations if expectations is not None else Expectations()
        self.sides: dict[int, _Side] = {}          # (id(flow) << 1) | from_client -> side
        self.sides_by_flow: dict[tuple[FlowKey, bool], _Side] = {}
        self.streams: OrderedDict[int, _Stream] = OrderedDict()   # id -> stream, oldest first (O(1))
        self.by_ssrc: dict[int, list[_Stream]] = {}
        self.counters = {"streams_evicted": 0, "rtcp_packets": 0, "rtcp_unmatched": 0,
                         "heuristic_rejected": 0, "demultiplexed_other": 0}

    # -- RTP -------------------------------------------------------------------

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        flow = dgram.flow
        # The engine hands every datagram of a flow the same FlowKey object:
        # keyed by its identity, a lookup costs no hashing of six fields.
        side = self.sides.get((id(flow) << 1) | dgram.from_client)
        if side is None:
            side = self._new_side(dgram)
        ts = dgram.ts
        side.last_ts = ts
        payload = dgram.payload
        if side.clean and not lone_rtp(payload):
            side.clean = False
        if side.given_up:
            # Set aside, not forever: RTP may start later on the same 5-tuple.
            side.set_aside += 1
            count = side.set_aside
            # Sparser than the engine's schedule: the side already failed many
            # candidates. The 64th, 128th ... 2^k-th datagram and every 1024th.
            due = count & (count - 1) == 0 and count >= 64 or count % 1024 == 0
            if not due or not probe(payload):
                return []
            side.given_up = False
            side.set_aside = side.candidates_failed = 0
        if not payload or not 128 <= payload[0] <= 191:
            # RFC 7983: STUN, DTLS, ZRTP or TURN sharing the 5-tuple (WebRTC, ICE): not ours.
            self.counters["demultiplexed_other"] += 1
            if side.endpoint is None or payload and payload[0] < 80:
                return []
        if len(payload) >= 12 and payload[0] == 0x80:      # version 2, no padding/extension/CSRC
            _b0, b1, seq, rtp_ts, ssrc = _HEADER.unpack_from(payload)
            if 192 <= b1 <= 223:                           # RFC 5761: RTCP types 192-223
                return self._on_rtcp(dgram, side)
            payload_bytes = len(payload) - 12
        else:
            if len(payload) >= 2 and 192 <= payload[1] <= 223:
                return self._on_rtcp(dgram, side)
            try:
                header = decode_header(payload, strict_padding=side.endpoint is not None)
            except DecodeError:
                if side.endpoint is None:
                    return []              # a heuristic flow: not RTP after all, keep quiet
                raise
            b1 = payload[1]
            seq, rtp_ts, ssrc = header.sequence, header.timestamp, header.ssrc
            payload_bytes = header.payload_bytes
        out: list[Transaction] = []
        stream = side.last
        if stream is None or stream.ssrc != ssrc:
            stream = side.streams.get(ssrc)
            if stream is None:
                packet = (ts, seq, rtp_ts, b1, payload_bytes)
                if side.endpoint is None and not self._proven(side):
                    held = self._on_probation(side, ssrc, packet)
                    if not held:
                        return out
                else:
                    held = side.pending.pop(ssrc, [])
                    held.append(packet)
                stream = self._open(side, ssrc, held, out)
                if side.last is not None:
                    side.ssrc_changes += 1
                side.last = stream
                self._promote_pending(side, out)
                return out
            if side.last is not None:
                side.ssrc_changes += 1
            side.last = stream
        if ts >= stream.interval_end:
            self._close_interval(stream, ts, out)
        self._count(stream, seq, rtp_ts, b1, payload_bytes, ts)
        return out

    def _new_side(self, dgram: Datagram) -> _Side:
        key = (id(dgram.flow) << 1) | dgram.from_client
        by_value = (dgram.flow, dgram.from_client)
        side = self.sides_by_flow.get(by_value)
        if side is not None:
            # The engine made a new FlowKey for a flow it had forgotten: same side.
            del self.sides[side.key]
        else:
            flow = dgram.flow if dgram.from_client else dgram.flow.reversed()
            # The receiver's SDP says which payload types it takes: look there first.
            find = self.expectations.find
            exp = find(flow.server_ip, flow.server_port) or find(flow.client_ip, flow.client_port)
            endpoint = exp.context if exp is not None and isinstance(exp.context, MediaEndpoint) \
                else None
            side = self.sides_by_flow[by_value] = _Side(flow, endpoint, dgram.ts)
        if dgram.reprobed:
            side.clean = False             # datagrams before this one were not RTP
        # Holding the engine's FlowKey keeps its id from being reused by another object.
        side.key, side.pinned, side.from_client = key, dgram.flow, dgram.from_client
        self.sides[key] = side
        return side

    def _open(self, side: _Side, ssrc: int, held: list[tuple[float, int, int, int, int]],
              out: list[Transaction]) -> _Stream:
        """A new stream, counting the packets held while it proved itself (in order)."""
        stream = self._new_stream(side, ssrc, held[0][0], out)
        for packet_ts, *header in held:
            if packet_ts >= stream.interval_end:
                self._close_interval(stream, packet_ts, out)
            self._count(stream, *header, packet_ts)
        return stream

    def _promote_pending(self, side: _Side, out: list[Transaction]) -> None:
        """The 5-tuple is proven: SSRCs held on either direction are streams after all."""
        reverse = side.reverse or self.sides_by_flow.get((side.pinned, not side.from_client))
        side.reverse = reverse
        for each in (side, reverse):
            if each is not None and each.pending:
                held_by_ssrc, each.pending = each.pending, {}
                for ssrc, held in held_by_ssrc.items():
                    self._open(each, ssrc, held, out)

    def _new_stream(self, side: _Side, ssrc: int, ts: float, out: list[Transaction]) -> _Stream:
        side.proven = True
        side.clean = False                 # proven: no more looking at each datagram
        if len(self.streams) >= self.max_streams:
            # Cap reached: the oldest stream is reported now, as if it had ended.
            oldest = next(iter(self.streams.values()))
            self.counters["streams_evicted"] += 1
            self._end(oldest, "evicted", out)
        stream = _Stream(side, ssrc, ts, "heuristic" if side.endpoint is None else "sdp",
                         side.endpoint)
        if side.endpoint is not None:
            live, _ended = self.calls.setdefault(id(side.endpoint.session), ([0], []))
            live[0] += 1
        side.streams[ssrc] = stream
        self.streams[id(stream)] = stream
        self.by_ssrc.setdefault(ssrc, []).append(stream)
        if self.report_interval_s > 0:
            stream.open_interval(_Window(ts, 0), ts + self.report_interval_s)
        return stream

    def _count(self, stream: _Stream, seq: int, rtp_ts: int, b1: int, payload_bytes: int,
               ts: float) -> None:
        """One packet into the stream's counters (whole stream, and the open interval)."""
        pt = b1 & 0x7F
        marker = b1 & 0x80
        if pt != stream.pt:
            name, rate = stream.info(pt)
            stream.pt = pt
            stream.kind = (rate, name == "telephone-event", name == "CN")
        rate, event, comfort_noise = stream.kind
        pt_counts = stream.pt_counts
        pt_counts[pt] = pt_counts.get(pt, 0) + 1
        if stream.total.packets == 0:
            # The first packet is the reference for sequence and timing.
            stream.first_rtp_ts = stream.last_event_ts = rtp_ts
            stream.max_seq = stream.last_seq = stream.base_ext = seq
            stream.seen = 1
            stream.previous_cn = comfort_noise
            for w in stream.windows:
                w.first_ts = w.last_ts = ts
                w.packets = 1
                w.payload_bytes = payload_bytes
                w.markers = 1 if marker else 0
                w.events = 1 if event else 0
            return
        stream.last_ts = ts

        # Sequence (RFC 3550 A.1, with duplicates and late packets told apart).
        duplicate = reordered = restart = False
        max_seq = stream.max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if 0 < udelta < MAX_DROPOUT:
            if seq < max_seq:
                stream.cycles += 0x10000          # wrapped around
            stream.max_seq = seq
            stream.seen = ((stream.seen << udelta) | 1) & _SEEN_MASK
        elif udelta == 0:
            duplicate = True
        elif udelta <= 0x10000 - MAX_MISORDER:
            if seq == stream.bad_seq:
                # Two packets in sequence after a big jump: the sender restarted
                # (RFC 3550 A.1). The packet before this one opened the new run.
                restart = True
                stream.expected_done = stream.expected()
                stream.cycles = 0
                stream.base_ext = seq - 1
                stream.max_seq = seq
                stream.seen = 3
                stream.bad_seq = -1
            else:
                stream.bad_seq = (seq + 1) & 0xFFFF       # a stray packet, unless the next follows it
        else:
            back = 0x10000 - udelta                   # late by this many
            if back < _SEEN_WINDOW and stream.seen >> back & 1:
                duplicate = True
            else:
                reordered = True
                if back < _SEEN_WINDOW:
                    stream.seen |= 1 << back
        # Sequence errors as Wireshark counts them: not the successor of the
        # last in-order packet (a gap, or a late or repeated packet).
        last = stream.last_seq
        if seq == (last + 1) & 0xFFFF:
            stream.last_seq = seq
            sequence_error = False
        else:
            sequence_error = True
            if seq > last + 1 or last - seq > 0xFF00:    # forward, maybe across the wrap
                stream.last_seq = seq

        # Timing, as Wireshark's RTP analysis (ui/tap-rtp-analysis.c) does it:
        # arrival in ms since the stream's first packet; a packet whose RTP
        # timestamp is before the first one's is out of the timing statistics.
        offset = (rtp_ts - stream.first_rtp_ts) & 0xFFFFFFFF
        in_time = offset < 0x80000000
        delta = 0.0
        jitter = -1.0
        late = False
        if in_time:
            # Microseconds, what pcap keeps: epoch seconds in a float carry ~0.2 us of noise.
            arrival = round((ts - stream.first_ts) * 1e6) / 1000.0
            delta = arrival - stream.last_arrival
            stream.last_arrival = arrival
            if rate and not event:
                # RFC 3550 §6.4.1: D = (Rj - Ri) - (Sj - Si) in the RTP clock,
                # J += (|D| - J) / 16. Telephone events (RFC 4733) carry the
                # event's start time, not the sampling instant: they are left out.
                nominal = offset / (rate / 1000.0)
                expected_arrival = stream.last_clocked_arrival + (nominal - stream.last_nominal)
                jitter = (15.0 * stream.jitter + abs(arrival - expected_arrival)) / 16.0
                stream.jitter = jitter
                stream.last_nominal = nominal
                stream.last_clocked_arrival = arrival
                # A fixed jitter buffer playing out `jitter_buffer_ms` after the
                # fastest packet so far would have dropped a packet this late.
                transit = arrival - nominal
                if transit < stream.min_transit:
                    stream.min_transit = transit
                elif transit - stream.min_transit > self.jitter_buffer_ms:
                    late = True
        # Wireshark leaves marker packets, comfort noise and the packet after it
        # out of the delta and jitter statistics (not out of the estimate).
        regular = in_time and not marker and not comfort_noise and not stream.previous_cn
        stream.previous_cn = comfort_noise
        new_event = False
        if event and rtp_ts != stream.last_event_ts:   # one event = one RTP timestamp (RFC 4733 §2.5)
            stream.last_event_ts = rtp_ts
            new_event = True

        for w in stream.windows:
            if w.packets == 0:
                w.first_ts = ts
            w.packets += 1
            w.payload_bytes += payload_bytes
            w.last_ts = ts
            slots = w.slots = w.slots + 1
            if sequence_error:
                w.sequence_errors += 1
                if duplicate:
                    w.duplicates += 1
                elif reordered:
                    w.reordered += 1
            if restart:
                w.restarts += 1
            if marker:
                w.markers += 1
            if new_event:
                w.events += 1
            if late:
                w.discarded += 1
            if regular:
                # Wireshark's running means over `slots`: a packet left out counts as the mean so far.
                if delta > w.max_delta:
                    w.max_delta = delta
                w.mean_delta = (w.mean_delta * (slots - 1) + delta) / slots
                if jitter >= 0.0:
                    if jitter > w.max_jitter:
                        w.max_jitter = jitter
                    w.mean_jitter = (w.mean_jitter * (slots - 1) + jitter) / slots

    def _proven(self, side: _Side) -> bool:
        """Has this side's 5-tuple, in either direction, shown media (SDP, a stream, RTCP)?"""
        if side.proven:
            return True
        reverse = side.reverse
        if reverse is None:
            reverse = self.sides_by_flow.get((side.pinned, not side.from_client))
            side.reverse = reverse
        return reverse is not None and reverse.proven

    def _on_probation(self, side: _Side, ssrc: int,
                      packet: tuple[float, int, int, int, int]) -> list[tuple[float, int, int, int, int]]:
        """Hold a packet of an SSRC not yet proven on a heuristic flow side.

        Returns the held packets, this one last, once it follows the previous
        one in sequence (PROBATION_PACKETS in sequence, RFC 3550 A.1): the
        stream is then real and counts them all. Returns [] while unproven. An
        SSRC holding PROBATION_FAILURES packets without that is dropped; more
        than _MAX_CANDIDATES unproven SSRCs drop them all, and after
        _GIVE_UP_AFTER such rounds the side is set aside (random UDP).
        """
        pending = side.pending
        held = pending.get(ssrc)
        if held is None:
            if len(pending) >= _MAX_CANDIDATES:
                pending.clear()
                side.clean = False
                side.candidates_failed += 1
                if side.candidates_failed >= _GIVE_UP_AFTER:
                    side.given_up = True
                    self.counters["heuristic_rejected"] += 1
                    return []
            held = pending[ssrc] = []
        elif (packet[1] - held[-1][1]) & 0xFFFF == 1:
            del pending[ssrc]
            held.append(packet)
            return held
        held.append(packet)
        if len(held) >= PROBATION_FAILURES:
            del pending[ssrc]
            side.clean = False
        return []

    # -- RTCP ------------------------------------------------------------------

    def _on_rtcp(self, dgram: Datagram, side: _Side) -> list[Transaction]:
        try:
            packets = decode_rtcp(dgram.payload)
        except DecodeError:
            if side.endpoint is None:
                return []                  # a heuristic flow: not RTCP after all, keep quiet
            raise
        self.counters["rtcp_packets"] += 1
        out: list[Transaction] = []
        if not side.proven:                # a whole valid RTCP compound: this 5-tuple is media
            side.proven = True
            self._promote_pending(side, out)
        ts = dgram.ts
        flow = dgram.flow
        sender_ip = flow.client_ip if dgram.from_client else flow.server_ip
        for packet in packets:
            if packet.packet_type == 200:
                stream = self._stream_for(packet.ssrc, sender_ip, None)
                if stream is not None:
                    rtcp = stream.rtcp or _RTCPState()
                    stream.rtcp = rtcp
                    rtcp.sender_reports += 1
                    rtcp.sender_packets = packet.sender_packets
                    rtcp.sender_octets = packet.sender_octets
                    rtcp.sr_times[packet.ntp_middle] = ts
                    if len(rtcp.sr_times) > _SR_KEPT:
                        del rtcp.sr_times[next(iter(rtcp.sr_times))]
                else:
                    self.counters["rtcp_unmatched"] += 1
            for block in packet.blocks:
                # The reporter received the stream: the stream went to it.
                stream = self._stream_for(block.ssrc, None, sender_ip)
                if stream is None:
                    self.counters["rtcp_unmatched"] += 1
                    continue
                rtcp = stream.rtcp or _RTCPState()
                stream.rtcp = rtcp
                rtcp.receiver_blocks += 1
                rtcp.fraction_lost = block.fraction_lost / 256.0
                rtcp.cumulative_lost = block.cumulative_lost
                rate = stream.info(_main_payload_type(stream))[1]
                rtcp.jitter_ms = block.jitter * 1000.0 / rate if rate else None
                sent = rtcp.sr_times.get(block.last_sr) if block.last_sr else None
                if sent is not None:
                    # RFC 3550 §6.4.1: RTT = A - LSR - DLSR, with A and LSR read
                    # as the capture times of this RR and of the SR it echoes.
                    rtt = (ts - sent - block.delay_since_last_sr / 65536.0) * 1000.0
                    if rtt >= 0:
                        rtcp.rtt_ms = rtt
                        if rtcp.max_rtt_ms is None or rtt > rtcp.max_rtt_ms:
                            rtcp.max_rtt_ms = rtt
            for ssrc, cname in packet.cnames.items():
                stream = self._stream_for(ssrc, sender_ip, None)
                if stream is not None:
                    stream.rtcp = stream.rtcp or _RTCPState()
                    stream.rtcp.cname = cname
            for ssrc in packet.bye_ssrcs:
                stream = self._stream_for(ssrc, sender_ip, None)
                if stream is not None:
                    stream.rtcp = stream.rtcp or _RTCPState()
                    stream.rtcp.bye = True
                    self._end(stream, "rtcp_bye", out)
        return out

    def _lone_ok(self, side: _Side) -> bool:
        """Was everything on this side's 5-tuple, either way, RTP as Wireshark's heuristic
        takes a datagram on its own (`_Side.clean`)? Random UDP is not: three datagrams
        in four fail `lone_rtp`, and flows of more than a few datagrams never pass."""
        reverse = side.reverse or self.sides_by_flow.get((side.pinned, not side.from_client))
        return side.clean and (reverse is None or reverse.clean)

    def _report_lone(self, side: _Side, reason: str, out: list[Transaction]) -> None:
        """A quiet heuristic side still holds SSRCs that never showed two packets in
        sequence (a stream of one packet, or a few with gaps): Wireshark lists them,
        and so does wirebeat on a clean 5-tuple (`_lone_ok`), counting them as such."""
        held_by_ssrc, side.pending = side.pending, {}
        for ssrc, held in held_by_ssrc.items():
            stream = self._open(side, ssrc, held, out)
            self._end(stream, reason, out)

    def _stream_for(self, ssrc: int, sender_ip: str | None, receiver_ip: str | None) -> _Stream | None:
        """The live stream with this SSRC, preferring one between the given addresses."""
        candidates = self.by_ssrc.get(ssrc)
        if not candidates:
            return None
        for stream in reversed(candidates):
            flow = stream.side.flow
            if (sender_ip is None or flow.client_ip == sender_ip) and \
                    (receiver_ip is None or flow.server_ip == receiver_ip):
                return stream
        return candidates[-1] if len(candidates) == 1 else None

    # -- reports ---------------------------------------------------------------

    def _close_interval(self, stream: _Stream, ts: float, out: list[Transaction]) -> None:
        """Report the open interval and start the one `ts` falls in (on the report grid)."""
        interval = stream.interval
        assert interval is not None
        if interval.packets:
            out.append(self._report(stream, interval, False, ""))
        steps = (ts - stream.first_ts) // self.report_interval_s
        stream.open_interval(_Window(ts, stream.expected() if stream.total.packets else 0),
                             stream.first_ts + (steps + 1) * self.report_interval_s)

    def _report(self, stream: _Stream, window: _Window, final: bool, reason: str) -> Transaction:
        main = _main_payload_type(stream)
        codec, rate = stream.info(main)
        expected = stream.expected() - window.expected_before
        endpoint = stream.endpoint
        if endpoint is None:
            # A stream found by the heuristic may have been announced since.
            side_flow = stream.side.flow
            exp = self.expectations.find(side_flow.server_ip, side_flow.server_port)
            if exp is not None and isinstance(exp.context, MediaEndpoint):
                endpoint = exp.context
        rtt_ms = stream.rtcp.rtt_ms if stream.rtcp is not None else None
        one_way_ms = self.jitter_buffer_ms + (rtt_ms / 2.0 if rtt_ms is not None else 0.0)
        quality = estimate(codec, expected, expected - window.packets + window.duplicates,
                           window.discarded, one_way_ms)
        report = StreamReport(
            quality=quality, delay_source="rtcp_rtt" if rtt_ms is not None else "jitter_buffer_only",
            jitter_buffer_ms=self.jitter_buffer_ms,
            ssrc=stream.ssrc, setup=stream.setup, final=final, window=window, expected=expected,
            payload_type=main, payload_types=sorted(stream.pt_counts), codec=codec,
            clock_rate=rate, jitter_ms=stream.jitter if _clocked(stream) else None,
            ssrc_changes=stream.side.ssrc_changes,
            call_id=endpoint.session.call_id if endpoint is not None else None,
            rtcp=_rtcp_fields(stream.rtcp) if stream.rtcp is not None else None, reason=reason)
        stream.reports += 1
        identity = f"{stream.ssrc:08x}/{'final' if final else stream.reports}"
        return Transaction(flow=stream.side.flow, ts=window.first_ts, end_ts=window.last_ts,
                           status="OK", detail=report, request_bytes=window.payload_bytes,
                           identity=identity)

    def _end(self, stream: _Stream, reason: str, out: list[Transaction]) -> None:
        """The stream is over: its last interval, then the final report, then forget it."""
        final = None
        if stream.total.packets:
            interval = stream.interval
            if interval is not None and interval.packets:
                out.append(self._report(stream, interval, False, ""))
            final = self._report(stream, stream.total, True, reason)
            out.append(final)
        self._forget(stream)
        if stream.endpoint is not None:
            self._end_of_call_stream(stream.endpoint.session, final, out)

    def _end_of_call_stream(self, session: MediaSession, final: Transaction | None,
                            out: list[Transaction]) -> None:
        """Per call quality: when a SIP call's last live stream ends, a call report
        (`CallReport`, its own document) sums up the final reports of all its
        streams, and those still being reported (the ones ending together, at BYE)
        carry the call's worst stream in `rtp.call`, as the call sounded worst there."""
        entry = self.calls.get(id(session))
        if entry is None:
            return
        live, ended = entry
        if final is not None:
            ended.append(final)
        live[0] -= 1
        if live[0] > 0:
            return
        del self.calls[id(session)]
        if not ended:
            return
        call = CallReport(session.call_id, [txn.detail for txn in ended])
        worst = call.worst()
        if worst is not None:
            link = {"streams": len(ended), "r_factor": worst.quality.r_factor,
                    "mos": worst.quality.mos, "worst_ssrc": worst.ssrc}
            for report in call.streams:
                report.call = link
        first = min(ended, key=lambda txn: txn.ts)
        out.append(Transaction(flow=first.flow, ts=first.ts,
                               end_ts=max(txn.end_ts or txn.ts for txn in ended), status="OK",
                               detail=call, identity=f"call/{session.call_id}"))

    def _forget(self, stream: _Stream) -> None:
        self.streams.pop(id(stream), None)
        side = stream.side
        if side.streams.get(stream.ssrc) is stream:
            del side.streams[stream.ssrc]
        if side.last is stream:
            side.last = None
        same = self.by_ssrc.get(stream.ssrc)
        if same is not None:
            if stream in same:
                same.remove(stream)
            if not same:
                del self.by_ssrc[stream.ssrc]

    def expire(self, now: float) -> list[Transaction]:
        out: list[Transaction] = []
        idle_before = now - self.stream_timeout_s
        for stream in list(self.streams.values()):
            endpoint = stream.endpoint
            if endpoint is not None and endpoint.session.ended_ts is not None \
                    and now >= endpoint.session.ended_ts + BYE_GRACE_S:
                self._end(stream, "sip_bye", out)
            elif stream.last_ts < idle_before:
                self._end(stream, "end_of_input" if now == float("inf") else "timeout", out)
            elif now >= stream.interval_end:
                self._close_interval(stream, now, out)
        stale = [side for side in self.sides.values()
                 if side.last_ts < idle_before and not side.streams]
        lone = [side for side in stale if side.pending and self._lone_ok(side)]
        for side in lone:
            self._report_lone(side, "end_of_input" if now == float("inf") else "timeout", out)
        for side in stale:
            del self.sides[side.key]
            self.sides_by_flow.pop((side.pinned, side.from_client), None)
        return out


def _main_payload_type(stream: _Stream) -> int:
    """The stream's payload type: the most used one that is not comfort noise or an event."""
    best, best_count = -1, -1
    for pt, count in stream.pt_counts.items():
        name = stream.info(pt)[0]
        if name in ("CN", "telephone-event"):
            count -= 1 << 40                       # only if nothing else was sent
        if count > best_count or (count == best_count and pt < best):
            best, best_count = pt, count
    return best


def _clocked(stream: _Stream) -> bool:
    return any(stream.info(pt)[1] and stream.info(pt)[0] != "telephone-event"
               for pt in stream.pt_counts)


def _ms(value: float) -> float:
    return round(value, 4)


def _rtcp_fields(rtcp: _RTCPState) -> dict[str, Any]:
    fields: dict[str, Any] = {"sender_reports": rtcp.sender_reports,
                              "receiver_reports": rtcp.receiver_blocks}
    for name in ("sender_packets", "sender_octets", "fraction_lost", "cumulative_lost", "cname"):
        value = getattr(rtcp, name)
        if value is not None:
            fields[name] = value
    if rtcp.jitter_ms is not None:
        fields["jitter_ms"] = _ms(rtcp.jitter_ms)
    if rtcp.rtt_ms is not None and rtcp.max_rtt_ms is not None:
        fields["rtt_ms"] = _ms(rtcp.rtt_ms)
        fields["max_rtt_ms"] = _ms(rtcp.max_rtt_ms)
    if rtcp.bye:
        fields["bye"] = True
    return fields


def _call_document(call: CallReport) -> dict[str, Any]:
    """One document per SIP call (`type`, `event.dataset`: rtp.call): its streams' worst and
    mean E-model estimate, and the inputs summed over the streams."""
    streams = call.streams
    expected = sum(r.expected for r in streams)
    packets = sum(r.window.packets for r in streams)
    fields: dict[str, Any] = {
        "streams": len(streams),
        "ssrcs": [r.ssrc for r in streams],
        "packets": packets,
        "expected": expected,
        "lost": expected - packets,
        "loss_pct": round(100.0 * (expected - packets) / expected, 4) if expected > 0 else 0.0,
        "discarded": sum(r.window.discarded for r in streams),
    }
    codecs = sorted({r.codec for r in streams if r.codec})
    if codecs:
        fields["codecs"] = codecs
    scored = [r.quality for r in streams if r.quality is not None]
    worst = call.worst()
    if worst is not None and worst.quality is not None:
        fields.update({
            "r_factor": worst.quality.r_factor, "mos": worst.quality.mos,
            "worst_ssrc": worst.ssrc,
            "mean_r_factor": round(sum(q.r_factor for q in scored) / len(scored), 2),
            "mean_mos": round(sum(q.mos for q in scored) / len(scored), 2),
            "max_one_way_delay_ms": max(q.one_way_delay_ms for q in scored),
            "max_effective_loss_pct": max(q.effective_loss_pct for q in scored),
        })
    return {"type": "rtp.call", "rtp": {"call": fields}, "sip": {"call_id": call.call_id},
            "event": {"dataset": "rtp.call", "type": ["connection", "end"]}}


def document(txn: Transaction) -> dict[str, Any]:
    """The one place RTP/RTCP field names are spelled; mirrors index_templates/rtp.json."""
    if isinstance(txn.detail, CallReport):
        return _call_document(txn.detail)
    report: StreamReport = txn.detail
    w = report.window
    expected = report.expected
    lost = expected - w.packets
    rtp: dict[str, Any] = {
        "ssrc": report.ssrc,
        "setup": report.setup,
        "final": report.final,
        "payload_type": report.payload_type,
        "packets": w.packets,
        "expected": expected,
        "lost": lost,
        "loss_pct": round(100.0 * lost / expected, 4) if expected > 0 else 0.0,
        "duplicates": w.duplicates,
        "reordered": w.reordered,
        "restarts": w.restarts,
        "sequence_errors": w.sequence_errors,
        "marker_packets": w.markers,
        "telephone_events": w.events,
        "ssrc_changes": report.ssrc_changes,
        "payload_bytes": w.payload_bytes,
        "delta": {"max_ms": _ms(w.max_delta), "mean_ms": _ms(w.mean_delta)},
    }
    if len(report.payload_types) > 1:
        rtp["payload_types"] = report.payload_types
    if report.codec:
        rtp["codec"] = report.codec
    if report.clock_rate:
        rtp["clock_rate"] = report.clock_rate
    if report.jitter_ms is not None:
        rtp["jitter"] = {"max_ms": _ms(w.max_jitter), "mean_ms": _ms(w.mean_jitter),
                         "last_ms": _ms(report.jitter_ms)}
    if report.final:
        rtp["end_reason"] = report.reason
    quality = report.quality
    if quality is not None:
        rtp["quality"] = {
            "r_factor": quality.r_factor, "mos": quality.mos,
            "codec_impairment": quality.codec_impairment,
            "loss_robustness": quality.loss_robustness, "codec_basis": quality.codec_basis,
            "effective_loss_pct": quality.effective_loss_pct, "discarded": w.discarded,
            "jitter_buffer_ms": report.jitter_buffer_ms,
            "one_way_delay_ms": quality.one_way_delay_ms, "delay_source": report.delay_source,
            "delay_impairment": quality.delay_impairment,
        }
    if report.call is not None:
        rtp["call"] = dict(report.call)
    doc: dict[str, Any] = {
        "rtp": rtp,
        "event": {"type": ["connection", "end"] if report.final else ["connection"]},
    }
    if report.call_id is not None:
        doc["sip"] = {"call_id": report.call_id}
    if report.rtcp is not None:
        doc["rtcp"] = dict(report.rtcp)
    return doc


DECODER = DecoderSpec(
    name="rtp",
    document=document,
    datagram=RTPDecoder,
    probe=probe,
    expectations=True,
    options={
        "report_interval": Option("duration", 10.0, "a report per stream this often (packet "
                                  "time), counting that interval only; 0: final reports only"),
        "stream_timeout": Option("duration", 30.0, "a stream without packets this long has "
                                 "ended: its final report is sent"),
        "max_streams": Option("int", 10000, "streams tracked at once per capture source; when "
                              "full the oldest is reported as ended (streams_evicted)"),
        "jitter_buffer": Option("duration", 0.06, "E-model: a fixed jitter buffer this deep; "
                                "packets later than it are counted as discarded (rtp.quality)"),
    },
)
