"""Tunnels and shims, peeled once in the link/IP layer for every decoder.

Two kinds:

- link shims, found by ethertype right after the link header: MPLS label
  stacks (0x8847, 0x8848; IPv4 or IPv6 below the bottom label) and PPPoE
  sessions (0x8864; PPP carrying IPv4 or IPv6). `peel_link` returns the
  ethertype and offset of the packet inside.
- IP tunnels, found in the outer IP packet: VXLAN (UDP 4789, RFC 7348),
  GENEVE (UDP 6081, RFC 8926), GRE (IP protocol 47, RFC 2784/2890) carrying
  IP, transparent Ethernet bridging (0x6558) or ERSPAN type II (0x88BE,
  with a sequence number) and type III (0x22EB). `decapsulate` returns the
  inner frame with its linktype, and what is kept of the outer layer.

The inner conversation is what decoders see; the outer addresses, the tunnel
type and its id (VNI, GRE key, ERSPAN session) go into the documents, and
`network.protocol_stack` names the layers of both in tshark's words. Sans
I/O and plain data: struct reads, no objects per packet beyond a tuple.
"""
from __future__ import annotations

import struct

__all__ = ["LINK_SHIMS", "MAX_DEPTH", "TUNNEL_PORTS", "Tunnel", "decapsulate", "peel_link"]

MAX_DEPTH = 3           # tunnels inside tunnels: deeper nesting is an attack, not traffic
VXLAN_PORT, GENEVE_PORT = 4789, 6081
LINKTYPE_ETHERNET, LINKTYPE_IP = 1, 228   # 228: an IP packet of either version, no link header
_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
TUNNEL_PORTS = frozenset({VXLAN_PORT.to_bytes(2, "big"), GENEVE_PORT.to_bytes(2, "big")})  # UDP dport bytes
LINK_SHIMS = frozenset({0x8847, 0x8848, 0x8864})
_PPP_TO_ETHERTYPE = {0x0021: 0x0800, 0x0057: 0x86DD}
_GRE_INNER = {0x0800: LINKTYPE_IP, 0x86DD: LINKTYPE_IP, 0x6558: LINKTYPE_ETHERNET}

# (type, id, outer stack after the outer transport, inner linktype, inner bytes)
Tunnel = tuple[str, int, str, int, bytes]


def peel_link(ethertype: int, data: bytes, offset: int) -> tuple[int, int, str] | str:
    """(inner ethertype, offset, tshark layers peeled) for an MPLS or PPPoE frame, or a reason."""
    if ethertype in (0x8847, 0x8848):
        for _ in range(16):
            if len(data) < offset + 4:
                return "mpls.truncated"
            bottom = data[offset + 2] & 0x01
            offset += 4
            if bottom:
                break
        else:
            return "mpls.too_many_labels"
        if len(data) <= offset:
            return "mpls.truncated"
        version = data[offset] >> 4
        if version == 4:
            return 0x0800, offset, "mpls"
        if version == 6:
            return 0x86DD, offset, "mpls"
        return 0, offset, "mpls"        # a pseudowire or something else: not followed
    if ethertype == 0x8864:
        if len(data) < offset + 8:
            return "pppoe.truncated"
        inner = _PPP_TO_ETHERTYPE.get(_U16(data, offset + 6)[0], 0)
        return inner, offset + 8, "pppoes:ppp"
    return ethertype, offset, ""


def decapsulate(proto: int, payload: bytes) -> Tunnel | str | None:
    """The tunnel in an IP payload (proto: the IP protocol), a reason if malformed, else None."""
    if proto == 17:
        if len(payload) < 8:
            return None
        dport = _U16(payload, 2)[0]
        if dport == VXLAN_PORT:
            # RFC 7348 §5: flags (I bit 0x08 says the VNI is valid), 24 reserved, VNI, 8 reserved.
            if len(payload) < 16 + 14:
                return "vxlan.truncated"
            if not payload[8] & 0x08:
                return None
            vni = _U32(payload, 12)[0] >> 8
            return "vxlan", vni, "vxlan", LINKTYPE_ETHERNET, payload[16:]
        if dport == GENEVE_PORT:
            # RFC 8926 §3.4: ver(2) opt len(6, 4-byte words), flags, protocol type, VNI, reserved.
            if len(payload) < 16:
                return "geneve.truncated"
            if payload[8] >> 6 != 0:
                return None
            start = 16 + (payload[8] & 0x3F) * 4
            inner = _GRE_INNER.get(_U16(payload, 10)[0])
            if inner is None or len(payload) <= start:
                return "geneve.unsupported" if inner is None else "geneve.truncated"
            vni = _U32(payload, 12)[0] >> 8
            return "geneve", vni, "geneve", inner, payload[start:]
        return None
    if proto == 47:
        return _gre(payload)
    return None


def _gre(payload: bytes) -> Tunnel | str | None:
    # RFC 2784 / 2890: C, K, S flags; version 0 only (version 1 is PPTP's enhanced GRE).
    if len(payload) < 4:
        return "gre.truncated"
    flags, ptype = _U16(payload, 0)[0], _U16(payload, 2)[0]
    if flags & 0x0007:
        return None
    offset, key = 4, 0
    if flags & 0x8000:
        offset += 4
    if flags & 0x2000:
        if len(payload) < offset + 4:
            return "gre.truncated"
        key = _U32(payload, offset)[0]
        offset += 4
    has_sequence = bool(flags & 0x1000)
    if has_sequence:
        offset += 4
    if len(payload) <= offset:
        return "gre.truncated"
    if ptype == 0x88BE and has_sequence:
        # ERSPAN type II: ver(4)=1, vlan(12), cos/en/t(6), session id(10), reserved, index.
        if len(payload) < offset + 8 + 14:
            return "erspan.truncated"
        session = _U16(payload, offset + 2)[0] & 0x03FF
        return "erspan", session, "gre:erspan", LINKTYPE_ETHERNET, payload[offset + 8:]
    if ptype == 0x22EB:
        # ERSPAN type III: 12-byte header, an 8-byte platform subheader when O is set.
        if len(payload) < offset + 12:
            return "erspan.truncated"
        session = _U16(payload, offset + 2)[0] & 0x03FF
        start = offset + 12 + (8 if payload[offset + 11] & 0x01 else 0)
        if len(payload) < start + 14:
            return "erspan.truncated"
        return "erspan", session, "gre:erspan", LINKTYPE_ETHERNET, payload[start:]
    inner = _GRE_INNER.get(ptype)
    if inner is None:
        return None
    return "gre", key, "gre", inner, payload[offset:]
