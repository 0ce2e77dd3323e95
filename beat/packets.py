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

Fast path: when the output serialises with orjson and nothing can edit a
document (no processors, fields or tags; `raw_json`), a plain Ethernet/IP
frame's document differs from the previous one of the same flow, MACs and
source only in `@timestamp` and `network.bytes`. The second such frame is
built as a dict (the one general path) and serialised; its JSON, split
around those two values, is kept as a template, and later frames are written
by filling the template in: no dicts, and no serialisation in the output
thread (the bytes go out as an `orjson.Fragment`).

C accelerator: when the optional extension `wirebeat._speedups`
(beat/_speedups.c) is built and the fast path above applies, every frame's
document (first frames of flows included) is written by its `packet_doc` in
one call: header walk, address text, Community ID and JSON, byte for byte what
the general path below writes (tests/beat/test_speedups.py compares them). It
returns None for what it does not cover (tunnels to peel, MPLS/PPPoE, frames
the link layer rejects), and those frames take the Python path.
`WIREBEAT_PURE_PYTHON=1` in the environment turns the extension off.

Per-packet documents alone (`packets_only_batches`): when the engine has
nothing else to do with a frame (no decoder can be reached, flows off, and the
fast path above on), the C `packet_batch` takes a reader batch whole: for
each plain IP frame the document, the duplicate check and the counters
`Engine.on_frame` would have made, with no Python per frame. It stops at the
first frame that needs more (a timeout tick due, a non-IP, malformed or
fragmented frame, a tunnel, a document only the Python path writes); the
engine takes that frame its usual way, then the batch goes on in C.
tests/beat/test_packets_batch.py runs every bundled capture and hostile
frames both ways and requires the same documents, in the same order, and the
same counters.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache
from typing import Any


import orjson

from wirebeat.decoders.api import format_mac
from wirebeat.accel import speedups
from wirebeat.document import DocumentBuilder, capture_fields, community_id_packed, id_source, iso_time
from wirebeat.link import (ETHERTYPE_IPV4, ETHERTYPE_IPV6, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL,
                           LINKTYPE_LINUX_SLL2)
from wirebeat.hashes import blake2b
from wirebeat.ip import ip_text
from wirebeat.link import locate_network
from wirebeat.stack import TRANSPORT_LAYERS, link_layers
from wirebeat.tunnels import LINK_SHIMS, MAX_DEPTH, TUNNEL_PORTS, decapsulate, peel_link

__all__ = ["ACCELERATED", "PacketDocuments", "packets_only_batches"]

_speedups = speedups
ACCELERATED = _speedups is not None

_IP_PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp"}
_Fragment = orjson.Fragment
ETHERTYPE_ARP = 0x0806
_ETHERTYPE_NAMES = {ETHERTYPE_IPV4: "ip", ETHERTYPE_IPV6: "ipv6", ETHERTYPE_ARP: "arp"}
_U16 = struct.Struct("!H").unpack_from
_PORTS = struct.Struct("!HH").unpack_from
MAX_CACHED_FLOWS = 8192      # derived per-flow values kept; past it the cache starts over
BATCH_DOCUMENTS = 1024       # documents packets_only_batches collects before handing them over
_ETHERNET_PLAIN = ("eth:ethertype", True)     # untagged Ethernet carrying IP or ARP
_PLAIN_ETHERTYPES = frozenset({0x0800, 0x86DD, 0x0806})
_EVENT = {"kind": "event", "category": ["network"], "type": ["connection"], "dataset": "packet"}


_mac = lru_cache(maxsize=4096)(format_mac)      # ECS's notation: 02-00-5E-10-00-00


@lru_cache(maxsize=4096)
def _macs(raw: bytes) -> tuple[str, str]:
    return _mac(raw[:6]), _mac(raw[6:12])


