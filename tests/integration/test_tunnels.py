"""Tunnels are peeled once, for every decoder: the inner conversation is decoded, the outer kept.

pcaps/tunnels/vxlan.pcap is real traffic through Linux's own vxlan device
(make_captures.sh; this machine's kernel has no geneve or gre modules).
GENEVE, GRE, transparent Ethernet bridging, ERSPAN II/III, MPLS and PPPoE
frames are built here to their RFCs (tests/tunnelgen.py), so their contents
are known exactly; tshark checks the layers of both kinds.
"""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

import pcapgen as g
import tunnelgen as t
from conftest import PCAPS, decode_file
from wirebeat.tunnels import decapsulate, peel_link

VXLAN = PCAPS / "tunnels" / "vxlan.pcap"


def _dns_query(name: str = "example.com", ident: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def _inner_ip() -> bytes:
    return g.ipv4("10.0.0.1", "10.0.0.2", 17, g.udp("10.0.0.1", "10.0.0.2", 40000, 53, _dns_query()))


CASES = {     # name -> (frame, tunnel type, tunnel id or None for a link shim)
    "vxlan": (lambda: g.ethernet(t.vxlan(g.ethernet(_inner_ip()), 42)), "vxlan", 42),
    "geneve_with_options": (lambda: g.ethernet(t.geneve(g.ethernet(_inner_ip()), 43, b"\x01\x02\x03\x01abcd")),
                            "geneve", 43),
    "gre_ip_with_key": (lambda: g.ethernet(t.gre(_inner_ip(), 0x0800, key=44)), "gre", 44),
    "gre_ethernet": (lambda: g.ethernet(t.gre(g.ethernet(_inner_ip()), 0x6558, key=45)), "gre", 45),
    "erspan_type_2": (lambda: g.ethernet(t.erspan2(g.ethernet(_inner_ip()), 46)), "erspan", 46),
    "erspan_type_3": (lambda: g.ethernet(t.erspan3(g.ethernet(_inner_ip()), 47)), "erspan", 47),
    "mpls_two_labels": (lambda: t.mpls(_inner_ip(), [100, 200]), None, None),
    "pppoe": (lambda: t.pppoe(_inner_ip()), None, None),
}


def _tshark_stack(path: Path) -> str:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.protocols"],
                         capture_output=True, check=True, text=True).stdout
    return out.strip().removeprefix("frame:")


@pytest.mark.parametrize("case", sorted(CASES))
def test_inner_dns_query_is_decoded_with_the_outer_layers_kept(case: str, tmp_path: Path):
    build, kind, tunnel_id = CASES[case]
    path = tmp_path / f"{case}.pcap"
    g.write_pcap(path, [(1.0, build())])
    docs = decode_file(path, "wirebeat.packets.enabled=true")
    [packet] = [d for d in docs if d["event"]["dataset"] == "packet"]
    [dns] = [d for d in docs if d["event"]["dataset"] == "dns"]
    theirs = _tshark_stack(path)
    assert theirs.endswith(":udp:dns")          # tshark decodes the inner query too
    assert packet["network"]["protocol_stack"] == theirs
    assert dns["network"]["protocol_stack"] == theirs
    assert dns["dns"]["question"]["name"] == "example.com"
    if kind is None:                            # MPLS, PPPoE: shims, not tunnels
        assert dns["source"]["ip"] == "10.0.0.1" and "tunnel" not in dns["network"]
    else:
        assert dns["source"]["ip"] == [t.OUTER_A, "10.0.0.1"]
        assert dns["destination"]["ip"] == [t.OUTER_B, "10.0.0.2"]
        assert dns["network"]["tunnel"] == {"type": kind, "id": tunnel_id}
        assert packet["network"]["tunnel"] == {"type": kind, "id": tunnel_id}
        assert packet["source"]["ip"] == [t.OUTER_A, "10.0.0.1"]
        assert packet["source"]["port"] == 40000 and packet["network"]["transport"] == "udp"


