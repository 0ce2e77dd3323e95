"""The C flow table's key cache takes a new flow's reverse key at its first packet
(beat/_flowcore.c account_raw): a flow's first answer is a cache hit, and every document and
counter stays what the Python path (frame by frame, no cache) makes, whatever link layer,
address family and protocol the flow has, and when the answer comes in a frame that does not
carry the swapped MACs (the MAC-order alias) or on other VLAN ids."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pcapgen as g
import pytest
from test_frameloop import _same, needs_c
from test_packets_batch import FragmentOutput
from wirebeat.flows import R_KEY
from wirebeat.testing import make_engine

T0 = 1_700_000_000.0
A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def _pair(v6: bool, proto: str, vlans: list, answer_macs: str, answer_vlans: list | None = None,
          n: int = 0) -> list[tuple[float, int, bytes]]:
    """A request from A to B and its answer: (time, linktype, frame) each."""
    a, b = ("2001:db8::a", "2001:db8::b") if v6 else ("10.9.0.10", "10.9.0.11")
    ip = g.ipv6 if v6 else g.ipv4
    sport, dport = 40000 + n, 7000 + n      # ports no decoder claims: only the flow table sees them
    if proto == "tcp":
        request = ip(a, b, 6, g.tcp(a, b, sport, dport, b"hello", seq=100, flags="PA"))
        answer = ip(b, a, 6, g.tcp(b, a, dport, sport, b"world", seq=900, ack=105, flags="PA"))
    elif proto == "udp":
        request = ip(a, b, 17, g.udp(a, b, sport, dport, b"hello"))
        answer = ip(b, a, 17, g.udp(b, a, dport, sport, b"world"))
    else:           # ICMP echo: the identifier in both port slots
        if v6:
            request = ip(a, b, 58, g.icmpv6_echo(a, b, 5 + n, 1))
            answer = ip(b, a, 58, g.icmpv6_echo(b, a, 5 + n, 1, reply=True))
        else:
            request = ip(a, b, 1, g.icmp_echo(5 + n, 1))
            answer = ip(b, a, 1, g.icmp_echo(5 + n, 1, reply=True))
    eth = g.LINKTYPE_ETHERNET
    first = g.ethernet(request, src=A_MAC, dst=B_MAC, vlans=vlans)
    if answer_macs == "swapped":
        second = g.ethernet(answer, src=B_MAC, dst=A_MAC, vlans=vlans if answer_vlans is None else answer_vlans)
    else:           # the same MAC order both ways (synthetic captures, some taps)
        second = g.ethernet(answer, src=A_MAC, dst=B_MAC, vlans=vlans if answer_vlans is None else answer_vlans)
    return [(T0 + n, eth, first), (T0 + n + 0.01, eth, second)]


def _hits(frames: list[tuple[float, int, bytes]]) -> tuple[int, int]:
    """(hits, misses) of the key cache after the frames went through frame_batch."""
    engine, pipeline, _output, _stats = make_engine([], overrides={"wirebeat.flows.enabled": True},
                                                    output=FragmentOutput())
    tick = g.ethernet(g.ipv4("10.8.0.1", "10.8.0.2", 17, g.udp("10.8.0.1", "10.8.0.2", 9, 9, b"tick")))
    batch = [(frames[0][0] - 0.5, g.LINKTYPE_ETHERNET, tick)] + frames     # the tick due takes the first frame
    engine.on_batch([(ts, lt, data, len(data)) for ts, lt, data in batch], "test")
    _slots, hits, misses = engine.sources["test"].flows.core.key_cache()
    engine.finish()
    pipeline.close()
    return hits, misses



def _many_flows(n: int, start: int = 0) -> list[bytes]:
    """Frames of n UDP flows (flows start .. start + n - 1), a request and its answer each."""
    out = []
    for i in range(start, start + n):
        a, b = f"10.20.{i // 250}.{i % 250 + 1}", "10.30.0.1"
        out.append(g.ethernet(g.ipv4(a, b, 17, g.udp(a, b, 1000 + i % 50000, 53, b"q")), src=A_MAC, dst=B_MAC))
        out.append(g.ethernet(g.ipv4(b, a, 17, g.udp(b, a, 53, 1000 + i % 50000, b"r")), src=B_MAC, dst=A_MAC))
    return out


def _batcher(engine: Any) -> Callable[[float, list[bytes]], None]:
    """batch(ts, frames): the frames through frame_batch at ts, after a tick that makes a sweep due."""
    tick = g.ethernet(g.ipv4("10.8.0.1", "10.8.0.2", 17, g.udp("10.8.0.1", "10.8.0.2", 9, 9, b"tick")))

    def batch(ts: float, frames: list[bytes]) -> None:
        engine.on_batch([(ts - 0.5, 1, tick, len(tick))] + [(ts, 1, f, len(f)) for f in frames], "test")
    return batch


@needs_c
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
@pytest.mark.parametrize("vlans", [[], [7], g.qinq(9, 10)], ids=["untagged", "vlan", "qinq"])
def test_a_new_flows_first_answer_is_a_key_cache_hit_with_the_same_documents(v6, proto, vlans):
    frames = _pair(v6, proto, vlans, "swapped")
    if v6 and len(vlans) == 2:      # a key longer than a slot holds (RAW_KEY_MAX): never cached
        assert _hits(frames) == (0, 2)
    else:                           # the request opened the flow, the answer found it cached
        assert _hits(frames) == (1, 1)
    counters, _left, docs = _same([(ts, lt, data, "test") for ts, lt, data in frames])
    assert counters["flows.table.opened"] == 1 and docs


@needs_c
@pytest.mark.parametrize("answer", ["same MAC order", "other VLAN ids"])
def test_an_answer_of_another_key_than_the_reverse_misses_and_gives_the_same_documents(answer):
    """Answers whose key is not the flow's reverse key (the frame keeps the request's MAC order:
    the flow's alias; or other VLAN ids: another flow) are not the cached reverse key."""
    if answer == "same MAC order":
        frames = _pair(False, "udp", [], "same")
    else:
        frames = _pair(False, "udp", [7], "swapped", answer_vlans=[8])
    assert _hits(frames) == (0, 2)
    counters, _left, _docs = _same([(ts, lt, data, "test") for ts, lt, data in frames])
    assert counters["flows.table.opened"] == (1 if answer == "same MAC order" else 2)


