"""Transaction documents as text (DocumentBuilder._build_text) against the dict path.

The dict path (nested dicts, merge(), orjson at the output) is the reference:
every test runs the same input through a builder whose output takes ready JSON
(`text_ok`, the text path) and through one whose output does not, and requires
the same `_id`s and byte-identical JSON in the same order (so the same parsed
documents, key order included). The captures are every bundled one (IPv6,
VLAN, tunnels, MACs) and a generated transaction-dense mixed capture, under
configurations that change the common fields (network.direction, fields,
tags, flows, decoder options); the unit tests give the text path decoder parts
that touch every common object, take one away, or replace one.
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from wirebeat.decoders.api import DecoderSpec, FlowKey, Transaction
from wirebeat.document import DocumentBuilder
from wirebeat.pipeline import documents
from wirebeat.registry import discover
from wirebeat.testing import make_engine, run_capture

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = sorted(p for p in (ROOT / "pcaps").rglob("*") if p.suffix in (".pcap", ".pcapng"))
AGENT = {"type": "wirebeat", "version": "test", "name": "host-1"}


class Collect:
    """An output keeping (id, document) pairs; `accepts_fragments` picks the builder's path."""

    name = "collect"

    def __init__(self, fragments: bool) -> None:
        self.accepts_fragments = fragments
        self.docs: list[tuple[str, Any]] = []

    def send(self, batch: Any, stopping: threading.Event) -> int:
        self.docs.extend(documents(batch))
        return 0

    def close(self) -> None:
        pass


def _run(path: Path, fragments: bool, overrides: dict[str, Any], fields: dict[str, Any],
         tags: list[str]) -> tuple[list[tuple[str, bytes]], bool]:
    output = Collect(fragments)
    engine, pipeline, _, _ = make_engine([r.spec for r in discover()], True,
                                         {"wirebeat.flows.enabled": True, **overrides}, output)
    engine.builder.fields, engine.builder.tags = fields, tags
    run_capture(engine, pipeline, str(path))
    return [(i, orjson.dumps(d)) for i, d in output.docs], engine.builder.text_ok


CONFIGS = {
    "default": ({}, {}, []),
    "no-flows-fields-tags": ({"wirebeat.flows.enabled": False,
                              "wirebeat.interfaces.internal_networks": []},
                             {"site": "lab", "rack": {"row": 3}}, ["a", "b\"q"]),
    "internal-10-8": ({"wirebeat.interfaces.internal_networks": ["10.0.0.0/8", "fd00::/8"]}, {}, ["t"]),
    "decoder-options": ({"wirebeat.protocols.dns.include_authorities": True,
                         "wirebeat.protocols.dns.include_additionals": True,
                         "wirebeat.protocols.dns.send_request": True,
                         "wirebeat.protocols.dns.send_response": True,
                         "wirebeat.protocols.http.send_all_headers": True,
                         "wirebeat.protocols.http.send_request": True,
                         "wirebeat.protocols.http.real_ip_header": "X-Forwarded-For",
                         "wirebeat.tunnels.enabled": False}, {}, []),
}


def _same(path: Path, config: str) -> int:
    overrides, fields, tags = CONFIGS[config]
    text, text_ok = _run(path, True, overrides, fields, tags)
    reference, reference_text_ok = _run(path, False, overrides, fields, tags)
    assert text_ok and not reference_text_ok
    assert len(text) == len(reference)
    for (text_id, text_doc), (ref_id, ref_doc) in zip(text, reference):
        assert text_id == ref_id
        assert text_doc == ref_doc, (text_doc, ref_doc)
        assert orjson.loads(text_doc) == orjson.loads(ref_doc)
    return len(text)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(ROOT / "pcaps")))
def test_bundled_capture_same_documents(path: Path, config: str) -> None:
    _same(path, config)


@pytest.fixture(scope="module")
def mixed_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mixed") / "mixed-6000.pcap"
    subprocess.run([sys.executable, str(ROOT / "tests/bench/gen_mixed.py"), str(path), "--packets", "6000"],
                   check=True, capture_output=True)
    return path


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_mixed_capture_same_documents(mixed_capture: Path, config: str) -> None:
    # ~2000 transactions of ICMP (v4, v6, fragmented), DNS (VLAN, QinQ) and HTTP
    assert _same(mixed_capture, config) > 1500


def test_bundled_captures_take_the_text_path() -> None:
    """The differential tests compare something: transaction documents of the bundled
    DNS, ICMP and HTTP captures are built as text (not left to the dict path), by
    `_build_text` or, for a decoder with `document_text` (ICMP, DNS), without document()."""
    calls = []
    original = DocumentBuilder.build

    def spy(self: DocumentBuilder, spec: DecoderSpec, *args: Any) -> Any:
        built = original(self, spec, *args)
        calls.append((spec.name, built is not None and built[1].__class__ is orjson.Fragment))
        return built
    DocumentBuilder.build = spy       # type: ignore[method-assign]
    try:
        for name in ("dns", "icmp", "http"):
            for path in sorted((ROOT / "pcaps" / name).glob("*.pcap*")):
                _run(path, True, {}, {}, [])
    finally:
        DocumentBuilder.build = original      # type: ignore[method-assign]
    for name in ("dns", "icmp", "http"):
        taken = [ok for n, ok in calls if n == name]
        assert taken and all(taken), name


