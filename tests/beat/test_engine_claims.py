"""UDP flows on no configured port: in-band announcements (Expectations) and heuristics.

Toy decoders keep the engine hook apart from SIP and RTP: "announcer" listens on
port 7000 and, for a datagram "expect IP PORT", announces that endpoint for
"target"; "target" records what reaches it; "guesser" has a probe that claims
datagrams starting with b"G".
"""
from __future__ import annotations

from typing import Any

import pcapgen
import pytest

import wirebeat.testing as engine_harness
from wirebeat.engine import Engine
from wirebeat.stats import Stats
from wirebeat.decoders.api import Datagram, DecoderSpec, Expectations, Transaction

T0 = 1_700_000_000.0


class Announcer:
    def __init__(self, options: dict, expectations: Expectations) -> None:
        self.expectations = expectations

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        verb, ip, port = dgram.payload.decode().split()
        until = dgram.ts + (10.0 if verb == "expect" else 0.0)
        self.expectations.expect(ip, int(port), "target", {"said": dgram.payload.decode()}, until)
        return []

    def expire(self, now: float) -> list[Transaction]:
        return []


class Recorder:
    """Records (flow, from_client, payload, context found) per datagram."""

    seen: list[tuple[Any, ...]] = []

    def __init__(self, options: dict, expectations: Expectations | None = None) -> None:
        self.expectations = expectations

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        found = None
        if self.expectations is not None:
            exp = self.expectations.find(dgram.flow.server_ip, dgram.flow.server_port)
            found = exp.context if exp else None
        Recorder.seen.append((dgram.flow.client_port, dgram.flow.server_port, dgram.from_client,
                              dgram.payload, found))
        return []

    def expire(self, now: float) -> list[Transaction]:
        return []


probe_calls: list[bytes] = []


def guess(payload: bytes) -> bool:
    probe_calls.append(payload)
    if payload == b"BOOM":
        raise ValueError("a probe bug")
    return payload.startswith(b"G")


def _doc(txn: Transaction) -> dict:
    return {}


ANNOUNCER = DecoderSpec(name="announcer", document=_doc, datagram=Announcer, ports=(7000,),
                        expectations=True)
TARGET = DecoderSpec(name="target", document=_doc, datagram=Recorder, expectations=True)
GUESSER = DecoderSpec(name="guesser", document=_doc, datagram=Recorder, probe=guess)


def make_engine(specs: list[DecoderSpec], strict: bool = True, **values: Any) -> tuple[Engine, Stats]:
    overrides = {key.replace("__", "."): value for key, value in values.items()}
    engine, _pipeline, _output, stats = engine_harness.make_engine(specs, strict, overrides)
    return engine, stats


def send(engine: Engine, t: float, src: str, sport: int, dst: str, dport: int,
         payload: bytes) -> None:
    frame = pcapgen.ethernet(pcapgen.ipv4(src, dst, pcapgen.IPPROTO_UDP,
                                          pcapgen.udp(src, dst, sport, dport, payload)))
    engine.on_frame(t, 1, frame, "test")


@pytest.fixture(autouse=True)
def _clean() -> None:
    Recorder.seen.clear()
    probe_calls.clear()


def test_an_announced_endpoint_routes_flows_to_it_and_from_it_with_the_context():
    engine, _ = make_engine([ANNOUNCER, TARGET])
    send(engine, T0, "10.0.0.1", 40000, "10.0.0.9", 9999, b"media before the announcement")
    send(engine, T0 + 1, "10.0.0.1", 5060, "10.0.0.2", 7000, b"expect 10.0.0.2 30000")
    send(engine, T0 + 2, "10.0.0.1", 20000, "10.0.0.2", 30000, b"to it")
    send(engine, T0 + 3, "10.0.0.2", 30000, "10.0.0.1", 20000, b"back")
    send(engine, T0 + 4, "10.0.0.2", 30000, "10.0.0.3", 20002, b"from it")
    assert Recorder.seen == [
        (20000, 30000, True, b"to it", {"said": "expect 10.0.0.2 30000"}),
        (20000, 30000, False, b"back", {"said": "expect 10.0.0.2 30000"}),
        (30000, 20002, True, b"from it", None),      # the announced side is the client here
    ]
    assert engine.counters()["flows.expected"] == 2


def test_an_expired_announcement_routes_nothing_new():
    engine, _ = make_engine([ANNOUNCER, TARGET])
    send(engine, T0, "10.0.0.1", 5060, "10.0.0.2", 7000, b"expect 10.0.0.2 30000")
    send(engine, T0 + 11, "10.0.0.1", 20000, "10.0.0.2", 30000, b"late")
    assert Recorder.seen == []