@needs_c
def test_many_flows_with_answers_and_ends_give_the_same_documents():
    """Flows opening, answered, ending idle and reopening on the same ports, with a table small
    enough to evict: the cached reverse keys change no document or counter."""
    frames = []
    for n in range(300):
        v6, proto = n % 2 == 1, ("tcp", "udp", "icmp")[n % 3]
        for ts, lt, data in _pair(v6, proto, [] if n % 4 else [3], "swapped", n=n % 40):
            frames.append((ts + (n // 40) * 100.0 + n * 0.001, lt, data, "test"))
    frames.sort(key=lambda f: f[0])
    counters, _left, docs = _same(frames, **{"wirebeat.flows.max_flows": 16})
    assert counters["flows.table.evicted"] > 0 and len(docs) > 300


class _Tag:
    """A hashable object the cyclic garbage collector tracks (as any instance of a class)."""

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Tag)


@needs_c
def test_keys_leave_the_collectors_lists_unless_they_hold_a_tracked_object():
    """The C core untracks the key tuples it makes and their reverses (bytes, ints and tuples
    of those cannot be in a cycle), tunnelled ones too; a key holding an object the collector
    tracks stays tracked, and so does its reverse."""
    import gc
    import socket

    from test_flowcore import _tables
    c, _py, _out_c, _out_py = _tables()
    a, b = socket.inet_aton("192.0.2.1"), socket.inet_aton("192.0.2.2")
    outer = (socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"))
    frame = g.ethernet(g.ipv4("192.0.2.1", "192.0.2.2", 17, g.udp("192.0.2.1", "192.0.2.2", 1, 2, b"x")))
    payload = bytes(g.udp("192.0.2.1", "192.0.2.2", 1, 2, b"x"))
    c.account(T0, 1, frame, (), a, b, 17, payload)
    c.account(T0, 1, frame, (5,), a, b, 17, payload, outer)
    assert len(c.flows) == 4 and not any(gc.is_tracked(k) for k in c.flows)
    c.account(T0, 1, frame, (_Tag(),), a, b, 17, payload)
    tracked = [k for k in c.flows if gc.is_tracked(k)]
    assert len(tracked) == 2 and all(isinstance(k[1][0], _Tag) for k in tracked)
    c.finish()


@needs_c
def test_flows_cached_across_the_caches_growth_let_go_of_their_records_when_they_end():
    """The key cache grows with the table (its keys moved into the larger one): flows cached
    before and after a growth, both directions, all end idle; no slot keeps an ended flow's
    record (it is freed), and the flows that stay are still found."""
    import sys
    engine, pipeline, _output, _stats = make_engine(
        [], overrides={"wirebeat.flows.enabled": True, "wirebeat.flows.timeout": 5.0, "wirebeat.flows.period": 2.0},
        output=FragmentOutput())
    batch = _batcher(engine)

    batch(T0, _many_flows(100))                  # cached in the first, smallest cache
    table = engine.sources["test"].flows
    slots = table.core.key_cache()[0]
    batch(T0 + 1, _many_flows(100) + _many_flows(1500, 100))     # the first 100 again, then the cache grows
    assert table.core.key_cache()[0] > slots
    batch(T0 + 2, _many_flows(100))              # the first 100 cached again, in the grown cache
    ending = [r for r in table._records() if bytes((10, 20, 0, 0)) < r[R_KEY][3] < bytes((10, 20, 0, 101))]
    assert len(ending) == 100
    stay = _many_flows(200, 1400)
    for k in range(3, 10):                  # the first 100 end idle at T0 + 7; 200 others stay
        batch(T0 + k, stay)
    assert all(r not in table._records() for r in ending)
    assert [sys.getrefcount(r) for r in ending] == [3] * 100     # `ending`, the loop's r, getrefcount's argument
    _slots, hits, misses = table.core.key_cache()
    batch(T0 + 10, stay)
    assert table.core.key_cache()[1] - hits == 400 and table.core.key_cache()[2] == misses
    engine.finish()
    pipeline.close()


@needs_c
def test_the_key_cache_keeps_its_keys_when_it_grows():
    """A growing table doubles its key cache; the keys cached in it move into the larger one,
    so live flows' next packets are still hits (a cache made anew missed every one of them:
    realistic 100k, 3,617 packets of known flows built and looked up a key tuple)."""
    engine, pipeline, _output, _stats = make_engine([], overrides={"wirebeat.flows.enabled": True},
                                                    output=FragmentOutput())
    batch = _batcher(engine)

    batch(T0, _many_flows(100))                  # 200 keys in the smallest cache (1,024 slots)
    core = engine.sources["test"].flows.core
    slots = core.key_cache()[0]
    batch(T0 + 1, _many_flows(150, 100))         # 500 keys: not grown yet
    batch(T0 + 2, _many_flows(100))              # the first 100 flows used last
    assert core.key_cache()[0] == slots
    batch(T0 + 3, _many_flows(10, 250))          # 520 keys (and the ticks'): the cache doubles
    assert core.key_cache()[0] == 2 * slots
    _slots, hits, misses = core.key_cache()
    batch(T0 + 4, _many_flows(100))              # the first 100 flows again, both directions
    # (a few keys whose new pair is already full are left behind: found in the dict, cached again)
    assert core.key_cache()[2] - misses <= 10 and core.key_cache()[1] - hits >= 190
    engine.finish()
    pipeline.close()


@needs_c
def test_a_transactions_flow_id_after_each_frame_is_the_python_one():
    """FlowTable.flow_id in C starts from the flow whose packet came last (frame_batch's key
    cache); its answers stay flow_id_python's after every frame: the last
    packet's flow either way round, another live flow on the same addresses and ports (other
    VLAN: by_endpoints names the newer one, not the last packet's), other ports or transports,
    ICMP, IPv6 in another spelling, and keys of no flow."""
    from wirebeat.decoders.api import FlowKey
    engine, pipeline, _output, _stats = make_engine([], overrides={"wirebeat.flows.enabled": True},
                                                    output=FragmentOutput())
    a, b, c, a6, b6 = "10.9.0.10", "10.9.0.11", "10.9.0.12", "2001:db8::a", "2001:db8::b"
    udp = g.ipv4(a, b, 17, g.udp(a, b, 5000, 53, b"q"))
    answer = g.ipv4(b, a, 17, g.udp(b, a, 53, 5000, b"r"))
    frames = [g.ethernet(udp, src=A_MAC, dst=B_MAC, vlans=[7]),
              g.ethernet(udp, src=A_MAC, dst=B_MAC, vlans=[8]),        # the same endpoints, another flow
              g.ethernet(answer, src=B_MAC, dst=A_MAC, vlans=[7]),     # the older flow's answer
              g.ethernet(g.ipv4(a, c, 1, g.icmp_echo(77, 1)), src=A_MAC, dst=B_MAC),
              g.ethernet(g.ipv4(c, a, 1, g.icmp_echo(77, 1, reply=True)), src=B_MAC, dst=A_MAC),
              g.ethernet(g.ipv6(a6, b6, 17, g.udp(a6, b6, 1234, 53, b"q")), src=A_MAC, dst=B_MAC),
              g.ethernet(g.ipv4(b, a, 6, g.tcp(b, a, 443, 40000, b"", flags="SA")), src=B_MAC, dst=A_MAC)]
    keys = [FlowKey("udp", a, 5000, b, 53, "test"), FlowKey("udp", b, 53, a, 5000, "test"),
            FlowKey("udp", a, 5001, b, 53, "test"), FlowKey("tcp", a, 5000, b, 53, "test"),
            FlowKey("icmp", a, 0, c, 0, "test"), FlowKey("icmp", c, 0, a, 0, "test"),
            FlowKey("udp", a6, 1234, b6, 53, "test"), FlowKey("udp", a6.upper(), 1234, b6, 53, "test"),
            FlowKey("udp", b6, 53, a6, 1234, "test"), FlowKey("tcp", a, 40000, b, 443, "test"),
            FlowKey("udp", "::ffff:" + a, 5000, b, 53, "test"), FlowKey("udp", a, 5000, c, 53, "test")]
    batch, named = _batcher(engine), set()
    for i, frame in enumerate(frames):
        batch(T0 + i, [frame])
        table = engine.sources["test"].flows
        for key in keys:
            want = table.flow_id_python(key)
            assert table.flow_id(key) == want, (i, key)
            named.add(want)
    assert len(named - {None}) >= 5 and table.core.key_cache()[1] >= 2     # (the answers: key cache hits)
    engine.finish()
    pipeline.close()


@needs_c
def test_a_transactions_flow_id_from_the_last_packets_flow_only_when_exactly_the_lookups_answer():
    """FlowTable.flow_id in C answers from the record of the last packet's flow (no lookup)
    when the transaction is of that flow, either way round; otherwise it looks up as
    flow_id_python does. Each case says which way it answered: a transaction of another flow
    (emitted on a timeout with another flow's frame current), the same endpoints on another
    VLAN opened later (by_endpoints names that one), a flow the other way round between the
    same endpoints (flow_id_python's first lookup finds it), a flow that ended."""
    from types import SimpleNamespace

    from wirebeat.decoders.api import FlowKey
    engine, pipeline, _output, _stats = make_engine(
        [], overrides={"wirebeat.flows.enabled": True, "wirebeat.flows.timeout": 5.0}, output=FragmentOutput())
    a, b, c = "10.9.1.10", "10.9.1.11", "10.9.1.12"
    q = g.ipv4(a, b, 17, g.udp(a, b, 5000, 7001, b"q"))
    r = g.ipv4(b, a, 17, g.udp(b, a, 7001, 5000, b"r"))
    other = g.ethernet(g.ipv4(a, c, 17, g.udp(a, c, 5002, 7001, b"o")), src=A_MAC, dst=B_MAC)
    ab, ba = FlowKey("udp", a, 5000, b, 7001, "test"), FlowKey("udp", b, 7001, a, 5000, "test")
    batch = _batcher(engine)

    def answer(key: Any, how: str) -> str | None:
        fast, looked_up = table.core.flow_ids()
        fid = table.flow_id(key)
        assert fid == table.flow_id_python(key), (key, how)
        assert table.core.flow_ids() == ((fast + 1, looked_up) if how == "fast" else (fast, looked_up + 1)), how
        return fid

    batch(T0, [g.ethernet(q, src=A_MAC, dst=B_MAC, vlans=[7])])
    table = engine.sources["test"].flows
    first = answer(ab, "fast")
    assert first is not None and answer(ba, "fast") == first      # the answer's view of the same flow
    plain = SimpleNamespace(transport="udp", client_ip=a, client_port=5000, server_ip=b, server_port=7001)
    assert answer(plain, "looked up") == first                     # not a FlowKey: its attributes, looked up
    assert answer(ab, "fast") == first                             # FlowKeys again: their slots
    batch(T0 + 0.1, [other])
    assert answer(ab, "looked up") == first                        # a timeout's transaction, another frame current
    batch(T0 + 0.2, [g.ethernet(q, src=A_MAC, dst=B_MAC, vlans=[8])])
    second = answer(ab, "fast")                                    # VLAN 8's flow, opened last
    batch(T0 + 0.3, [g.ethernet(r, src=B_MAC, dst=A_MAC, vlans=[7])])
    assert answer(ab, "looked up") == second != first              # VLAN 7's packet: by_endpoints names VLAN 8's
    batch(T0 + 0.4, [g.ethernet(r, src=B_MAC, dst=A_MAC, vlans=[9])])     # b -> a opens a flow on VLAN 9
    third = answer(ba, "fast")
    assert answer(ab, "looked up") == second != third              # a -> b first: VLAN 8's, not the last packet's
    batch(T0 + 0.5, [g.ethernet(q, src=A_MAC, dst=B_MAC, vlans=[8])])
    assert answer(ba, "looked up") == third != second              # b -> a first: VLAN 9's, not the last packet's
    for k in range(1, 4):                                          # the a-b flows end idle; `other` stays
        batch(T0 + 10 * k, [other])
    assert answer(ab, "looked up") == second and answer(ba, "looked up") == third   # from `ended`
    engine.finish()
    pipeline.close()
