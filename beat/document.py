"""From a decoder's Transaction to the document that is indexed.

The engine fills what every packetbeat transaction carries (section (a) and
(c) of the field reference): @timestamp, event.*, network.*, the four
endpoints, related.ip, error.message, capture.source, agent and ecs; the
decoder's `document()` adds its protocol's fields and may override any of
these (DHCPv4 sets its own client and server).

`document_id` is derived from what identifies the transaction, never from the
wall clock, so indexing the same capture twice, or retrying a bulk request,
overwrites instead of duplicating.
"""
from __future__ import annotations

import binascii
import socket
import struct
from functools import lru_cache
from typing import Any

import orjson

from wirebeat.accel import doctext, speedups
from wirebeat.decoders.api import DecoderSpec, FlowKey, Transaction, format_mac, iso_time
from wirebeat.direction import NetworkDirection
from wirebeat.hashes import blake2b
from wirebeat.processors import Processors, compile_processors
from wirebeat.stack import transaction_stack

__all__ = ["ECS_VERSION", "DocumentBuilder", "capture_fields", "id_source", "community_id", "community_id_packed", "document_id",
           "iso_time"]

ECS_VERSION = "8.17.0"
_ECS = {"version": ECS_VERSION}
_IANA = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58}
_SEED = struct.pack("!H", 0)
_PORTS = struct.Struct("!HH")


@lru_cache(maxsize=8192)    # flows repeat within seconds: hash each one once
def community_id(transport: str, client_ip: str, client_port: int, server_ip: str,
                 server_port: int) -> str | None:
    """Community ID v1, seed 0 (corelight's spec); for ICMP the ports are the type and code.

    The hash is done here because the `communityid` package costs ~50 us per
    flow (input validation), which was 40% of the file -> console time on the
    benchmark. tests/beat/test_community_id.py checks every result against the
    package, ICMP types and codes included (see _ICMP_PEERS).
    """
    proto = _IANA.get(transport)
    if proto is None:
        return None
    family = socket.AF_INET6 if ":" in client_ip else socket.AF_INET
    try:
        saddr = socket.inet_pton(family, client_ip)
        daddr = socket.inet_pton(family, server_ip)
    except OSError:
        return None
    return community_id_packed(proto, saddr, client_port, daddr, server_port)


# ICMP (1) and ICMPv6 (58): the message type that answers a type (the spec's, from Zeek:
# echo, timestamp, information, router and address mask; echo, group membership, router,
# neighbour, node information and home agent discovery). Such a pair is ordered as a
# two-way flow with ports (type, answer); any other type is one-way with ports
# (type, code). As beat/_cid.h's icmp_peer. Written out, not read from the `communityid`
# package: importing it (stdlib logging, string ...) was ~33 M instructions of every start-up.
_ICMP_PEERS = {
    1: {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17},
    58: {128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133, 135: 136, 136: 135,
         139: 140, 140: 139, 144: 145, 145: 144},
}


def community_id_packed(proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int) -> str:
    """`community_id` of packed addresses and an IANA protocol number (1, 6, 17 or 58):
    flows hold addresses packed, and their ids are unique, so no text and no cache."""
    one_way = False
    peers = _ICMP_PEERS.get(proto)
    if peers is not None:
        peer = peers.get(sport)
        if peer is None:
            one_way = True
        else:
            dport = peer
    # Both directions of a flow hash alike: the smaller endpoint goes first.
    if not (one_way or saddr < daddr or (saddr == daddr and sport < dport)):
        saddr, daddr, sport, dport = daddr, saddr, dport, sport
    import hashlib      # (only here: its import loads OpenSSL, wirebeat.hashes)
    digest = hashlib.sha1(_SEED + saddr + daddr + bytes((proto, 0))
                          + _PORTS.pack(sport, dport)).digest()
    return "1:" + binascii.b2a_base64(digest, newline=False).decode()


community_id_packed_python = community_id_packed    # the reference the C version is tested against
if speedups is not None:    # the same hash in C: a flow's id is worked out once per flow
    community_id_packed = speedups.community_id     # noqa: F811


COLLECTOR_SEPARATOR = "\0"      # in a source key: "<client>\0<collector endpoint>"


