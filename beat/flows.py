"""Flows: every IP packet accounted to a conversation, reported as packetbeat does.

A flow is keyed like packetbeat's (`packetbeat/flows`): the MAC pair, the
VLAN ids (outer first), the outer IP pair of a tunnel, the (inner) IP pair, the transport and its ports (ICMP: the
echo/timestamp/information/address-mask identifier, 0 for other types), per
capture source. Both directions are one flow; its source is the side that
sent the first packet seen.

Every `wirebeat.flows.period` of packet time each live flow is reported
(`flow.final: false`), however young or unchanged, as packetbeat 8 does
(`wirebeat.flows.report_all: true`, the default). `report_all: false` reports
only flows active in the last period: at least a period old and with packets
since the previous report. That spares the output a report per short flow (a
DNS exchange is otherwise reported once or more before its final report, with
the same counts).

When a flow has been idle `wirebeat.flows.timeout`, was closed (FIN both
ways or RST), is evicted from a full table or input ends, it gets a last report with `flow.final: true` and `flow.end_reason` (`idle`,
`fin`, `rst`, `evicted`, `end_of_input`). A closed TCP flow still takes the
packets that follow its FIN/RST (the last ACK, retransmitted FINs) until the
next sweep at least `CLOSED_LINGER_S` later; a new SYN on it starts a new flow.

Counts are whole captured frames: `source.bytes` is the sum of the captured
lengths of the frames the source sent (link-layer headers included). An IP
datagram that arrived in fragments counts once, when it is complete, with the
frame that completed it, which is what tshark's conversation tables count too.

Beyond packetbeat, TCP flows carry `flow.tcp.*`: SYN/FIN/RST counts, the
handshake round trip (SYN -> SYN/ACK -> ACK) when seen, and retransmitted
bytes per direction (payload bytes at or below the highest sequence number
already seen in that direction).

Cost: `FlowTable.account` runs for every IP packet. It builds one key tuple,
does one dict lookup (both directions of a flow are in the table, pointing at
the same record: a key's direction is 0 when it is the record's R_KEY, else 1)
and a few list stores; records are plain lists indexed by the constants below,
made once per flow. Reports are built only at sweeps, every
`min(period, timeout)` of packet time; with packetbeat's reporting most of
them repeat a quiet flow's last report, so when the output serialises with
orjson a report is JSON text joined from parts cached per flow
(`FlowReporter.report`) instead of a dict built and serialised anew.

With the optional C core `wirebeat._flowcore` (beat/_flowcore.c) records are
`_flowcore.Record` objects instead of lists: the same items at the same indexes
(the sequence protocol: the code here reads and writes them as lists, and
`rec[R_TCP]` is a view of the TCP part), with the numbers inline (times as
doubles, counts as 64-bit ints), so accounting a packet makes no Python object;
a record refuses a value it cannot hold (OverflowError past 64 bits, TypeError
for a time that is no number). Times: `account` converts a time that is not a
float at the door (`float(ts)`), on both paths, so both hold the same values.
The accounting, opening and ending of flows, the loops of `sweep` and `finish`,
a transaction's `flow_id` and the text reports run in C on these same
records (the C frame loop, beat/frameloop.py, accounts its frames through a
cache of key tuples instead of building a key per packet; this dict stays
the only truth; a report is written there straight into the output's block
from the record's numbers and the flow's static parts, which the C core keeps
in R_TEXT as one UTF-8 bytes object of its own, and no R_BODY: each side
rebuilds a cache it does not recognise); the Python code here stays the reference
(tests/beat/test_flowcore.py) and takes every case the C code hands back
(dict reports, negative counts, keys of unusual shape, a new SYN on a
closed flow).
"""
from __future__ import annotations

from collections import OrderedDict
import base64
import struct
from collections.abc import Callable
from typing import Any

import orjson
from orjson import Fragment as _Fragment

from wirebeat.accel import flowcore as _flowcore
from wirebeat.document import DocumentBuilder, capture_fields, community_id_packed, id_source, iso_time
from wirebeat.decoders.api import FlowKey, format_mac
from wirebeat.hashes import blake2b
from wirebeat.ip import ip_packed, ip_text
from wirebeat.pipeline import BLOCK_MAX_BYTES

__all__ = ["CLOSED_LINGER_S", "FlowReporter", "FlowTable", "flow_document"]

CLOSED_LINGER_S = 1.0       # packet time a FIN/RST-closed flow still takes stragglers
ENDED_KEEP_S = 120.0        # packet time an ended flow's id still names late transactions
EVICTION_WINDOW = 8         # on a full table the idlest of this many oldest flows goes
LINKTYPE_ETHERNET = 1

_PORTS = struct.Struct("!HH").unpack_from
_ID_NUMBERS = struct.Struct("!BHHq")       # protocol, ports, first packet time in microseconds
_TCP = struct.Struct("!HHI4xBB").unpack_from     # ports, seq, data offset (high nibble), flags
_U16 = struct.Struct("!H").unpack_from
_SEQ_MASK = 0xFFFFFFFF
_HALF = 0x80000000
# ICMP types that carry an identifier (RFC 792 echo, timestamp, information,
# RFC 950 address mask; RFC 4443 echo): requests and replies share one flow.
_ICMP4_WITH_ID = frozenset({0, 8, 13, 14, 15, 16, 17, 18})
_ICMP6_WITH_ID = frozenset({128, 129})
_TRANSPORTS = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 47: "gre",
               50: "esp", 51: "ah", 2: "igmp", 89: "ospf", 4: "ipip", 41: "ipv6", 103: "pim",
               112: "vrrp", 136: "udplite"}
