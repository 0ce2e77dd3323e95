"""`network.protocol_stack`: tshark's layer names for the layers wirebeat decoded.

The value is tshark's `frame.protocols` without the leading `frame:`, cut
after the last layer wirebeat knows, so it is always a prefix of tshark's
string at a layer boundary: `eth:ethertype:vlan:ethertype:ip:udp:dns`,
`sll:ethertype:ipv6:tcp:http`. Where wirebeat does not know what tshark
would name next (an 802.1ad S-tag, LLC, an IPv6 extension header, a
fragment) the stack stops before it. A transaction document names its
decoder's layer (`...:tcp:http`) and takes its link layers from the packet
that completed it; per-packet documents (packets.py) stop TCP at `tcp`,
since tshark names the application only on the segment that completes a PDU.
"""
from __future__ import annotations

import struct
from functools import lru_cache

from wirebeat.tunnels import LINK_SHIMS, peel_link
from wirebeat.link import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL,
                           LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NULL, LINKTYPE_RAW)

__all__ = ["TRANSPORT_LAYERS", "TSHARK_NAMES", "link_layers", "transaction_stack", "tunneled_link"]

_U16 = struct.Struct("!H").unpack_from

# wirebeat decoder name -> tshark's layer name, where they differ or are known to agree.
# A decoder not listed (a plug-in) ends the stack at its transport.
TSHARK_NAMES = {"dhcpv4": "dhcp", "dns": "dns", "http": "http", "sip": "sip", "rtp": "rtp"}
_TAG_NAMES = {0x8100: "vlan:ethertype", 0x88A8: "ieee8021ad:ethertype"}     # 802.1Q, 802.1ad
TRANSPORT_LAYERS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "ipv6-icmp": "icmpv6"}


def link_layers(linktype: int, data: bytes) -> tuple[str, bool]:
    """(tshark's names of the link layers, whether the network layer may be named after them).

    E.g. ("eth:ethertype:vlan:ethertype", True); ("eth", False) for an 802.3 LLC frame.
    """
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return ("eth", False) if data else ("", False)
        ethertype, offset, names = _U16(data, 12)[0], 14, ["eth"]
        if ethertype < 0x0600:
            return "eth", False         # 802.3 length field: LLC follows, not named here
        names.append("ethertype")
        while ethertype in (0x8100, 0x88A8, 0x9100, 0x9200):
            tag = _TAG_NAMES.get(ethertype)
            if tag is None or len(data) < offset + 4 or len(names) > 10:
                return ":".join(names), False       # 0x9100/0x9200: not named here
            names.append(tag)
            ethertype, offset = _U16(data, offset + 2)[0], offset + 4
        if ethertype in LINK_SHIMS:
            peeled = peel_link(ethertype, data, offset)
            if peeled.__class__ is str or not peeled[0]:
                return ":".join(names), False
            names.append(peeled[2])
        return ":".join(names), True
    if linktype in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
        return "sll:ethertype", True
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return "null", True
    if linktype == LINKTYPE_RAW:
        return "raw", True
    if linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        return "", True
    return "", False


@lru_cache(maxsize=4096)
def _join(*layers: str) -> str:
    return ":".join(layer for layer in layers if layer)


@lru_cache(maxsize=4096)
def transaction_stack(link: tuple[str, bool], ipv6: bool, transport: str, decoder: str) -> str:
    """The stack of a transaction document: link layers, IP, transport, the decoder's layer."""
    prefix, complete = link
    if not complete:
        return prefix
    transport_layer = TRANSPORT_LAYERS.get(transport, "")
    app = TSHARK_NAMES.get(decoder, "") if transport_layer in ("tcp", "udp") else ""
    return _join(prefix, "ipv6" if ipv6 else "ip", transport_layer, app if transport_layer else "")


def tunneled_link(outer_link: tuple[str, bool], outer_ipv6: bool, outer_proto: int, tunnel_layers: str,
                  inner_linktype: int, inner_data: bytes) -> tuple[str, bool]:
    """The layers up to the inner network layer of a tunneled packet, as `link_layers` gives them:
    `eth:ethertype:ip:udp:vxlan:eth:ethertype`."""
    prefix, complete = outer_link
    if not complete:
        return prefix, False
    inner, inner_complete = link_layers(inner_linktype, inner_data)
    return _join(prefix, "ipv6" if outer_ipv6 else "ip", "udp" if outer_proto == 17 else "",
                 tunnel_layers, inner), inner_complete

