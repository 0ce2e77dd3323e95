"""The engine: frames in, documents out.

Per frame: link layer -> IPv4/IPv6 -> defragmentation -> tunnels (VXLAN,
GENEVE, GRE, ERSPAN: the inner frame goes round the same steps, see
wirebeat.tunnels) -> transport -> the decoder chosen by port (UDP; TCP
through wirebeat.tcp's reassembly, one StreamDecoder per connection) or IP
protocol (ICMP) -> transactions -> documents -> pipeline. With
`wirebeat.packets.enabled`, every frame also becomes a document
(wirebeat.packets). A UDP flow on no configured port is offered, on its
first datagram, to what decoders announced in-band (`Expectations`) and
then to the enabled heuristics (`DecoderSpec.probe`); the answer is cached in
the flow table. A flow the heuristics turned down is offered again on a few
later datagrams (`reprobe_due`): WebRTC sends STUN and DTLS before RTP. A TCP
connection on no configured port is offered, by its first payload, to the
enabled stream detectors (`DecoderSpec.detect`). `on_frame` runs once per
packet, so it is written as plain code over struct reads and tuples; objects
are made only for traffic a decoder asked for.

State is kept per capture source (a file, an interface, a collector client):
fragments, flows and decoder instances of one source never meet another's.
Time is packet time: timeouts advance with the newest packet of the source,
and end of input expires everything.
"""
from __future__ import annotations

from collections import OrderedDict
import gc
import struct
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from wirebeat import logs
from wirebeat import dedup
from wirebeat.accel import speedups
from wirebeat.config import Config
from wirebeat.direction import NetworkDirection
from wirebeat.document import DocumentBuilder
from wirebeat.flows import FlowReporter, FlowTable
from wirebeat.framecore import locate_ip
from wirebeat.frameloop import frame_batches
from wirebeat.ip import Defragmenter, ip_packed, ip_text, parse_ipv4, parse_ipv6
from wirebeat.link import ETHERTYPE_IPV4, ETHERTYPE_IPV6
from wirebeat.packets import PacketDocuments, packets_only_batches
from wirebeat.stack import TSHARK_NAMES, link_layers, tunneled_link
from wirebeat.tunnels import LINK_SHIMS, MAX_DEPTH, TUNNEL_PORTS, decapsulate, peel_link
from wirebeat.pipeline import BLOCK_MAX_BYTES, Pipeline
from wirebeat.records import maker, new_datagram as _new_datagram, new_flow_key as _new_flow_key
from wirebeat.registry import Registered
from wirebeat.stats import Stats, log_once
from wirebeat.tcp import TCPConnection, TCPTable
from wirebeat.decoders.netflow import RecordSet
from wirebeat.decoders.api import (Datagram, DatagramDecoder, DecodeError, DecoderSpec, Expectations,
                          FlowKey, StreamDecoder, Transaction, reprobe_due)

__all__ = ["Engine", "Route"]

log = logs.get("engine")

_UDP = struct.Struct("!HHH")
_TCP = struct.Struct("!HHIIBB")    # ports, seq, ack, data offset (high nibble), flags
TICK_S = 1.0            # packet-time interval between timeout checks


def quiet_collector() -> None:
    """Set the garbage collector for decoding (the run loop and every worker).

    Every packet allocates short-lived objects that form no reference cycles, so
    the default collector (a young-generation pass every 700 allocations, each
    one also walking whatever survived) spends ~12% of a file run for nothing.
    Collect seventy times less often, and leave what start-up built (modules,
    config, decoders) out of every pass. A pass walks what survived since the
    last one (new flows and connections, cold in cache): at 10,000 it took
    80-90 ms of a realistic 300k run (13 passes), at 50,000 30-60 ms (2 passes);
    see docs/performance.md tcp4."""
    global _young
    gc.freeze()
    _young = 50000
    gc.set_threshold(_young, 20, 20)


_young = 0      # quiet_collector's young-generation threshold (0: not set, the interpreter's rules)


def collector_allows(held: int) -> None:
    """Raise the young-generation threshold by the containers the flow tables hold (`held`).

    The collector counts every container allocated since its last pass and still alive,
    also the ones a flow table keeps for each flow until it ends and a while after (its key
    tuples, 3 a flow, and 2 for an ended flow's entry; in no cycle: FlowTable.held). On the realistic mix they made
    three passes of a 500k run instead of the one without flows, each walking the
    decoders' survivors cold: 60-150 ms more of a ~2.8 s run (docs/performance.md,
    "Thirteenth session"). With the tables' share added, a pass comes after as many other
    containers as without flows. The tables are capped (`max_flows`), and so is this."""
    if _young:
        gc.set_threshold(_young + held, 20, 20)
FLOW_SWEEP_S = 10.0     # packet-time interval between idle-flow sweeps


@dataclass(frozen=True, slots=True)
class Route:
    """An enabled decoder and its resolved options."""

    spec: DecoderSpec
    options: dict[str, Any]


@dataclass(slots=True)
class _UDPFlow:
    """A UDP conversation the engine has seen: where its datagrams go."""

    key: FlowKey | None     # client first; None with route
    client: tuple[bytes, int] | None
    route: Route | None     # None: the heuristics turned the flow down (cached)
    last_ts: float
    turned_down: int = 0    # datagrams since the heuristics turned the flow down ...
    turned_down_ts: float = 0.0     # ... at this packet time