NO_TUNNEL = ()

# The key, as built per packet (the reverse direction swaps each pair):
# (MAC pair as in the frame: destination then source, or b"" off Ethernet (the reverse
#  key swaps the pair; MACs of a frame shorter than 12 bytes stay as they are, so that the
#  reverse of the reverse key is the key and no flow's reverse key is another flow's key),
#  VLAN ids outer first, outer IP pair of a tunnel (outer_src, outer_dst), or
#  NO_TUNNEL,
#  IP source, IP destination, IP protocol, source port, destination port).
K_MACS, K_VLANS, K_OUTER, K_SRC, K_DST, K_PROTO, K_SPORT, K_DPORT = range(8)

# A flow record: a list, indexed by these (direction d: 0 = source -> destination).
(R_FIRST_TS, R_LAST_TS, R_PACKETS, R_PACKETS_REV, R_BYTES, R_BYTES_REV, R_KEY, R_REV_KEY,
 R_REPORTS, R_CLOSED, R_TCP, R_ID, R_ICMP, R_ALIAS, R_STATIC, R_TEXT, R_BODY) = range(17)
# TCP part of a record (a list too): highest sequence end per direction,
# retransmitted bytes per direction, control counts, handshake times.
(T_HIGH, T_HIGH_REV, T_RETRANS, T_RETRANS_REV, T_SYN, T_FIN, T_RST, T_FIN_DIRS,
 T_SYN_TS, T_SYN_DIR, T_SYNACK_TS, T_ACK_TS, T_AWAIT_ACK_DIR) = range(13)


if _flowcore is not None and (_flowcore.LAYOUT != (tuple(range(17)), tuple(range(13)))
                              or getattr(_flowcore, "EVICTION_WINDOW", None) != EVICTION_WINDOW):
    _flowcore = None        # built from another record layout: the Python path does it all


def _new_tcp() -> list[Any]:
    return [-1, -1, 0, 0, 0, 0, 0, 0, None, -1, None, None, -1]     # -1: no data seen yet


