"""Flow reports on hand-built traffic whose packet and byte counts are known by construction.

Every expected count is the sum of the lengths of the frames the test built
for that direction; timings are the timestamps it gave them; community ids
come from the reference `communityid` package.
"""
from __future__ import annotations

import threading
from typing import Any

import communityid
import orjson
import pytest

import pcapgen as g
from conftest import PCAPS, decode_file
from wirebeat.config import ConfigError, load_config
from wirebeat.document import DocumentBuilder
from wirebeat.flows import FlowReporter
from wirebeat.registry import discover
from wirebeat.testing import ListOutput, make_engine

T0 = 1_700_000_000.0
CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
C4, S4 = "192.0.2.10", "198.51.100.20"
C6, S6 = "2001:db8::10", "2001:db8:1::20"
COMMUNITY = communityid.CommunityID(seed=0)
SPECS = [r.spec for r in discover()]


class IdOutput(ListOutput):
    """ListOutput that also keeps each document's _id."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def send(self, batch: list[tuple[str, dict[str, Any]]], stopping: threading.Event) -> int:
        self.ids.extend(doc_id for doc_id, _ in batch)
        return super().send(batch, stopping)


def run(frames: list[tuple[float, bytes]], linktype: int = 1, **overrides: Any
        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """(flow documents, other documents, counters) of frames fed to one source, then its end."""
    values = {"wirebeat.flows.enabled": True}
    values.update({key.replace("__", "."): value for key, value in overrides.items()})
    engine, pipeline, output, stats = make_engine(SPECS, overrides=values)
    ids = IdOutput()
    pipeline.output = ids
    for ts, frame in frames:
        engine.on_frame(ts, linktype, frame, "test")
    engine.finish("test")
    counters = stats.snapshot()
    assert pipeline.close() == 0
    flows = [d for d in ids.docs if d["type"] == "flow"]
    run.ids = ids.ids          # for the determinism test
    return flows, [d for d in ids.docs if d["type"] != "flow"], counters


def eth(ip_packet: bytes, to_server: bool = True, vlans: tuple = ()) -> bytes:
    src, dst = (CLIENT_MAC, SERVER_MAC) if to_server else (SERVER_MAC, CLIENT_MAC)
    return g.ethernet(ip_packet, src=src, dst=dst, vlans=vlans)


def tcp_conversation(close: str, client: str = C4, server: str = S4, cport: int = 40000,
                     sport: int = 4443, t0: float = T0, vlans: tuple = ()
                     ) -> list[tuple[float, bytes, bool]]:
    """(ts, frame, to_server): handshake, a request, a 2-segment answer, then FIN or RST."""
    ci, si = 1000, 5000
    out: list[tuple[float, bytes, bool]] = []

    def seg(to_server: bool, seq: int, ack: int, flags: str, data: bytes = b"") -> None:
        a, b, pa, pb = (client, server, cport, sport) if to_server else (server, client, sport, cport)
        packet = g.ip_packet(a, b, g.IPPROTO_TCP, g.tcp(a, b, pa, pb, data, seq=seq, ack=ack,
                                                         flags=flags))
        out.append((t0 + len(out) * 0.25, eth(packet, to_server, vlans), to_server))

    seg(True, ci, 0, "S")
    seg(False, si, ci + 1, "SA")
    seg(True, ci + 1, si + 1, "A")
    seg(True, ci + 1, si + 1, "PA", b"q" * 100)
    seg(False, si + 1, ci + 101, "A", b"r" * 1400)
    seg(False, si + 1401, ci + 101, "PA", b"s" * 600)
    seg(True, ci + 101, si + 2001, "A")
    if close == "fin":
        seg(True, ci + 101, si + 2001, "FA")
        seg(False, si + 2001, ci + 102, "FA")
        seg(True, ci + 102, si + 2002, "A")
    else:
        seg(True, ci + 101, si + 2001, "R")
    return out


def totals(conversation: list[tuple[float, bytes, bool]], to_server: bool) -> tuple[int, int]:
    frames = [f for _, f, d in conversation if d == to_server]
    return len(frames), sum(len(f) for f in frames)


def test_tcp_closed_by_fin_counts_each_direction_and_reports_the_handshake():
    conv = tcp_conversation("fin")
    [flow], _, _ = run([(t, f) for t, f, _ in conv])
    assert flow["type"] == "flow"
    assert flow["event"] == {
        "kind": "event", "category": ["network"], "action": "network_flow", "dataset": "flow",
        "type": ["connection", "end"], "start": "2023-11-14T22:13:20.000000Z",
        "end": "2023-11-14T22:13:22.250000Z", "duration": 2_250_000_000}
    assert (flow["source"]["packets"], flow["source"]["bytes"]) == totals(conv, True)
    assert (flow["destination"]["packets"], flow["destination"]["bytes"]) == totals(conv, False)
    assert flow["network"]["packets"] == len(conv)
    assert flow["network"]["bytes"] == sum(len(f) for _, f, _ in conv)
    assert (flow["source"]["ip"], flow["source"]["port"]) == (C4, 40000)
    assert (flow["destination"]["ip"], flow["destination"]["port"]) == (S4, 4443)
    assert flow["source"]["mac"] == "02-00-00-00-00-0A"
    assert flow["destination"]["mac"] == "02-00-00-00-00-0B"
    assert flow["network"]["transport"] == "tcp" and flow["network"]["type"] == "ipv4"
    assert flow["network"]["community_id"] == COMMUNITY.calc(
        communityid.FlowTuple.make_tcp(C4, S4, 40000, 4443))
    assert flow["flow"]["final"] is True and flow["flow"]["end_reason"] == "fin"
    assert "vlan" not in flow["flow"]
    tcp = flow["flow"]["tcp"]
    assert (tcp["syn_packets"], tcp["fin_packets"], tcp["rst_packets"]) == (2, 2, 0)
    assert tcp["rtt"] == {"server_us": 250_000, "client_us": 250_000, "handshake_us": 500_000}
    assert tcp["source_retransmitted_bytes"] == tcp["destination_retransmitted_bytes"] == 0
    assert flow["capture"]["source"] == "test"


def test_tcp_closed_by_rst_ends_with_reason_rst():
    conv = tcp_conversation("rst")
    later = [(T0 + t, eth(g.ipv4(C4, S4, g.IPPROTO_UDP, g.udp(C4, S4, 1, 2, b"x"))))
             for t in (5, 12, 40)]
    flows, _, _ = run([(t, f) for t, f, _ in conv] + later)
    [flow, _other] = [f for f in flows if f["flow"]["final"]]
    assert flow["flow"]["end_reason"] == "rst"
    assert flow["flow"]["tcp"]["rst_packets"] == 1
    assert (flow["source"]["packets"], flow["source"]["bytes"]) == totals(conv, True)
    # Reported at the first sweep after the RST (due at T0 + 10, run by the packet at
    # T0 + 12), not when the flow would have gone idle.
    assert flow["@timestamp"] == "2023-11-14T22:13:32.000000Z"


def test_a_new_syn_on_a_closed_flow_starts_a_new_flow():
    first = tcp_conversation("fin")
    second = tcp_conversation("fin", t0=T0 + 2.5)         # same ports, before any sweep
    flows, _, _ = run([(t, f) for t, f, _ in first + second])
    assert [f["flow"]["end_reason"] for f in flows] == ["fin", "fin"]
    assert [f["network"]["packets"] for f in flows] == [len(first), len(second)]
    assert flows[0]["flow"]["id"] != flows[1]["flow"]["id"]


def test_retransmitted_payload_is_counted_per_direction():
    conv = tcp_conversation("fin")
    seq4 = conv[3]                  # the 100-byte request, sent again
    frames = [(t, f) for t, f, _ in conv[:5]] + [(T0 + 1.1, seq4[1])] + \
             [(t + 0.5, f) for t, f, _ in conv[5:]]
    [flow], _, _ = run(frames)
    assert flow["flow"]["tcp"]["source_retransmitted_bytes"] == 100
    assert flow["flow"]["tcp"]["destination_retransmitted_bytes"] == 0
    assert flow["source"]["packets"] == totals(conv, True)[0] + 1


@pytest.mark.parametrize("vlans", [(100,), tuple(g.qinq(300, 30))], ids=["802.1Q", "QinQ"])
def test_vlan_ids_are_part_of_the_key_outer_first(vlans):
    a = tcp_conversation("fin", vlans=vlans)
    b = tcp_conversation("fin", t0=T0 + 0.1)        # same addresses and ports, untagged
    frames = sorted([(t, f) for t, f, _ in a + b], key=lambda tf: tf[0])
    flows, _, _ = run(frames)
    tagged = [f for f in flows if "vlan" in f["flow"]]
    untagged = [f for f in flows if "vlan" not in f["flow"]]
    expected_vlans = [v if isinstance(v, int) else v[1] for v in vlans]
    assert [f["flow"]["vlan"] for f in tagged] == [expected_vlans]
    assert tagged[0]["source"]["bytes"] == totals(a, True)[1]
    assert untagged[0]["source"]["bytes"] == totals(b, True)[1]


def test_ipv6_udp_flow_source_is_the_first_sender():
    reply = eth(g.ipv6(S6, C6, g.IPPROTO_UDP, g.udp(S6, C6, 5000, 6000, b"a" * 50)), False)
    ask = eth(g.ipv6(C6, S6, g.IPPROTO_UDP, g.udp(C6, S6, 6000, 5000, b"b" * 20)))
    [flow], _, _ = run([(T0, reply), (T0 + 1, ask), (T0 + 2, reply)])
    assert (flow["source"]["ip"], flow["source"]["port"]) == (S6, 5000)
    assert (flow["source"]["packets"], flow["source"]["bytes"]) == (2, 2 * len(reply))
    assert (flow["destination"]["packets"], flow["destination"]["bytes"]) == (1, len(ask))
    assert flow["network"]["type"] == "ipv6" and flow["network"]["transport"] == "udp"
    assert "tcp" not in flow["flow"]


def test_icmp_echo_request_and_reply_are_one_flow_per_identifier():
    def ping(ident: int, t: float) -> list[tuple[float, bytes]]:
        return [(t, eth(g.ipv4(C4, S4, g.IPPROTO_ICMP, g.icmp_echo(ident, 1, b"p" * 56)))),
                (t + 0.01, eth(g.ipv4(S4, C4, g.IPPROTO_ICMP,
                                      g.icmp_echo(ident, 1, b"p" * 56, reply=True)), False))]
    flows, _, _ = run(ping(7, T0) + ping(8, T0 + 1) + ping(7, T0 + 2))
    assert [(f["source"]["packets"], f["destination"]["packets"]) for f in flows] == [(2, 2), (1, 1)]
    assert all("port" not in f["source"] for f in flows)
    assert flows[0]["network"]["transport"] == "icmp"
    assert flows[0]["network"]["community_id"] == COMMUNITY.calc(
        communityid.FlowTuple.make_icmp(C4, S4, 8, 0))


def test_icmpv6_echo_is_one_flow():
    request = eth(g.ipv6(C6, S6, g.IPPROTO_ICMPV6, g.icmpv6_echo(C6, S6, 9, 1, b"x" * 8)))
    reply = eth(g.ipv6(S6, C6, g.IPPROTO_ICMPV6, g.icmpv6_echo(S6, C6, 9, 1, b"x" * 8,
                                                              reply=True)), False)
    [flow], _, _ = run([(T0, request), (T0 + 0.5, reply)])
    assert flow["network"]["transport"] == "ipv6-icmp"
    assert (flow["source"]["bytes"], flow["destination"]["bytes"]) == (len(request), len(reply))
    assert flow["network"]["community_id"] == COMMUNITY.calc(
        communityid.FlowTuple.make_icmp6(C6, S6, 128, 0))


def udp_frame(sport: int, payload: bytes = b"u" * 10) -> bytes:
    return eth(g.ipv4(C4, S4, g.IPPROTO_UDP, g.udp(C4, S4, sport, 9999, payload)))


def test_an_idle_flow_ends_after_the_timeout_in_packet_time():
    frames = [(T0, udp_frame(1000))] + [(T0 + i, udp_frame(2000)) for i in range(1, 46)]
    flows, _, _ = run(frames)
    idle = next(f for f in flows if f["source"]["port"] == 1000 and f["flow"]["final"])
    assert idle["flow"]["final"] is True and idle["flow"]["end_reason"] == "idle"
    assert idle["event"]["end"] == idle["event"]["start"] == "2023-11-14T22:13:20.000000Z"
    # Found at the first sweep (every 10 s from the first packet) 30 s or more after it.
    assert idle["@timestamp"] == "2023-11-14T22:13:50.000000Z"
    busy = [f for f in flows if f["source"]["port"] == 2000]
    assert busy[-1]["flow"]["end_reason"] == "end_of_input"


def test_periodic_reports_count_the_packets_before_their_time():
    frames = [(T0 + i, udp_frame(3000)) for i in range(25)]       # one a second
    flows, _, _ = run(frames)
    assert [(f["flow"]["final"], f["@timestamp"][11:19], f["source"]["packets"]) for f in flows] == [
        (False, "22:13:30", 10), (False, "22:13:40", 20), (True, "22:13:44", 25)]
    assert len({f["flow"]["id"] for f in flows}) == 1
    assert run.ids[0] != run.ids[1] != run.ids[2]
    assert flows[0]["event"]["type"] == ["connection"] and "end_reason" not in flows[0]["flow"]


def test_period_minus_one_gives_final_reports_only():
    frames = [(T0 + i, udp_frame(3000)) for i in range(25)]
    flows, _, _ = run(frames, wirebeat__flows__period=-1.0)
    assert [f["flow"]["final"] for f in flows] == [True]


def test_every_live_flow_is_reported_every_period_as_packetbeat_unless_report_all_is_off():
    frames = [(T0 + i, udp_frame(2000)) for i in range(25)]
    frames.insert(2, (T0 + 1, udp_frame(1000)))      # young at T0 + 10, quiet at T0 + 20
    quiet = [f for f in run(frames)[0] if f["source"]["port"] == 1000]
    assert [f["flow"]["final"] for f in quiet] == [False, False, True]
    assert {f["source"]["packets"] for f in quiet} == {1}       # unchanged, still reported
    quiet = [f for f in run(frames, wirebeat__flows__report_all=False)[0]
             if f["source"]["port"] == 1000]
    assert [f["flow"]["final"] for f in quiet] == [True]


# (first packet, last packet) in seconds after T0, one UDP flow each (a packet a second).
LIFETIMES = [(0, 0), (0.5, 3), (3, 9.5), (9.9, 10.5), (10, 10), (11, 19), (15, 62), (33, 33),
             (40, 95), (58, 61)]


def expected_reports(first: float, last: float, end: float, period: float, timeout: float,
                     report_all: bool) -> tuple[int, str]:
    """(periodic reports, end reason) of one flow, from the rules as packetbeat states them.

    Sweeps run every min(period, timeout) from the first packet (T0), reports every
    period; a packet at a sweep's instant comes after that sweep. A flow is ended
    idle at the first sweep at least `timeout` after its last packet; before that,
    every sweep that is a report instant reports it once it exists (report_all), or
    only when it is at least a period old and had packets since the previous
    instant (report_all off)."""
    reports, step, t = 0, min(period, timeout), 0.0
    while True:
        t += step
        if t > end:
            return reports, "end_of_input"
        if t - last >= timeout:
            return reports, "idle"
        due = abs(t / period - round(t / period)) < 1e-9
        if due and first < t and (report_all or (first <= t - period and last >= t - period)):
            reports += 1


@pytest.mark.parametrize("report_all", [True, False])
@pytest.mark.parametrize("period,timeout", [(10.0, 30.0), (5.0, 12.0), (20.0, 10.0)])
def test_periodic_report_counts_follow_the_rules_on_many_lifetimes(report_all, period, timeout):
    end = 100.0
    frames = [(T0 + t, udp_frame(9)) for t in range(0, int(end) + 1)]      # the clock
    for n, (first, last) in enumerate(LIFETIMES):
        t = first
        while t <= last:
            frames.append((T0 + t, udp_frame(1000 + n)))
            t = min(t + 1, last) if t < last else last + 1
    frames.sort(key=lambda item: item[0])
    flows, _, counters = run(frames, wirebeat__flows__period=period,
                             wirebeat__flows__timeout=timeout,
                             wirebeat__flows__report_all=report_all)
    for n, (first, last) in enumerate(LIFETIMES):
        mine = [f for f in flows if f["source"]["port"] == 1000 + n]
        periodic, reason = expected_reports(first, last, end, period, timeout, report_all)
        assert [f["flow"]["final"] for f in mine] == [False] * periodic + [True], (first, last)
        assert mine[-1]["flow"]["end_reason"] == reason, (first, last)


def test_a_full_table_evicts_the_idlest_flow_with_a_final_report():
    frames = [(T0, udp_frame(1)), (T0 + 0.1, udp_frame(2)), (T0 + 0.2, udp_frame(1)),
              (T0 + 0.3, udp_frame(3))]
    flows, _, counters = run(frames, wirebeat__flows__max_flows=2)
    assert [(f["source"]["port"], f["flow"]["end_reason"]) for f in flows] == [
        (2, "evicted"), (1, "end_of_input"), (3, "end_of_input")]
    assert counters["flows.table.evicted"] == 1


def test_transactions_carry_their_flow_id():
    query = bytes.fromhex("abcd01000001000000000000") + b"\x07example\x03com\x00\x00\x01\x00\x01"
    answer = bytes.fromhex("abcd81800001000000000000") + b"\x07example\x03com\x00\x00\x01\x00\x01"
    frames = [(T0, eth(g.ipv4(C4, S4, g.IPPROTO_UDP, g.udp(C4, S4, 5353, 53, query)))),
              (T0 + 0.01, eth(g.ipv4(S4, C4, g.IPPROTO_UDP, g.udp(S4, C4, 53, 5353, answer)),
                              False))]
    [flow], [dns], _ = run(frames)
    assert dns["type"] == "dns"
    assert dns["flow"]["id"] == flow["flow"]["id"]


def test_a_transaction_emitted_after_its_flow_ended_still_names_it():
    """An unanswered DNS query is emitted at the DNS timeout (10 s), its flow ended idle at 1 s."""
    query = bytes.fromhex("abcd01000001000000000000") + b"\x07example\x03com\x00\x00\x01\x00\x01"
    frames = [(T0, eth(g.ipv4(C4, S4, g.IPPROTO_UDP, g.udp(C4, S4, 5353, 53, query))))]
    frames += [(T0 + i, udp_frame(9)) for i in range(1, 15)]       # moves packet time on
    flows, [dns], _ = run(frames, wirebeat__flows__timeout=1.0)
    [dns_flow] = [f for f in flows if f["source"].get("port") == 5353]
    assert dns_flow["flow"]["end_reason"] == "idle"
    assert dns["type"] == "dns" and dns["flow"]["id"] == dns_flow["flow"]["id"]


def _five_tuple(doc: dict[str, Any]) -> tuple:
    ends = [(e["ip"][-1] if isinstance(e["ip"], list) else e["ip"], e.get("port"))
            for e in (doc["source"], doc["destination"])]
    return (doc["network"]["transport"], frozenset(ends))


TRANSACTION_CAPTURES = sorted(p for d in ("http", "dns", "icmp", "sip") for p in (PCAPS / d).iterdir()
                              if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("timeouts", [(), ("wirebeat.flows.timeout=1s", "wirebeat.flows.period=1s")],
                         ids=["default", "flows-end-first"])
def test_every_transaction_of_a_bundled_capture_names_a_reported_flow_of_its_endpoints(timeouts):
    checked = 0
    for capture in TRANSACTION_CAPTURES:
        docs = decode_file(capture, *timeouts, flows=True)
        flows = {d["flow"]["id"]: _five_tuple(d) for d in docs if d["type"] == "flow"}
        for doc in docs:
            if doc["type"] in ("http", "dns", "icmp", "sip"):
                assert "id" in doc.get("flow", {}), (capture.name, doc["type"], doc["@timestamp"])
                assert flows.get(doc["flow"]["id"]) == _five_tuple(doc), capture.name
                checked += 1
    assert checked > 100


def test_non_ip_frames_are_counted_per_ethertype_without_a_flow():
    arp = g.ethernet(bytes(28), ethertype=0x0806, src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff")
    lldp = g.ethernet(bytes(30), ethertype=0x88CC, src=CLIENT_MAC, dst="01:80:c2:00:00:0e")
    flows, _, counters = run([(T0, arp), (T0 + 1, arp), (T0 + 2, lldp)])
    assert flows == []
    assert counters["packets.non_ip.0x0806"] == 2 and counters["packets.non_ip.0x88cc"] == 1


def test_one_mac_order_both_ways_is_still_one_flow():
    """Some taps and synthetic captures write the same MAC pair in both directions."""
    ask = g.ethernet(g.ipv4(C4, S4, g.IPPROTO_UDP, g.udp(C4, S4, 7, 8, b"a")))
    back = g.ethernet(g.ipv4(S4, C4, g.IPPROTO_UDP, g.udp(S4, C4, 8, 7, b"b")))
    [flow], _, _ = run([(T0, ask), (T0 + 1, back), (T0 + 2, back)])
    assert (flow["source"]["packets"], flow["destination"]["packets"]) == (1, 2)


def test_without_ethernet_there_is_no_mac():
    packet = g.ipv4(C4, S4, g.IPPROTO_UDP, g.udp(C4, S4, 7, 8, b"a"))
    [flow], _, _ = run([(T0, packet)], linktype=g.LINKTYPE_RAW)
    assert "mac" not in flow["source"] and flow["source"]["bytes"] == len(packet)


def test_other_ip_protocols_get_a_flow_without_ports():
    frames = [(T0, eth(g.ipv4(C4, S4, 50, b"\0" * 24))), (T0 + 1, eth(g.ipv4(C4, S4, 50, b"\0" * 4)))]
    [flow], _, _ = run(frames)
    assert flow["network"]["transport"] == "esp" and "port" not in flow["source"]
    assert flow["source"]["packets"] == 2 and "community_id" not in flow["network"]


def test_documents_and_ids_are_the_same_on_a_second_run():
    conv = [(t, f) for t, f, _ in tcp_conversation("fin")]
    first, _, _ = run(conv)
    first_ids = run.ids
    second, _, _ = run(conv)
    assert first == second and first_ids == run.ids


def test_flows_off_makes_no_flow_documents():
    flows, _, counters = run([(T0, udp_frame(1))], wirebeat__flows__enabled=False)
    assert flows == [] and "flows.table.opened" not in counters


@pytest.mark.parametrize(("value", "expected"), [("-1s", -1.0), ("-1", -1.0), ("5s", 5.0),
                                                 ("1m", 60.0)])
def test_period_accepts_durations_and_minus_one(value, expected):
    config = load_config(None, [f"wirebeat.flows.period={value}"], [])
    assert config["wirebeat.flows.period"] == expected


@pytest.mark.parametrize("value", ["0s", "soon", "true"])
def test_period_refuses_what_is_not_a_duration(value):
    with pytest.raises(ConfigError, match="wirebeat.flows.period"):
        load_config(None, [f"wirebeat.flows.period={value}"], [])


def test_a_tunneled_flow_is_keyed_and_reported_with_its_outer_addresses():
    import tunnelgen
    inner_ask = g.ethernet(g.ipv4(C4, S4, g.IPPROTO_UDP, g.udp(C4, S4, 7000, 8000, b"a" * 30)))
    inner_back = g.ethernet(g.ipv4(S4, C4, g.IPPROTO_UDP, g.udp(S4, C4, 8000, 7000, b"b" * 60)))
    ask = g.ethernet(tunnelgen.vxlan(inner_ask, 42))
    back = g.ethernet(tunnelgen.vxlan(inner_back, 42))      # one outer direction, as a tap sees it
    plain = eth(g.ipv4(C4, S4, g.IPPROTO_UDP, g.udp(C4, S4, 7000, 8000, b"a" * 30)))
    flows, _, _ = run([(T0, ask), (T0 + 1, back), (T0 + 2, plain)])
    tunneled = [f for f in flows if isinstance(f["source"]["ip"], list)]
    [untunneled] = [f for f in flows if not isinstance(f["source"]["ip"], list)]
    assert [f["source"]["ip"] for f in tunneled] == [[tunnelgen.OUTER_A, C4], [tunnelgen.OUTER_A, S4]]
    assert [f["source"]["bytes"] for f in tunneled] == [len(ask), len(back)]   # whole outer frames
    assert untunneled["source"]["bytes"] == len(plain)


class JsonOutput(ListOutput):
    """Keeps (_id, the document as orjson writes it) of every document."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, bytes]] = []

    def send(self, batch: list[tuple[str, Any]], stopping: threading.Event) -> int:
        self.lines.extend((doc_id, orjson.dumps(doc)) for doc_id, doc in batch)
        return 0


