"""Link layer: find the network-layer packet inside a captured frame.

Encapsulations are peeled here, once, for every decoder: Ethernet with any
number of 802.1Q / 802.1ad (QinQ) tags, Linux cooked capture v1 and v2, raw
IP, BSD null and OpenBSD loop. This runs once per packet, so it is a few
struct reads, not an object per layer.
"""
from __future__ import annotations

import struct

__all__ = ["ETHERTYPE_IPV4", "ETHERTYPE_IPV6", "SUPPORTED_LINKTYPES", "locate_network"]

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
MAX_VLAN_TAGS = 4       # deeper stacks are not real traffic; stop rather than loop

_U16 = struct.Struct("!H").unpack_from
_U32_LE = struct.Struct("<I").unpack_from
_U32_BE = struct.Struct(">I").unpack_from

LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_IPV4, LINKTYPE_IPV6 = 113, 276, 228, 229
_DLT_RAW_ALIASES = (12, 14)    # DLT_RAW as some BSDs number it in pcap headers

SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "BSD null/loopback", LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP", LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked v1", LINKTYPE_LINUX_SLL2: "Linux cooked v2",
    LINKTYPE_IPV4: "raw IPv4", LINKTYPE_IPV6: "raw IPv6",
}
# BSD null: the address family in the capturing host's byte order. IPv6's value
# differs between BSDs (24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS).
_AF_INET = 2
_AF_INET6 = frozenset({10, 24, 28, 30})


def locate_network(linktype: int, data: bytes) -> tuple[int, int, tuple[int, ...]] | str:
    """(ethertype, offset of the network header, VLAN ids) or a reason string.

    Reasons: "link.truncated", "link.unsupported_linktype", "link.vlan_too_deep".
    A non-IP ethertype is returned as is; the caller decides what it skips.
    """
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return "link.truncated"
        ethertype = _U16(data, 12)[0]
        offset = 14
        if ethertype not in _VLAN_TPIDS:
            return ethertype, offset, ()
        vlans: list[int] = []
        while ethertype in _VLAN_TPIDS:
            if len(vlans) == MAX_VLAN_TAGS:
                return "link.vlan_too_deep"
            if len(data) < offset + 4:
                return "link.truncated"
            vlans.append(_U16(data, offset)[0] & 0x0FFF)
            ethertype = _U16(data, offset + 2)[0]
            offset += 4
        return ethertype, offset, tuple(vlans)
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return "link.truncated"
        return _U16(data, 14)[0], 16, ()
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return "link.truncated"
        return _U16(data, 0)[0], 20, ()
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6) or linktype in _DLT_RAW_ALIASES:
        if not data:
            return "link.truncated"
        version = data[0] >> 4
        return (ETHERTYPE_IPV4 if version == 4 else ETHERTYPE_IPV6 if version == 6 else 0), 0, ()
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            return "link.truncated"
        if linktype == LINKTYPE_LOOP:
            family = _U32_BE(data, 0)[0]
        else:
            family = _U32_LE(data, 0)[0]
            if family > 0xFFFF:         # written by a big-endian host
                family = _U32_BE(data, 0)[0]
        if family == _AF_INET:
            return ETHERTYPE_IPV4, 4, ()
        if family in _AF_INET6:
            return ETHERTYPE_IPV6, 4, ()
        return 0, 4, ()
    return "link.unsupported_linktype"