# The records made per packet, without their Python __init__ (wirebeat.records).
_new_udp_flow = maker(_UDPFlow)


@dataclass(slots=True)
class _SourceState:
    """What the engine keeps per capture source."""

    name: str
    defrag: Defragmenter
    decoders: dict[str, DatagramDecoder] = field(default_factory=dict)
    udp_flows: OrderedDict[bytes, _UDPFlow] = field(default_factory=OrderedDict)   # _conversation_key
    expectations: Expectations = field(default_factory=Expectations)
    expected: dict = field(init=False)      # expectations.udp, read once per new unrouted flow
    tcp: TCPTable = field(default_factory=TCPTable)
    # The connections' streams whose decoder wants expire(now) at every tick, in the
    # order they started (an insertion-ordered set): the tick walks these, not every
    # connection (most are done with their decoder: TLS after its handshake).
    ticking: dict[_TCPStream, None] = field(default_factory=dict)
    flows: FlowTable | None = None          # None with wirebeat.flows.enabled false
    dedup: Any = None                       # the engine's Dedup, None where it does not apply
    # sender + receiver IP address (packed, joined: as they lie in the IP header) -> the
    # link type (4 bytes, big-endian) + link header (up to the first byte of the network
    # layer) of the pair's latest frame: transactions' source/destination.mac (for a
    # routed peer the router's) and the link layers of their protocol stack, capped by
    # wirebeat.limits.max_mac_pairs. Bytes, not tuples: the C frame loop looks a pair up
    # for every decoded frame, and one object is one hash, one compare, fewer cache misses.
    macs: OrderedDict[bytes, bytes] = field(default_factory=OrderedDict)
    now: float = 0.0
    next_tick: float = 0.0
    next_sweep: float = 0.0
    held: int = 0       # flows.held() when last asked (Engine.allow_flows)

    def __post_init__(self) -> None:
        self.expected = self.expectations.udp


def _conversation_key(src: bytes, dst: bytes, transport: bytes, src_first: bool) -> bytes:
    """The key of a TCP connection or UDP flow in its source's tables: the lower endpoint's
    address, the other's, then their ports in that order (as the transport header holds
    them: 2 bytes each). One bytes object: the C frame loop builds the same key for
    every decoded TCP segment and looks it up (beat/_speedups.c `conv_key`); a tuple of
    two addresses and two ports cost five objects to hash and compare, all cold."""
    if src_first:
        return src + dst + transport[:4]
    return dst + src + transport[2:4] + transport[:2]


def _link_of(macs: dict[bytes, bytes],
             flow: FlowKey) -> tuple[tuple[bytes, bytes] | None, tuple[str, bool]] | None:
    """The client's and server's MACs (Ethernet only) and the link layers of the
    conversation's latest frame; None when it is not remembered."""
    found = _link_seen(macs, flow.client_ip, flow.server_ip)
    if found is None:
        return None
    seen, by_client = found
    return (_seen_links.get(seen) or _seen_link(seen))[0 if by_client else 1]


def _link_seen_python(macs: dict[bytes, bytes], client_ip: str,
                      server_ip: str) -> tuple[bytes, bool] | None:
    """The link header `macs` remembers for the conversation: the latest the client sent
    (header, True), else the server's (header, False); None when neither is there or an
    address text is none. beat/_speedups.c `link_seen` does it without the two packed
    addresses' lru look-ups (tests/beat/test_engine_link.py compares the two)."""
    try:
        client, server = ip_packed(client_ip), ip_packed(server_ip)
    except OSError:
        return None
    seen = macs.get(client + server)
    if seen is not None:
        return seen, True
    seen = macs.get(server + client)
    return None if seen is None else (seen, False)


_link_seen = getattr(speedups, "link_seen", None) or _link_seen_python
# a remembered link type (4 bytes) + link header -> `_link_of`'s answers for a frame sent by
# the client (destination MAC first) and by the server; at most 4,096 (full: starts over).
# Few per capture: a conversation's link header recurs (a host's MAC and its router's).
_seen_links: dict[bytes, tuple] = {}


def _seen_link(seen: bytes) -> tuple[tuple[tuple[bytes, bytes] | None, tuple[str, bool]], ...]:
    """`_seen_links`' entry for a remembered link type (4 bytes) + link header."""
    linktype, head = int.from_bytes(seen[:4], "big"), seen[4:]
    link = link_layers(linktype, head)
    if linktype != 1:
        answers = (None, link), (None, link)
    else:
        answers = ((head[6:12], head[:6]), link), ((head[:6], head[6:12]), link)
    if len(_seen_links) >= 4096:
        _seen_links.clear()
    _seen_links[seen] = answers
    return answers