def _every_kind_of_flow() -> list[tuple[float, bytes]]:
    """TCP closed by FIN (with a handshake) and by RST, VLAN tags, IPv6, ICMP echo, an
    IP protocol without ports, a tunnel, quiet and busy flows over several periods."""
    import tunnelgen
    frames = [(t, f) for t, f, _ in tcp_conversation("fin")]
    frames += [(t + 3, f) for t, f, _ in tcp_conversation("rst", cport=40001, vlans=(7, 8))]
    frames += [(T0 + 1, eth(g.ipv6(C6, S6, g.IPPROTO_UDP, g.udp(C6, S6, 5000, 53, b"q"))))]
    frames += [(T0 + 2, eth(g.ipv4(C4, S4, g.IPPROTO_ICMP, g.icmp_echo(77, 1, b"p")))),
               (T0 + 2.5, eth(g.ipv4(S4, C4, g.IPPROTO_ICMP, g.icmp_echo(77, 1, b"p", reply=True)),
                              False))]
    frames += [(T0 + 4, eth(g.ipv4(C4, S4, 50, b"\x00" * 16)))]
    inner = g.ethernet(g.ipv4(C4, S4, g.IPPROTO_UDP, g.udp(C4, S4, 7000, 8000, b"a" * 30)))
    frames += [(T0 + 5, g.ethernet(tunnelgen.vxlan(inner, 42)))]
    frames += [(T0 + i * 0.7, udp_frame(3000)) for i in range(100)]     # busy for 70 s
    return sorted(frames, key=lambda item: item[0])