def capture_fields(source: str) -> dict[str, str]:
    """`capture.*` of a capture source key. A collector client's key names its
    collector too (wirebeat.sources.zmq), so two collectors' clients of the same
    name never share decoding state; documents show both parts apart."""
    if COLLECTOR_SEPARATOR in source:
        client, _, collector = source.rpartition(COLLECTOR_SEPARATOR)
        return {"source": client, "collector": collector}
    return {"source": source}


def id_source(source: str) -> str:
    """What `_id`s (and flow.id) take of a capture source key: a collector client's
    name without its collector, so the same frames get the same ids whichever
    endpoint string reached the collector (a restart, another process)."""
    return source.rpartition(COLLECTOR_SEPARATOR)[0] if COLLECTOR_SEPARATOR in source else source


def document_id(source: str, flow: FlowKey, ts: float, dataset: str, identity: str) -> str:
    """A stable _id: same capture, same transaction, same id."""
    return document_id_from(_id_prefix(source, flow, dataset), ts, identity)


def _id_prefix(source: str, flow: FlowKey, dataset: str) -> str:
    return (f"{id_source(source)}|{dataset}|{flow.transport}|{flow.client_ip}|{flow.client_port}|"
            f"{flow.server_ip}|{flow.server_port}|")


def document_id_from(prefix: str, ts: float, identity: str) -> str:
    key = f"{prefix}{round(ts * 1e6)}|{identity}"
    # base64.urlsafe_b64encode, without its two Python-level calls per id
    return binascii.b2a_base64(_blake2b(key.encode(), digest_size=15).digest(),
                               newline=False).translate(_URLSAFE).decode()


_blake2b = blake2b
_URLSAFE = bytes.maketrans(b"+/", b"-_")


@lru_cache(maxsize=8192)    # what depends only on the flow, computed once per flow
def _flow_parts(flow: FlowKey, protocol: str, dataset: str) -> tuple[dict[str, Any], tuple[str, ...], str]:
    network: dict[str, Any] = {"transport": flow.transport,
                               "type": "ipv6" if ":" in flow.client_ip else "ipv4"}
    if protocol:
        network["protocol"] = protocol
    cid = community_id(flow.transport, flow.client_ip, flow.client_port,
                       flow.server_ip, flow.server_port)
    if cid:
        network["community_id"] = cid
    related = (flow.client_ip,) if flow.client_ip == flow.server_ip else (flow.client_ip, flow.server_ip)
    return network, related, _id_prefix(flow.source, flow, dataset)


def _flow_text(flow: FlowKey, protocol: str, dataset: str) -> tuple[str, tuple[str, ...], str]:
    """`_flow_parts` for whole_text, uncached (NetFlow records seldom repeat a flow): the
    network object's JSON text without its closing brace, and without "transport" when
    the flow has none; related addresses; the _id prefix."""
    transport, client_ip, server_ip = flow.transport, flow.client_ip, flow.server_ip
    v6 = ":" in client_ip
    text = (f'{{"transport":{orjson.dumps(transport).decode()},"type":"{"ipv6" if v6 else "ipv4"}"'
            if transport else f'{{"type":"{"ipv6" if v6 else "ipv4"}"')
    if protocol:
        text += f',"protocol":{orjson.dumps(protocol).decode()}'
    proto = _IANA.get(transport)
    if proto is not None:
        family = socket.AF_INET6 if v6 else socket.AF_INET
        try:
            text += (',"community_id":"' + community_id_packed(
                proto, socket.inet_pton(family, client_ip), flow.client_port,
                socket.inet_pton(family, server_ip), flow.server_port) + '"')
        except OSError:
            pass
    related = (client_ip,) if client_ip == server_ip else (client_ip, server_ip)
    return text, related, _id_prefix(flow.source, flow, dataset)


def _endpoint(ip: str, port: int, nbytes: int | None, with_port: bool) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"ip": ip}
    if with_port:
        endpoint["port"] = port
    if nbytes is not None:
        endpoint["bytes"] = nbytes
    return endpoint


def merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    """Deep-merge `extra` into `into`; values of `extra` win, and None removes a key.

    None lets a decoder take away a common field that does not apply (DHCPv4
    replies have no client.bytes).
    """
    for key, value in extra.items():
        current = into.get(key)
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            merge(current, value)
        else:
            into[key] = value


def _add_outer(doc: dict[str, Any], tunnel: tuple) -> None:
    """Tunneled traffic: outer then inner IPs in arrays (as packetbeat does), the tunnel's type and id."""
    kind, tunnel_id, client_outer, server_outer, _link = tunnel
    for name, outer in (("source", client_outer), ("client", client_outer),
                        ("destination", server_outer), ("server", server_outer)):
        doc[name]["ip"] = [outer, doc[name]["ip"]]
    doc["network"]["tunnel"] = {"type": kind, "id": tunnel_id}
    doc["related"]["ip"] = list(dict.fromkeys([client_outer, server_outer, *doc["related"]["ip"]]))


def _tunnel_of(tunnels: dict[tuple[str, str, str], tuple], flow: FlowKey) -> tuple | None:
    """The tunnel the flow's packets came through, outer addresses in client, server order."""
    tunnel = tunnels.get((flow.source, flow.client_ip, flow.server_ip))
    if tunnel is None:
        reverse = tunnels.get((flow.source, flow.server_ip, flow.client_ip))
        if reverse is not None:
            tunnel = (reverse[0], reverse[1], reverse[3], reverse[2], reverse[4])
    return tunnel


def _event_base(dataset: str) -> dict[str, Any]:
    return {"kind": "event", "category": ["network"], "type": ["connection", "protocol"],
            "dataset": dataset}


def _event(dataset: str, txn: Transaction, start: str) -> dict[str, Any]:
    """event.* of a transaction document."""
    event = _event_base(dataset)
    if txn.request_bytes is None and txn.response_bytes is not None and txn.end_ts is None:
        event["end"] = start    # a response without its request: packetbeat sets event.end only
    else:
        event["start"] = start
        if txn.end_ts is not None:
            event["end"] = iso_time(txn.end_ts)
            if txn.end_ts >= txn.ts:
                # Microsecond precision: what pcap timestamps and float seconds hold exactly.
                event["duration"] = round((txn.end_ts - txn.ts) * 1e6) * 1000
    return event


# The text path (DocumentBuilder._build_text). A decoder's part that sets one of these
# top-level keys goes through the dict path: they are not merged on the text path.
_FALLBACK_KEYS = frozenset(("@timestamp", "type", "status", "capture", "agent", "ecs", "flow",
                            "error", "fields", "tags"))
# Common objects a decoder's part may add to (merged on the text path, one by one).
_COMMON_KEYS = frozenset(("event", "network", "source", "destination", "client", "server",
                          "related"))
# dataset (or dataset and a decoder's event value) -> '{"kind":"event",...,"dataset":"dns",'
_EVENT_HEADS: dict[Any, str] = {}
_EVENT_HEAD_KEYS = frozenset(_event_base(""))
_ENDPOINT_KEYS = frozenset(("ip", "port", "bytes", "mac"))
_NETWORK_KEYS = frozenset(("transport", "type", "protocol", "community_id", "protocol_stack",
                           "direction", "bytes"))
_V4_TYPE, _V6_TYPE = '"ipv4"', '"ipv6"'
_APPENDED = ("network", "source", "destination", "client", "server")   # _doctext.assemble's appends
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_inet_pton = socket.inet_pton
_b2a_base64 = binascii.b2a_base64
_dumps = orjson.dumps
_Fragment = orjson.Fragment
# JSON text of strings the text path writes again and again (addresses, names): at most
# TEXT_CACHE_SIZE each; a full one starts over.
TEXT_CACHE_SIZE = 16384
_quoted: dict[str, str] = {}
_MACS: dict[bytes, str] = {}


def _quote(text: str) -> str:
    if len(_quoted) >= TEXT_CACHE_SIZE:
        _quoted.clear()
    quoted = _quoted[text] = _dumps(text).decode()
    return quoted


def _mac_text(address: bytes) -> str:
    if len(_MACS) >= TEXT_CACHE_SIZE:
        _MACS.clear()
    text = _MACS[address] = format_mac(address)
    return text