class FlowReporter:
    """Builds flow documents and hands them to the pipeline; shared by every source's table.

    Two ways to build a report, giving the same bytes once serialised:
    - `fragments` (the output serialises with orjson, which embeds an
      `orjson.Fragment` as is) and nothing changes documents after they are
      built (no processors, no fields under the root): the JSON text directly,
      from parts cached per flow (see `report`);
    - otherwise a dict (`flow_document`), which processors can edit.
    """

    def __init__(self, builder: DocumentBuilder, publish: Callable[[str, Any], None],
                 timeout_s: float, period_s: float, max_flows: int,
                 report_all: bool = True, fragments: bool = False,
                 publish_many: Callable[[list[tuple[str, Any]]], None] | None = None,
                 publish_block: Callable[[bytes, bytes, int], None] | None = None,
                 block_docs: int = 1024, block_bytes: int = BLOCK_MAX_BYTES) -> None:
        self.builder = builder
        self.publish = publish
        # The C core collects the text reports of a sweep (and of the end of input) and
        # hands them over in one call, `publish_many([(id, doc), ...])` (Pipeline's),
        # else one `publish` call each.
        self.publish_many = publish_many
        self.timeout_s = timeout_s
        self.period_s = period_s            # <= 0: final reports only
        self._max_flows = max(1, max_flows)
        self.report_all = report_all        # every live flow every period, as packetbeat
        # (false: only flows active in the last period)
        self.sweep_s = min(timeout_s, period_s) if period_s > 0 else timeout_s
        self.non_ip: dict[int, int] = {}    # frames per ethertype that made no flow
        self.as_text = fragments and builder.shared_ok
        self.tails: dict[str, str] = {}     # per source: capture, agent, ecs, fields, tags as JSON
        self.report_time = (-1.0, "")       # the last report time and its text (sweeps share it)
        # wirebeat._flowcore's `report` (the same reports, the same cached parts) shadows
        # the method below, which stays the reference and takes what it does not cover.
        self.core = None if _flowcore is None else _flowcore.Reporter(
            self, FlowReporter.report, _assign_id, iso_time, _Fragment, community_id_packed, _TRANSPORTS,
            self._tail, id_source)
        if self.core is not None:
            self.report = self.core
            if publish_block is not None and self.as_text:
                # A sweep's text reports written by the C core straight into NDJSON blocks of
                # at most `block_docs` documents / `block_bytes` (Pipeline's: the output's, at most
                # BLOCK_MAX_BYTES; see Pipeline.publish_block):
                # no Python object per report; the same documents, ids and order.
                self.core.blocks(publish_block, max(1, block_docs),
                                 max(1, min(block_bytes, BLOCK_MAX_BYTES)))

    @property
    def max_flows(self) -> int:
        """Flows a table holds (each under two keys), and the ended flows' ids it keeps: fixed
        when the reporter is made (the C core reads it then, not at every new flow)."""
        return self._max_flows

    def count_non_ip(self, ethertype: int) -> None:
        self.non_ip[ethertype] = self.non_ip.get(ethertype, 0) + 1

    def report(self, source: str, rec: list[Any], final: bool, reason: str | None,
               report_ts: float) -> None:
        """Publish one report of `rec`; `report_ts` (packet time) becomes @timestamp.

        As text (`as_text`), byte for byte what orjson makes of `flow_document`'s
        dict after `build_other` (tests/beat/test_flows.py compares them on every
        kind of flow). Cached per flow: R_TEXT, the parts that never change
        (start time, flow.id, VLAN ids, addresses, MACs, ports, network type,
        transport, community id, direction), each already JSON with the key that
        follows it (`_text_parts`); R_BODY, what changes only with packets: the
        text around flow.final and event.end (`_body`), reused as long as no
        packet came since, so a quiet flow's periodic and final reports are one
        string join. Per source the tail (capture, agent, ecs, fields, tags) is
        made once.
        """
        fid = rec[R_ID] or _assign_id(source, rec)
        reports = rec[R_REPORTS]
        rec[R_REPORTS] = reports + 1
        if not self.as_text:
            self._report_dict(source, rec, fid, f"{fid}-{reports}", final, reason, report_ts)
            return
        body = rec[R_BODY]
        if body is None or body[0] != rec[R_PACKETS] + rec[R_PACKETS_REV]:
            body = rec[R_BODY] = self._body(source, rec, fid)
        if report_ts == rec[R_LAST_TS]:
            stamp = body[1]                 # @timestamp is event.end
        elif report_ts == self.report_time[0]:
            stamp = self.report_time[1]     # the sweep's other reports share it
        else:
            stamp = iso_time(report_ts)
            self.report_time = (report_ts, stamp)
        if final:       # the doc id: fid already names source, key and start
            end_reason = f',"end_reason":"{reason}"' if reason else ""  # one of ours: plain words
            self.publish(f"{fid}-{reports}", _Fragment(
                f'{{"@timestamp":"{stamp}{_EVENT_FINAL}{body[2]}true{end_reason}{body[3]}'))
        else:
            self.publish(f"{fid}-{reports}", _Fragment(
                f'{{"@timestamp":"{stamp}{_EVENT_LIVE}{body[2]}false{body[3]}'))

    def _report_dict(self, source: str, rec: list[Any], fid: str, doc_id: str, final: bool,
                     reason: str | None, report_ts: float) -> None:
        """The report as a dict (`flow_document`), which processors may change or drop."""
        doc = flow_document(source, rec, fid, final, reason, report_ts)
        direction = self.builder.direction
        if direction is not None:
            key = rec[R_KEY]    # the inner addresses when tunnelled, as for transactions
            doc["network"]["direction"] = direction.of_packed(key[K_SRC], key[K_DST])
        built = self.builder.build_other(doc)
        if built is not None:           # None: a processor dropped it
            self.publish(doc_id, built)

    def _body(self, source: str, rec: list[Any], fid: str) -> tuple[int, str, str, str]:
        """(packets, event.end, the text from event.start to flow.final's key, the text after
        flow.final's value (and flow.end_reason)): what a flow's reports share until its next packet."""
        parts = self._parts(source, rec, fid)
        start, flow_head, src_head, dst_head, network_head, closing = parts
        last = rec[R_LAST_TS]
        end = iso_time(last)
        tcp = rec[R_TCP]
        packets, packets_rev, sent, received = (rec[R_PACKETS], rec[R_PACKETS_REV], rec[R_BYTES],
                                                rec[R_BYTES_REV])
        return (packets + packets_rev, end,
                f'{start}{end}","duration":{round((last - rec[R_FIRST_TS]) * 1e6) * 1000}{flow_head}',
                f'{"" if tcp is None else _tcp_text(tcp)}{src_head}{packets},"bytes":{sent}{dst_head}'
                f'{packets_rev},"bytes":{received}{network_head}'
                f'{sent + received},"packets":{packets + packets_rev}{closing}')

    def _parts(self, source: str, rec: list[Any], fid: str) -> tuple[str, ...]:
        """The flow's cached `_text_parts`, made at its first text report (or after the C
        core's: it keeps them in R_TEXT as one bytes object of its own)."""
        parts = rec[R_TEXT]
        if parts.__class__ is not tuple:
            parts = rec[R_TEXT] = _text_parts(source, rec, fid, self.builder.direction,
                                              self._tail(source))
        return parts

    def _tail(self, source: str) -> str:
        tail = self.tails.get(source)
        if tail is None:
            tail = self.tails[source] = _tail_text(self.builder, source)
        return tail


# The JSON text of a flow report around what `_text_parts` caches (see FlowReporter.report).
_EVENT_HEAD = ('","type":"flow","event":{"kind":"event","category":["network"],'
               '"action":"network_flow","dataset":"flow","type":["connection"')
_EVENT_LIVE = _EVENT_HEAD + '],"start":"'
_EVENT_FINAL = _EVENT_HEAD + ',"end"],"start":"'


