"""Build packets and captures with exactly known ground truth (stdlib only).

Used by tests and the benchmark generator to make pcap/pcapng files (or the raw
bytes of their blocks, for stdin and ZeroMQ tests) whose every field is chosen
by the test, so a decoder's output can be compared with what was put in.

Capture formats:
- classic pcap (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html):
  either byte order, microsecond (0xa1b2c3d4) or nanosecond (0xa1b23c4d) magic,
  any linktype and snaplen;
- pcapng (draft-ietf-opsawg-pcapng): Section Header Block in either byte order,
  Interface Description Blocks with optional if_tsresol, Enhanced Packet Blocks.

Packet builders (each returns bytes; checksums are computed unless overridden):
- link layers: Ethernet with 802.1Q / 802.1ad tags, Linux cooked v1 (SLL, 113)
  and v2 (SLL2, 276), BSD null (0, host byte order) and loop (108, network
  order); raw IP linktypes (101, 228, 229) carry the IP packet as it is;
- IPv4 with options and fragmentation fields, and a fragmenter;
- IPv6 with hop-by-hop, destination options, routing and fragment headers, and
  a fragmenter;
- UDP and TCP over IPv4 or IPv6 (pseudo-header checksums);
- ICMPv4 and ICMPv6 echo request/reply and destination unreachable.

Timestamps: a ``float`` is seconds since the epoch; an ``int`` is nanoseconds
since the epoch (exact). So ``1.5`` and ``1_500_000_000`` are the same instant,
while ``1`` is one nanosecond after the epoch.

Addresses are text (``"192.0.2.1"``, ``"2001:db8::1"``) or packed bytes; MAC
addresses are ``"02:00:00:00:00:01"`` or 6 bytes.
"""
from __future__ import annotations

import array
import decimal
import ipaddress
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    # linktypes and numbers
    "LINKTYPE_NULL", "LINKTYPE_ETHERNET", "LINKTYPE_RAW", "LINKTYPE_LOOP",
    "LINKTYPE_LINUX_SLL", "LINKTYPE_IPV4", "LINKTYPE_IPV6", "LINKTYPE_LINUX_SLL2",
    "ETH_P_IP", "ETH_P_IPV6", "ETH_P_8021Q", "ETH_P_8021AD",
    "IPPROTO_HOPOPTS", "IPPROTO_ICMP", "IPPROTO_TCP", "IPPROTO_UDP",
    "IPPROTO_ROUTING", "IPPROTO_FRAGMENT", "IPPROTO_ICMPV6", "IPPROTO_NONE",
    "IPPROTO_DSTOPTS",
    "FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR",
    # capture files
    "Timestamp", "VLANTag", "to_ns", "pcap_header", "pcap_record", "write_pcap",
    "pcapng_shb", "pcapng_idb", "pcapng_epb", "write_pcapng",
    # link layers
    "AF_INET", "AF_INET6_BSD", "AF_INET6_FREEBSD", "AF_INET6_DARWIN",
    "mac", "ethernet", "qinq", "linux_sll", "linux_sll2", "bsd_null", "bsd_loop",
    "link_frame",
    # network and transport layers
    "internet_checksum", "ipv4", "fragment_ipv4", "IPv6Ext", "hop_by_hop",
    "destination_options", "routing_header", "fragment_header", "ipv6",
    "fragment_ipv6", "ip_packet", "udp", "tcp", "icmp", "icmp_echo",
    "icmp_unreachable", "icmpv6", "icmpv6_echo", "icmpv6_unreachable",
]

# Linktypes (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0          # 4-byte AF value in the *capturing host's* byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101         # IPv4 or IPv6, told apart by the version nibble
LINKTYPE_LOOP = 108        # like NULL, but the AF value is in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8      # QinQ outer tag (S-tag)

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60

# TCP flag bits (RFC 9293 §3.1, RFC 3168 for ECE/CWR).
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
_TCP_FLAG_LETTERS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "A": ACK, "U": URG,
                     "E": ECE, "C": CWR}

