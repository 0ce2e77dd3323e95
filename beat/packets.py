"""Per-packet documents and `network.protocol_stack`.

With `wirebeat.packets.enabled`, every frame (ARP and other non-IP frames
included) becomes one lean document, the job `tshark -T ek` does:
@timestamp, `event.dataset: packet`, the frame length (`network.bytes`),
`network.protocol_stack`, MACs, VLANs, IPs, ports, transport,
`network.community_id` and `capture.source`. Processors run on it like on
any document, so a `lookup` plus a `drop_event` in front turns it into the
watch-list stream (examples/watchlist/). This runs once per frame: plain
struct reads and small caches, no object per layer.

`network.protocol_stack` is explained in stack.py; per packet, a UDP
datagram on a port a decoder is routed to names that decoder's layer
(`...:udp:dns`), TCP stops at `tcp`.
"""
from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from wirebeat.document import DocumentBuilder, community_id, document_id_from, iso_time
from wirebeat.link import (ETHERTYPE_IPV4, ETHERTYPE_IPV6, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL,
                           LINKTYPE_LINUX_SLL2)
from wirebeat.stack import TRANSPORT_LAYERS, link_layers

__all__ = ["PacketDocuments"]

_IP_PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp"}
ETHERTYPE_ARP = 0x0806
_ETHERTYPE_NAMES = {ETHERTYPE_IPV4: "ip", ETHERTYPE_IPV6: "ipv6", ETHERTYPE_ARP: "arp"}
_U16 = struct.Struct("!H").unpack_from
_PORTS = struct.Struct("!HH").unpack_from
_EVENT = {"kind": "event", "category": ["network"], "type": ["connection"], "dataset": "packet"}


@lru_cache(maxsize=4096)
def _mac(raw: bytes) -> str:
    return raw.hex("-").upper()         # ECS's notation (RFC 7042): 02-00-5E-10-00-00


@lru_cache(maxsize=65536)
def _ip(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


class PacketDocuments:
    """Builds and publishes one document per frame."""

    def __init__(self, builder: DocumentBuilder, publish: Callable[[str, dict[str, Any]], None],
                 udp_layers: dict[int, str]) -> None:
        self.builder = builder
        self.publish = publish
        self.udp_layers = udp_layers     # UDP port -> tshark name of the decoder routed there
        self.counts: dict[str, int] = {}    # per capture source: frames seen (the document identity)
        self.published = 0
        self.dropped = 0

    def counters(self) -> dict[str, int]:
        return {"packets.documents": self.published, "packets.documents_dropped": self.dropped}

    def on_frame(self, ts: float, linktype: int, data: bytes, located: Any, source: str) -> None:
        n = self.counts.get(source, 0)
        self.counts[source] = n + 1
        network: dict[str, Any] = {"bytes": len(data)}
        doc: dict[str, Any] = {"@timestamp": iso_time(ts), "type": "packet", "event": dict(_EVENT),
                               "network": network, "capture": {"source": source}}
        link, complete = link_layers(linktype, data)
        layers = [link] if link else []
        source_ep: dict[str, Any] = {}
        dest_ep: dict[str, Any] = {}
        if linktype == LINKTYPE_ETHERNET and len(data) >= 12:
            dest_ep["mac"] = _mac(data[0:6])
            source_ep["mac"] = _mac(data[6:12])
        elif linktype == LINKTYPE_LINUX_SLL and len(data) >= 16 and _U16(data, 4)[0] == 6:
            source_ep["mac"] = _mac(data[6:12])
        elif linktype == LINKTYPE_LINUX_SLL2 and len(data) >= 20 and data[11] == 6:
            source_ep["mac"] = _mac(data[12:18])
        if located.__class__ is tuple:
            ethertype, offset, vlans = located
            if vlans:
                network["vlan"] = {"id": str(vlans[0])}
                if len(vlans) > 1:
                    network["inner"] = {"vlan": {"id": str(vlans[1])}}
            name = _ETHERTYPE_NAMES.get(ethertype)
            if complete and name:
                layers.append(name)
                if ethertype == ETHERTYPE_ARP:
                    self._arp(data, offset, source_ep, dest_ep)
                else:
                    self._ip(data, offset, ethertype == ETHERTYPE_IPV6, layers, network,
                             source_ep, dest_ep)
        if layers:
            network["protocol_stack"] = ":".join(layers)
        if source_ep:
            doc["source"] = source_ep
        if dest_ep:
            doc["destination"] = dest_ep
        builder = self.builder
        if builder.shared_ok:
            doc["agent"], doc["ecs"] = builder.agent, builder.ecs
        else:
            doc["agent"], doc["ecs"] = dict(builder.agent), dict(builder.ecs)
        if not builder.decorate(doc):
            self.dropped += 1
            return
        self.published += 1
        self.publish(document_id_from(f"{source}|packet|", ts, str(n)), doc)

    @staticmethod
    def _arp(data: bytes, offset: int, source_ep: dict[str, Any], dest_ep: dict[str, Any]) -> None:
        # RFC 826 over Ethernet/IPv4: sender and target protocol addresses.
        if len(data) >= offset + 28 and data[offset + 4] == 6 and data[offset + 5] == 4:
            source_ep["ip"] = _ip(data[offset + 14:offset + 18])
            dest_ep["ip"] = _ip(data[offset + 24:offset + 28])

    def _ip(self, data: bytes, offset: int, ipv6: bool, layers: list[str], network: dict[str, Any],
            source_ep: dict[str, Any], dest_ep: dict[str, Any]) -> None:
        if ipv6:
            if len(data) < offset + 40:
                return
            proto = data[offset + 6]
            src, dst = data[offset + 8:offset + 24], data[offset + 24:offset + 40]
            transport_at = offset + 40
            network["type"] = "ipv6"
        else:
            if len(data) < offset + 20:
                return
            proto = data[offset + 9]
            src, dst = data[offset + 12:offset + 16], data[offset + 16:offset + 20]
            transport_at = offset + (data[offset] & 0x0F) * 4
            network["type"] = "ipv4"
            if _U16(data, offset + 6)[0] & 0x3FFF or transport_at < offset + 20:
                proto = -1      # a fragment: its transport header is in the first one only
        source_ep["ip"] = sip = _ip(src)
        dest_ep["ip"] = dip = _ip(dst)
        transport = _IP_PROTOCOLS.get(proto)
        if transport is None or len(data) < transport_at + 4:
            return
        network["transport"] = transport
        layers.append(TRANSPORT_LAYERS[transport])
        if proto == 6 or proto == 17:
            sport, dport = _PORTS(data, transport_at)
            source_ep["port"], dest_ep["port"] = sport, dport
            if proto == 17:
                app = self.udp_layers.get(dport) or self.udp_layers.get(sport)
                if app:
                    layers.append(app)
        else:
            sport, dport = data[transport_at], data[transport_at + 1]     # ICMP type and code
        cid = community_id(transport, sip, sport, dip, dport)
        if cid:
            network["community_id"] = cid