def _text_parts(source: str, rec: list[Any], fid: str, direction: Any,
                tail: str) -> tuple[str, str, str, str, str, str]:
    """The text of what never changes in a flow's reports, each part ending with the
    key of the value that follows it: event.start (then event.end), flow.id and
    flow.vlan (then flow.final), source's static members (then source.packets),
    destination's (then destination.packets), network's (then network.bytes); and
    what follows network.packets: network.direction's member (wirebeat.direction),
    and `tail` (`_tail_text`).

    Written as text directly, members in `_static_parts`' order: every value is
    a number or ASCII JSON never escapes (address and MAC text, base64 ids,
    transport names, direction words)."""
    key = rec[R_KEY]
    macs, src_ip, dst_ip, ports, network_type, transport, cid = _static_values(rec)
    src_text = dst_text = ""
    if macs:
        src_text, dst_text = f'"mac":"{macs[0]}",', f'"mac":"{macs[1]}",'
    if src_ip.__class__ is str:
        src_text += f'"ip":"{src_ip}",'
        dst_text += f'"ip":"{dst_ip}",'
    else:                               # tunnelled: [outer, inner]
        src_text += f'"ip":["{src_ip[0]}","{src_ip[1]}"],'
        dst_text += f'"ip":["{dst_ip[0]}","{dst_ip[1]}"],'
    if ports:
        src_text += f'"port":{ports[0]},'
        dst_text += f'"port":{ports[1]},'
    vlans = key[K_VLANS]
    vlan_text = f'"vlan":[{",".join(map(str, vlans))}],' if vlans else ""
    cid_text = f'"community_id":"{cid}",' if cid else ""
    direction_text = ("" if direction is None else
                      f',"direction":"{direction.of_packed(key[K_SRC], key[K_DST])}"')
    return (f'{iso_time(rec[R_FIRST_TS])}","end":"', f'}},"flow":{{"id":"{fid}",{vlan_text}"final":',
            f'}},"source":{{{src_text}"packets":',
            f'}},"destination":{{{dst_text}"packets":',
            f'}},"network":{{"type":"{network_type}","transport":"{transport}",{cid_text}"bytes":',
            f'{direction_text}}}{tail}')


def _tail_text(builder: DocumentBuilder, source: str) -> str:
    """`,"capture":...,"agent":...,"ecs":...` (and fields, tags) and the closing brace:
    what build_other adds to every flow document of `source`, as JSON text."""
    tail = builder.build_other({"capture": capture_fields(source)})
    assert tail is not None             # only used without processors
    return "," + orjson.dumps(tail).decode()[1:]


