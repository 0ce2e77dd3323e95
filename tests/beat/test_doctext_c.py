"""Transaction documents' text from C (wirebeat._doctext, DocumentBuilder._build_text_c)
against the pure-Python text path (DocumentBuilder._build_text_python), the reference.

Same arguments to both; the C path must give the same `_id` and the same bytes, or
decline (None) so that the Python path runs. It must not decline on ordinary
transactions (the comparisons would compare nothing). Inputs: every bundled
capture's transactions, the decoder parts and flows test_doctext uses (every common
object touched, escapes, collector sources, no-port transports), and hostile
transactions: values of the wrong type (bool or float ports, int times, str byte
counts), integers past 64 bits, NaN and infinite times, lone surrogates, control
characters and non-ASCII text in every string field. test_doctext.py checks the
text path as a whole against the dict path. Under CI=true the extension must have
been built.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from test_doctext import (AGENT, CAPTURES, CONFIGS, FLOWS, PARTS, _document, _run, _transactions,
                          mixed_capture)  # noqa: F401  (a fixture)
from wirebeat.decoders import dns, icmp
from wirebeat.decoders.api import FlowKey, Transaction
from wirebeat.direction import NetworkDirection
from wirebeat.document import DocumentBuilder
from running import needs_extension

try:
    from wirebeat import _doctext
except ImportError:
    _doctext = None

needs_c = needs_extension(_doctext)
pytestmark = needs_c


def _builder(tags: list[str] | None = None, fields: dict[str, Any] | None = None,
             direction: bool = True) -> DocumentBuilder:
    builder = DocumentBuilder(AGENT, [], fields or {}, False, tags or [])
    builder.text_ok = True
    builder.link = ("eth:ethertype", True)
    if direction:
        builder.direction = NetworkDirection(["private"])
    return builder


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as err:        # both paths must fail alike
        return "raised", type(err)


def _compare(builder: DocumentBuilder, spec: Any, txn: Transaction, flow_id: Any = None,
             macs: Any = None) -> bool:
    """True when the C path built the document (the reference's, byte for byte); False when it
    declined (then `_build_text` runs the reference) or raised (as the reference does)."""
    extra = spec.document(txn)
    kind, got = _outcome(lambda: builder._build_text_c(spec, txn, flow_id, macs, dict(extra)))
    want_kind, want = _outcome(lambda: builder._build_text_python(spec, txn, flow_id, macs, dict(extra)))
    if kind == "raised":
        assert want_kind == "raised", (txn, want)
        return False
    if got is None:
        return False
    assert want_kind == "ok" and want is not None, (txn, want)
    assert got[0] == want[0]
    assert bytes(orjson.dumps(got[1])) == bytes(orjson.dumps(want[1])), txn
    return True


# Decoder parts the C path must take (most others change a common object beyond adding keys).
C_PARTS = [{}, {"probe": {"x": 1}, "path": "1.2.3.4"}, {"event": {"type": ["connection"]}},
           {"related": {"ip": ["10.0.0.1", "10.0.0.2", "192.0.2.9"], "hosts": ["example.com"]}},
           {"destination": {"domain": "example.com"}, "server": {"domain": "example.com"}},
           {"top": None, "kept": "é\u2028\x01\"\\"}]


@pytest.mark.parametrize("extra", PARTS, ids=lambda e: orjson.dumps(e).decode()[:40])
@pytest.mark.parametrize("tags, fields, direction", [([], {}, True), (["t1"], {"f": {"g": 1}}, False)])
def test_decoder_parts(extra: dict[str, Any], tags: list[str], fields: dict[str, Any],
                       direction: bool) -> None:
    spec = _document(extra)
    builder = _builder(tags, fields, direction)
    built = 0
    for flow in FLOWS:
        for txn in _transactions(flow):
            for flow_id, macs in ((None, None), ("Fl0w-id_1", (b"\x02\x00\x00\x00\x00\x01", b"\xaa" * 6))):
                built += _compare(builder, spec, txn, flow_id, macs)
    if extra in C_PARTS:
        assert built >= 30      # every flow but the one that is no address, every transaction


def _hostile() -> list[tuple[FlowKey, Transaction]]:
    flow = FlowKey("udp", "10.0.0.1", 5353, "10.0.0.2", 53, "eth0")
    odd_text = ["", "é\u2028\x01\x1f\x7f\"\\/", "\ud800", "a\0b", "x" * 5000]
    cases = []

    def txn(flow: FlowKey = flow, **changes: Any) -> Transaction:
        base = dict(flow=flow, ts=1700000000.25, end_ts=1700000000.5, status="OK", detail=None,
                    request_bytes=10, response_bytes=20, notes=(), identity="i")
        base.update(changes)
        return Transaction(**base)

    for text in odd_text:
        cases.append(txn(status=text))
        cases.append(txn(identity=text))
        cases.append(txn(notes=(text,)))
        cases.append(txn(flow=FlowKey("udp", "10.0.0.1", 1, "10.0.0.2", 2, text)))
        cases.append(txn(flow=FlowKey(text, "10.0.0.1", 1, "10.0.0.2", 2, "s")))
        cases.append(txn(flow=FlowKey("tcp", text or "::", 1, "10.0.0.2", 2, "s")))
        cases.append(txn(flow=FlowKey("tcp", "10.0.0.1", 1, text or "::", 2, "s")))
    for value in (True, 1.0, -1, 2 ** 63, -(2 ** 64), 2 ** 70, "5", None):
        cases.append(txn(flow=FlowKey("udp", "10.0.0.1", value, "10.0.0.2", 53, "s")))
        cases.append(txn(flow=FlowKey("tcp", "10.0.0.1", 1, "10.0.0.2", value, "s")))
        cases.append(txn(request_bytes=value))
        cases.append(txn(response_bytes=value, request_bytes=None, end_ts=None))
        cases.append(txn(request_bytes=2 ** 62, response_bytes=value))
    for ts in (0.0, -1.5, 1e18, 1e300, math.inf, -math.inf, math.nan, 1700000000, 2.5e-7, 0.5e-6, 1.5e-6):
        cases.append(txn(ts=ts))
        cases.append(txn(end_ts=ts))
        cases.append(txn(ts=ts, end_ts=None))
    cases.append(txn(ts=1700000000.25, end_ts=1700000000.2500005))
    # times the C writer takes up to year 2223 (8e9 s), rounding into the next second
    for ts in (7999999999.9999995, 7999999999.999999, 8e9, 1700000000.9999996, 59.9999999, 5e-7):
        cases.append(txn(ts=ts, end_ts=None))
        cases.append(txn(ts=1.0, end_ts=ts))
    # Community ID from the address text: every transport with one, ports at the 16-bit edges,
    # address text inet_pton reads in more than one spelling, mixed families
    for transport in ("tcp", "udp", "icmp", "ipv6-icmp", "sctp", "TCP"):
        for ports in ((0, 0), (65535, 65535), (65536, 1), (1, -1), (8, 0), (128, 0), (3, 3)):
            cases.append(txn(flow=FlowKey(transport, "10.0.0.1", ports[0], "10.0.0.2", ports[1], "s")))
            cases.append(txn(flow=FlowKey(transport, "2001:db8::1", ports[0], "2001:DB8::2", ports[1], "s")))
    for client, server in (("::ffff:10.0.0.1", "::1"), ("10.0.0.1", "::1"), ("::1", "10.0.0.1"),
                           ("010.0.0.1", "10.0.0.2"), ("1.2.3", "10.0.0.2"), ("10.0.0.1 ", "10.0.0.2"),
                           ("fe80::1%eth0", "fe80::2"), ("10.0.0.1", "10.0.0.1"), ("::", "::"),
                           ("1:2:3:4:5:6:7:8:9", "::1"), ("é", "10.0.0.2")):
        cases.append(txn(flow=FlowKey("udp", client, 1, server, 2, "s")))
        cases.append(txn(flow=FlowKey("icmp", client, 8, server, 0, "s")))
    cases.append(txn(end_ts="later"))
    cases.append(txn(notes=("one", "two", "three")))
    cases.append(txn(request_bytes=None, response_bytes=None, end_ts=None))
    cases.append(txn(status=None))
    cases.append(txn(identity=7))
    return cases


@pytest.mark.parametrize("extra", [{}, {"probe": {"x": 1}}, {"event": {"type": ["connection"]}},
                                   {"related": {"ip": ["10.0.0.1", "192.0.2.9"]}},
                                   {"destination": {"domain": "é\x01"}, "server": {"domain": "d"}}],
                         ids=lambda e: orjson.dumps(e).decode()[:30])
def test_hostile_transactions(extra: dict[str, Any]) -> None:
    spec = _document(extra)
    builder = _builder()
    built = 0
    for txn in _hostile():
        for flow_id, macs in ((None, None), ("\ud800", None), ("id\x01\"", (b"\x01" * 6, b"\x02" * 8)),
                              (None, (b"", b"\xff\xfe\x00\x9a\xbc\xde")),
                              (None, (bytearray(b"\x01" * 6), b"\x02" * 6)), (None, ("02-00", b"\x02" * 6))):
            built += _compare(builder, spec, txn, flow_id, macs)
    assert built > 50


DENSE = ("dns", "icmp", "http")       # the transaction-dense benchmark's decoders


class _Probe:
    """Runs the C and the Python text path on every transaction document a capture makes."""

    def __init__(self) -> None:
        self.built = self.declined = 0

    def __call__(self, builder: DocumentBuilder, spec: Any, txn: Transaction, flow_id: Any, macs: Any,
                 extra: dict[str, Any]) -> Any:
        got = builder._build_text_c(spec, txn, flow_id, macs, dict(extra))
        want = builder._build_text_python(spec, txn, flow_id, macs, dict(extra))
        if got is None:
            self.declined += spec.name in DENSE     # (SIP and DHCP change network, client: merges)
        else:
            self.built += 1
            assert want is not None and got[0] == want[0]
            assert bytes(orjson.dumps(got[1])) == bytes(orjson.dumps(want[1]))
        return want


def _through_build_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """ICMP's and DNS's documents through `_build_text` too, not their `document_text`
    (which test_doctext.py compares with the dict path): so they are compared here as well."""
    for module in (icmp, dns):
        monkeypatch.setattr(module, "DECODER", dataclasses.replace(module.DECODER, document_text=None))


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_bundled_captures(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _through_build_text(monkeypatch)
    probe = _Probe()
    monkeypatch.setattr(DocumentBuilder, "_build_text", lambda self, *a: probe(self, *a))
    overrides, fields, tags = CONFIGS[config]
    for path in CAPTURES:
        _run(path, True, overrides, fields, tags)
    assert probe.built > 150
    assert probe.declined * 20 < probe.built, (probe.built, probe.declined)


def test_mixed_capture(mixed_capture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ~2000 transactions of ICMP (v4, v6, fragmented), DNS (VLAN, QinQ) and HTTP
    _through_build_text(monkeypatch)
    probe = _Probe()
    monkeypatch.setattr(DocumentBuilder, "_build_text", lambda self, *a: probe(self, *a))
    _run(mixed_capture, True, *CONFIGS["default"])
    assert probe.built > 1500 and probe.declined * 20 < probe.built


def _direction_addresses() -> tuple[list[str], list[str]]:
    """IPv4 and IPv6 address text: the edges of the ranges the named networks hold, and random."""
    import ipaddress
    import random
    rng = random.Random(5)
    v4, v6 = ["0.0.0.0", "255.255.255.255"], ["::", "::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1"]
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
                 "224.0.0.0/24", "192.0.2.0/24", "fc00::/7", "fe80::/10", "ff02::/16", "2001:db8::/33"):
        net = ipaddress.ip_network(cidr)
        for value in (int(net.network_address) - 1, int(net.network_address), int(net.broadcast_address),
                      int(net.broadcast_address) + 1):
            (v4 if net.version == 4 else v6).append(str(ipaddress.ip_address(value) if net.version == 4
                                                         else ipaddress.IPv6Address(value)))
    v4 += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(20)]
    v6 += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(10)]
    v6 += ["FE80::1", "fd00:0:0:0:0:0:0:1"]
    return v4, v6


@pytest.mark.parametrize("networks", [["private"], [], ["10.0.0.0/8", "2001:db8::/33", "loopback"],
                                      ["multicast", "link_local_unicast", "unspecified", "192.0.2.0/24"],
                                      ["public", "10.0.0.0/8"]])
def test_direction_worked_out_in_c(networks: list[str]) -> None:
    """network.direction from NetworkDirection.packed_ranges (in C, from the packed addresses)
    against NetworkDirection.of, which the Python path asks: every pair of addresses of a
    family from the ranges' edges, for transports with and without a Community ID. Networks
    that are not all CIDR lists (public) have no packed ranges: their text is passed in."""
    builder = _builder()
    direction = builder.direction = NetworkDirection(networks)
    assert (direction.packed_ranges is None) == ("public" in networks)
    spec = _document({})
    seen = set()
    for family in _direction_addresses():
        for client in family:
            for server in family[::3]:
                for transport in ("udp", "icmp", "sctp"):
                    txn = Transaction(FlowKey(transport, client, 1, server, 2, "s"), 1700000000.25,
                                      1700000000.5, "OK", None, 10, 20, (), "a")
                    assert _compare(builder, spec, txn), txn
                seen.add(direction.of(client, server))
    assert seen == ({"ingress", "egress", "unknown"} if not networks else
                    {"ingress", "egress", "internal", "inbound", "outbound", "external"}), seen


def test_direction_ranges_of_another_shape_are_declined() -> None:
    builder = _builder()
    spec = _document({})
    txn = Transaction(FLOWS[0], 1700000000.25, 1700000000.5, "OK", None, 10, 20, (), "a")
    good = builder.direction.packed_ranges
    for bad in (good[:4], (good[0][:-1], *good[1:]), (*good[:4], 1), ("x", *good[1:])):
        builder.direction.packed_ranges = bad
        assert _compare(builder, spec, txn) is False
    builder.direction.packed_ranges = good
    assert _compare(builder, spec, txn) is True