def _event_head(dataset: str) -> str:
    head = _EVENT_HEADS[dataset] = _dumps(_event_base(dataset)).decode()[:-1] + ","
    return head


def _merged_text(value: dict[str, Any], common: dict[str, Any]) -> str:
    """A common object's text after merge() of the decoder's value for it."""
    merge(common, value)
    return _dumps(common).decode()


def _extended(text: str, value: dict[str, Any], keys: frozenset[str]) -> str:
    """`_merged_text` of a common object held as text: keys it lacks are appended (HTTP's
    destination.domain), anything else goes through merge()."""
    if keys.isdisjoint(value) and None not in value.values():
        return text[:-1] + "," + _dumps(value).decode()[1:] if value else text
    return _merged_text(value, orjson.loads(text))


def _merged_event(dataset: str, value: dict[str, Any], times: str) -> str | None:
    """event's text when the decoder's part only changes its head (ICMP's event.type):
    the merged head is cached per decoder and value; None for anything else."""
    key = (dataset, _dumps(value))
    head = _EVENT_HEADS.get(key)
    if head is None:
        if not _EVENT_HEAD_KEYS.issuperset(value):
            return None
        base = _event_base(dataset)
        merge(base, value)
        if len(_EVENT_HEADS) >= TEXT_CACHE_SIZE:
            _EVENT_HEADS.clear()
        head = _EVENT_HEADS[key] = _dumps(base).decode()[:-1] + ","
        if head == "{,":
            head = "{"
    return head + times