class PacketDocuments:
    """Builds and publishes one document per frame.

    What depends only on the flow (address text, ports, transport, stack,
    community id) is derived once and cached by the raw header bytes, at most
    MAX_CACHED_FLOWS entries. A document's `_id` is the capture source's hash,
    the packet time and the frame's number in its source: stable when the same
    capture is indexed again, distinct for every frame.
    """

    def __init__(self, builder: DocumentBuilder, publish: Callable[[str, Any], None],
                 udp_layers: dict[int, str], tunnels: bool = True, raw_json: bool = False) -> None:
        self.builder = builder
        self.tunnels = tunnels
        self.publish = publish
        self.udp_layers = udp_layers     # UDP port -> tshark name of the decoder routed there
        self.sources: dict[str, list] = {}      # source -> [frames seen, id prefix]
        self.flows: dict[tuple, tuple] = {}
        # The output takes pre-serialised JSON and nothing edits documents: the fast path is on.
        self.raw_json = raw_json and not (builder.processors or builder.fields or builder.tags
                                          or builder.fields_under_root)
        # (flow key, MACs, source) -> (JSON between the timestamp and network.bytes, JSON after it)
        self.templates: dict[tuple, tuple[bytes, bytes]] = {}
        self.fast, self.fast_ctx = _accelerator(builder, udp_layers, tunnels) if self.raw_json else (None, None)
        self.published = 0
        self.dropped = 0
        if self.fast is not None:
            self.on_frame = self._c_on_frame()      # type: ignore[method-assign]

    def counters(self) -> dict[str, int]:
        return {"packets.documents": self.published, "packets.documents_dropped": self.dropped}

    def source_state(self, source: str) -> list:
        """[frames seen, id prefix, `capture` as JSON] of a capture source, made at its first frame."""
        seen = self.sources.get(source)
        if seen is None:
            prefix = blake2b(id_source(source).encode(), digest_size=9).hexdigest()
            seen = self.sources[source] = [0, prefix,
                                           orjson.dumps({"capture": capture_fields(source)})[1:-1]]
        return seen

    def _c_on_frame(self) -> Callable[[float, int, bytes, Any, str], None]:
        """`on_frame` when the C `packet_doc` writes the documents: the same steps, with
        what every frame uses bound once (attribute lookups were a tenth of this path)."""
        sources, source_state, fast, ctx = self.sources, self.source_state, self.fast, self.fast_ctx
        publish, general, fragment = self.publish, self._general, _Fragment

        def on_frame(ts: float, linktype: int, data: bytes, located: Any, source: str) -> None:
            seen = sources.get(source) or source_state(source)
            n = seen[0]
            seen[0] = n + 1
            made = fast(ts, linktype, data, seen[2], seen[1], n, ctx)
            if made is None:
                general(ts, linktype, data, located, source, seen, n)
            else:
                self.published += 1
                publish(made[0], fragment(made[1]))
        return on_frame

    def on_frame(self, ts: float, linktype: int, data: bytes, located: Any, source: str) -> None:
        """Publish the document of one frame (`located`: wirebeat.framecore's answer)."""
        seen = self.sources.get(source) or self.source_state(source)
        n = seen[0]
        seen[0] = n + 1
        self._general(ts, linktype, data, located, source, seen, n)

    def _general(self, ts: float, linktype: int, data: bytes, located: Any, source: str,
                 seen: list, n: int) -> None:
        """The Python path: frame `n` of `source` (whose state is `seen`)."""
        template_key = None
        if (self.raw_json and located.__class__ is tuple and linktype == LINKTYPE_ETHERNET
                and not located[2] and (located[0] == ETHERTYPE_IPV4 or located[0] == ETHERTYPE_IPV6)):
            flow_key = _flow_key(data, located[1], located[0] == ETHERTYPE_IPV6)
            if flow_key is not None:
                template_key = (flow_key[0], data[:12], source)
                template = self.templates.get(template_key)
                if template is None and flow_key[0] not in self.flows:
                    template_key = None     # a flow's first frame: many flows have only one
                elif template is not None:
                    self.published += 1
                    self.publish(f"{seen[1]}-{round(ts * 1e6):x}-{n:x}", _Fragment(
                        b'{"@timestamp":"%s"%b%d%b' % (iso_time(ts).encode(), template[0], len(data),
                                                        template[1])))
                    return
        network: dict[str, Any] = {"bytes": len(data)}
        source_ep: dict[str, Any] = {}
        dest_ep: dict[str, Any] = {}
        stack = self._layers(linktype, data, located, network, source_ep, dest_ep, 0)
        if stack:
            network["protocol_stack"] = stack
        builder = self.builder
        shared = builder.shared_ok      # nothing edits documents: constant parts can be shared
        doc: dict[str, Any] = {"@timestamp": iso_time(ts), "type": "packet",
                               "event": _EVENT if shared else dict(_EVENT),
                               "network": network, "capture": capture_fields(source)}
        if source_ep:
            doc["source"] = source_ep
        if dest_ep:
            doc["destination"] = dest_ep
        if shared:
            doc["agent"], doc["ecs"] = builder.agent, builder.ecs
        else:
            doc["agent"], doc["ecs"] = dict(builder.agent), dict(builder.ecs)
        if not builder.decorate(doc):
            self.dropped += 1
            return
        self.published += 1
        doc_id = f"{seen[1]}-{round(ts * 1e6):x}-{n:x}"
        if template_key is None:
            self.publish(doc_id, doc)
            return
        raw = orjson.dumps(doc)
        flow = self.flows.get(template_key[0])
        if flow is not None and not flow[4]:      # a tunnel's documents are built per packet
            self._keep_template(template_key, raw, doc["@timestamp"], len(data))
        self.publish(doc_id, _Fragment(raw))

    def _keep_template(self, key: tuple, raw: bytes, stamp: str, nbytes: int) -> None:
        """Split a document's JSON around its two per-packet values and keep the rest."""
        head = b'{"@timestamp":"%s"' % stamp.encode()
        marker = b'"network":{"bytes":%d' % nbytes
        at = raw.find(marker, len(head))
        if not raw.startswith(head) or at < 0:
            return      # not the expected shape: this flow stays on the general path
        if len(self.templates) >= MAX_CACHED_FLOWS:
            self.templates.clear()
        cut = at + len(marker)
        self.templates[key] = (raw[len(head):cut - len(b"%d" % nbytes)], raw[cut:])

    def _layers(self, linktype: int, data: bytes, located: Any, network: dict[str, Any],
                source_ep: dict[str, Any], dest_ep: dict[str, Any], depth: int) -> str:
        """Fill the endpoint and network fields of one frame; return its protocol stack."""
        if (located.__class__ is tuple and linktype == LINKTYPE_ETHERNET and not located[2]
                and located[0] in _PLAIN_ETHERTYPES):
            link, complete = _ETHERNET_PLAIN
        else:
            link, complete = link_layers(linktype, data)
        stack = link
        if linktype == LINKTYPE_ETHERNET and len(data) >= 12:
            dest_ep["mac"], source_ep["mac"] = _macs(data[:12])
        elif linktype == LINKTYPE_LINUX_SLL and len(data) >= 16 and _U16(data, 4)[0] == 6:
            source_ep["mac"] = _mac(data[6:12])
        elif linktype == LINKTYPE_LINUX_SLL2 and len(data) >= 20 and data[11] == 6:
            source_ep["mac"] = _mac(data[12:18])
        if located.__class__ is not tuple:
            return stack
        ethertype, offset, vlans = located[0], located[1], located[2]   # (wirebeat.framecore adds the IP header)
        if vlans:
            network["vlan"] = {"id": str(vlans[0])}
            if len(vlans) > 1:
                network["inner"] = {"vlan": {"id": str(vlans[1])}}
        if not complete:
            return stack
        if ethertype in LINK_SHIMS:
            ethertype, offset, _names = peel_link(ethertype, data, offset)   # link_layers checked it
        if ethertype == ETHERTYPE_IPV4 or ethertype == ETHERTYPE_IPV6:
            flow = self._flow(data, offset, ethertype == ETHERTYPE_IPV6)
            if flow is None:
                return stack
            layers, net, src, dst, tunnel_at = flow
            stack = f"{link}:{layers}" if link else layers
            network.update(net)
            source_ep.update(src)
            dest_ep.update(dst)
            if tunnel_at and self.tunnels and depth < MAX_DEPTH:
                stack = self._tunnel(data, tunnel_at, net, stack, network, source_ep, dest_ep, depth)
        elif ethertype == ETHERTYPE_ARP:
            stack = f"{link}:arp" if link else "arp"
            _arp(data, offset, source_ep, dest_ep)
        return stack

    def _tunnel(self, data: bytes, tunnel_at: int, outer: dict[str, Any], stack: str,
                network: dict[str, Any], source_ep: dict[str, Any], dest_ep: dict[str, Any],
                depth: int) -> str:
        """Tunneled: the inner conversation's fields, outer then inner addresses in arrays."""
        proto = 17 if outer.get("transport") == "udp" else 47
        tunnel = decapsulate(proto, data[tunnel_at:])
        if tunnel is None or tunnel.__class__ is str:
            return stack
        kind, tunnel_id, tunnel_layers, inner_linktype, inner = tunnel
        inner_net: dict[str, Any] = {}
        inner_src: dict[str, Any] = {}
        inner_dst: dict[str, Any] = {}
        inner_stack = self._layers(inner_linktype, inner, locate_network(inner_linktype, inner),
                                   inner_net, inner_src, inner_dst, depth + 1)
        for key in ("transport", "community_id"):
            network.pop(key, None)
        network.update(inner_net)
        network["tunnel"] = {"type": kind, "id": tunnel_id}
        for outer_ep, inner_ep in ((source_ep, inner_src), (dest_ep, inner_dst)):
            outer_ep.pop("port", None)
            for key, value in inner_ep.items():
                if key in ("ip", "mac") and key in outer_ep:
                    outer_ep[key] = [*_as_list(outer_ep[key]), *_as_list(value)]
                else:
                    outer_ep[key] = value
        return _join_stack(stack, tunnel_layers, inner_stack)

    def _flow(self, data: bytes, offset: int, ipv6: bool) -> tuple | None:
        """(stack from the IP layer on, network fields, source fields, destination fields,
        offset of a possible tunnel header or 0)."""
        located = _flow_key(data, offset, ipv6)
        if located is None:
            return None
        key, transport_at = located
        flow = self.flows.get(key)
        if flow is None:
            if len(self.flows) >= MAX_CACHED_FLOWS:
                self.flows.clear()
            flow = self.flows[key] = self._derive(ipv6, *key)
        if flow[4]:
            return (*flow[:4], transport_at)
        return flow

    def _derive(self, ipv6: bool, proto: int, addresses: bytes, head: bytes) -> tuple:
        half = len(addresses) // 2
        sip, dip = ip_text(addresses[:half]), ip_text(addresses[half:])
        network: dict[str, Any] = {"type": "ipv6" if ipv6 else "ipv4"}
        src: dict[str, Any] = {"ip": sip}
        dst: dict[str, Any] = {"ip": dip}
        ip_layer = "ipv6" if ipv6 else "ip"
        transport = _IP_PROTOCOLS.get(proto)
        if proto == 47:
            return ip_layer, network, src, dst, True        # GRE: a tunnel, peeled per packet
        if transport is None or len(head) < 4:
            return ip_layer, network, src, dst, False
        network["transport"] = transport
        layers = [ip_layer, TRANSPORT_LAYERS[transport]]
        if proto == 6 or proto == 17:
            sport, dport = _PORTS(head)
            src["port"], dst["port"] = sport, dport
            if proto == 17:
                app = self.udp_layers.get(dport) or self.udp_layers.get(sport)
                if app:
                    layers.append(app)
        else:
            sport, dport = head[0], head[1]      # ICMP type and code
        network["community_id"] = community_id_packed(proto, addresses[:half], sport,
                                                      addresses[half:], dport)
        tunnel = proto == 17 and head[2:4] in TUNNEL_PORTS
        return ":".join(layers), network, src, dst, tunnel