Timestamp = float | int    # float: epoch seconds; int: epoch nanoseconds

_PCAP_MAGIC_US = 0xA1B2C3D4
_PCAP_MAGIC_NS = 0xA1B23C4D
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_IDB = 0x00000001
_PCAPNG_EPB = 0x00000006
_PCAPNG_BOM = 0x1A2B3C4D
_OPT_ENDOFOPT = 0
_OPT_IF_NAME = 2
_OPT_IF_TSRESOL = 9
_OPT_EPB_FLAGS = 2


# ---------------------------------------------------------------------------
# Capture files
# ---------------------------------------------------------------------------

def to_ns(ts: Timestamp) -> int:
    """Return a timestamp as integer nanoseconds since the epoch (see module doc)."""
    if isinstance(ts, int):
        return ts
    # A float near today's epoch is only good to ~240 ns, so take the decimal
    # the caller wrote (repr is the shortest round-tripping form) rather than
    # the binary value: 1700000000.000001 becomes ...000001000 ns, not ...000954.
    return int(decimal.Decimal(repr(ts)).scaleb(9).to_integral_value(decimal.ROUND_HALF_EVEN))


def _endian(big_endian: bool) -> str:
    return ">" if big_endian else "<"


def pcap_header(linktype: int = LINKTYPE_ETHERNET, *, nanosecond: bool = False,
                big_endian: bool = False, snaplen: int = 65535) -> bytes:
    """The 24-byte pcap file header (version 2.4)."""
    magic = _PCAP_MAGIC_NS if nanosecond else _PCAP_MAGIC_US
    return struct.pack(_endian(big_endian) + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ts: Timestamp, data: bytes, *, nanosecond: bool = False,
                big_endian: bool = False, snaplen: int = 65535,
                orig_len: int | None = None) -> bytes:
    """One pcap record: header plus data cut to `snaplen` (orig_len defaults to len(data))."""
    ns = to_ns(ts)
    seconds, fraction_ns = divmod(ns, 1_000_000_000)
    fraction = fraction_ns if nanosecond else fraction_ns // 1000
    captured = data[:snaplen]
    wire_len = len(data) if orig_len is None else orig_len
    return struct.pack(_endian(big_endian) + "IIII", seconds, fraction,
                       len(captured), wire_len) + captured


def write_pcap(path: str | Path, packets: Iterable[tuple[Timestamp, bytes]],
               linktype: int = LINKTYPE_ETHERNET, nanosecond: bool = False,
               big_endian: bool = False, snaplen: int = 65535) -> int:
    """Write a classic pcap file; return the number of records written.

    `packets` may be a generator: records are streamed, never held in memory.
    """
    count = 0
    with open(path, "wb") as out:
        out.write(pcap_header(linktype, nanosecond=nanosecond, big_endian=big_endian,
                              snaplen=snaplen))
        for ts, data in packets:
            out.write(pcap_record(ts, data, nanosecond=nanosecond,
                                  big_endian=big_endian, snaplen=snaplen))
            count += 1
    return count