class _TCPStream:
    """One connection's StreamDecoder behind the error boundary: the sink wirebeat.tcp calls.

    The decoder is made at the connection's first payload or gap, not at its
    SYN: a half-open connection (a SYN flood) holds no decoder state, and a
    connection that carries nothing has nothing to report. `on_data` and
    `on_gap` return True once the decoder needs no more bytes (its optional
    `needs_bytes` is False, or it failed to start): wirebeat.tcp then stops
    reassembling the connection. The stream is in `ticking` (its source's
    `_SourceState.ticking`: the engine calls its `expire(now)` every tick) from
    the decoder's start until the decoder's optional `needs_expire` is False or
    the connection closes.
    """

    __slots__ = ("engine", "spec", "decoder", "flow", "make", "ticking")

    def __init__(self, engine: Engine, spec: DecoderSpec, make: Any, flow: FlowKey,
                 ticking: dict[_TCPStream, None]) -> None:
        self.engine = engine
        self.spec = spec
        self.decoder: StreamDecoder | None = None
        self.make = make            # () -> StreamDecoder; None once made (or failed)
        self.flow = flow
        self.ticking = ticking

    def _start(self) -> StreamDecoder | None:
        make, self.make = self.make, None
        if make is not None:
            try:
                self.decoder = make()
                self.ticking[self] = None
            except Exception:
                self.engine.stats.count("decoder.crashed", decoder=self.spec.name)
                log_once(log, f"decoder {self.spec.name} failed to start a stream", exc_info=True)
                if self.engine.strict:
                    raise
        return self.decoder

    def on_data(self, from_client: bool, data: bytes, ts: float) -> bool:
        decoder = self.decoder or self._start()
        if decoder is None:
            return True
        try:
            txns = decoder.on_data(from_client, data, ts)
        except Exception as err:
            self.engine._stream_failed(self, err, ts)
        else:
            if txns:
                self.engine._emit(self.spec, txns)
        return not getattr(decoder, "needs_bytes", True)

    def on_gap(self, from_client: bool, missing: int, ts: float) -> bool:
        decoder = self.decoder or self._start()
        if decoder is None:
            return True
        try:
            txns = decoder.on_gap(from_client, missing, ts)
        except Exception as err:
            self.engine._stream_failed(self, err, ts)
        else:
            if txns:
                self.engine._emit(self.spec, txns)
        return not getattr(decoder, "needs_bytes", True)

    def on_close(self, ts: float) -> None:
        self.ticking.pop(self, None)
        if self.decoder is None:
            return              # no payload ever came: nothing to report
        try:
            txns = self.decoder.on_close(ts)
        except Exception as err:
            self.engine._stream_failed(self, err, ts)
            return
        finally:
            # The connection ends here: keep what its decoder counted.
            totals = self.engine.stream_counters.setdefault(self.spec.name, {})
            for counter, value in getattr(self.decoder, "counters", {}).items():
                totals[counter] = totals.get(counter, 0) + value
        if txns:
            self.engine._emit(self.spec, txns)

    def expire(self, now: float) -> None:
        decoder = self.decoder
        try:
            txns = decoder.expire(now)
        except Exception as err:
            self.engine._stream_failed(self, err, now)
            return
        finally:
            if not getattr(decoder, "needs_expire", True):
                self.ticking.pop(self, None)
        if txns:
            self.engine._emit(self.spec, txns)