def _accelerator(builder: DocumentBuilder, udp_layers: dict[int, str],
                 tunnels: bool) -> tuple[Callable | None, tuple | None]:
    """The C `packet_doc` and its constant arguments, or (None, None) without the extension
    (or with a decoder layer name the C code would have to escape in JSON)."""
    if _speedups is None or len(set(udp_layers.values())) > 254:
        return None, None
    names = sorted(set(udp_layers.values()))
    if any(not n.isascii() or orjson.dumps(n) != b'"%s"' % n.encode() for n in names):
        return None, None
    index = {name: i + 1 for i, name in enumerate(names)}
    table = bytearray(65536)
    for port, name in udp_layers.items():
        if 0 <= port < 65536:
            table[port] = index[name]
    agent = orjson.dumps({"agent": builder.agent, "ecs": builder.ecs})[1:-1]
    return _speedups.packet_doc, (bool(tunnels), bytes(table), (b"", *(n.encode() for n in names)),
                                  orjson.dumps(_EVENT), agent)


def _flow_key(data: bytes, offset: int, ipv6: bool) -> tuple[tuple, int] | None:
    """((protocol, packed addresses, first 4 transport bytes), transport offset) of an IP
    packet at `offset`; the protocol is -1 for a non-first fragment. None when truncated."""
    if ipv6:
        if len(data) < offset + 40:
            return None
        transport_at = offset + 40
        return (data[offset + 6], data[offset + 8:transport_at],
                data[transport_at:transport_at + 4]), transport_at
    if len(data) < offset + 20:
        return None
    proto = data[offset + 9]
    transport_at = offset + (data[offset] & 0x0F) * 4
    if _U16(data, offset + 6)[0] & 0x3FFF or transport_at < offset + 20:
        proto = -1      # a fragment: its transport header is in the first one only
    return (proto, data[offset + 12:offset + 20], data[transport_at:transport_at + 4]), transport_at


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _join_stack(*parts: str) -> str:
    return ":".join(p for p in parts if p)