def test_turning_tunnels_off_leaves_the_outer_packet_alone(tmp_path: Path):
    path = tmp_path / "vxlan.pcap"
    g.write_pcap(path, [(1.0, CASES["vxlan"][0]())])
    docs = decode_file(path, "wirebeat.packets.enabled=true", "wirebeat.tunnels.enabled=false")
    assert [d["event"]["dataset"] for d in docs] == ["packet"]
    assert docs[0]["network"]["protocol_stack"] == "eth:ethertype:ip:udp"
    assert docs[0]["source"]["ip"] == t.OUTER_A


def test_real_vxlan_traffic_is_decoded_inside():
    docs = decode_file(VXLAN)
    out = subprocess.run(["tshark", "-n", "-r", str(VXLAN), "-T", "fields", "-e", "icmp.type",
                          "-e", "http.request.uri", "-e", "dns.qry.name", "-e", "dns.flags.response",
                          "-e", "vxlan.vni"], capture_output=True, check=True, text=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert {r[4] for r in rows} == {"42"}
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["event"]["dataset"], []).append(doc)
        assert doc["network"]["tunnel"] == {"type": "vxlan", "id": 42}
        assert doc["source"]["ip"] == ["192.168.60.1", "10.60.0.1"]
        assert doc["destination"]["ip"] == ["192.168.60.2", "10.60.0.2"]
    assert len(by_kind["icmp"]) == sum(r[0] == "8" for r in rows) == 3
    assert [d["url"]["path"] for d in by_kind["http"]] == [r[1] for r in rows if r[1]]
    assert [d["dns"]["question"]["name"] for d in by_kind["dns"]] == \
        [r[2] for r in rows if r[2] and r[3] in ("0", "False")]
    assert by_kind["http"][0]["network"]["protocol_stack"] == "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:tcp:http"


@given(st.integers(0, 255), st.binary(max_size=200))
def test_decapsulate_returns_a_tunnel_a_reason_or_nothing(proto: int, payload: bytes):
    result = decapsulate(proto, payload)
    assert result is None or isinstance(result, (str, tuple))
    for udp_port in (4789, 6081):
        forged = payload[:2].ljust(2, b"\0") + udp_port.to_bytes(2, "big") + payload[4:]
        result = decapsulate(17, forged)
        assert result is None or isinstance(result, (str, tuple))


@given(st.sampled_from([0x8847, 0x8848, 0x8864]), st.binary(max_size=80))
def test_peel_link_returns_a_layer_or_a_reason(ethertype: int, data: bytes):
    result = peel_link(ethertype, data, 0)
    assert isinstance(result, (str, tuple))


def test_transactions_reported_by_timeout_keep_their_own_tunnel_or_none(tmp_path: Path):
    plain = g.ethernet(g.ipv4("10.9.0.1", "10.9.0.2", 17, g.udp("10.9.0.1", "10.9.0.2", 40001, 53,
                                                               _dns_query("plain.example", 7))))
    path = tmp_path / "mixed.pcap"
    # Both queries go unanswered and are reported by timeout while a later, plain frame is
    # read: each must keep its own layers, whatever packet was being processed then.
    later = g.ethernet(g.ipv4("10.9.0.3", "10.9.0.4", 1, g.icmp_echo(1, 1)))
    g.write_pcap(path, [(1.0, plain), (2.0, CASES["vxlan"][0]()), (30.0, later)])
    docs = {d["dns"]["question"]["name"]: d for d in decode_file(path) if d["event"]["dataset"] == "dns"}
    assert docs["plain.example"]["source"]["ip"] == "10.9.0.1"
    assert "tunnel" not in docs["plain.example"]["network"]
    assert docs["plain.example"]["network"]["protocol_stack"] == "eth:ethertype:ip:udp:dns"
    tunneled = docs["example.com"]
    assert tunneled["network"]["tunnel"] == {"type": "vxlan", "id": 42}
    assert tunneled["source"]["ip"] == [t.OUTER_A, "10.0.0.1"]
    assert tunneled["network"]["protocol_stack"] == "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:udp:dns"
    assert tunneled["related"]["ip"] == [t.OUTER_A, t.OUTER_B, "10.0.0.1", "10.0.0.2"]
