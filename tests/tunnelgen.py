"""Encapsulations for test captures, built to the RFCs with exactly known contents.

VXLAN (RFC 7348), GENEVE (RFC 8926), GRE (RFC 2784/2890) with IP or
transparent Ethernet bridging, ERSPAN type II and III (the Cisco/IETF draft
header layouts), MPLS (RFC 3032) and PPPoE sessions (RFC 2516).
"""
from __future__ import annotations

import struct

import pcapgen as g

OUTER_A, OUTER_B = "192.0.2.1", "192.0.2.2"


def vxlan(inner_frame: bytes, vni: int, sport: int = 50000) -> bytes:
    header = struct.pack("!B3xI", 0x08, vni << 8)
    return g.ipv4(OUTER_A, OUTER_B, 17, g.udp(OUTER_A, OUTER_B, sport, 4789, header + inner_frame))


def geneve(inner_frame: bytes, vni: int, options: bytes = b"") -> bytes:
    header = struct.pack("!BBHI", len(options) // 4, 0, 0x6558, vni << 8) + options
    return g.ipv4(OUTER_A, OUTER_B, 17, g.udp(OUTER_A, OUTER_B, 50001, 6081, header + inner_frame))


def gre(inner: bytes, protocol: int, key: int | None = None, sequence: int | None = None) -> bytes:
    flags, extra = 0, b""
    if key is not None:
        flags |= 0x2000
        extra += struct.pack("!I", key)
    if sequence is not None:
        flags |= 0x1000
        extra += struct.pack("!I", sequence)
    return g.ipv4(OUTER_A, OUTER_B, 47, struct.pack("!HH", flags, protocol) + extra + inner)


def erspan2(inner_frame: bytes, session: int) -> bytes:
    # ver 1, vlan 0, cos 0, en 0, t 0, session id; reserved 12 bits, index 20 bits.
    header = struct.pack("!HHI", 0x1000, session & 0x3FF, 0)
    return gre(header + inner_frame, 0x88BE, sequence=1)


def erspan3(inner_frame: bytes, session: int) -> bytes:
    # ver 2, vlan, cos/bso/t, session id; timestamp; sgt; p/ft/hw id/d/gra/o (o = 0).
    header = struct.pack("!HHIHH", 0x2000, session & 0x3FF, 0, 0, 0)
    return gre(header + inner_frame, 0x22EB, sequence=1)


def mpls(ip_packet: bytes, labels: list[int]) -> bytes:
    stack = b"".join(struct.pack("!I", (label << 12) | (0x100 if i == len(labels) - 1 else 0) | 64)
                     for i, label in enumerate(labels))
    return g.ethernet(stack + ip_packet, ethertype=0x8847)


def pppoe(ip_packet: bytes, session: int = 7) -> bytes:
    ppp = struct.pack("!H", 0x0021 if ip_packet[0] >> 4 == 4 else 0x0057) + ip_packet
    return g.ethernet(struct.pack("!BBHH", 0x11, 0, session, len(ppp)) + ppp, ethertype=0x8864)