def _arp(data: bytes, offset: int, source_ep: dict[str, Any], dest_ep: dict[str, Any]) -> None:
    # RFC 826 over Ethernet/IPv4: sender and target protocol addresses.
    if len(data) >= offset + 28 and data[offset + 4] == 6 and data[offset + 5] == 4:
        source_ep["ip"] = ip_text(data[offset + 14:offset + 18])
        dest_ep["ip"] = ip_text(data[offset + 24:offset + 28])


def packets_only_batches(engine: Any) -> Callable[[list, str], None] | None:
    """`Engine.on_batch` when per-packet documents are all the engine makes of a frame
    (see the module's docstring), else None (the run loop then calls on_frame per frame)."""
    docs = engine.packet_docs
    batch_docs = getattr(_speedups, "packet_batch", None)
    if (docs is None or docs.fast is None or batch_docs is None or engine.decoding
            or engine.flows_enabled or not (engine.dedup is None or isinstance(engine.dedup, _speedups.Dedup))):
        return None
    publish_many, ctx = engine.pipeline.publish_many, docs.fast_ctx

    def on_batch(batch: list, source: str) -> None:
        if batch.__class__ is not list:
            for ts, linktype, data, _wire_len in batch:
                engine.on_frame(ts, linktype, data, source)
            return
        state = engine.sources.get(source) or engine._source(source)
        seen = docs.sources.get(source) or docs.source_state(source)
        start, end = 0, len(batch)
        while start < end:
            out: list = []
            stop, nbytes, untracked = batch_docs(batch, start, BATCH_DOCUMENTS, state.next_tick, seen[2],
                                                 seen[1], seen[0], ctx, state.dedup, source, _Fragment, out)
            done = stop - start
            seen[0] += done
            docs.published += done
            engine.packets += done
            engine.bytes += nbytes
            engine.tcp_untracked += untracked
            if out:
                publish_many(out)
            if stop < end and done < BATCH_DOCUMENTS:      # a frame C left to the engine
                ts, linktype, data, _wire_len = batch[stop]
                engine.on_frame(ts, linktype, data, source)
                stop += 1
            start = stop
    return on_batch