class Engine:
    def __init__(self, config: Config, enabled: list[Registered], builder: DocumentBuilder,
                 pipeline: Pipeline, stats: Stats, strict: bool = False) -> None:
        self.builder = builder
        self.pipeline = pipeline
        self.stats = stats
        self.strict = strict            # tests: a decoder exception fails loudly
        self.stream_counters: dict[str, dict[str, int]] = {}    # closed connections' decoder counters
        self.retired: dict[str, int] = {}       # counters of sources that ended
        self.max_sources = config["wirebeat.limits.max_sources"]
        self.sources_evicted = 0
        self.max_flows = config["wirebeat.limits.max_flows"]
        self.flow_idle_s = config["wirebeat.limits.flow_idle_timeout"]
        self.max_fragmented = config["wirebeat.limits.max_fragmented_datagrams"]
        self.fragment_timeout_s = config["wirebeat.limits.fragment_timeout"]
        self.tcp_limits = {
            "max_connections": config["wirebeat.limits.tcp.max_connections"],
            "max_buffered_bytes": config["wirebeat.limits.tcp.max_buffered_bytes"],
            "max_buffered_bytes_total": config["wirebeat.limits.tcp.max_buffered_bytes_total"],
            "idle_timeout_s": config["wirebeat.limits.tcp.idle_timeout"],
        }
        # Outputs that serialise with orjson take ready JSON text (orjson.Fragment): flow
        # reports and per-packet documents skip building dicts (a pipeline without an
        # output, another front end's, gets dicts).
        self.fragments_ok = getattr(getattr(pipeline, "output", None), "accepts_fragments", False)
        builder.text_ok = self.fragments_ok      # NetFlow records as text (DecoderSpec.whole_text)
        self.flow_reporter = FlowReporter(
            builder, pipeline.publish, config["wirebeat.flows.timeout"],
            config["wirebeat.flows.period"], config["wirebeat.flows.max_flows"],
            config["wirebeat.flows.report_all"],
            fragments=self.fragments_ok, publish_many=getattr(pipeline, "publish_many", None),
            publish_block=getattr(pipeline, "publish_block", None),
            block_docs=getattr(pipeline, "batch_size", 1024),
            block_bytes=getattr(pipeline, "block_bytes", BLOCK_MAX_BYTES))
        self.flows_enabled = config["wirebeat.flows.enabled"]
        self.dedup = dedup.from_config(config)      # exact duplicate packets (wirebeat.dedup)
        if self.dedup is not None:
            stats.add_source(self.dedup.counters)
        # Sources whose frames are no captured traffic: a NetFlow listener's datagrams are
        # rebuilt frames of the collector's own socket. No flows for them, and no
        # duplicate detection (an exporter may send the same bytes twice; each counts).
        self.flowless_sources: set[str] = set()
        self.routes_udp: dict[int, Route] = {}
        self.routes_tcp: dict[int, Route] = {}
        self.routes_ip: dict[int, Route] = {}
        self.routes_named: dict[str, Route] = {}        # datagram decoders, for expectations
        self.probes: list[tuple[Any, Route]] = []       # (probe, route) with heuristic on
        self.detectors: list[tuple[Any, Route]] = []    # (detect, route) with detect on: TCP
        self.specs: dict[str, DecoderSpec] = {}
        for registered in enabled:
            spec = registered.spec
            options = config.section(f"wirebeat.protocols.{spec.name}")
            route = Route(spec, options)
            self.specs[spec.name] = spec
            for proto in spec.ip_protocols:
                self.routes_ip[proto] = route
            if spec.datagram is not None:
                self.routes_named[spec.name] = route
                if spec.probe is not None and options.get("heuristic"):
                    self.probes.append((spec.probe, route))
            if spec.stream is not None and spec.detect is not None and options.get("detect"):
                self.detectors.append((spec.detect, route))
            for port in options.get("ports", ()):
                if spec.datagram is not None:
                    self.routes_udp[port] = route
                if spec.stream is not None:
                    self.routes_tcp[port] = route
        # Some decoder can be handed traffic. Without one (every decoder off, per-packet
        # documents alone) no conversation is tracked: TCP and UDP are only counted.
        self.decoding = bool(self.routes_udp or self.routes_tcp or self.routes_ip or self.probes
                             or self.detectors)
        self.sources: dict[str, _SourceState] = {}
        self.flows_held = 0     # the flow tables' held() at their last ask (allow_flows)
        self.frame: tuple[int, bytes] = (0, b"")    # linktype and bytes of the current packet
        self.packet_docs: PacketDocuments | None = None
        self.tunnels_enabled = config["wirebeat.tunnels.enabled"]
        self.tunnel: tuple | None = None    # the innermost tunnel of the current packet
        self.tunneled = 0
        # (source, inner sender, inner receiver) -> what documents keep of the tunnel
        self.tunneled_pairs: OrderedDict[tuple[str, str, str], tuple] = OrderedDict()
        self.max_tunneled_pairs = config["wirebeat.limits.max_tunneled_pairs"]
        self.tunneled_pairs_evicted = 0
        builder.tunnels = self.tunneled_pairs
        self.max_mac_pairs = config["wirebeat.limits.max_mac_pairs"]
        self.mac_pairs_evicted = 0
        builder.direction = NetworkDirection(config["wirebeat.interfaces.internal_networks"])
        if config["wirebeat.packets.enabled"]:
            udp_layers = {port: TSHARK_NAMES[r.spec.name] for port, r in self.routes_udp.items()
                          if r.spec.name in TSHARK_NAMES}
            self.packet_docs = PacketDocuments(builder, pipeline.publish, udp_layers,
                                               config["wirebeat.tunnels.enabled"], self.fragments_ok)
            stats.add_source(self.packet_docs.counters)
        # Per-packet counters as plain ints (a dict lookup per packet adds up).
        self.packets = 0
        self.bytes = 0
        self.non_ip = 0
        self.delivered = 0
        self.transactions = 0
        self.flows_evicted = 0
        self.tcp_untracked = 0      # TCP segments on no configured port
        self.udp_expected = 0       # UDP flows routed by an in-band announcement
        self.udp_probed = 0         # UDP flows routed by a heuristic
        self.tcp_detected = 0       # TCP connections on no configured port routed by `detect`
        stats.add_source(self.counters)
        # Per-packet documents and nothing else: reader batches whole in C (wirebeat.packets);
        # else the frames no decoder needs in C, the others to on_frame (wirebeat.frameloop);
        # None: the run loop calls on_frame per frame.
        self.on_batch = packets_only_batches(self) or frame_batches(self)

    # -- counters --------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        out = {"packets.read": self.packets, "packets.bytes": self.bytes,
               "packets.non_ip": self.non_ip, "packets.tunneled": self.tunneled,
               "tunnels.pairs_evicted": self.tunneled_pairs_evicted,
               "macs.pairs_evicted": self.mac_pairs_evicted,
               "packets.tcp_untracked": self.tcp_untracked, "packets.decoded": self.delivered,
               "transactions": self.transactions, "flows.evicted": self.flows_evicted,
               "flows.open": sum(len(s.udp_flows) for s in self.sources.values()),
               "flows.expected": self.udp_expected, "flows.probed": self.udp_probed,
               "expectations.open": sum(len(s.expected) for s in self.sources.values()),
               "sources.open": len(self.sources), "sources.evicted": self.sources_evicted}
        out["tcp.connections_open"] = sum(len(s.tcp.connections) for s in self.sources.values())
        out["tcp.connections_detected"] = self.tcp_detected
        if self.builder.direction is not None:
            out.update(self.builder.direction.counters())
        parts = [self.retired, *(self._state_counters(s) for s in self.sources.values())]
        parts.append({f"packets.non_ip.0x{t:04x}": n for t, n in self.flow_reporter.non_ip.items()})
        parts += [{f"decoder.{name}.{k}": v for k, v in totals.items()}
                  for name, totals in self.stream_counters.items()]
        for part in parts:
            for key, value in part.items():
                out[key] = out.get(key, 0) + value
        return out

    @staticmethod
    def _state_counters(state: _SourceState) -> dict[str, int]:
        """What one source's tables and decoders counted so far."""
        out = {"expectations.evicted": state.expectations.evicted}
        if state.flows is not None:
            out.update(state.flows.counters())
        for name, value in asdict(state.tcp.counters).items():
            out[f"tcp.{name}"] = value
        for name, value in asdict(state.defrag.stats).items():
            out[f"ip.fragments.{name}"] = value
        for name, decoder in state.decoders.items():
            for counter, value in getattr(decoder, "counters", {}).items():
                out[f"decoder.{name}.{counter}"] = value
        return out

    # -- per packet ------------------------------------------------------------

    def _source(self, name: str) -> _SourceState:
        state = self.sources.get(name)
        if state is None:
            if len(self.sources) >= self.max_sources:
                # Cap reached (many collector clients): the source idle longest
                # reports what it holds, as at its end of input, and makes room.
                idlest = min(self.sources.values(), key=lambda s: s.now)
                self.finish(idlest.name)
                self.sources_evicted += 1
            state = self.sources[name] = _SourceState(
                name, Defragmenter(self.max_fragmented, timeout_s=self.fragment_timeout_s),
                tcp=TCPTable(**self.tcp_limits),
                flows=FlowTable(name, self.flow_reporter)
                if self.flows_enabled and name not in self.flowless_sources else None,
                dedup=self.dedup if name not in self.flowless_sources else None)
        return state

    def on_frame(self, ts: float, linktype: int, data: bytes, source: str) -> None:
        self.packets += 1
        self.bytes += len(data)
        state = self.sources.get(source) or self._source(source)
        self.frame = (linktype, data)
        self.tunnel = None
        if ts >= state.next_tick:
            self._tick(state, ts)
        located = locate_ip(linktype, data)     # link layer and IP header (wirebeat.framecore)
        if self.packet_docs is not None:
            self.packet_docs.on_frame(ts, linktype, data, located, source)
        depth = 0
        while True:     # once per encapsulation: tunnels are peeled here for every decoder
            if located.__class__ is str:
                self.stats.count("packets.malformed", reason=located)
                return
            ethertype, offset, vlans, parsed = located
            if not depth:
                outer_vlans = vlans         # a flow is keyed by the captured frame's tags
            if parsed is None:
                if ethertype in LINK_SHIMS:
                    peeled = peel_link(ethertype, data, offset)
                    if peeled.__class__ is str:
                        self.stats.count("packets.malformed", reason=peeled)
                        return
                    ethertype, offset, _layers = peeled
                if ethertype == ETHERTYPE_IPV4:
                    parsed = parse_ipv4(data, offset)
                elif ethertype == ETHERTYPE_IPV6:
                    parsed = parse_ipv6(data, offset)
                else:
                    self.non_ip += 1
                    self.flow_reporter.count_non_ip(ethertype)
                    return
            if parsed.__class__ is str:
                self.stats.count("packets.malformed", reason=parsed)
                return
            if not depth and state.dedup is not None and state.dedup.duplicate(source, ts, vlans, data, offset, parsed):
                return      # a second copy (`any` device, SPAN): flows and decoders see one
            src, dst, proto, payload, fragment = parsed
            if fragment is not None:
                ident, frag_offset, more = fragment
                payload = state.defrag.add((len(src), src, dst, proto, ident), ts, frag_offset,
                                           more, payload)
                if payload is None:
                    return
            if (proto == 47 or proto == 17 and payload[2:4] in TUNNEL_PORTS) and depth < MAX_DEPTH \
                    and self.tunnels_enabled:
                tunnel = decapsulate(proto, payload)
                if tunnel.__class__ is str:
                    self.stats.count("packets.malformed", reason=tunnel)
                    return
                if tunnel is not None:
                    self.tunneled += 1
                    depth += 1
                    self.tunnel = (tunnel, src, dst, proto, linktype, data)
                    linktype, data = tunnel[3], tunnel[4]
                    located = locate_ip(linktype, data)
                    continue
            break
        if self.tunnel is not None:
            self._remember_tunnel(state.name, src, dst, linktype, data)
        decoding = self.decoding
        if decoding:    # the innermost frame's link header, for this conversation's transactions
            macs, pair = state.macs, src + dst
            if pair not in macs and len(macs) >= self.max_mac_pairs:
                macs.popitem(last=False)        # the oldest pair makes room
                self.mac_pairs_evicted += 1
            macs[pair] = linktype.to_bytes(4, "big") + data[:offset + 1]
        if state.flows is not None:     # whole captured frame; outer addresses when tunneled
            frame = self.frame          # (no *-call: the C account is called without an argument tuple)
            state.flows.account(ts, frame[0], frame[1], outer_vlans, src, dst, proto, payload,
                                () if self.tunnel is None else self.tunnel[1:3])
        # wirebeat.frameloop's C loop repeats these steps for plain frames and calls the three
        # transport steps below with these arguments: change them together (its test compares).
        if proto == 17:
            if decoding or len(payload) < 8:        # (else no route, nothing announced: done)
                self._on_udp(state, ts, src, dst, payload)
        elif proto == 6:
            # Not decoding, a well-formed segment is untracked; _on_tcp counts the others.
            if decoding or len(payload) < 20 or not 20 <= (payload[12] >> 4) * 4 <= len(payload):
                self._on_tcp(state, ts, src, dst, payload)
            else:
                self.tcp_untracked += 1
        else:
            route = self.routes_ip.get(proto)
            if route is not None:
                self._on_ip_protocol(state, route, ts, src, dst, proto, payload)

    def _remember_tunnel(self, source: str, src: bytes, dst: bytes, inner_linktype: int,
                         inner: bytes) -> None:
        """Keep what documents of this inner conversation show of its tunnel (bounded)."""
        tunnel, outer_src, outer_dst, proto, outer_linktype, outer = self.tunnel
        key = (source, ip_text(src), ip_text(dst))
        pairs = self.tunneled_pairs
        if key not in pairs and len(pairs) >= self.max_tunneled_pairs:
            pairs.popitem(last=False)         # the oldest pair makes room
            self.tunneled_pairs_evicted += 1
        link = tunneled_link(link_layers(outer_linktype, outer), len(outer_src) == 16, proto,
                             tunnel[2], inner_linktype, inner)
        pairs[key] = (tunnel[0], tunnel[1], ip_text(outer_src), ip_text(outer_dst), link)

    def _on_udp(self, state: _SourceState, ts: float, src: bytes, dst: bytes,
                payload: bytes) -> None:
        if len(payload) < 8:
            self.stats.count("packets.malformed", reason="udp.truncated")
            return
        sport, dport, length = _UDP.unpack_from(payload)
        # The UDP length bounds the payload (Ethernet padding follows it);
        # a length past the captured bytes means a snap-length cut.
        body = payload[8:length] if 8 <= length <= len(payload) else payload[8:]
        key = _conversation_key(src, dst, payload, (src, sport) <= (dst, dport))
        flows = state.udp_flows
        flow = flows.get(key)
        if flow is None:
            route = self.routes_udp.get(dport)
            if route is not None:
                client = (src, sport)
                flow_key = _new_flow_key("udp", ip_text(src), sport, ip_text(dst), dport, state.name)
            else:
                route = self.routes_udp.get(sport)
                if route is None:
                    if state.expected or self.probes:
                        self._claim_udp(state, key, None, ts, src, sport, dst, dport, body)
                    return
                client = (dst, dport)
                flow_key = _new_flow_key("udp", ip_text(dst), dport, ip_text(src), sport, state.name)
            if len(flows) >= self.max_flows:
                flows.popitem(last=False)        # the oldest flow makes room
                self.flows_evicted += 1
            flow = flows[key] = _new_udp_flow(flow_key, client, route, ts, 0, 0.0)
        elif flow.route is None:                 # turned down by the heuristics
            flow.last_ts = ts
            flow.turned_down += 1
            # ... but something may have announced it since, or the heuristics may now agree.
            if state.expected or self.probes and reprobe_due(flow.turned_down,
                                                             ts - flow.turned_down_ts):
                self._claim_udp(state, key, flow, ts, src, sport, dst, dport, body)
            return
        # (beat/_speedups.c deliver_udp does these steps for the C frame loop)
        flow.last_ts = ts
        from_client = flow.client[1] == sport and flow.client[0] == src
        self._deliver(state, flow.route, _new_datagram(ts, flow.key, from_client, body, False))

    def _claim_udp(self, state: _SourceState, key: bytes, flow: _UDPFlow | None, ts: float,
                   src: bytes, sport: int, dst: bytes, dport: int, body: bytes) -> None:
        """A UDP flow no port routes: an announced endpoint, else a heuristic, may claim it.

        Runs on the first datagram of such a flow, and again on later ones while
        announcements exist or a re-probe is due (`reprobe_due`) and the flow is
        still unclaimed. A flow the heuristics turned down is remembered (route
        None). The sender of the claiming datagram becomes the flow's client.
        """
        route = None
        expected = state.expected
        if expected:
            exp = expected.get((dst, dport)) or expected.get((src, sport))
            if exp is not None and exp.until_ts >= ts:
                route = self.routes_named.get(exp.decoder)
                if route is not None:
                    self.udp_expected += 1
        if route is None and self.probes and (
                flow is None or reprobe_due(flow.turned_down, ts - flow.turned_down_ts)):
            route = self._probe(body, self.probes)
            if route is not None:
                self.udp_probed += 1
        if route is None:
            if flow is not None or not self.probes:
                return
            flow = _UDPFlow(None, None, None, ts, 0, ts)    # remembered: probes run again only when due
        else:
            flow_key = FlowKey("udp", ip_text(src), sport, ip_text(dst), dport, state.name)
            if flow is None:
                flow = _UDPFlow(flow_key, (src, sport), route, ts)
            else:
                flow.key, flow.client, flow.route = flow_key, (src, sport), route
        flows = state.udp_flows
        if key not in flows:
            if len(flows) >= self.max_flows:
                flows.popitem(last=False)        # the oldest flow makes room
                self.flows_evicted += 1
            flows[key] = flow
        if route is not None:
            self._deliver(state, route, Datagram(ts, flow.key, True, body, flow.turned_down > 0))

    def _probe(self, body: bytes, probes: list[tuple[Any, Route]]) -> Route | None:
        """The first decoder, by name, whose heuristic (UDP) or detector (TCP) recognises these bytes."""
        for probe, route in probes:
            try:
                if probe(body):
                    return route
            except Exception:           # a probe bug: count it, never stop on traffic
                self.stats.count("decoder.crashed", decoder=route.spec.name)
                log_once(log, f"decoder {route.spec.name} probe crashed", exc_info=True)
                if self.strict:
                    raise
        return None

    def _on_tcp(self, state: _SourceState, ts: float, src: bytes, dst: bytes,
                payload: bytes) -> None:
        size = len(payload)
        if size < 20:
            self.stats.count("packets.malformed", reason="tcp.truncated")
            return
        sport, dport, seq, ack, data_offset, flags = _TCP.unpack_from(payload)
        header_len = (data_offset >> 4) * 4
        if header_len < 20 or header_len > size:
            self.stats.count("packets.malformed", reason="tcp.bad_header_length")
            return
        data = payload[header_len:]
        src_first = src < dst or src == dst and sport <= dport     # (src, sport) <= (dst, dport)
        key = _conversation_key(src, dst, payload, src_first)
        conn = state.tcp.connections.get(key)
        if conn is None or (flags & 0x12 == 0x02
                            and conn.is_restarted_by(src_first == conn.client_first, seq)):
            conn = self._open_tcp(state, key, src_first, ts, src, sport, dst, dport, flags, data, seq)
            if conn is None:
                return
        self.delivered += 1
        conn.segment(src_first == conn.client_first, seq, ack, flags, data, ts)

    def _open_tcp(self, state: _SourceState, key: bytes, src_first: bool, ts: float,
                  src: bytes, sport: int, dst: bytes, dport: int, flags: int,
                  data: bytes, seq: int | None = None) -> TCPConnection | None:
        """A segment of a connection not tracked yet: route it by port and start tracking."""
        routes = self.routes_tcp
        syn_ack = flags & 0x12
        if syn_ack == 0x12:             # SYN-ACK: the server answers
            route = routes.get(sport) or routes.get(dport)
            client_is_src = False
        elif syn_ack == 0x02:           # a pure SYN names the client
            route = routes.get(dport) or routes.get(sport)
            client_is_src = True
        else:                           # picked up mid-stream: the server owns the port
            route = routes.get(dport)
            client_is_src = route is not None
            if route is None:
                route = routes.get(sport)
        if route is None:
            # No port claims it: the first payload may still say what it is (TLS's
            # ClientHello). Its sender is the client. A few byte compares per segment.
            route = self._probe(data, self.detectors) if data and self.detectors else None
            if route is None:
                self.tcp_untracked += 1
                return None
            client_is_src = detected = True
        else:
            detected = False
        if not state.tcp.admits(key, flags, bool(data), seq, ts):
            return None
        self.tcp_detected += detected
        if client_is_src:
            flow = _new_flow_key("tcp", ip_text(src), sport, ip_text(dst), dport, state.name)
        else:
            flow = _new_flow_key("tcp", ip_text(dst), dport, ip_text(src), sport, state.name)
        spec = route.spec
        if spec.expectations:
            make = partial(spec.stream, flow, route.options, state.expectations)
        else:
            make = partial(spec.stream, flow, route.options)
        return state.tcp.open(key, _TCPStream(self, spec, make, flow, state.ticking), ts,
                              client_first=src_first == client_is_src)

    def _on_ip_protocol(self, state: _SourceState, route: Route, ts: float, src: bytes,
                        dst: bytes, proto: int, payload: bytes) -> None:
        # (beat/_speedups.c deliver_icmp does the first branch for the C frame loop)
        if proto in (1, 58) and len(payload) >= 2:      # the type and code are the ports
            flow_key = _new_flow_key("icmp" if proto == 1 else "ipv6-icmp", ip_text(src), payload[0],
                                     ip_text(dst), payload[1], state.name)
        else:
            flow_key = FlowKey("icmp" if proto == 1 else "ipv6-icmp" if proto == 58 else str(proto),
                               ip_text(src), 0, ip_text(dst), 0, state.name)
        self._deliver(state, route, _new_datagram(ts, flow_key, True, payload, False))

    # -- decoders --------------------------------------------------------------

    def _decoder(self, state: _SourceState, route: Route) -> DatagramDecoder:
        decoder = state.decoders.get(route.spec.name)
        if decoder is None:
            spec = route.spec
            if spec.expectations:
                decoder = spec.datagram(route.options, state.expectations)
            else:
                decoder = spec.datagram(route.options)
            if getattr(decoder, "record_sets", None) is False:
                decoder.record_sets = True      # NetFlow: whole data sets to _emit (publish_set)
            state.decoders[spec.name] = decoder
        return decoder

    def _deliver(self, state: _SourceState, route: Route, dgram: Datagram) -> None:
        """The error boundary: bad traffic is counted, a decoder bug is logged once."""
        spec = route.spec
        self.delivered += 1
        decoder = state.decoders.get(spec.name) or self._decoder(state, route)
        try:
            txns = decoder.on_datagram(dgram)
        except DecodeError as err:
            self.stats.count("decoder.malformed", decoder=spec.name, reason=err.reason)
            log.debug("malformed", decoder=spec.name, error=str(err), flow=str(dgram.flow),
                      ts=dgram.ts)
            return
        except Exception:
            self.stats.count("decoder.crashed", decoder=spec.name)
            log_once(log, f"decoder {spec.name} crashed", exc_info=True)
            if self.strict:
                raise
            return
        if txns:
            self._emit(spec, txns)

    def _stream_failed(self, stream: _TCPStream, err: Exception, ts: float) -> None:
        """The error boundary for stream decoders, as in `_deliver`."""
        name = stream.spec.name
        if isinstance(err, DecodeError):
            self.stats.count("decoder.malformed", decoder=name, reason=err.reason)
            log.debug("malformed", decoder=name, error=str(err), flow=str(stream.flow), ts=ts)
            return
        self.stats.count("decoder.crashed", decoder=name)
        log_once(log, f"decoder {name} crashed", exc_info=True)     # called while handling err
        if self.strict:
            raise err

    def _emit(self, spec: DecoderSpec, txns: list[Transaction]) -> None:
        build, publish = self.builder.build, self.pipeline.publish
        frame_link = None       # this frame's link layers, worked out when a transaction needs them
        builder = self.builder
        for txn in txns:
            if txn.__class__ is RecordSet:      # a NetFlow data set: its documents at once
                # (imported here: a run without NetFlow never loads it; NetFlow's
                # lazy_imports has it imported before a user switch)
                from wirebeat.sources.netflow import publish_set
                try:
                    self.transactions += publish_set(txn, spec, builder, publish, self._emit)
                except Exception:
                    self._document_crashed(spec.name)
                continue
            state = self.sources.get(txn.flow.source)
            macs = seen = None
            if spec.whole_document is None:
                flow_id = state.flows.flow_id(txn.flow) if state and state.flows else None
                # A transaction emitted on a timeout comes with another frame: its own
                # conversation's frames say which MACs and link layers it had.
                seen = _link_of(state.macs, txn.flow) if state and state.macs else None
            else:               # a record of a flow seen elsewhere (NetFlow): not this packet's
                flow_id = None
            if seen is not None:
                macs, builder.link = seen
            else:
                builder.link = frame_link or (frame_link := link_layers(*self.frame))
            try:
                built = build(spec, txn, flow_id, macs)
            except Exception:
                self._document_crashed(spec.name)
                continue
            self.transactions += 1
            if built is not None:       # None: a processor dropped it
                publish(*built)

    def _document_crashed(self, name: str) -> None:
        """A decoder's document (or a NetFlow data set's) could not be made: counted, logged once."""
        self.stats.count("decoder.crashed", decoder=name)
        log_once(log, f"decoder {name} document() crashed", exc_info=True)
        if self.strict:
            raise

    # -- time ------------------------------------------------------------------

    def _tick(self, state: _SourceState, now: float) -> None:
        state.now = now
        state.next_tick = now + TICK_S
        self._expire(state, now)
        if now >= state.next_sweep:
            state.next_sweep = now + FLOW_SWEEP_S
            idle_before = now - self.flow_idle_s
            stale = [k for k, f in state.udp_flows.items() if f.last_ts < idle_before]
            for k in stale:
                del state.udp_flows[k]
            if state.expected:
                state.expectations.expire(now)
            state.tcp.expire(now)
        if state.flows is not None:
            state.flows.sweep(now)
            self.allow_flows(state)
        self.pipeline.maybe_flush()

    def allow_flows(self, state: _SourceState) -> None:
        """The collector's threshold after what the flow tables hold now (collector_allows),
        with `state`'s table (not None) asked again: at its ticks and after its reader batches. The
        total is kept (`flows_held`), not summed over every source at each batch."""
        held = state.flows.held()
        self.flows_held += held - state.held
        state.held = held
        collector_allows(self.flows_held)

    def _expire(self, state: _SourceState, now: float) -> None:
        state.defrag.expire(now)
        ticking = state.ticking
        for stream in list(ticking):
            if stream in ticking:       # (not closed by an earlier one's transactions)
                stream.expire(now)
        for name, decoder in state.decoders.items():
            spec = self.specs[name]
            try:
                txns = decoder.expire(now)
            except Exception:
                self.stats.count("decoder.crashed", decoder=name)
                log_once(log, f"decoder {name} crashed in expire", exc_info=True)
                if self.strict:
                    raise
                continue
            if txns:
                self._emit(spec, txns)

    def advance(self, source: str, now: float) -> None:
        """Move an idle source's clock to `now` so its timeouts fire.

        Live sources (ZeroMQ, interfaces) call this when no packet has come for a
        while, with the last packet time plus the wall time since; packet time
        still rules whenever packets flow.
        """
        state = self.sources.get(source)
        if state is not None and now >= state.next_tick:
            self._tick(state, now)

    def finish(self, source: str | None = None) -> None:
        """End of input: report everything still open (for one source, or all)."""
        names = [source] if source is not None else list(self.sources)
        for name in names:
            state = self.sources.get(name)
            if state is not None:
                state.tcp.close_all()       # held bytes are flushed with gaps, then on_close
                self._expire(state, float("inf"))
                if state.flows is not None:
                    state.flows.finish()        # after the transactions that name their flows
                # The source is done: keep its counts, free its tables.
                for key, value in self._state_counters(state).items():
                    self.retired[key] = self.retired.get(key, 0) + value
                del self.sources[name]
                self.flows_held -= state.held