class FlowTable:
    """One capture source's flows, swept by packet time."""

    __slots__ = ("source", "reporter", "flows", "order", "by_endpoints", "ended", "next_sweep",
                 "next_report", "evicted", "ended_forgotten", "reports", "final_reports", "opened",
                 "account", "core", "assign_id", "flow_id")

    def __init__(self, source: str, reporter: FlowReporter) -> None:
        self.source = source
        self.reporter = reporter
        # Both directions' keys (and a MAC-order alias) -> the flow's record; a key's
        # direction is 0 when it is the record's R_KEY (what the flow's source sent), else 1.
        self.flows: dict[tuple, Any] = {}
        # id(record) -> record of every flow in the table, in the order the flows opened,
        # which is the order of their R_KEY entries in `flows` (an R_KEY is a new entry when
        # its flow opens): how a full table finds its oldest flows in O(1) instead of
        # walking `flows` from the front, over the holes ended flows leave in a dict.
        # With the C core, None: the core keeps this order linked through its records
        # (core.link / unlink / evict / order(); no hashing per flow).
        self.order: OrderedDict[int, Any] | None = OrderedDict()
        # (protocol, ip, port, ip, port) as the flow's source sent it -> record:
        # how a transaction finds its flow (the last flow between those endpoints).
        self.by_endpoints: dict[tuple, list[Any]] = {}
        # The same endpoints -> (flow.id, end time) of flows that ended, in end
        # order, for transactions a decoder emits after their flow's final report
        # (an unanswered request at its timeout, a flow timeout shorter than the
        # decoder's): kept ENDED_KEEP_S of packet time, at most max_flows.
        self.ended: OrderedDict[tuple, tuple[str, float]] = OrderedDict()
        self.ended_forgotten = 0
        self.next_sweep = 0.0
        self.next_report = 0.0
        self.evicted = 0
        self.reports = 0
        self.final_reports = 0
        self.opened = 0
        # `account` is wirebeat._flowcore's (the same work on the same records; it calls
        # _control for a new SYN on a closed flow, _evict, and the methods below for keys
        # of unusual shape) or
        # `account_python`; `flow_id` likewise (or `flow_id_python`); the loops over the
        # records of `sweep` and `finish` too.
        self.core = None if reporter.core is None else _flowcore.Table(
            self, reporter.core, self.account_python, self.flow_id_python, ip_packed)
        if self.core is not None:
            self.order = None
        self.account = self.account_python if self.core is None else self.core
        self.flow_id = self.flow_id_python if self.core is None else self.core.flow_id
        self.assign_id = _assign_id if reporter.core is None else reporter.core.flow_id

    # -- per packet ------------------------------------------------------------

    def account_python(self, ts: float, linktype: int, frame: bytes, vlans: tuple[int, ...],
                       src: bytes, dst: bytes, proto: int, payload: bytes,
                       outer: tuple[bytes, ...] = NO_TUNNEL) -> None:
        """Add one IP packet to its flow.

        `frame` is the whole captured frame (its MACs and length count), `vlans`
        its tags; src/dst/proto/payload are the innermost IP packet's, `outer`
        the tunnel's outer address pair (empty when not tunneled)."""
        if ts.__class__ is not float:
            ts = float(ts)      # records hold times as floats (the C core's as doubles): the same values
        macs = frame[:12] if linktype == LINKTYPE_ETHERNET else b""
        if proto == 6 and len(payload) >= 20:
            sport, dport, seq, offset, flags = _TCP(payload)
            key = (macs, vlans, outer, src, dst, 6, sport, dport)
            rec = self.flows.get(key)
            if rec is None:
                rec, d = self._alias(key) or self._open(key, ts, payload)
            else:
                d = 0 if key == rec[R_KEY] else 1
            tcp = rec[R_TCP]
            if flags & 0x07 or tcp[T_AWAIT_ACK_DIR] == d:     # SYN, FIN, RST, handshake ACK
                rec, d, tcp = self._control(key, rec, d, tcp, flags, ts, payload)
            data_len = len(payload) - (offset >> 4) * 4
            if data_len > 0:
                high = tcp[d]
                # Sequence numbers wrap (RFC 9293 §3.4): compare modulo 2**32.
                behind = (high - seq) & _SEQ_MASK
                if high < 0 or behind >= _HALF:        # first data, or new bytes after a hole
                    tcp[d] = (seq + data_len) & _SEQ_MASK
                else:                                   # starts at or before the highest byte seen
                    if behind:
                        tcp[T_RETRANS + d] += behind if behind < data_len else data_len
                    if behind < data_len:
                        tcp[d] = (seq + data_len) & _SEQ_MASK
        else:
            if proto == 17:
                sport, dport = _PORTS(payload) if len(payload) >= 4 else (0, 0)
            elif proto == 1:        # the identifier in both slots: the reply's key is the reverse
                sport = dport = (_U16(payload, 4)[0] if len(payload) >= 6
                                 and payload[0] in _ICMP4_WITH_ID else 0)
            elif proto == 58:
                sport = dport = (_U16(payload, 4)[0] if len(payload) >= 6
                                 and payload[0] in _ICMP6_WITH_ID else 0)
            else:
                sport = dport = 0
            key = (macs, vlans, outer, src, dst, proto, sport, dport)
            rec = self.flows.get(key)
            if rec is None:
                rec, d = self._alias(key) or self._open(key, ts, payload)
            else:
                d = 0 if key == rec[R_KEY] else 1
        rec[R_LAST_TS] = ts
        rec[R_PACKETS + d] += 1
        rec[R_BYTES + d] += len(frame)

    def _control(self, key: tuple, rec: list[Any], d: int, tcp: list[Any], flags: int, ts: float,
                 payload: bytes) -> tuple[list[Any], int, list[Any]]:
        """SYN/FIN/RST counts, the handshake, and a new connection on a closed flow's ports."""
        if flags & 0x12 == 0x02 and rec[R_CLOSED] is not None:
            # A new connection on a closed flow's ports: the old flow ends here.
            self._end(rec, rec[R_CLOSED], rec[R_LAST_TS])
            rec, d = self._open(key, ts, payload)
            tcp = rec[R_TCP]
        if flags & 0x02:
            tcp[T_SYN] += 1
            if flags & 0x10:                                    # SYN/ACK
                if tcp[T_SYNACK_TS] is None and tcp[T_SYN_DIR] == 1 - d:
                    tcp[T_SYNACK_TS] = ts
                    tcp[T_AWAIT_ACK_DIR] = 1 - d
            elif tcp[T_SYN_TS] is None:
                tcp[T_SYN_TS] = ts
                tcp[T_SYN_DIR] = d
        elif tcp[T_AWAIT_ACK_DIR] == d and flags & 0x10:       # the handshake's third packet
            tcp[T_ACK_TS] = ts
            tcp[T_AWAIT_ACK_DIR] = -1
        if flags & 0x01:
            tcp[T_FIN] += 1
            tcp[T_FIN_DIRS] |= 1 << d
            if tcp[T_FIN_DIRS] == 3 and rec[R_CLOSED] is None:
                rec[R_CLOSED] = "fin"
        if flags & 0x04:
            tcp[T_RST] += 1
            if rec[R_CLOSED] is None:
                rec[R_CLOSED] = "rst"
        return rec, d, tcp

    def _alias(self, key: tuple) -> tuple[list[Any], int] | None:
        """The reverse direction of a flow whose frames carry the same MAC order both ways.

        Synthetic captures (and some taps) write one MAC pair for both
        directions; packetbeat's key orders the pair, so they are one flow there.
        Here the reverse key is tried with the frame's MACs swapped, once per
        such flow: the packet's own key is then remembered as an alias.
        """
        macs = key[K_MACS]
        if len(macs) != 12 or macs[:6] == macs[6:]:    # (other MACs are the same both ways: `_open`)
            return None
        swapped = (macs[6:] + macs[:6],) + key[1:]
        rec = self.flows.get(swapped)
        if rec is None or rec[R_ALIAS] is not None:
            return None
        if swapped == rec[R_KEY]:
            return None     # same direction, other MAC order: another flow
        rec[R_ALIAS] = key
        self.flows[key] = rec
        if self.core is not None:
            self.core.invalidate()      # the C key cache checks its entries again
        return rec, 1

    def _open(self, key: tuple, ts: float, payload: bytes) -> tuple[list[Any], int]:
        flows = self.flows
        if len(flows) >= 2 * self.reporter.max_flows:
            self._evict()
        macs = key[K_MACS]
        if len(macs) == 12:     # (other lengths, of a frame cut short, stay: a swap must undo itself)
            macs = macs[6:] + macs[:6]
        rev_key = (macs, key[K_VLANS], key[K_OUTER][::-1], key[K_DST],
                   key[K_SRC], key[K_PROTO], key[K_DPORT], key[K_SPORT])
        proto = key[K_PROTO]
        icmp = (payload[0], payload[1]) if proto in (1, 58) and len(payload) >= 2 else None
        rec = [ts, ts, 0, 0, 0, 0, key, rev_key, 0, None,
               _new_tcp() if proto == 6 else None, None, icmp, None, None, None, None]
        if self.core is not None:
            rec = _flowcore.Record(rec)     # the C core's records: numbers inline
        flows[key] = rec
        if rev_key != key:              # equal only for a host talking to itself on one port
            flows[rev_key] = rec
        if self.core is not None:
            self.core.invalidate()      # a key may have had another entry: the C key cache checks again
        self.by_endpoints[_endpoints(key)] = rec
        if self.core is not None:
            self.core.link(rec)         # the C core's open order
        else:
            self.order[id(rec)] = rec
        self.opened += 1
        return rec, 0

    # -- ends and reports ------------------------------------------------------

    def _end(self, rec: list[Any], reason: str, report_ts: float) -> None:
        """Final report, then forget the flow (its id stays in `ended` a while)."""
        self.reporter.report(self.source, rec, True, reason, report_ts)
        self.final_reports += 1
        flows = self.flows
        if self.core is not None:
            self.core.invalidate()      # keys leave the table: the C key cache checks its entries again
        key, rev_key = rec[R_KEY], rec[R_REV_KEY]
        if flows.get(key) is rec:
            del flows[key]
        if flows.get(rev_key) is rec:
            del flows[rev_key]
        alias = rec[R_ALIAS]
        if alias is not None and flows.get(alias) is rec:
            del flows[alias]
        if self.core is not None:
            self.core.unlink(rec)
        else:
            self.order.pop(id(rec), None)
        ends = _endpoints(key)
        if self.by_endpoints.get(ends) is rec:
            del self.by_endpoints[ends]
        ended = self.ended
        ended.pop(ends, None)           # re-inserted last: `ended` stays in end order
        if len(ended) >= self.reporter.max_flows:
            ended.popitem(last=False)
            self.ended_forgotten += 1
        ended[ends] = (rec[R_ID], report_ts)

    def _evict(self) -> None:
        """Table full: the idlest of the oldest flows ends with reason `evicted`.

        The oldest: the first EVICTION_WINDOW records of `order` that `flows` holds under
        their own key (R_KEY), as they come in `flows`' order. (A record whose R_KEY entry
        another flow's took is no longer one: it leaves `order` when met here.)"""
        if self.core is not None:       # the same, on the C core's order
            self.core.evict()
            return
        flows, order = self.flows, self.order
        oldest, lost = [], []
        for rec in order.values():
            if flows.get(rec[R_KEY]) is rec:
                oldest.append(rec)
                if len(oldest) == EVICTION_WINDOW:
                    break
            else:
                lost.append(rec)
        for rec in lost:
            del order[id(rec)]
        if not oldest:      # only entries another flow's key took (not from captured frames)
            return
        victim = min(oldest, key=lambda r: r[R_LAST_TS])
        self._end(victim, "evicted", victim[R_LAST_TS])
        self.evicted += 1

    def _records(self) -> list[list[Any]]:
        """Each flow's record once: the entries under the key its source sent."""
        return [rec for key, rec in self.flows.items() if key == rec[R_KEY]]

    def sweep(self, now: float) -> None:
        """Packet time moved on: end idle and closed flows, report live ones when due."""
        if now < self.next_sweep:
            return
        reporter = self.reporter
        first = self.next_sweep == 0.0
        self.next_sweep = now + reporter.sweep_s
        period_s = reporter.period_s
        if first:
            self.next_report = now + period_s
            return
        report_due = period_s > 0 and now >= self.next_report
        if report_due:
            self.next_report = now + period_s
        report_all = reporter.report_all
        period_ago = now - period_s
        idle_before = now - reporter.timeout_s
        closed_before = now - CLOSED_LINGER_S
        ended = self.ended
        forget_before = now - ENDED_KEEP_S
        while ended:
            ends = next(iter(ended))
            if ended[ends][1] >= forget_before:
                break
            del ended[ends]
        if self.core is not None:       # the same loop in C
            self.reports += self.core.sweep_records(now, report_due, report_all, period_ago,
                                                    idle_before, closed_before)
            return
        for rec in self._records():
            last = rec[R_LAST_TS]
            if last <= idle_before:
                self._end(rec, rec[R_CLOSED] or "idle", now)
            elif rec[R_CLOSED] is not None and last <= closed_before:
                self._end(rec, rec[R_CLOSED], now)
            elif report_due and (report_all or rec[R_FIRST_TS] <= period_ago <= last):
                reporter.report(self.source, rec, False, None, now)
                self.reports += 1

    def finish(self) -> None:
        """End of input: every flow gets its final report, at its last packet's time.

        A flow FIN or RST already closed keeps that reason."""
        if self.core is not None:       # the same loop in C, reports published together
            self.core.finish_records()
            return
        for rec in self._records():
            self._end(rec, rec[R_CLOSED] or "end_of_input", rec[R_LAST_TS])

    # -- lookups and counters -------------------------------------------------------

    def flow_id_python(self, flow: FlowKey) -> str | None:
        """flow.id of the flow a transaction belongs to: the live one, else one that ended.

        Transactions know addresses and ports, not MACs or VLANs: when several
        live flows share them, the latest one is named; with none live, the
        latest that ended within ENDED_KEEP_S (see `ended`). ICMP transactions name
        type/code rather than the identifier, so for ICMP it is the latest flow
        between the two addresses.
        """
        proto = _IANA.get(flow.transport)
        if proto is None:
            return None
        client, server = ip_packed(flow.client_ip), ip_packed(flow.server_ip)
        cport, sport = (flow.client_port, flow.server_port) if proto in (6, 17) else (0, 0)
        by_endpoints = self.by_endpoints
        rec = (by_endpoints.get((proto, client, cport, server, sport))
               or by_endpoints.get((proto, server, sport, client, cport)))
        if rec is not None:
            return rec[R_ID] or self.assign_id(self.source, rec)
        ended = self.ended
        if ended:
            gone = (ended.get((proto, client, cport, server, sport))
                    or ended.get((proto, server, sport, client, cport)))
            if gone is not None:
                return gone[0]
        return None

    def held(self) -> int:
        """The containers this table keeps alive for the garbage collector's count: the keys
        of `flows` (two a flow), of `by_endpoints`, and an ended flow's entry (its key and
        value); see engine.collector_allows."""
        return len(self.flows) + len(self.by_endpoints) + 2 * len(self.ended)

    def counters(self) -> dict[str, int]:
        opened = self.opened
        if self.core is not None:       # the same figures, counted in C
            records, aliases, opened_c = self.core.census()
            opened += opened_c          # flows the C core opened (it counts its own)
        else:
            records = len(self._records())
            aliases = sum(1 for key, rec in self.flows.items() if rec[R_ALIAS] is not None and key != rec[R_KEY])
        return {"flows.table.open": records, "flows.table.mac_aliases": aliases,
                "flows.table.opened": opened, "flows.table.evicted": self.evicted,
                "flows.table.ended_forgotten": self.ended_forgotten,
                "flows.reports.periodic": self.reports, "flows.reports.final": self.final_reports}