def _pad32(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _pcapng_options(options: Sequence[tuple[int, bytes]], e: str) -> bytes:
    if not options:
        return b""
    body = b"".join(struct.pack(e + "HH", code, len(value)) + _pad32(value)
                    for code, value in options)
    return body + struct.pack(e + "HH", _OPT_ENDOFOPT, 0)


def _pcapng_block(block_type: int, body: bytes, e: str) -> bytes:
    body = _pad32(body)
    total = 12 + len(body)     # type + length + body + trailing length
    return struct.pack(e + "II", block_type, total) + body + struct.pack(e + "I", total)


def pcapng_shb(*, big_endian: bool = False, section_length: int = -1) -> bytes:
    """A Section Header Block (version 1.0); its byte order governs the whole section."""
    e = _endian(big_endian)
    body = struct.pack(e + "IHHq", _PCAPNG_BOM, 1, 0, section_length)
    return _pcapng_block(_PCAPNG_SHB, body, e)


def pcapng_idb(linktype: int, tsresol: int | None = None, *, snaplen: int = 0,
               name: str | None = None, big_endian: bool = False) -> bytes:
    """An Interface Description Block.

    `tsresol` is the if_tsresol option byte as pcapng spells it: 6 = microseconds,
    9 = nanoseconds, 0x80 | n = 2**-n seconds; None omits the option (which means
    microseconds). snaplen 0 means no limit.
    """
    e = _endian(big_endian)
    options: list[tuple[int, bytes]] = []
    if name is not None:
        options.append((_OPT_IF_NAME, name.encode()))
    if tsresol is not None:
        options.append((_OPT_IF_TSRESOL, bytes([tsresol])))
    body = struct.pack(e + "HHI", linktype, 0, snaplen) + _pcapng_options(options, e)
    return _pcapng_block(_PCAPNG_IDB, body, e)


def _ns_to_units(ns: int, tsresol: int | None) -> int:
    if tsresol is None:
        tsresol = 6
    if tsresol & 0x80:                       # binary resolution 2**-n
        return (ns << (tsresol & 0x7F)) // 1_000_000_000
    exponent = tsresol
    if exponent >= 9:
        return ns * 10 ** (exponent - 9)
    return ns // 10 ** (9 - exponent)


def pcapng_epb(interface_id: int, ts: Timestamp, data: bytes, *,
               tsresol: int | None = None, big_endian: bool = False,
               orig_len: int | None = None, flags: int | None = None) -> bytes:
    """An Enhanced Packet Block; `tsresol` must match the interface's IDB.

    Timestamps are truncated to the interface's resolution. `flags` sets the
    epb_flags option (bits 0-1: direction, 1 inbound, 2 outbound).
    """
    e = _endian(big_endian)
    units = _ns_to_units(to_ns(ts), tsresol)
    wire_len = len(data) if orig_len is None else orig_len
    body = struct.pack(e + "IIIII", interface_id, units >> 32, units & 0xFFFFFFFF,
                       len(data), wire_len) + _pad32(data)
    options = [] if flags is None else [(_OPT_EPB_FLAGS, struct.pack(e + "I", flags))]
    return _pcapng_block(_PCAPNG_EPB, body + _pcapng_options(options, e), e)


def write_pcapng(path: str | Path,
                 interfaces: Sequence[tuple[int, int | None]] = ((LINKTYPE_ETHERNET, None),),
                 packets: Iterable[tuple[int, Timestamp, bytes]] = (),
                 big_endian: bool = False) -> int:
    """Write a one-section pcapng file; return the number of packets written.

    `interfaces` is a list of (linktype, tsresol) in interface-id order (tsresol
    as in `pcapng_idb`); `packets` are (interface_id, ts, data), streamed.
    """
    resolutions = [tsresol for _linktype, tsresol in interfaces]
    count = 0
    with open(path, "wb") as out:
        out.write(pcapng_shb(big_endian=big_endian))
        for linktype, tsresol in interfaces:
            out.write(pcapng_idb(linktype, tsresol, big_endian=big_endian))
        for interface_id, ts, data in packets:
            out.write(pcapng_epb(interface_id, ts, data, tsresol=resolutions[interface_id],
                                 big_endian=big_endian))
            count += 1
    return count


# ---------------------------------------------------------------------------
# Link layers
# ---------------------------------------------------------------------------

def mac(address: str | bytes) -> bytes:
    """A MAC address as 6 bytes, from "aa:bb:cc:dd:ee:ff" (or "-" separated) or bytes."""
    if isinstance(address, bytes):
        if len(address) != 6:
            raise ValueError(f"MAC address must be 6 bytes, got {len(address)}")
        return address
    return bytes.fromhex(address.replace(":", "").replace("-", ""))


def _ethertype_for(ip_packet: bytes) -> int:
    version = ip_packet[0] >> 4 if ip_packet else 0
    if version == 4:
        return ETH_P_IP
    if version == 6:
        return ETH_P_IPV6
    raise ValueError("cannot infer ethertype: payload is neither IPv4 nor IPv6")


VLANTag = int | tuple[int, int] | tuple[int, int, int]


def _vlan_tag(tag: VLANTag) -> tuple[int, int]:
    """(tpid, tci) from a bare VID, (tpid, vid) or (tpid, vid, pcp)."""
    if isinstance(tag, int):
        tpid, vid, pcp = ETH_P_8021Q, tag, 0
    elif len(tag) == 2:
        tpid, vid, pcp = tag[0], tag[1], 0
    else:
        tpid, vid, pcp = tag          # type: ignore[misc]
    if not 0 <= vid < 4096:
        raise ValueError(f"VLAN id out of range: {vid}")
    return tpid, (pcp << 13) | vid


def ethernet(payload: bytes, *, ethertype: int | None = None,
             src: str | bytes = "02:00:00:00:00:01", dst: str | bytes = "02:00:00:00:00:02",
             vlans: Sequence[VLANTag] = ()) -> bytes:
    """An Ethernet II frame (no FCS), outermost VLAN tag first.

    `ethertype` defaults from the IP version of `payload`. Each VLAN tag is a
    VID (802.1Q, TPID 0x8100), (tpid, vid) or (tpid, vid, pcp); see `qinq`.
    """
    if ethertype is None:
        ethertype = _ethertype_for(payload)
    header = mac(dst) + mac(src)
    for tag in vlans:
        header += struct.pack("!HH", *_vlan_tag(tag))
    return header + struct.pack("!H", ethertype) + payload


def qinq(outer_vid: int, inner_vid: int) -> list[VLANTag]:
    """802.1ad S-tag then 802.1Q C-tag, for `ethernet(..., vlans=qinq(100, 10))`."""
    return [(ETH_P_8021AD, outer_vid), (ETH_P_8021Q, inner_vid)]


def linux_sll(payload: bytes, *, protocol: int | None = None, packet_type: int = 0,
              arphrd: int = 1, address: bytes = b"\x02\0\0\0\0\x01") -> bytes:
    """A Linux cooked v1 header (linktype 113, 16 bytes) before `payload`.

    packet_type 0 = to us, 4 = sent by us; arphrd 1 = Ethernet; protocol is the
    ethertype (default from the IP version).
    """
    if protocol is None:
        protocol = _ethertype_for(payload)
    return struct.pack("!HHH8sH", packet_type, arphrd, len(address), address,
                       protocol) + payload


def linux_sll2(payload: bytes, *, protocol: int | None = None, interface_index: int = 1,
               packet_type: int = 0, arphrd: int = 1,
               address: bytes = b"\x02\0\0\0\0\x01") -> bytes:
    """A Linux cooked v2 header (linktype 276, 20 bytes) before `payload`."""
    if protocol is None:
        protocol = _ethertype_for(payload)
    return struct.pack("!HHIHBB8s", protocol, 0, interface_index, arphrd, packet_type,
                       len(address), address) + payload


# AF_INET is 2 everywhere; AF_INET6 differs by OS, and readers accept all three.
AF_INET = 2
AF_INET6_BSD = 24          # NetBSD, OpenBSD
AF_INET6_FREEBSD = 28
AF_INET6_DARWIN = 30


def _address_family(payload: bytes) -> int:
    return AF_INET if _ethertype_for(payload) == ETH_P_IP else AF_INET6_DARWIN


def bsd_null(payload: bytes, *, family: int | None = None,
             big_endian: bool = sys.byteorder == "big") -> bytes:
    """A BSD loopback header (linktype 0): AF value in the capturing host's order.

    Default: this machine's byte order; readers must accept both.
    """
    if family is None:
        family = _address_family(payload)
    return struct.pack(_endian(big_endian) + "I", family) + payload


def bsd_loop(payload: bytes, *, family: int | None = None) -> bytes:
    """An OpenBSD loop header (linktype 108): AF value in network byte order."""
    if family is None:
        family = _address_family(payload)
    return struct.pack("!I", family) + payload


def link_frame(linktype: int, ip_packet: bytes) -> bytes:
    """Wrap an IP packet in the default header of `linktype` (raw types add none)."""
    if linktype == LINKTYPE_ETHERNET:
        return ethernet(ip_packet)
    if linktype == LINKTYPE_LINUX_SLL:
        return linux_sll(ip_packet)
    if linktype == LINKTYPE_LINUX_SLL2:
        return linux_sll2(ip_packet)
    if linktype == LINKTYPE_NULL:
        return bsd_null(ip_packet)
    if linktype == LINKTYPE_LOOP:
        return bsd_loop(ip_packet)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return ip_packet
    raise ValueError(f"no builder for linktype {linktype}")


# ---------------------------------------------------------------------------
# Checksums and addresses
# ---------------------------------------------------------------------------

def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum of `data` (as it goes on the wire)."""
    if len(data) % 2:
        data += b"\0"
    # RFC 1071 §2(B): the sum is byte-order independent, so sum native-order
    # words (fast) and swap the result back on little-endian hosts.
    total = sum(array.array("H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    total = ~total & 0xFFFF
    if sys.byteorder == "little":
        total = ((total & 0xFF) << 8) | (total >> 8)
    return total


def _packed(address: str | bytes) -> bytes:
    if isinstance(address, bytes):
        return address
    return ipaddress.ip_address(address).packed


def _pseudo_header(src: bytes, dst: bytes, protocol: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, protocol, length)
    return src + dst + struct.pack("!IxxxB", length, protocol)


# ---------------------------------------------------------------------------
# IPv4
# ---------------------------------------------------------------------------

def ipv4(src: str | bytes, dst: str | bytes, protocol: int, payload: bytes, *,
         ttl: int = 64, ident: int = 0, dont_fragment: bool = False,
         more_fragments: bool = False, frag_offset_bytes: int = 0, tos: int = 0,
         options: bytes = b"", total_length: int | None = None,
         checksum: int | None = None) -> bytes:
    """An IPv4 packet (RFC 791) with a correct header checksum unless `checksum` is given.

    `options` are raw option bytes, padded with End-of-Options to 4 bytes.
    `frag_offset_bytes` must be a multiple of 8.
    """
    if frag_offset_bytes % 8:
        raise ValueError("fragment offset must be a multiple of 8 bytes")
    options += b"\0" * (-len(options) % 4)
    header_len = 20 + len(options)
    if header_len > 60:
        raise ValueError("IPv4 options longer than 40 bytes")
    if total_length is None:
        total_length = header_len + len(payload)
    flags_offset = ((0x4000 if dont_fragment else 0) | (0x2000 if more_fragments else 0)
                    | (frag_offset_bytes // 8))
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | header_len // 4, tos, total_length,
                         ident, flags_offset, ttl, protocol, 0, _packed(src),
                         _packed(dst)) + options
    if checksum is None:
        checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def _ipv4_fragment_options(options: bytes) -> bytes:
    """Options that RFC 791 says to copy into every fragment (copied flag set)."""
    kept = b""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:                          # End of Option List
            break
        if kind == 1:                          # No-Operation: one byte
            i += 1
            continue
        length = options[i + 1] if i + 1 < len(options) else 0
        if length < 2:
            break
        if kind & 0x80:
            kept += options[i:i + length]
        i += length
    return kept


def fragment_ipv4(packet: bytes, fragment_size: int) -> list[bytes]:
    """Split an IPv4 packet into fragments carrying `fragment_size` payload bytes each.

    `fragment_size` must be a multiple of 8 (the last fragment holds the rest).
    All options go in the first fragment, only "copied" options in the rest.
    Works on a packet that is itself a fragment (offsets and MF are kept).
    """
    if fragment_size <= 0 or fragment_size % 8:
        raise ValueError("fragment size must be a positive multiple of 8")
    header_len = (packet[0] & 0x0F) * 4
    (total_length, ident, flags_offset, ttl,
     protocol) = struct.unpack("!2xHHHBB", packet[:10])
    tos = packet[1]
    src, dst = packet[12:16], packet[16:20]
    options = packet[20:header_len]
    payload = packet[header_len:total_length]
    base_offset = (flags_offset & 0x1FFF) * 8
    last_more = bool(flags_offset & 0x2000)
    dont_fragment = bool(flags_offset & 0x4000)
    fragments = []
    for start in range(0, len(payload), fragment_size):
        chunk = payload[start:start + fragment_size]
        is_last = start + fragment_size >= len(payload)
        fragments.append(ipv4(
            src, dst, protocol, chunk, ttl=ttl, ident=ident, tos=tos,
            dont_fragment=dont_fragment, more_fragments=last_more if is_last else True,
            frag_offset_bytes=base_offset + start,
            options=options if start == 0 else _ipv4_fragment_options(options)))
    return fragments


# ---------------------------------------------------------------------------
# IPv6
# ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IPv6Ext:
    """One IPv6 extension header: its protocol number and its bytes.

    The first byte (Next Header) is a placeholder that `ipv6` fills in.
    """
    protocol: int
    data: bytes


def _tlv_options(options: Sequence[tuple[int, bytes]]) -> bytes:
    """Encode options and pad so that 2 + len is a multiple of 8 (RFC 8200 §4.2)."""
    body = b"".join(bytes([kind, len(value)]) + value for kind, value in options)
    pad = -(2 + len(body)) % 8
    if pad == 1:
        body += b"\x00"                       # Pad1
    elif pad > 1:
        body += bytes([1, pad - 2]) + b"\0" * (pad - 2)    # PadN
    return body


def _options_header(protocol: int, options: Sequence[tuple[int, bytes]]) -> IPv6Ext:
    body = _tlv_options(options)
    return IPv6Ext(protocol, bytes([0, (2 + len(body)) // 8 - 1]) + body)


def hop_by_hop(options: Sequence[tuple[int, bytes]] = ()) -> IPv6Ext:
    """A Hop-by-Hop Options header; options are (type, value), padding added."""
    return _options_header(IPPROTO_HOPOPTS, options)


def destination_options(options: Sequence[tuple[int, bytes]] = ()) -> IPv6Ext:
    """A Destination Options header; options are (type, value), padding added."""
    return _options_header(IPPROTO_DSTOPTS, options)


def routing_header(addresses: Sequence[str | bytes], *, routing_type: int = 0,
                   segments_left: int | None = None) -> IPv6Ext:
    """A Routing header in the type 0/2 layout: 4 reserved bytes, then addresses.

    segments_left defaults to len(addresses). When it is non-zero, the
    destination in the IPv6 header is not the final one: build UDP/TCP/ICMPv6
    checksums with the last address here (RFC 8200 §8.1).
    """
    if segments_left is None:
        segments_left = len(addresses)
    body = b"".join(_packed(a) for a in addresses)
    return IPv6Ext(IPPROTO_ROUTING, bytes([0, 2 * len(addresses), routing_type,
                                           segments_left]) + b"\0\0\0\0" + body)


def fragment_header(*, offset_bytes: int = 0, more_fragments: bool = False,
                    ident: int = 0) -> IPv6Ext:
    """A Fragment header (RFC 8200 §4.5); offset_bytes must be a multiple of 8."""
    if offset_bytes % 8:
        raise ValueError("fragment offset must be a multiple of 8 bytes")
    return IPv6Ext(IPPROTO_FRAGMENT,
                   struct.pack("!BBHI", 0, 0, offset_bytes | int(more_fragments), ident))


def ipv6(src: str | bytes, dst: str | bytes, protocol: int, payload: bytes, *,
         hop_limit: int = 64, traffic_class: int = 0, flow_label: int = 0,
         extensions: Sequence[IPv6Ext] = (), payload_length: int | None = None) -> bytes:
    """An IPv6 packet (RFC 8200); `protocol` is the upper layer after `extensions`."""
    chain = b""
    for index, ext in enumerate(extensions):
        following = extensions[index + 1].protocol if index + 1 < len(extensions) else protocol
        chain += bytes([following]) + ext.data[1:]
    first = extensions[0].protocol if extensions else protocol
    body = chain + payload
    if payload_length is None:
        payload_length = len(body)
    first_word = (6 << 28) | (traffic_class << 20) | flow_label
    return struct.pack("!IHBB16s16s", first_word, payload_length, first, hop_limit,
                       _packed(src), _packed(dst)) + body


_IPV6_EXT_WITH_LENGTH = (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS)


def fragment_ipv6(packet: bytes, fragment_size: int, ident: int = 1) -> list[bytes]:
    """Split an IPv6 packet into fragments (RFC 8200 §4.5) of `fragment_size` bytes.

    The unfragmentable part (IPv6 header, Hop-by-Hop, Routing and any
    Destination Options before Routing) is repeated in each fragment; the rest,
    from the first header after it, is split. `fragment_size` must be a multiple
    of 8 (the last fragment holds the rest).
    """
    if fragment_size <= 0 or fragment_size % 8:
        raise ValueError("fragment size must be a positive multiple of 8")
    payload_length = struct.unpack("!H", packet[4:6])[0]
    end = 40 + payload_length
    # Walk the chain; the unfragmentable part ends after the last HBH or Routing.
    protocol, offset = packet[6], 40
    split_offset, split_protocol, split_nh_at = 40, packet[6], 6
    while protocol in _IPV6_EXT_WITH_LENGTH:
        next_protocol, length_units = packet[offset], packet[offset + 1]
        header_end = offset + 8 * (length_units + 1)
        if protocol in (IPPROTO_HOPOPTS, IPPROTO_ROUTING):
            split_offset, split_protocol, split_nh_at = header_end, next_protocol, offset
        protocol, offset = next_protocol, header_end
    unfragmentable = bytearray(packet[:split_offset])
    unfragmentable[split_nh_at] = IPPROTO_FRAGMENT
    fragmentable = packet[split_offset:end]
    fragments = []
    for start in range(0, len(fragmentable), fragment_size):
        chunk = fragmentable[start:start + fragment_size]
        more = start + fragment_size < len(fragmentable)
        frag = struct.pack("!BBHI", split_protocol, 0, start | int(more), ident)
        header = bytearray(unfragmentable)
        header[4:6] = struct.pack("!H", len(header) - 40 + 8 + len(chunk))
        fragments.append(bytes(header) + frag + chunk)
    return fragments


def ip_packet(src: str | bytes, dst: str | bytes, protocol: int, payload: bytes,
              **fields: object) -> bytes:
    """IPv4 or IPv6 by the address family of `src`; extra keywords go to ipv4/ipv6."""
    if len(_packed(src)) == 4:
        return ipv4(src, dst, protocol, payload, **fields)    # type: ignore[arg-type]
    return ipv6(src, dst, protocol, payload, **fields)        # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Transport
# ---------------------------------------------------------------------------

def udp(src: str | bytes, dst: str | bytes, src_port: int, dst_port: int,
        payload: bytes = b"", *, checksum: int | None = None,
        length: int | None = None) -> bytes:
    """A UDP datagram (RFC 768) with the checksum over the IPv4/IPv6 pseudo-header.

    `src`/`dst` are only used for the checksum. `checksum=0` means "none"
    (allowed over IPv4 only).
    """
    if length is None:
        length = 8 + len(payload)
    header = struct.pack("!HHHH", src_port, dst_port, length, 0)
    if checksum is None:
        s, d = _packed(src), _packed(dst)
        checksum = internet_checksum(_pseudo_header(s, d, IPPROTO_UDP, 8 + len(payload))
                                     + header + payload)
        checksum = checksum or 0xFFFF         # RFC 768: a computed 0 is sent as all ones
    return header[:6] + struct.pack("!H", checksum) + payload


def _tcp_flags(flags: int | str) -> int:
    if isinstance(flags, int):
        return flags
    value = 0
    for letter in flags.upper():
        value |= _TCP_FLAG_LETTERS[letter]
    return value


def tcp(src: str | bytes, dst: str | bytes, src_port: int, dst_port: int,
        payload: bytes = b"", *, seq: int = 0, ack: int = 0, flags: int | str = ACK,
        window: int = 65535, urgent: int = 0, options: bytes = b"",
        checksum: int | None = None) -> bytes:
    """A TCP segment (RFC 9293) with the checksum over the IPv4/IPv6 pseudo-header.

    `flags` is a bit mask or letters ("S", "SA", "PA", "FA", "R"; U E C for
    URG/ECE/CWR). `options` are raw bytes, padded with zeros (End of Option
    List) to a 4-byte multiple.
    """
    options += b"\0" * (-len(options) % 4)
    offset_words = (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", src_port, dst_port, seq & 0xFFFFFFFF,
                         ack & 0xFFFFFFFF, offset_words << 4, _tcp_flags(flags),
                         window, 0, urgent) + options
    if checksum is None:
        s, d = _packed(src), _packed(dst)
        checksum = internet_checksum(_pseudo_header(s, d, IPPROTO_TCP,
                                                    len(header) + len(payload))
                                     + header + payload)
    return header[:16] + struct.pack("!H", checksum) + header[18:] + payload


# ---------------------------------------------------------------------------
# ICMP
# ---------------------------------------------------------------------------

def icmp(icmp_type: int, code: int, rest: bytes = b"\0\0\0\0", data: bytes = b"", *,
         checksum: int | None = None) -> bytes:
    """An ICMPv4 message (RFC 792): type, code, checksum, 4-byte rest of header, data."""
    message = struct.pack("!BBH", icmp_type, code, 0) + rest + data
    if checksum is None:
        checksum = internet_checksum(message)
    return message[:2] + struct.pack("!H", checksum) + message[4:]


def icmp_echo(ident: int, seq: int, data: bytes = b"", *, reply: bool = False) -> bytes:
    """ICMPv4 echo request (type 8) or reply (type 0)."""
    return icmp(0 if reply else 8, 0, struct.pack("!HH", ident, seq), data)


def icmp_unreachable(code: int, original: bytes, *, next_hop_mtu: int = 0) -> bytes:
    """ICMPv4 destination unreachable (type 3) quoting `original` (an IPv4 packet).

    Code 3 is port unreachable, 4 fragmentation needed (with next_hop_mtu).
    Like Linux, quotes as much as fits a 576-byte datagram.
    """
    return icmp(3, code, struct.pack("!HH", 0, next_hop_mtu), original[:576 - 20 - 8])


def icmpv6(src: str | bytes, dst: str | bytes, icmp_type: int, code: int,
           rest: bytes = b"\0\0\0\0", data: bytes = b"", *,
           checksum: int | None = None) -> bytes:
    """An ICMPv6 message (RFC 4443) with the checksum over the IPv6 pseudo-header."""
    message = struct.pack("!BBH", icmp_type, code, 0) + rest + data
    if checksum is None:
        checksum = internet_checksum(
            _pseudo_header(_packed(src), _packed(dst), IPPROTO_ICMPV6, len(message))
            + message)
    return message[:2] + struct.pack("!H", checksum) + message[4:]


def icmpv6_echo(src: str | bytes, dst: str | bytes, ident: int, seq: int,
                data: bytes = b"", *, reply: bool = False) -> bytes:
    """ICMPv6 echo request (type 128) or reply (type 129)."""
    return icmpv6(src, dst, 129 if reply else 128, 0, struct.pack("!HH", ident, seq), data)


def icmpv6_unreachable(src: str | bytes, dst: str | bytes, code: int,
                       original: bytes) -> bytes:
    """ICMPv6 destination unreachable (type 1) quoting `original` (an IPv6 packet).

    Code 4 is port unreachable. Quotes as much as fits the 1280-byte minimum MTU.
    """
    return icmpv6(src, dst, 1, code, b"\0\0\0\0", original[:1280 - 40 - 8])
