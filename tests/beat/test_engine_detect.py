"""TCP connections on no configured port: stream detectors (`DecoderSpec.detect`).

A toy decoder keeps the engine hook apart from TLS: "sniffer" claims
connections whose first payload starts with b"HELLO" and records what each
side sent, by direction.
"""
from __future__ import annotations

from typing import Any

import pcapgen
import pytest

import wirebeat.testing as engine_harness
from wirebeat.decoders.api import DecoderSpec, FlowKey, Transaction

T0 = 1_700_000_000.0
CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


class Sniffer:
    def __init__(self, flow: FlowKey, options: dict) -> None:
        self.flow = flow
        self.seen: list[tuple[bool, bytes]] = []

    def on_data(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]:
        self.seen.append((from_client, data))
        return []

    def on_gap(self, from_client: bool, missing: int, ts: float) -> list[Transaction]:
        return []

    def on_close(self, ts: float) -> list[Transaction]:
        return [Transaction(self.flow, ts, ts, "OK", self.seen)]

    def expire(self, now: float) -> list[Transaction]:
        return []


def detect(data: bytes) -> bool:
    if data.startswith(b"BOOM"):
        raise ValueError("a detector bug")
    return data.startswith(b"HELLO")


def document(txn: Transaction) -> dict[str, Any]:
    return {"sniffer": {"client": [d.decode() for c, d in txn.detail if c],
                        "server": [d.decode() for c, d in txn.detail if not c]}}


SNIFFER = DecoderSpec(name="sniffer", document=document, stream=Sniffer, ports=(), detect=detect)


def run(segments: list[tuple[str, int, str, int, int, str, bytes]], strict: bool = True,
        **overrides: Any) -> tuple[list[dict], dict[str, int]]:
    values = {key.replace("__", "."): value for key, value in overrides.items()}
    engine, pipeline, output, stats = engine_harness.make_engine([SNIFFER], strict, values)
    for i, (src, sport, dst, dport, seq, flags, payload) in enumerate(segments):
        segment = pcapgen.tcp(src, dst, sport, dport, payload, seq=seq, ack=1, flags=flags)
        engine.on_frame(T0 + i, 1, pcapgen.ethernet(pcapgen.ip_packet(src, dst, pcapgen.IPPROTO_TCP, segment)),
                        "test")
    engine.finish()
    pipeline.close()
    return output.docs, stats.snapshot()


CONVERSATION = [
    (CLIENT, 40000, SERVER, 9999, 100, "S", b""),
    (SERVER, 9999, CLIENT, 40000, 500, "SA", b""),
    (CLIENT, 40000, SERVER, 9999, 101, "PA", b"HELLO there"),
    (SERVER, 9999, CLIENT, 40000, 501, "PA", b"welcome"),
    (CLIENT, 40000, SERVER, 9999, 112, "PA", b"bye"),
]


def test_a_connection_whose_first_bytes_are_recognised_is_decoded_sender_as_client():
    [doc], counters = run(CONVERSATION)
    assert doc["sniffer"] == {"client": ["HELLO there", "bye"], "server": ["welcome"]}
    assert (doc["source"]["port"], doc["destination"]["port"]) == (40000, 9999)
    assert counters["tcp.connections_detected"] == 1
    assert counters["packets.tcp_untracked"] == 2          # the SYN and SYN-ACK, before any payload


def test_unrecognised_connections_leave_no_state():
    other = [(s, sp, d, dp, seq, f, b"OTHER" if p else p) for s, sp, d, dp, seq, f, p in CONVERSATION[:3]]
    docs, counters = run(other)
    assert docs == [] and "tcp.connections_opened" not in counters
    assert counters["packets.tcp_untracked"] == 3


def test_detection_off_leaves_the_connection_untracked():
    docs, counters = run(CONVERSATION, wirebeat__protocols__sniffer__detect=False)
    assert docs == [] and counters["packets.tcp_untracked"] == 5


def test_a_crashing_detector_is_counted_and_raised_only_in_strict_mode():
    boom = [(CLIENT, 40001, SERVER, 9999, 1, "PA", b"BOOM")]
    with pytest.raises(ValueError):
        run(boom)
    docs, counters = run([*boom, *CONVERSATION], strict=False)
    assert counters["decoder.crashed.sniffer"] == 1
    assert len(docs) == 1