_IANA = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58}


def _endpoints(key: tuple) -> tuple:
    """The by_endpoints key: protocol, addresses and ports (ICMP: none), as the source sent."""
    proto = key[K_PROTO]
    if proto in (6, 17):
        return (proto, key[K_SRC], key[K_SPORT], key[K_DST], key[K_DPORT])
    return (proto, key[K_SRC], 0, key[K_DST], 0)



def _assign_id(source: str, rec: list[Any]) -> str:
    """flow.id: a hash of the source, the key and the first packet's time.

    Stable across runs on the same capture; distinct for a flow that reuses an
    earlier flow's ports. (packetbeat's own id is a base64 of its internal key
    layout, which nothing outside packetbeat reads.)
    """
    source = id_source(source)
    macs, vlans, outer, src, dst, proto, sport, dport = rec[R_KEY]
    numbers = _ID_NUMBERS.pack(proto, sport, dport, round(rec[R_FIRST_TS] * 1e6))
    if outer or vlans:
        parts = (source.encode(), macs, bytes(map(len, outer)), *outer, src, dst, numbers,
                 ",".join(map(str, vlans)).encode())
    else:           # the common case, the same bytes: no outer addresses, no VLAN ids
        parts = (source.encode(), macs, b"", src, dst, numbers, b"")
    digest = blake2b(b"|".join(parts), digest_size=15).digest()
    fid = rec[R_ID] = base64.urlsafe_b64encode(digest).decode()
    return fid