class DocumentBuilder:
    """Builds (id, document) for transactions; holds agent identity and processors."""

    def __init__(self, agent: dict[str, Any], processors: Processors | list[dict[str, Any]],
                 fields: dict[str, Any], fields_under_root: bool, tags: list[str]) -> None:
        self.agent = agent
        if not isinstance(processors, Processors):
            processors = compile_processors(processors)
        self.processors = processors
        self.fields = fields
        self.fields_under_root = fields_under_root
        self.tags = tags
        # agent and ecs are the same for every document: share the dicts unless
        # something could change one document's copy (processors, root fields).
        self.shared_ok = not processors and not fields_under_root
        self.ecs = _ECS
        # Link layers of the packet being processed, for network.protocol_stack
        # (set by the engine before it builds; see wirebeat.stack).
        self.link: tuple[str, bool] = ("", False)
        # Tunneled conversations seen by the engine: (source, inner sender, inner receiver) ->
        # (type, id, outer sender, outer receiver, link layers up to the inner network layer).
        self.tunnels: dict[tuple[str, str, str], tuple] = {}
        # Tags and fields of one capture source (a NetFlow listener's), by source name.
        self.per_source: dict[str, tuple[list[str], dict[str, Any]]] = {}
        # network.direction from the addresses (wirebeat.direction), set by the engine.
        self.direction: NetworkDirection | None = None
        # The output takes ready JSON text (orjson.Fragment), set by the engine: a spec's
        # whole_text may then build the text directly; its per-source parts are cached here.
        self.text_ok = False
        self.text_parts: dict[str, tuple[str, str]] = {}

    def build(self, spec: DecoderSpec, txn: Transaction, flow_id: str | None = None,
              macs: tuple[bytes, bytes] | None = None,
              ) -> tuple[str, dict[str, Any] | orjson.Fragment] | None:
        """(id, document), or None when a processor dropped it; `flow_id` is the flow.id
        of the transaction's flow report, `macs` the client's and server's MAC addresses.

        When the output takes ready JSON and nothing edits documents (`text_ok`,
        `shared_ok`), the document is its JSON text (orjson.Fragment, `_build_text`);
        the dicts below stay the reference it is tested against (tests/beat/test_doctext.py).
        """
        if spec.whole_document is not None and not self.tunnels:
            return self._build_whole(spec, txn)
        flow = txn.flow
        tunnel = _tunnel_of(self.tunnels, flow) if self.tunnels else None
        if spec.document_text is not None and tunnel is None and self.text_ok and self.shared_ok \
                and doctext is not None:
            # The decoder's part as text at once (DecoderSpec.document_text): no dicts
            text = spec.document_text(txn)
            if text is not None:
                event, own, related = text
                name = spec.name
                head = (_EVENT_HEADS.get(name) or _event_head(name) if event is None else
                        _EVENT_HEADS.get((name, event)) or _merged_event(name, orjson.loads(event), ""))
                if head is not None:
                    built = self._build_text_c(spec, txn, flow_id, macs, None, head, own, related)
                    if built is not None:
                        return built
        extra = spec.document(txn)
        if self.text_ok and self.shared_ok and tunnel is None and _FALLBACK_KEYS.isdisjoint(extra):
            built = self._build_text(spec, txn, flow_id, macs, extra)
            if built is not None:
                return built
        protocol = spec.name if spec.network_protocol is None else spec.network_protocol
        network_base, related_ip, id_prefix = _flow_parts(flow, protocol, spec.name)
        with_ports = flow.transport in ("tcp", "udp")
        start = iso_time(txn.ts)
        event = _event(spec.name, txn, start)
        source = _endpoint(flow.client_ip, flow.client_port, txn.request_bytes, with_ports)
        destination = _endpoint(flow.server_ip, flow.server_port, txn.response_bytes, with_ports)
        if macs is not None:
            source["mac"], destination["mac"] = format_mac(macs[0]), format_mac(macs[1])
        network = dict(network_base)
        link = self.link if tunnel is None else tunnel[4]
        stack = transaction_stack(link, ":" in flow.client_ip, flow.transport, spec.name)
        if stack:
            network["protocol_stack"] = stack
        if self.direction is not None:
            network["direction"] = self.direction(flow.client_ip, flow.server_ip)
        if txn.request_bytes is not None or txn.response_bytes is not None:
            network["bytes"] = (txn.request_bytes or 0) + (txn.response_bytes or 0)
        doc: dict[str, Any] = {
            "@timestamp": start,
            "type": spec.name,
            "status": txn.status,
            "event": event,
            "network": network,
            "source": source,
            "destination": destination,
            "client": dict(source),
            "server": dict(destination),
            "related": {"ip": list(related_ip)},
            "capture": capture_fields(flow.source),
            "agent": self.agent if self.shared_ok else dict(self.agent),
            "ecs": _ECS if self.shared_ok else dict(_ECS),
        }
        if flow_id is not None:
            doc["flow"] = {"id": flow_id}
        if txn.notes:
            doc["error"] = {"message": txn.notes[0] if len(txn.notes) == 1 else list(txn.notes)}
        if tunnel is not None:
            _add_outer(doc, tunnel)
        merge(doc, extra)
        if not self.decorate(doc):
            return None
        if self.per_source:
            self._decorate_source(doc, flow.source)
        return document_id_from(id_prefix, txn.ts, txn.identity), doc

    def _build_text(self, spec: DecoderSpec, txn: Transaction, flow_id: str | None,
                    macs: tuple[bytes, bytes] | None, extra: dict[str, Any],
                    ) -> tuple[str, orjson.Fragment] | None:
        """`build`'s document as JSON text (orjson.Fragment), or None for the dict path:
        the C accelerator puts it together when it can (`_build_text_c`), else
        `_build_text_python`, the reference."""
        if doctext is not None:
            built = self._build_text_c(spec, txn, flow_id, macs, extra)
            if built is not None:
                return built
        return self._build_text_python(spec, txn, flow_id, macs, extra)

    def _build_text_c(self, spec: DecoderSpec, txn: Transaction, flow_id: str | None,
                      macs: tuple[bytes, bytes] | None, extra: dict[str, Any] | None,
                      event_head: str | None = None, own: bytes | None = None,
                      related: str | None = None) -> tuple[str, orjson.Fragment] | None:
        """`_build_text_python`'s text with the writing done by wirebeat._doctext.assemble
        (times, community id, MAC text and, from its ranges, the direction too); here only
        what needs Python (stack, the decoder's part). None when the decoder's part changes a common
        object other than by adding keys (a merge), or when the C function declines
        (unusual values): then `_build_text_python` does it all. tests/beat/test_doctext_c.py compares the two.
        With `extra` None the decoder's part is ready as text (DecoderSpec.document_text):
        the event's head, `own`, the part's JSON, and `related`, its related object's."""
        name = spec.name
        appends = None
        if extra is not None:
            event_head = _EVENT_HEADS.get(name) or _event_head(name)
            part: dict[str, Any] = extra
            if not _COMMON_KEYS.isdisjoint(extra):
                part = {}
                added = None    # network, source, destination, client, server: made when one is set
                for key, value in extra.items():
                    if key not in _COMMON_KEYS:
                        part[key] = value
                        continue
                    if value is None or value.__class__ is not dict:
                        return None
                    if key == "event":      # (the cached head at once)
                        head = _EVENT_HEADS.get((name, _dumps(value))) or _merged_event(name, value, "")
                        if head is None:
                            return None
                        event_head = head
                    elif key == "related":
                        if next(iter(value), None) != "ip" or None in value.values():
                            return None
                        related = _dumps(value).decode()
                    else:
                        slot = _APPENDED.index(key)
                        if not (_NETWORK_KEYS if slot == 0 else _ENDPOINT_KEYS).isdisjoint(value) \
                                or None in value.values():
                            return None
                        if value:
                            if added is None:
                                added = ["", "", "", "", ""]
                            added[slot] = "," + _dumps(value).decode()[1:-1]
                if added is not None:
                    appends = tuple(added)
            if part:
                if None in part.values():       # merge() takes a None as "no such key"
                    part = {key: value for key, value in part.items() if value is not None}
                own = _dumps(part)
        flow = txn.flow
        client_ip = flow.client_ip
        notes = txn.notes
        parts = self.text_parts.get(flow.source) or self._text_parts(flow.source)
        direction = self.direction
        built = doctext.assemble(
            txn, name, name if spec.network_protocol is None else spec.network_protocol,
            transaction_stack(self.link, ":" in client_ip, flow.transport, name),
            # (the direction worked out in C from its ranges when it has them)
            None if direction is None else direction.packed_ranges or direction.of(client_ip, flow.server_ip),
            macs, event_head, related, appends, flow_id,
            b',"error":' + _dumps({"message": notes[0] if len(notes) == 1 else list(notes)}) if notes else None,
            own, parts[0], parts[1])
        return None if built is None else (built[0], _Fragment(built[1]))

    def _build_text_python(self, spec: DecoderSpec, txn: Transaction, flow_id: str | None,
                           macs: tuple[bytes, bytes] | None, extra: dict[str, Any],
                           ) -> tuple[str, orjson.Fragment] | None:
        """`build`'s document as JSON text, the bytes orjson makes of the dict `build` makes:
        the common fields are written as text, in the dict's key order; a common object the
        decoder's part also sets (ICMP's event.type, DNS's and HTTP's related, HTTP's
        destination.domain) is made as the dict path makes it, merged and serialised; the
        decoder's other fields are serialised once, appended in their order, then what
        decorate() adds (fields, tags). Transactions seldom share a flow (a DNS query per
        client port), so nothing here is cached per flow: per address and per MAC only."""
        flow = txn.flow
        name = spec.name
        client_ip, server_ip, transport = flow.client_ip, flow.server_ip, flow.transport
        q = _quoted
        cq = q.get(client_ip) or _quote(client_ip)
        sq = q.get(server_ip) or _quote(server_ip)
        v6 = ":" in client_ip
        request_bytes, response_bytes, end_ts = txn.request_bytes, txn.response_bytes, txn.end_ts
        start = iso_time(txn.ts)
        # network: as _flow_parts, then the stack, direction and bytes
        protocol = name if spec.network_protocol is None else spec.network_protocol
        network = (f'{{"transport":{q.get(transport) or _quote(transport)},'
                   f'"type":{_V6_TYPE if v6 else _V4_TYPE}')
        if protocol:
            network += ',"protocol":' + (q.get(protocol) or _quote(protocol))
        proto = _IANA.get(transport)
        if proto is not None:
            try:
                family = _AF_INET6 if v6 else _AF_INET
                network += (',"community_id":"' + community_id_packed(
                    proto, _inet_pton(family, client_ip), flow.client_port,
                    _inet_pton(family, server_ip), flow.server_port) + '"')
            except OSError:
                pass
        stack = transaction_stack(self.link, v6, transport, name)
        if stack:
            network += ',"protocol_stack":' + (q.get(stack) or _quote(stack))
        if self.direction is not None:
            network += ',"direction":"' + self.direction(client_ip, server_ip) + '"'
        if request_bytes is not None or response_bytes is not None:
            network += f',"bytes":{(request_bytes or 0) + (response_bytes or 0)}}}'
        else:
            network += "}"
        # the endpoints: source and client alike, destination and server alike
        if transport == "tcp" or transport == "udp":
            source = f'{{"ip":{cq},"port":{flow.client_port}'
            destination = f'{{"ip":{sq},"port":{flow.server_port}'
        else:
            source, destination = '{"ip":' + cq, '{"ip":' + sq
        if request_bytes is not None:
            source += f',"bytes":{request_bytes}'
        if response_bytes is not None:
            destination += f',"bytes":{response_bytes}'
        if macs is not None:
            source += ',"mac":"' + (_MACS.get(macs[0]) or _mac_text(macs[0])) + '"}'
            destination += ',"mac":"' + (_MACS.get(macs[1]) or _mac_text(macs[1])) + '"}'
        else:
            source += "}"
            destination += "}"
        # event: its head is the same for every document of a decoder
        if request_bytes is None and response_bytes is not None and end_ts is None:
            times = f'"end":"{start}"}}'
        elif end_ts is not None:
            if end_ts >= txn.ts:
                times = (f'"start":"{start}","end":"{iso_time(end_ts)}",'
                         f'"duration":{round((end_ts - txn.ts) * 1e6) * 1000}}}')
            else:
                times = f'"start":"{start}","end":"{iso_time(end_ts)}"}}'
        else:
            times = f'"start":"{start}"}}'
        related = (f'{{"ip":[{cq}]}}' if client_ip == server_ip else f'{{"ip":[{cq},{sq}]}}')
        client, server = source, destination
        own, event = extra, None
        if not _COMMON_KEYS.isdisjoint(extra):
            # The decoder sets part of a common object: that object as merge() leaves it.
            own = {}
            for key, value in extra.items():
                if key not in _COMMON_KEYS:
                    own[key] = value
                    continue
                if value is None or value.__class__ is not dict:
                    return None         # a common object taken away or replaced: the dict path
                if key == "event":
                    event = _merged_event(name, value, times) or _merged_text(
                        value, _event(name, txn, start))
                elif key == "related":
                    # DNS's and HTTP's: every address, the flow's first (merge() keeps "ip" first)
                    if next(iter(value), None) == "ip" and None not in value.values():
                        related = _dumps(value).decode()
                    else:
                        related = _merged_text(value, {"ip": [client_ip] if client_ip == server_ip
                                                       else [client_ip, server_ip]})
                elif key == "network":
                    network = _extended(network, value, _NETWORK_KEYS)
                elif key == "source":
                    source = _extended(source, value, _ENDPOINT_KEYS)
                elif key == "destination":
                    destination = _extended(destination, value, _ENDPOINT_KEYS)
                elif key == "client":
                    client = _extended(client, value, _ENDPOINT_KEYS)
                else:       # server
                    server = _extended(server, value, _ENDPOINT_KEYS)
        if event is None:
            event = (_EVENT_HEADS.get(name) or _event_head(name)) + times
        parts = self.text_parts.get(flow.source) or self._text_parts(flow.source)
        text = (f'{{"@timestamp":"{start}","type":{q.get(name) or _quote(name)},'
                f'"status":{q.get(txn.status) or _quote(txn.status)},"event":{event},'
                f'"network":{network},"source":{source},"destination":{destination},'
                f'"client":{client},"server":{server},"related":{related}{parts[0]}')
        pieces = [text.encode()]
        if flow_id is not None:
            pieces.append(b',"flow":{"id":' + _dumps(flow_id) + b"}")
        if txn.notes:
            notes = txn.notes
            pieces.append(b',"error":' + _dumps({"message": notes[0] if len(notes) == 1 else list(notes)}))
        if own:
            if None in own.values():        # merge() takes a None as "no such key"
                own = {key: value for key, value in own.items() if value is not None}
            body = _dumps(own)
            if len(body) > 2:
                pieces.append(b"," + body[1:-1])
        pieces.append(b"}" if parts[1] == "}" else parts[1].encode())
        # document_id_from(_id_prefix(...), ...) in one string
        source = flow.source
        key = (f"{source.rpartition(COLLECTOR_SEPARATOR)[0] if COLLECTOR_SEPARATOR in source else source}|"
               f"{name}|{transport}|{client_ip}|{flow.client_port}|{server_ip}|{flow.server_port}|"
               f"{round(txn.ts * 1e6)}|{txn.identity}")
        return (_b2a_base64(_blake2b(key.encode(), digest_size=15).digest(), newline=False)
                .translate(_URLSAFE).decode(), _Fragment(b"".join(pieces)))

    def _build_whole(self, spec: DecoderSpec, txn: Transaction) -> tuple[str, dict[str, Any]] | None:
        """`build` for a spec with `whole_document`: no endpoints, event or network to
        fill and take away again, no merge (NetFlow's ~100k records/s need it)."""
        flow = txn.flow
        protocol = spec.name if spec.network_protocol is None else spec.network_protocol
        if self.text_ok and self.shared_ok and spec.whole_text is not None:
            network_text, related_ip, id_prefix = _flow_text(flow, protocol, spec.name)
            parts = self.text_parts.get(flow.source) or self._text_parts(flow.source)
            return document_id_from(id_prefix, txn.ts, txn.identity), orjson.Fragment(
                spec.whole_text(txn, network_text, related_ip, parts[0], parts[1]))
        network, related_ip, id_prefix = _flow_parts(flow, protocol, spec.name)
        common = {"capture": capture_fields(flow.source),
                  "agent": self.agent if self.shared_ok else dict(self.agent),
                  "ecs": _ECS if self.shared_ok else dict(_ECS)}
        doc = spec.whole_document(txn, network, related_ip, common)
        if not self.decorate(doc):
            return None
        if self.per_source:
            self._decorate_source(doc, flow.source)
        return document_id_from(id_prefix, txn.ts, txn.identity), doc

    def _text_parts(self, source: str) -> tuple[str, str]:
        """whole_text's `common` and `tail` for one source: capture, agent and ecs; then what
        decorate() adds at the end of a document (fields, tags), as JSON text."""
        common = orjson.dumps({"capture": capture_fields(source), "agent": self.agent, "ecs": _ECS})
        added: dict[str, Any] = {}
        self.decorate(added)            # no processors here (shared_ok)
        if self.per_source:
            self._decorate_source(added, source)
        tail = "," + orjson.dumps(added).decode()[1:] if added else "}"
        if len(self.text_parts) >= 1024:    # one entry per capture source; a cap all the same
            self.text_parts.clear()
        parts = self.text_parts[source] = ("," + common.decode()[1:-1], tail)
        return parts

    def _decorate_source(self, doc: dict[str, Any], source: str) -> None:
        """A listener's own tags and fields (under `fields`, as Filebeat's input-level ones)."""
        extra = self.per_source.get(source)
        if extra is None:
            return
        tags, fields = extra
        if tags:
            doc["tags"] = list(dict.fromkeys([*doc.get("tags", ()), *tags]))
        if fields:
            if self.fields_under_root:
                merge(doc, fields)
            else:
                merged = dict(doc.get("fields") or {})
                merge(merged, fields)
                doc["fields"] = merged

    def build_other(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """A document that is not a transaction (a collector event, wirebeat's own stats):
        adds agent, ecs, fields, tags and processors as `build` does; None if dropped."""
        doc["agent"] = self.agent if self.shared_ok else dict(self.agent)
        doc["ecs"] = _ECS if self.shared_ok else dict(_ECS)
        return doc if self.decorate(doc) else None

    def decorate(self, doc: dict[str, Any]) -> bool:
        """Add fields and tags, run the processors; False if a processor dropped the document."""
        if self.fields:
            if self.fields_under_root:
                merge(doc, self.fields)
            else:
                doc["fields"] = dict(self.fields)
        if self.tags:
            doc["tags"] = list(self.tags)
        return self.processors.run(doc) if self.processors else True
