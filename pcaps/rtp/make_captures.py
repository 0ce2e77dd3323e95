"""Regenerate the generated RTP captures in pcaps/rtp/, each with exactly known ground truth.

    .venv/bin/python pcaps/rtp/make_captures.py [OUTDIR]

Every packet is built here with tests/pcapgen.py; nothing comes from another
capture. Times are integer nanoseconds (whole microseconds, what pcap keeps),
so the arrival pattern in the file is exactly the one chosen below. What each
capture holds, and the values the tests derive by hand from it, is in
README.md next to this script. Deterministic: the same files every run.

The builders (`rtp`, `rtcp_sr`, `sip_message`, `sdp`, ...) are also used by
pcaps/sip/make_captures.sh to make the audio that sipp plays.
"""
from __future__ import annotations

import random
import struct
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
import pcapgen as pg  # noqa: E402

START_NS = 1_767_225_600 * 10**9        # 2026-01-01T00:00:00Z
MS = 1_000_000                          # ns
PTIME_NS = 20 * MS                      # 20 ms packets
NTP_EPOCH_OFFSET = 2_208_988_800        # seconds from 1900-01-01 to 1970-01-01

Packet = tuple[int, bytes]              # (time in ns, Ethernet frame)


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------

def rtp(seq: int, timestamp: int, ssrc: int, payload_type: int, payload: bytes, *,
        marker: bool = False) -> bytes:
    """An RTP packet (RFC 3550 §5.1): version 2, no padding, extension or CSRCs."""
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type,
                       seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload


def ntp_time(t_ns: int) -> tuple[int, int]:
    """(seconds, fraction) of an NTP timestamp for epoch nanoseconds."""
    seconds, rest = divmod(t_ns, 10**9)
    return seconds + NTP_EPOCH_OFFSET, (rest << 32) // 10**9


def ntp_middle(t_ns: int) -> int:
    """The middle 32 bits of the NTP timestamp: what an RR's LSR echoes."""
    seconds, fraction = ntp_time(t_ns)
    return ((seconds & 0xFFFF) << 16) | (fraction >> 16)


def report_block(ssrc: int, fraction_lost: int, cumulative_lost: int, highest_seq: int,
                 jitter: int, lsr: int, dlsr: int) -> bytes:
    """An RTCP report block (RFC 3550 §6.4.1); fraction of 256, jitter in timestamp units."""
    return struct.pack("!IIIIII", ssrc, (fraction_lost << 24) | (cumulative_lost & 0xFFFFFF),
                       highest_seq, jitter, lsr, dlsr)


def _rtcp(packet_type: int, count: int, body: bytes) -> bytes:
    assert len(body) % 4 == 0
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


def rtcp_sr(ssrc: int, t_ns: int, rtp_timestamp: int, packets: int, octets: int,
            blocks: Sequence[bytes] = ()) -> bytes:
    seconds, fraction = ntp_time(t_ns)
    return _rtcp(200, len(blocks), struct.pack("!IIIIII", ssrc, seconds, fraction,
                                               rtp_timestamp, packets, octets) + b"".join(blocks))


def rtcp_rr(ssrc: int, blocks: Sequence[bytes]) -> bytes:
    return _rtcp(201, len(blocks), struct.pack("!I", ssrc) + b"".join(blocks))


def rtcp_sdes(ssrc: int, cname: str) -> bytes:
    item = bytes((1, len(cname))) + cname.encode()
    chunk = struct.pack("!I", ssrc) + item + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    return _rtcp(202, 1, chunk)


def rtcp_bye(ssrc: int) -> bytes:
    return _rtcp(203, 1, struct.pack("!I", ssrc))


def ulaw_tone(samples: int, start: int = 0, hz: float = 440.0, rate: int = 8000) -> bytes:
    """G.711 mu-law samples of a sine tone (ITU-T G.711 segment encoding)."""
    import math
    out = bytearray()
    for n in range(start, start + samples):
        value = int(8000 * math.sin(2 * math.pi * hz * n / rate))
        sign = 0x80 if value < 0 else 0
        magnitude = min(abs(value), 32635) + 0x84
        exponent = max(0, magnitude.bit_length() - 8)
        mantissa = (magnitude >> (exponent + 3)) & 0x0F
        out.append(~(sign | (exponent << 4) | mantissa) & 0xFF)
    return bytes(out)


def frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """Ethernet / IPv4 or IPv6 / UDP around a payload."""
    return pg.ethernet(pg.ip_packet(src, dst, pg.IPPROTO_UDP, pg.udp(src, dst, sport, dport, payload)))


def sdp(address: str, port: int, payload_types: Sequence[int], rtpmap: dict[int, str], *,
        session_id: int = 1, rtcp_mux: bool = False) -> str:
    """A minimal SDP offer or answer (RFC 4566) for one audio stream."""
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=wirebeat {session_id} {session_id} IN {family} {address}", "s=-",
             f"c=IN {family} {address}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(map(str, payload_types))}"]
    lines += [f"a=rtpmap:{pt} {name}" for pt, name in rtpmap.items()]
    if rtcp_mux:
        lines.append("a=rtcp-mux")
    lines.append("a=sendrecv")
    return "\r\n".join(lines) + "\r\n"


def sip_message(start_line: str, headers: Sequence[tuple[str, str]], body: str = "",
                content_type: str = "application/sdp") -> bytes:
    """A SIP message (RFC 3261 §7); Content-Length is always written."""
    lines = [start_line, *(f"{name}: {value}" for name, value in headers)]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class Call:
    """SIP dialog messages between two user agents (UDP, port 5060 both sides)."""

    def __init__(self, caller: str, callee: str, call_id: str) -> None:
        self.caller, self.callee, self.call_id = caller, callee, call_id
        self.from_tag, self.to_tag = "a73kszlfl", "1928301774"

    def _host(self, ip: str) -> str:
        return f"[{ip}]" if ":" in ip else ip

    def _headers(self, method: str, cseq: int, branch: str, to_tag: bool,
                 caller_sends: bool = True) -> list[tuple[str, str]]:
        caller, callee = self._host(self.caller), self._host(self.callee)
        sender = caller if caller_sends else callee
        return [("Via", f"SIP/2.0/UDP {sender}:5060;branch=z9hG4bK{branch}"),
                ("Max-Forwards", "70"),
                ("From", f'"Alice" <sip:alice@{caller}>;tag={self.from_tag}'),
                ("To", f"<sip:bob@{callee}>" + (f";tag={self.to_tag}" if to_tag else "")),
                ("Call-ID", self.call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Contact", f"<sip:{'alice' if caller_sends else 'bob'}@{sender}:5060>"),
                ("User-Agent", "wirebeat-pcapgen")]

    def request(self, method: str, cseq: int, body: str = "", to_tag: bool = True) -> bytes:
        callee = self._host(self.callee)
        msg = sip_message(f"{method} sip:bob@{callee} SIP/2.0",
                          self._headers(method, cseq, f"{method.lower()}{cseq}", to_tag), body)
        return frame(self.caller, self.callee, 5060, 5060, msg)

    def response(self, code: int, reason: str, method: str, cseq: int, body: str = "") -> bytes:
        msg = sip_message(f"SIP/2.0 {code} {reason}",
                          self._headers(method, cseq, f"{method.lower()}{cseq}", code != 100), body)
        return frame(self.callee, self.caller, 5060, 5060, msg)


class Sender:
    """One RTP stream's packets: sequence and timestamp advance per 20 ms packet."""

    def __init__(self, src: str, dst: str, sport: int, dport: int, ssrc: int, payload_type: int,
                 clock_rate: int, first_seq: int, first_ts: int, payload_bytes: int = 160) -> None:
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        self.ssrc, self.payload_type = ssrc, payload_type
        self.ts_step = clock_rate * 20 // 1000
        self.first_seq, self.first_ts = first_seq, first_ts
        self.payload_bytes = payload_bytes

    def packet(self, index: int, *, marker: bool = False, seq: int | None = None,
               payload_type: int | None = None, timestamp: int | None = None,
               payload: bytes | None = None) -> bytes:
        """Frame of the packet sent in 20 ms slot `index` (sequence first_seq + index)."""
        body = payload if payload is not None else ulaw_tone(self.payload_bytes, index * 160)
        data = rtp(self.first_seq + index if seq is None else seq,
                   self.first_ts + index * self.ts_step if timestamp is None else timestamp,
                   self.ssrc, self.payload_type if payload_type is None else payload_type,
                   body, marker=marker)
        return frame(self.src, self.dst, self.sport, self.dport, data)


def write(path: Path | str, packets: Iterable[Packet]) -> None:
    ordered = sorted(packets, key=lambda p: p[0])     # stable: equal times keep their order
    count = pg.write_pcap(path, ordered)
    print(f"wrote {Path(path).name}: {count} packets")


# ---------------------------------------------------------------------------
# The captures (ground truth in README.md; tests/decoders/test_rtp_captures.py)
# ---------------------------------------------------------------------------

def jitter_capture(path: Path) -> None:
    """Two PCMU streams, no SIP (found by the heuristic), each with a chosen jitter pattern.

    A -> B: 300 packets every 20 ms, packet 100 arrives 16 ms late.
    B -> A: 300 packets, arrival offsets repeat 0, 3, 1, 5, 2 ms.
    """
    a = Sender("10.1.0.1", "10.1.0.2", 40000, 50000, 0x11111111, 0, 8000, 1000, 80000)
    b = Sender("10.1.0.2", "10.1.0.1", 50000, 40000, 0x22222222, 0, 8000, 7000, 123456)
    packets: list[Packet] = []
    for i in range(300):
        late = 16 * MS if i == 100 else 0
        packets.append((START_NS + i * PTIME_NS + late, a.packet(i)))
        offset = (0, 3, 1, 5, 2)[i % 5] * MS
        packets.append((START_NS + 7 * MS + i * PTIME_NS + offset, b.packet(i)))
    write(path, packets)


def loss_capture(path: Path) -> None:
    """An IPv6 SIP call with opus (dynamic type 111, 48 kHz from SDP) both ways.

    Caller -> callee: 1000 packets, 30 of them (3%) never sent, chosen at random
    (seed 3) among packets 1..998. Callee -> caller: 1000 packets, arrival
    offsets repeat 0, 1, 0, 2 ms. BYE 200 ms after the last packet.
    """
    caller, callee = "2001:db8::a", "2001:db8::b"
    call = Call(caller, callee, "loss-3pct@wirebeat.test")
    rtpmap = {111: "opus/48000/2", 101: "telephone-event/8000"}
    t = START_NS
    packets: list[Packet] = [
        (t, call.request("INVITE", 1, sdp(caller, 40002, [111, 101], rtpmap), to_tag=False)),
        (t + 2 * MS, call.response(100, "Trying", "INVITE", 1)),
        (t + 50 * MS, call.response(200, "OK", "INVITE", 1,
                                    sdp(callee, 50002, [111, 101], rtpmap, session_id=2))),
        (t + 52 * MS, call.request("ACK", 1)),
    ]
    start = t + 100 * MS
    out = Sender(caller, callee, 40002, 50002, 0x0A0A0A0A, 111, 48000, 20000, 900000, 80)
    back = Sender(callee, caller, 50002, 40002, 0x0B0B0B0B, 111, 48000, 30000, 5000, 80)
    dropped = set(random.Random(3).sample(range(1, 999), 30))
    opus = bytes(range(80))
    for i in range(1000):
        if i not in dropped:
            packets.append((start + i * PTIME_NS, out.packet(i, payload=opus)))
        packets.append((start + 5 * MS + i * PTIME_NS + (0, 1, 0, 2)[i % 4] * MS,
                        back.packet(i, payload=opus)))
    end = start + 1000 * PTIME_NS + 200 * MS
    packets.append((end, call.request("BYE", 2)))
    packets.append((end + 3 * MS, call.response(200, "OK", "BYE", 2)))
    write(path, packets)


def reorder_capture(path: Path) -> None:
    """PCMU, 400 packets; arrival order swaps 100/101 and 250/251, packet 300
    arrives after 303, packet 350 arrives twice. Each arrival takes the next
    20 ms slot, so times stay regular while sequence and timestamps jump.
    """
    s = Sender("10.2.0.1", "10.2.0.2", 41000, 51000, 0x33333333, 0, 8000, 500, 0x12345678)
    order = list(range(400))
    order[100], order[101] = 101, 100
    order[250], order[251] = 251, 250
    order[300:304] = [301, 302, 303, 300]
    order.insert(order.index(350) + 1, 350)
    write(path, [(START_NS + slot * PTIME_NS, s.packet(index)) for slot, index in enumerate(order)])


def wrap_capture(path: Path) -> None:
    """PCMU, 1000 packets from sequence 65036 (wraps after 500) and RTP timestamp
    2**32 - 300*160 (wraps after 300); sequence numbers 65535 and 0 are lost.
    """
    s = Sender("10.3.0.1", "10.3.0.2", 42000, 52000, 0x44444444, 0, 8000, 65036, 2**32 - 300 * 160)
    write(path, [(START_NS + i * PTIME_NS, s.packet(i)) for i in range(1000)
                 if (65036 + i) & 0xFFFF not in (65535, 0)])


def ssrc_change_capture(path: Path) -> None:
    """PCMU on one 5-tuple: SSRC 0xAAAA0001 for 300 packets, then the sender
    switches to SSRC 0xBBBB0002 (new sequence and timestamp bases) for 200.
    """
    first = Sender("10.4.0.1", "10.4.0.2", 43000, 53000, 0xAAAA0001, 0, 8000, 100, 1000)
    second = Sender("10.4.0.1", "10.4.0.2", 43000, 53000, 0xBBBB0002, 0, 8000, 40000, 777777)
    packets = [(START_NS + i * PTIME_NS, first.packet(i)) for i in range(300)]
    packets += [(START_NS + (300 + i) * PTIME_NS, second.packet(i, marker=i == 0))
                for i in range(200)]
    write(path, packets)


def restart_capture(path: Path) -> None:
    """PCMU, one SSRC: 200 packets from sequence 1000, then the sender restarts
    its sequence at 40000 (timestamps run on) for 200 more. RFC 3550 A.1 calls
    that a restart, not 38 800 lost packets (Wireshark counts them lost).
    """
    s = Sender("10.5.0.1", "10.5.0.2", 44000, 54000, 0x55555555, 0, 8000, 1000, 5000)
    packets = [(START_NS + i * PTIME_NS, s.packet(i)) for i in range(200)]
    packets += [(START_NS + i * PTIME_NS, s.packet(i, seq=40000 + i - 200)) for i in range(200, 400)]
    write(path, packets)


def rtcp_capture(path: Path) -> None:
    """A 25 s SIP call (PCMU both ways) with RTCP on port + 1.

    The caller (SSRC 0xC0C0C0C0) sends an SR with SDES CNAME every 5 s; 175 ms
    after each, the callee sends an RR about it: fraction lost 12/256,
    cumulative lost 3, jitter 40 units (5 ms at 8 kHz), LSR of that SR and
    DLSR 0.125 s, so the round trip is 175 - 125 = 50 ms. The caller ends its
    stream with an RTCP BYE after packet 1250 of 1250; the call ends with SIP BYE.
    """
    caller, callee = "10.6.0.1", "10.6.0.2"
    call = Call(caller, callee, "rtcp-call@wirebeat.test")
    pcmu = {0: "PCMU/8000"}
    t = START_NS
    packets: list[Packet] = [
        (t, call.request("INVITE", 1, sdp(caller, 46000, [0], pcmu), to_tag=False)),
        (t + 40 * MS, call.response(180, "Ringing", "INVITE", 1)),
        (t + 80 * MS, call.response(200, "OK", "INVITE", 1, sdp(callee, 56000, [0], pcmu, session_id=2))),
        (t + 82 * MS, call.request("ACK", 1)),
    ]
    start = t + 100 * MS
    out = Sender(caller, callee, 46000, 56000, 0xC0C0C0C0, 0, 8000, 3000, 16000)
    back = Sender(callee, caller, 56000, 46000, 0xD0D0D0D0, 0, 8000, 9000, 64000)
    for i in range(1250):
        packets.append((start + i * PTIME_NS, out.packet(i)))
        packets.append((start + 10 * MS + i * PTIME_NS, back.packet(i)))
    for n in range(1, 6):
        sr_time = start + n * 5000 * MS + 5 * MS
        sent = 250 * n
        sr = rtcp_sr(0xC0C0C0C0, sr_time, 16000 + sent * 160, sent, sent * 160) \
            + rtcp_sdes(0xC0C0C0C0, "alice@10.6.0.1")
        if n < 5:
            packets.append((sr_time, frame(caller, callee, 46001, 56001, sr)))
        block = report_block(0xC0C0C0C0, 12, 3, 3000 + sent - 1, 40, ntp_middle(sr_time), 8192)
        rr = rtcp_rr(0xD0D0D0D0, [block]) + rtcp_sdes(0xD0D0D0D0, "bob@10.6.0.2")
        if n < 5:
            packets.append((sr_time + 175 * MS, frame(callee, caller, 56001, 46001, rr)))
    last = start + 1249 * PTIME_NS
    packets.append((last + 5 * MS, frame(caller, callee, 46001, 56001,
                                         rtcp_sr(0xC0C0C0C0, last + 5 * MS, 16000 + 1250 * 160,
                                                 1250, 1250 * 160) + rtcp_bye(0xC0C0C0C0))))
    end = last + 300 * MS
    packets.append((end, call.request("BYE", 2)))
    packets.append((end + 3 * MS, call.response(200, "OK", "BYE", 2)))
    write(path, packets)


def not_rtp_capture(path: Path) -> None:
    """UDP that an RTP heuristic must turn down: DNS on a high port (ids with
    the RTP version bits), QUIC long and short headers, DTLS, STUN, and 8-byte
    datagrams. No RTP stream may come out of it.
    """
    rng = random.Random(7)
    packets: list[Packet] = []
    t = START_NS
    for i in range(40):
        ident = 0x8000 | rng.randrange(0x4000)                # first byte 0x80-0xBF
        query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01"
        answer = struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + query[12:] \
            + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\xc0\x00\x02\x01"
        port = 30000 + i
        packets.append((t + i * 30 * MS, frame("10.7.0.1", "10.7.0.53", port, 10053, query)))
        packets.append((t + i * 30 * MS + 2 * MS, frame("10.7.0.53", "10.7.0.1", 10053, port, answer)))
    for i in range(30):                                      # QUIC: long header (0xC0..), then short (0x40..)
        first = 0xC3 if i < 3 else 0x40 | rng.randrange(0x40)
        body = bytes([first]) + bytes(rng.randrange(256) for _ in range(60))
        packets.append((t + i * 20 * MS + 7 * MS, frame("10.7.0.1", "10.7.0.2", 51111, 4433, body)))
    for i in range(10):                                      # DTLS 1.2 handshake records
        record = bytes([22, 0xFE, 0xFD]) + bytes(rng.randrange(256) for _ in range(50))
        packets.append((t + i * 50 * MS + 9 * MS, frame("10.7.0.1", "10.7.0.2", 52222, 4444, record)))
    for i in range(10):                                      # STUN binding requests
        stun = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + bytes(rng.randrange(256) for _ in range(12))
        packets.append((t + i * 50 * MS + 11 * MS, frame("10.7.0.1", "10.7.0.2", 53333, 3478, stun)))
    for i in range(10):                                      # too short for RTP
        packets.append((t + i * 50 * MS + 13 * MS,
                        frame("10.7.0.1", "10.7.0.2", 54444, 9999, bytes([0x80, 0, i, i, 0, 0, 0, 1]))))
    write(path, packets)


# ---------------------------------------------------------------------------
# Heuristic cases Wireshark finds (issue #12): multiplexed, interleaved, short
# ---------------------------------------------------------------------------

def stun_binding(transaction: int, response: bool = False) -> bytes:
    """A STUN Binding request or success response (RFC 8489): first byte 0x00/0x01."""
    return struct.pack("!HHI", 0x0101 if response else 0x0001, 0, 0x2112A442) + \
        transaction.to_bytes(12, "big")


def dtls_record(content_type: int, body_bytes: int, rng: random.Random) -> bytes:
    """A DTLS 1.2 record (RFC 6347): content type 20-25, version 0xFEFD."""
    return bytes([content_type, 0xFE, 0xFD]) + bytes(8) + body_bytes.to_bytes(2, "big") + \
        bytes(rng.randrange(256) for _ in range(body_bytes))


def srtp(seq: int, timestamp: int, ssrc: int, payload_type: int, payload_bytes: int,
         rng: random.Random, *, marker: bool = False) -> bytes:
    """An SRTP packet (RFC 3711): a clear RTP header, an encrypted payload (random
    here) and a 10-byte authentication tag."""
    return rtp(seq, timestamp, ssrc, payload_type,
               bytes(rng.randrange(256) for _ in range(payload_bytes + 10)), marker=marker)


def srtcp(rtcp_packet: bytes, index: int, rng: random.Random) -> bytes:
    """An SRTCP packet (RFC 3711 §3.4): the first 8 bytes clear, the rest encrypted,
    then E flag + index and a 10-byte tag."""
    encrypted = bytes(rng.randrange(256) for _ in range(len(rtcp_packet) - 8))
    return rtcp_packet[:8] + encrypted + struct.pack("!I", 0x80000000 | index) + \
        bytes(rng.randrange(256) for _ in range(10))


def webrtc_capture(path: Path) -> None:
    """A WebRTC-like call on ONE 5-tuple (RFC 7983 multiplexing), no signalling:
    ICE STUN checks, a DTLS handshake, then SRTP audio (opus, type 111) and video
    (VP8, type 96, 90 kHz) one way, SRTP audio the other way, SRTCP muxed on the
    port (RFC 5761), STUN consent checks every second. Ground truth: README.md.

    10.20.0.1:50000 -> 10.20.0.2:60000: audio SSRC 0xAA000001, 250 packets sent,
      sequence 100..349, packets 120 and 121 lost (248 captured, 2 lost);
      video SSRC 0xAA000002, 125 packets (one per 40 ms), sequence 5000..5124.
    10.20.0.2:60000 -> 10.20.0.1:50000: audio SSRC 0xBB000001, 250 packets,
      sequence 65400.. (wraps at 65535), none lost.
    """
    rng = random.Random(12)
    a, b = ("10.20.0.1", 50000), ("10.20.0.2", 60000)
    packets: list[Packet] = []

    def send(t: int, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        packets.append((t, frame(src[0], dst[0], src[1], dst[1], payload)))

    t = START_NS
    for i in range(4):                                   # ICE connectivity checks
        send(t + i * 5 * MS, a, b, stun_binding(1000 + i))
        send(t + i * 5 * MS + MS, b, a, stun_binding(1000 + i, response=True))
    t += 30 * MS
    for i, (ctype, size) in enumerate(((22, 180), (22, 900), (22, 300), (20, 1), (22, 60))):
        send(t + i * 3 * MS, a if i % 2 == 0 else b, b if i % 2 == 0 else a,
             dtls_record(ctype, size, rng))
    media = t + 20 * MS
    for i in range(250):
        at = media + i * PTIME_NS
        if i not in (20, 21):
            send(at, a, b, srtp(100 + i, 3000 + i * 960, 0xAA000001, 111, 60, rng))
        send(at + 7 * MS, b, a, srtp(65400 + i, 9000 + i * 960, 0xBB000001, 111, 60, rng))
        if i % 2 == 0:
            send(at + 3 * MS, a, b, srtp(5000 + i // 2, 777 + (i // 2) * 3600, 0xAA000002, 96,
                                          900, rng, marker=True))
        if i % 50 == 25:
            send(at + 11 * MS, a, b, srtcp(rtcp_sr(0xAA000001, at, 3000 + i * 960, i, i * 60),
                                           i, rng))
            send(at + 13 * MS, b, a, stun_binding(5000 + i))
            send(at + 14 * MS, a, b, stun_binding(5000 + i, response=True))
    write(path, packets)


def interleaved_capture(path: Path) -> None:
    """Several SSRCs interleaved on one 5-tuple, no signalling: PCMU audio
    (SSRC 0xC0000001, 200 packets, sequence 1..200), RFC 4733 telephone events on
    their own SSRC (0xC0000002, type 101, 12 packets in 3 events), and three
    simulcast video layers (type 96: 0xC0000011 every 20 ms, 0xC0000012 every
    40 ms, 0xC0000013 every 80 ms), layer 0x...12 losing sequence 3003."""
    src, dst = ("10.21.0.1", 41000), ("10.21.0.2", 51000)
    packets: list[Packet] = []

    def send(t: int, payload: bytes) -> None:
        packets.append((t, frame(src[0], dst[0], src[1], dst[1], payload)))

    for i in range(200):
        at = START_NS + i * PTIME_NS
        send(at, rtp(1 + i, 160 * i, 0xC0000001, 0, ulaw_tone(160, i * 160)))
        send(at + 2 * MS, rtp(1000 + i, 1800 * i, 0xC0000011, 96, bytes(300)))
        if i % 2 == 0 and i // 2 != 3:                  # 0xC0000012 loses its 4th packet
            send(at + 4 * MS, rtp(3000 + i // 2, 3600 * (i // 2), 0xC0000012, 96, bytes(200)))
        if i % 4 == 0:
            send(at + 6 * MS, rtp(7000 + i // 4, 7200 * (i // 4), 0xC0000013, 96, bytes(100)))
    seq = 40
    for event_start in (40, 90, 140):                   # 4 packets per event, same RTP timestamp
        for k in range(4):
            send(START_NS + (event_start + k) * PTIME_NS + 9 * MS,
                 rtp(seq, 160 * event_start, 0xC0000002, 101,
                     struct.pack("!BBH", 5, 0x8A if k == 3 else 0x0A, 160 * (k + 1)), marker=k == 0))
            seq += 1
    write(path, packets)


def short_streams_capture(path: Path) -> None:
    """Short streams and late starters, no signalling:
    - 10.22.0.1:42000 -> :52000, 2 packets (sequence 10, 11);
    - 10.22.0.1:42002 -> :52002, 3 packets (sequence 20, 21, 23: one lost);
    - 10.22.0.1:42004 -> :52004, 5 packets;
    - 10.22.0.1:42006 <-> :52006: 100 packets one way, and ONE packet back on
      the same 5-tuple (a proven media flow);
    - 10.22.0.1:42008 -> :52008: 40 non-RTP keep-alives (zero bytes, STUN),
      then 30 RTP packets: the flow turned down at first is reconsidered.
    """
    packets: list[Packet] = []

    def send(t: int, sport: int, dport: int, payload: bytes, back: bool = False) -> None:
        src, dst = ("10.22.0.2", "10.22.0.1") if back else ("10.22.0.1", "10.22.0.2")
        packets.append((t, frame(src, dst, dport if back else sport, sport if back else dport,
                                 payload)))

    t = START_NS
    for n, seq in enumerate((10, 11)):
        send(t + n * PTIME_NS, 42000, 52000, rtp(seq, seq * 160, 0xD0000001, 0, bytes(160)))
    for n, seq in enumerate((20, 21, 23)):
        send(t + n * PTIME_NS + MS, 42002, 52002, rtp(seq, seq * 160, 0xD0000002, 8, bytes(160)))
    for n in range(5):
        send(t + n * PTIME_NS + 2 * MS, 42004, 52004,
             rtp(300 + n, n * 320, 0xD0000003, 9, bytes(160)))
    for n in range(100):
        send(t + n * PTIME_NS + 3 * MS, 42006, 52006, rtp(n, n * 160, 0xD0000004, 0, bytes(160)))
    send(t + 50 * PTIME_NS + 4 * MS, 42006, 52006, rtp(77, 0, 0xD0000005, 13, bytes(1)), back=True)
    for n in range(40):
        keepalive = stun_binding(n) if n % 2 else bytes(4)
        send(t + n * 10 * MS + 5 * MS, 42008, 52008, keepalive)
    for n in range(30):
        send(t + 400 * MS + n * PTIME_NS + 5 * MS, 42008, 52008,
             rtp(9000 + n, n * 160, 0xD0000006, 0, bytes(160)))
    write(path, packets)


def lone_streams_capture(path: Path) -> None:
    """Streams of one packet, and short ones never two in sequence, each alone on
    its 5-tuple (what Wireshark's heuristic lists, and random UDP does not look like):
    - 10.24.0.1:44000 -> :54000, one PCMU packet;
    - 10.24.0.1:44002 -> :54002, one packet of payload type 40 (unassigned, not
      RTCP's 72-76), with the marker bit;
    - 10.24.0.1:44004 -> :54004, one packet with two CSRCs, a header extension
      and 4 bytes of padding;
    - 10.24.0.1:44006 -> :54006, sequence 10, 12, 14 (two lost, never in sequence);
    - 10.24.0.1:44008 <-> :54008, one packet each way (two SSRCs);
    - 10.24.0.1:44010 -> :54010, two SSRCs of one packet each on one side.
    """
    a, b = "10.24.0.1", "10.24.0.2"
    packets: list[Packet] = []

    def send(t: int, port: int, payload: bytes, back: bool = False) -> None:
        src, dst, sport, dport = (b, a, port + 10000, port) if back else (a, b, port, port + 10000)
        packets.append((t, frame(src, dst, sport, dport, payload)))

    t = START_NS
    send(t, 44000, rtp(1000, 160_000, 0xF0000001, 0, bytes(160)))
    send(t + MS, 44002, rtp(2000, 90_000, 0xF0000002, 40, bytes(100), marker=True))
    extended = bytearray(rtp(3000, 0, 0xF0000003, 0, b""))
    extended[0] = 0xB2                                  # V=2, P, X, CC=2
    send(t + 2 * MS, 44004, bytes(extended) + struct.pack("!II", 7, 8)
         + struct.pack("!HH", 0xBEDE, 1) + bytes(4) + bytes(160) + b"\0\0\0\x04")
    for n, seq in enumerate((10, 12, 14)):
        send(t + 3 * MS + n * 2 * PTIME_NS, 44006, rtp(seq, seq * 160, 0xF0000004, 8, bytes(160)))
    send(t + 4 * MS, 44008, rtp(50, 0, 0xF0000005, 0, bytes(160)))
    send(t + 5 * MS, 44008, rtp(60, 0, 0xF0000006, 0, bytes(160)), back=True)
    send(t + 6 * MS, 44010, rtp(70, 0, 0xF0000007, 0, bytes(160)))
    send(t + 7 * MS, 44010, rtp(80, 0, 0xF0000008, 0, bytes(160)))
    write(path, packets)


def rtcp_mux_capture(path: Path) -> None:
    """RTP and RTCP on one port pair (RFC 5761), no signalling, RTCP first:
    10.23.0.1:43000 <-> 10.23.0.2:53000, PCMA both ways (200 packets each,
    SSRCs 0xE0000001 and 0xE0000002), an SR + SDES from each sender every
    second and a receiver report back; sequence 0xE0000001's 150th packet lost."""
    a, b = ("10.23.0.1", 43000), ("10.23.0.2", 53000)
    packets: list[Packet] = []

    def send(t: int, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        packets.append((t, frame(src[0], dst[0], src[1], dst[1], payload)))

    for i in range(200):
        at = START_NS + 10 * MS + i * PTIME_NS
        if i != 149:
            send(at, a, b, rtp(500 + i, 160 * i, 0xE0000001, 8, bytes(160)))
        send(at + 5 * MS, b, a, rtp(2500 + i, 160 * i, 0xE0000002, 8, bytes(160)))
    for k in range(4):
        at = START_NS + k * 1000 * MS
        sent = min(k * 50, 199)
        send(at, a, b, rtcp_sr(0xE0000001, at, 160 * sent, sent, sent * 160)
             + rtcp_sdes(0xE0000001, "a@example"))
        send(at + 2 * MS, b, a, rtcp_sr(0xE0000002, at, 160 * sent, sent, sent * 160,
                                        [report_block(0xE0000001, 0, 0, 500 + sent, 8,
                                                      ntp_middle(at), 2 * 65536 // 1000)])
             + rtcp_sdes(0xE0000002, "b@example"))
    write(path, packets)


CAPTURES = {
    "webrtc_mux.pcap": webrtc_capture,
    "interleaved_ssrc.pcap": interleaved_capture,
    "short_streams.pcap": short_streams_capture,
    "rtcp_mux.pcap": rtcp_mux_capture,
    "lone_streams.pcap": lone_streams_capture,
    "jitter.pcap": jitter_capture,
    "loss_opus48k_ipv6.pcap": loss_capture,
    "reorder_duplicate.pcap": reorder_capture,
    "wraparound.pcap": wrap_capture,
    "ssrc_change.pcap": ssrc_change_capture,
    "restart.pcap": restart_capture,
    "rtcp_call.pcap": rtcp_capture,
    "not_rtp.pcap": not_rtp_capture,
}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for name, make in CAPTURES.items():
        make(out / name)


if __name__ == "__main__":
    main()