def flow_document(source: str, rec: list[Any], fid: str, final: bool, reason: str | None,
                  report_ts: float) -> dict[str, Any]:
    """The one place flow field names are spelled; mirrors index_templates/common.json."""
    static = rec[R_STATIC]
    if static is None:
        static = _static_parts(source, rec, fid)
        if not final:       # more reports will follow: they start from copies
            rec[R_STATIC] = static
    if rec[R_STATIC] is not None:
        src_base, dst_base, network_base, flow_base, start = static
        src, dst = dict(src_base), dict(dst_base)
        network, flow = dict(network_base), dict(flow_base)
    else:                   # the only report: the parts themselves
        src, dst, network, flow, start = static
    first, last = rec[R_FIRST_TS], rec[R_LAST_TS]
    end = iso_time(last)
    src["packets"], src["bytes"] = rec[R_PACKETS], rec[R_BYTES]
    dst["packets"], dst["bytes"] = rec[R_PACKETS_REV], rec[R_BYTES_REV]
    network["bytes"] = rec[R_BYTES] + rec[R_BYTES_REV]
    network["packets"] = rec[R_PACKETS] + rec[R_PACKETS_REV]
    flow["final"] = final
    if final and reason:
        flow["end_reason"] = reason
    tcp = rec[R_TCP]
    if tcp is not None:
        flow["tcp"] = _tcp_fields(tcp)
    return {
        "@timestamp": end if report_ts == last else iso_time(report_ts),
        "type": "flow",
        "event": {"kind": "event", "category": ["network"], "action": "network_flow",
                  "dataset": "flow", "type": ["connection", "end"] if final else ["connection"],
                  "start": start, "end": end, "duration": round((last - first) * 1e6) * 1000},
        "flow": flow,
        "source": src,
        "destination": dst,
        "network": network,
        "capture": capture_fields(source),
    }