def test_an_announcement_for_a_disabled_decoder_is_ignored():
    engine, _ = make_engine([ANNOUNCER])                # "target" not enabled
    send(engine, T0, "10.0.0.1", 5060, "10.0.0.2", 7000, b"expect 10.0.0.2 30000")
    send(engine, T0 + 1, "10.0.0.1", 20000, "10.0.0.2", 30000, b"x")
    assert engine.counters()["flows.expected"] == 0


def test_with_heuristics_off_unrouted_udp_leaves_no_trace():
    engine, _ = make_engine([GUESSER])                  # heuristic defaults to false
    for n in range(5):
        send(engine, T0 + n, "10.0.0.1", 40000 + n, "10.0.0.2", 9000, b"Guess me")
    assert probe_calls == [] and Recorder.seen == []
    assert engine.counters()["flows.open"] == 0


def test_a_yes_from_the_probe_is_cached_and_a_no_is_reconsidered_on_a_bounded_schedule():
    engine, _ = make_engine([GUESSER], wirebeat__protocols__guesser__heuristic=True)
    for n in range(3):
        send(engine, T0 + n, "10.0.0.1", 40000, "10.0.0.2", 9000, b"Got it")
    assert probe_calls == [b"Got it"]                 # once: the answer is cached
    assert [s[3] for s in Recorder.seen] == [b"Got it"] * 3
    probe_calls.clear()
    for n in range(5000):
        send(engine, T0 + 3 + n * 0.125, "10.0.0.1", 40001, "10.0.0.2", 9000, b"nope")
    # The first datagram; every one of the next 10 s (80); then the 128th, 256th
    # ... 4096th (6) and the multiples of 1024 that are not powers of two (3072):
    # 88 probes in 5000 datagrams.
    assert len(probe_calls) == 1 + 80 + 6 + 1
    assert engine.counters()["flows.probed"] == 1


def test_a_turned_down_flow_is_claimed_when_its_traffic_changes():
    engine, _ = make_engine([GUESSER], wirebeat__protocols__guesser__heuristic=True)
    for n in range(10):                                # STUN/DTLS-like first: turned down
        send(engine, T0 + n * 0.01, "10.0.0.1", 40002, "10.0.0.2", 9000, b"handshake")
    send(engine, T0 + 1, "10.0.0.1", 40002, "10.0.0.2", 9000, b"Got it")
    send(engine, T0 + 2, "10.0.0.2", 9000, "10.0.0.1", 40002, b"Got it back")
    assert [s[3] for s in Recorder.seen] == [b"Got it", b"Got it back"]
    assert engine.counters()["flows.probed"] == 1


def test_a_flow_the_probe_turned_down_can_still_be_announced_later():
    engine, _ = make_engine([ANNOUNCER, TARGET, GUESSER],
                            wirebeat__protocols__guesser__heuristic=True)
    send(engine, T0, "10.0.0.1", 20000, "10.0.0.2", 30000, b"stun-like first packet")
    send(engine, T0 + 1, "10.0.0.3", 5060, "10.0.0.2", 7000, b"expect 10.0.0.2 30000")
    send(engine, T0 + 2, "10.0.0.1", 20000, "10.0.0.2", 30000, b"media")
    assert [s[3] for s in Recorder.seen] == [b"media"]
    assert len(probe_calls) == 1


def test_a_crashing_probe_is_counted_and_raised_only_in_strict_mode():
    engine, _ = make_engine([GUESSER], strict=True, wirebeat__protocols__guesser__heuristic=True)
    with pytest.raises(ValueError):
        send(engine, T0, "10.0.0.1", 40000, "10.0.0.2", 9000, b"BOOM")
    engine, stats = make_engine([GUESSER], strict=False,
                                wirebeat__protocols__guesser__heuristic=True)
    send(engine, T0, "10.0.0.1", 40000, "10.0.0.2", 9000, b"BOOM")
    send(engine, T0 + 1, "10.0.0.1", 40001, "10.0.0.2", 9000, b"Good")
    assert stats.counters["decoder.crashed.guesser"] == 1
    assert [s[3] for s in Recorder.seen] == [b"Good"]


def test_expectations_hold_a_bounded_number_of_endpoints():
    expectations = Expectations(max_entries=2)
    for port in (1000, 1001, 1002):
        assert expectations.expect("192.0.2.1", port, "x", None, 1.0)
    assert expectations.find("192.0.2.1", 1000) is None and expectations.evicted == 1
    assert not expectations.expect("not-an-ip", 1, "x", None, 1.0)
    assert not expectations.expect("192.0.2.1", 0, "x", None, 1.0)
    assert expectations.find("2001:db8:0::1", 5) is None
    expectations.expect("2001:db8::1", 5, "x", "v6", 1.0)
    assert expectations.find("2001:db8:0:0::1", 5).context == "v6"      # any spelling
    expectations.expire(1.5)
    assert expectations.udp == {}