# -- decoder parts that touch the common objects ----------------------------------------------

def _document(extra: dict[str, Any]) -> DecoderSpec:
    return DecoderSpec(name="probe", document=lambda txn: orjson.loads(orjson.dumps(extra)))


PARTS = [
    {},
    {"probe": {"x": 1}, "path": "1.2.3.4"},
    {"event": {"type": ["connection"]}},
    {"event": {"type": ["connection"], "outcome": "success"}},     # a key the head lacks
    {"event": {"kind": None}},
    {"event": {"start": "2020-01-01T00:00:00.000000Z"}},
    {"event": None},
    {"event": "flat"},
    {"related": {"ip": ["10.0.0.1", "10.0.0.2", "192.0.2.9"], "hosts": ["example.com"]}},
    {"related": {"user": ["bob"], "ip": ["10.0.0.1"]}},         # ip not first: merge keeps it first
    {"related": {"hosts": ["h"]}},
    {"related": {"ip": ["10.0.0.1"], "hosts": None}},
    {"destination": {"domain": "example.com"}, "server": {"domain": "example.com"}},
    # each endpoint its own addition (the C text copies source's into client, destination's into server)
    {"source": {"geo": {"name": "s"}}, "client": {"domain": "c"}, "server": {"domain": "\"s\""}},
    {"client": {"ip": "203.0.113.7"}, "network": {"forwarded_ip": "203.0.113.7"}},
    {"source": {"bytes": None}, "destination": {"port": 8080, "geo": {"x": None}}},
    {"network": {"protocol": "other", "direction": None}},
    {"source": None},
    {"status": "Error"},
    {"tags": ["mine"]},
    {"fields": {"a": 1}},
    {"error": {"message": "x"}},
    {"flow": {"id": "other"}},
    {"top": None, "kept": "é\u2028\x01\"\\"},
]
FLOWS = [
    FlowKey("udp", "10.0.0.1", 5353, "10.0.0.2", 53, "eth0"),
    FlowKey("tcp", "fe80::1", 40000, "2001:db8::2", 80, "a\"b\\c\x01"),
    FlowKey("icmp", "192.168.1.1", 8, "192.168.1.1", 0, "x"),
    FlowKey("ipv6-icmp", "::1", 128, "::2", 0, "client\0tcp://collector:1"),
    FlowKey("sctp", "10.0.0.1", 1, "10.0.0.2", 2, ""),
    FlowKey("udp", "not an address", 1, "10.0.0.2", 2, "s"),
]


def _transactions(flow: FlowKey) -> list[Transaction]:
    return [
        Transaction(flow, 1700000000.25, 1700000000.5, "OK", None, 10, 20, (), "a"),
        Transaction(flow, 1700000000.25, None, "Error", None, None, 20, ("lost request",), "b"),
        Transaction(flow, 1700000000.25, None, "OK", None, 10, None, ("one", "two"), ""),
        Transaction(flow, 1700000000.75, 1700000000.5, "OK", None, None, None, (), "c"),
    ]


@pytest.mark.parametrize("extra", PARTS, ids=lambda e: orjson.dumps(e).decode()[:40])
@pytest.mark.parametrize("tags, fields", [([], {}), (["t1"], {"f": {"g": 1}})])
def test_decoder_parts_same_documents(extra: dict[str, Any], tags: list[str],
                                      fields: dict[str, Any]) -> None:
    from wirebeat.direction import NetworkDirection
    spec = _document(extra)
    text = DocumentBuilder(AGENT, [], fields, False, tags)
    text.text_ok = True
    reference = DocumentBuilder(AGENT, [], fields, False, tags)
    for builder in (text, reference):
        builder.direction = NetworkDirection(["private"])
        builder.link = ("eth:ethertype", True)
    for flow in FLOWS:
        for txn in _transactions(flow):
            for flow_id, macs in ((None, None), ("Fl0w-id_1", (b"\x02\x00\x00\x00\x00\x01", b"\xaa" * 6))):
                got_id, got = text.build(spec, txn, flow_id, macs)
                want_id, want = reference.build(spec, txn, flow_id, macs)
                assert want.__class__ is dict
                assert got_id == want_id
                assert orjson.dumps(got) == orjson.dumps(want), (extra, flow, txn)


def test_text_path_is_taken_only_when_nothing_edits_documents() -> None:
    """Processors or fields under the root: dicts (shared_ok False), never text."""
    spec = _document({"probe": {"x": 1}})
    txn = _transactions(FLOWS[0])[0]
    for processors, under_root in (([{"drop_fields": {"fields": ["probe"]}}], False), ([], True)):
        builder = DocumentBuilder(AGENT, processors, {"f": 1}, under_root, [])
        builder.text_ok = True
        built = builder.build(spec, txn)
        assert built is not None and built[1].__class__ is dict
    builder = DocumentBuilder(AGENT, [], {}, False, [])
    builder.text_ok = True
    assert builder.build(spec, txn)[1].__class__ is orjson.Fragment