def _static_values(rec: list[Any]) -> tuple:
    """What a flow's reports show of its key: (MAC text pair (source, destination) or
    None, source and destination ip (text, or [outer, inner] when tunnelled), port
    pair or None, network.type, network.transport, community id or None)."""
    key = rec[R_KEY]
    proto = key[K_PROTO]
    src, dst = key[K_SRC], key[K_DST]
    macs = key[K_MACS]
    mac_pair = (format_mac(macs[6:12]), format_mac(macs[:6])) if macs else None
    src_ip, dst_ip = ip_text(src), ip_text(dst)
    outer = key[K_OUTER]
    if outer:
        src_ip, dst_ip = [ip_text(outer[0]), src_ip], [ip_text(outer[1]), dst_ip]
    ports = None
    if proto == 6 or proto == 17:
        ports = (key[K_SPORT], key[K_DPORT])
        cid = community_id_packed(proto, src, key[K_SPORT], dst, key[K_DPORT])
    elif rec[R_ICMP] is not None:
        cid = community_id_packed(proto, src, rec[R_ICMP][0], dst, rec[R_ICMP][1])
    else:
        cid = None
    return (mac_pair, src_ip, dst_ip, ports, "ipv6" if len(src) == 16 else "ipv4",
            _TRANSPORTS.get(proto, str(proto)), cid)


def _static_parts(source: str, rec: list[Any], fid: str) -> tuple:
    """What a flow's reports share: built at its first report, copied into each if several."""
    macs, src_ip, dst_ip, ports, network_type, transport, cid = _static_values(rec)
    src: dict[str, Any] = {}
    dst: dict[str, Any] = {}
    if macs:
        src["mac"], dst["mac"] = macs
    src["ip"], dst["ip"] = src_ip, dst_ip
    if ports:
        src["port"], dst["port"] = ports
    network: dict[str, Any] = {"type": network_type, "transport": transport}
    if cid:
        network["community_id"] = cid
    flow: dict[str, Any] = {"id": fid}
    vlans = rec[R_KEY][K_VLANS]
    if vlans:
        flow["vlan"] = list(vlans)
    return src, dst, network, flow, iso_time(rec[R_FIRST_TS])


def _tcp_text(tcp: list[Any]) -> str:
    """`,"tcp":{...}`: `_tcp_fields` as JSON text (all numbers), without a dict."""
    text = (f',"tcp":{{"syn_packets":{tcp[T_SYN]},"fin_packets":{tcp[T_FIN]},'
            f'"rst_packets":{tcp[T_RST]},"source_retransmitted_bytes":{tcp[T_RETRANS]},'
            f'"destination_retransmitted_bytes":{tcp[T_RETRANS_REV]}')
    syn_ts, synack_ts, ack_ts = tcp[T_SYN_TS], tcp[T_SYNACK_TS], tcp[T_ACK_TS]
    if syn_ts is None or synack_ts is None:
        return text + "}"
    text += f',"rtt":{{"server_us":{round((synack_ts - syn_ts) * 1e6)}'
    if ack_ts is not None:
        text += (f',"client_us":{round((ack_ts - synack_ts) * 1e6)}'
                 f',"handshake_us":{round((ack_ts - syn_ts) * 1e6)}')
    return text + "}}"


def _tcp_fields(tcp: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"syn_packets": tcp[T_SYN], "fin_packets": tcp[T_FIN],
                           "rst_packets": tcp[T_RST],
                           "source_retransmitted_bytes": tcp[T_RETRANS],
                           "destination_retransmitted_bytes": tcp[T_RETRANS_REV]}
    syn_ts, synack_ts, ack_ts = tcp[T_SYN_TS], tcp[T_SYNACK_TS], tcp[T_ACK_TS]
    if syn_ts is not None and synack_ts is not None:
        rtt = {"server_us": round((synack_ts - syn_ts) * 1e6)}
        if ack_ts is not None:
            rtt["client_us"] = round((ack_ts - synack_ts) * 1e6)
            rtt["handshake_us"] = round((ack_ts - syn_ts) * 1e6)
        out["rtt"] = rtt
    return out