def _json_lines(as_text: bool, frames: list[tuple[float, bytes]], linktype: int = 1,
                source: str = "test") -> list[tuple[str, bytes]]:
    engine, pipeline, _, _ = make_engine(SPECS, overrides={"wirebeat.flows.enabled": True})
    engine.builder.tags = ["mirror", "ünïcode"]
    engine.builder.fields = {"site": {"name": 'lab "1"'}}
    engine.flow_reporter.as_text = as_text
    output = pipeline.output = JsonOutput()
    for ts, frame in frames:
        engine.on_frame(ts, linktype, frame, source)
    engine.finish()
    assert pipeline.close() == 0
    return output.lines


@pytest.mark.parametrize("source", ["test", 'sé"q\\x'])
def test_flow_reports_as_json_text_are_byte_for_byte_the_dict_reports(source):
    frames = _every_kind_of_flow()
    as_dicts = _json_lines(False, frames, source=source)
    assert sum(1 for _, line in as_dicts if b'"type":"flow"' in line) > 20
    assert _json_lines(True, frames, source=source) == as_dicts
    raw = [(t, f[14:]) for t, f in frames if f[12:14] in (b"\x08\x00", b"\x86\xdd")]  # no MACs
    assert _json_lines(True, raw, linktype=101, source=source) == _json_lines(False, raw, linktype=101,
                                                                           source=source)


def test_flow_reports_stay_dicts_when_processors_or_root_fields_may_change_them():
    def reporter(processors: list, under_root: bool) -> FlowReporter:
        builder = DocumentBuilder({"type": "wirebeat"}, processors, {"a": 1}, under_root, [])
        return FlowReporter(builder, lambda *_: None, 30.0, 10.0, 10, fragments=True)
    assert reporter([], False).as_text
    assert not reporter([{"add_tags": {"tags": ["x"]}}], False).as_text
    assert not reporter([], True).as_text
    builder = DocumentBuilder({"type": "wirebeat"}, [], {}, False, [])
    assert not FlowReporter(builder, lambda *_: None, 30.0, 10.0, 10).as_text
