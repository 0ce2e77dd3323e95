"""Reader batches in C for the default configuration: flows and decoders on.

Most frames of real traffic reach no decoder: segments of TCP connections
whose decoder needs no more bytes (bypassed, wirebeat.tcp) or that no port or
detector claims, pure ACKs, UDP on no route, ARP. For those `Engine.on_frame`
only keeps books: counters, the duplicate check, the conversation's link
header (`macs`), the flow table's `account` and a connection's last-seen
time. `frame_batches` gives the engine an `on_batch` that runs the C
`_speedups.frame_batch` over a whole reader batch, frame by frame in order:

- a frame that needs none of the engine's Python: its bookkeeping in C, in
  on_frame's order;
- a plain IP frame a decoder or detector may need (TCP payload of a
  connection not bypassed, SYN/FIN/RST of a tracked connection, a segment on a
  routed port or with payload to detect, UDP with a flow, a route, an
  announcement or a heuristic to ask, an IP protocol with a decoder): the same
  bookkeeping in C, then the engine's own transport step (`_on_tcp`,
  `_on_udp`, `_on_ip_protocol`) with the arguments on_frame passes, and
  `engine.frame` set as on_frame sets it; for a segment of a connection the
  loop has found (not a pure SYN), the last step of `_on_tcp` only: the
  connection's `segment`; for an ICMP or ICMPv6 message (two bytes or more),
  `_on_ip_protocol`'s step in C: its FlowKey and Datagram (made with
  wirebeat.records' makers), then `Engine._deliver`, the decoder's error
  boundary (one Python frame and two address look-ups fewer per message: 42% of
  the transaction-dense benchmark's packets are ICMP); likewise for a UDP
  datagram of a routed flow the table already holds (a DNS response):
  `_on_udp`'s last step in C, then `_deliver`;
- anything else (a timeout tick due, malformed headers, fragments, tunnels,
  MPLS/PPPoE shims, unusual records): `Engine.on_frame` whole.

Which way a frame goes is decided before any side effect, so a frame is wholly
one path's. `Engine.on_frame` stays the reference (WIREBEAT_PURE_PYTHON=1
uses it alone); tests/beat/test_frameloop.py runs every bundled capture and
hostile traffic both ways and requires the same documents in the same order
and the same counters.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wirebeat.accel import speedups
from wirebeat.flows import FlowReporter
from wirebeat.records import new_datagram, new_flow_key
from wirebeat.tunnels import TUNNEL_PORTS

__all__ = ["frame_batches"]

_UDP_ROUTE, _TCP_ROUTE, _TUNNEL = 1, 2, 4       # beat/_speedups.c PM_*


def _port_map(engine: Any) -> bytes:
    """One byte per port: routed for UDP, routed for TCP, a tunnel's destination port."""
    ports = bytearray(65536)
    for port in engine.routes_udp:
        ports[port] |= _UDP_ROUTE
    for port in engine.routes_tcp:
        ports[port] |= _TCP_ROUTE
    for port in TUNNEL_PORTS:
        ports[int.from_bytes(port, "big")] |= _TUNNEL
    return bytes(ports)


def frame_batches(engine: Any) -> Callable[[list, str], None] | None:
    """`Engine.on_batch` for an engine without per-packet documents, else None."""
    batch = getattr(speedups, "frame_batch", None)
    if batch is None or engine.packet_docs is not None or not (
            engine.dedup is None or isinstance(engine.dedup, speedups.Dedup)):
        return None
    if any(not 0 <= p <= 0xFFFF for p in (*engine.routes_udp, *engine.routes_tcp)) \
            or any(not 0 <= p <= 0xFF for p in engine.routes_ip):
        return None
    portmap, ipmap = _port_map(engine), bytes(p in engine.routes_ip for p in range(256))
    # Non-IP frames are counted into the reporter's dict as its count_non_ip does (else on_frame's).
    reporter = engine.flow_reporter
    non_ip = reporter.non_ip if (type(reporter).count_non_ip is FlowReporter.count_non_ip
                                 and type(reporter.non_ip) is dict) else None

    from wirebeat.engine import _UDPFlow as udp_flow    # (the engine imports this module)

    def on_batch(frames: list, source: str) -> None:
        if frames.__class__ is not list:
            frames = list(frames)       # the C loop walks a list
        state = engine.sources.get(source) or engine._source(source)
        batch(frames, source, engine, state, engine.on_frame,
              (portmap, ipmap, engine.decoding, bool(engine.detectors), bool(engine.probes),
               engine.max_mac_pairs, non_ip, engine._on_udp, engine._on_tcp, engine._on_ip_protocol,
               engine.routes_ip, engine._deliver, new_flow_key, new_datagram, udp_flow))
        if state.flows is not None:
            engine.allow_flows(state)   # a batch can open thousands of flows between ticks
    return on_batch
