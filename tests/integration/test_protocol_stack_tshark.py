"""`network.protocol_stack` and per-packet documents agree with tshark.

tshark is the oracle: on every bundled capture, and on link-layer variants
built here (VLAN, QinQ, Linux cooked v1/v2, BSD null/loop, raw IP, ARP,
LLC, IPv6 extension headers, fragments), each per-packet document's stack
must be tshark's `frame.protocols` (without `frame:`) cut at a layer
boundary, must go at least as far as the transport where tshark sees one,
and its MACs, addresses, ports and length must be tshark's. Each transaction
document's stack must be a cut of some frame of the capture, naming its
decoder's layer after the transport.
"""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

import pcapgen as g
from conftest import PCAPS, decode_file

CAPTURES = sorted(PCAPS.rglob("*.pcap"))
FIELDS = ["frame.protocols", "frame.cap_len", "eth.src", "eth.dst", "ip.src", "ip.dst", "ipv6.src",
          "ipv6.dst", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "vlan.id", "ieee8021ad.id",
          "arp.src.proto_ipv4", "arp.dst.proto_ipv4"]
TRANSPORTS = {"tcp", "udp", "icmp", "icmpv6"}
TUNNEL_LAYERS = {"vxlan", "geneve", "gre", "erspan"}


def _tshark(path: Path, *options: str) -> list[dict[str, list[str]]]:
    out = subprocess.run(["tshark", "-n", *options, "-r", str(path), "-T", "fields", "-E", "separator=|",
                          *[a for f in FIELDS for a in ("-e", f)]],
                         capture_output=True, check=True, text=True).stdout
    # A field seen twice in a frame (a tunnel's outer and inner header, the packet an ICMP
    # error quotes) lists its values outermost first.
    return [{k: v.split(",") if v else [] for k, v in zip(FIELDS, line.split("|"))}
            for line in out.splitlines()]


def _same(ours, theirs: list[str], tunneled: bool) -> bool:
    """Ours is one value, or outer then inner in a list for tunneled traffic."""
    if tunneled:
        return ours == theirs
    return ours == theirs[0]


def _is_cut(ours: str, theirs: str) -> bool:
    mine, full = ours.split(":"), theirs.split(":")
    return full[:len(mine)] == mine


def _mac(tshark_mac: str) -> str:
    return tshark_mac.replace(":", "-").upper()


def _check_packets(path: Path) -> list[dict]:
    docs = decode_file(path, "wirebeat.packets.enabled=true")
    packets = [d for d in docs if d["event"]["dataset"] == "packet"]
    rows = _tshark(path)
    assert len(packets) == len(rows)
    for number, (doc, row) in enumerate(zip(packets, rows), 1):
        theirs = row["frame.protocols"][0].removeprefix("frame:")
        ours = doc["network"].get("protocol_stack", "")
        where = f"{path.name} frame {number}: ours {ours!r}, tshark {theirs!r}"
        assert _is_cut(ours, theirs), where
        tunneled = "tunnel" in doc["network"]
        layers = theirs.split(":")
        # the innermost conversation's transport: the first after the last tunnel header
        start = max((i + 1 for i, layer in enumerate(layers) if layer in TUNNEL_LAYERS), default=0)
        transport = next((layer for layer in layers[start:] if layer in TRANSPORTS), None)
        if transport and "ipv6.hopopts" not in layers and "data" not in layers[:layers.index(transport)]:
            assert transport in ours.split(":"), where
        assert doc["network"]["bytes"] == int(row["frame.cap_len"][0]), where
        if row["eth.src"]:
            macs = [m.replace(":", "-").upper() for m in row["eth.src"]]
            assert _same(doc["source"]["mac"], macs, tunneled), where
        src = row["ip.src"] + row["ipv6.src"] + row["arp.src.proto_ipv4"]
        if src:
            dst = row["ip.dst"] + row["ipv6.dst"] + row["arp.dst.proto_ipv4"]
            assert _same(doc["source"]["ip"], src, tunneled), where
            assert _same(doc["destination"]["ip"], dst, tunneled), where
        sports = row["tcp.srcport"] or row["udp.srcport"]
        if sports and "port" in doc["source"]:
            # ports are the inner conversation's: tshark's last value (first where not tunneled)
            inner = -1 if tunneled else 0
            assert doc["source"]["port"] == int(sports[inner]), where
            assert doc["destination"]["port"] == int((row["tcp.dstport"] or row["udp.dstport"])[inner]), where
        # ECS: network.vlan is the outer tag (802.1ad S-tag where there is one)
        if row["ieee8021ad.id"]:
            assert doc["network"]["vlan"]["id"] == row["ieee8021ad.id"][0], where
            assert doc["network"]["inner"]["vlan"]["id"] == row["vlan.id"][0], where
        elif row["vlan.id"] and not tunneled:
            assert doc["network"]["vlan"]["id"] == row["vlan.id"][0], where
    return docs


@pytest.mark.parametrize("capture", CAPTURES, ids=[str(p.relative_to(PCAPS)) for p in CAPTURES])
def test_stacks_of_bundled_captures_are_cuts_of_tsharks(capture: Path):
    docs = _check_packets(capture)
    stacks = {row["frame.protocols"][0].removeprefix("frame:") for row in _tshark(capture)}
    for doc in docs:
        if doc["event"]["dataset"] == "packet":
            continue
        if doc["event"]["dataset"] == "netflow":
            # A NetFlow record describes a flow the exporter saw, not the export
            # datagram that carried it: it has no stack of ours to compare.
            assert "protocol_stack" not in doc.get("network", {})
            continue
        ours = doc["network"]["protocol_stack"]
        assert any(_is_cut(ours, theirs) for theirs in stacks), (doc["event"]["dataset"], ours, stacks)
        layers = ours.split(":")
        if doc["event"]["dataset"] in ("dns", "http", "sip", "dhcpv4", "rtp", "rtp.call"):
            assert layers[-1] == {"dhcpv4": "dhcp", "rtp.call": "rtp"}.get(doc["event"]["dataset"],
                                                                          doc["event"]["dataset"])
        else:
            assert layers[-1] in TRANSPORTS


RTP_CAPTURES = sorted((PCAPS / "rtp").glob("*.pcap"))


@pytest.mark.parametrize("capture", RTP_CAPTURES, ids=[p.name for p in RTP_CAPTURES])
def test_heuristic_rtp_stacks_are_tsharks_with_its_rtp_heuristic_on(capture: Path):
    """Found by the heuristic, a stream is `udp:rtp` where tshark, with its own RTP
    heuristic on, says `udp:rtp` too (with it off, tshark says `udp:data`)."""
    docs = decode_file(capture, "wirebeat.protocols.rtp.heuristic=true")
    stacks = {row["frame.protocols"][0].removeprefix("frame:")
              for row in _tshark(capture, "-o", "rtp.heuristic_rtp:TRUE")}
    rtp = [d["network"]["protocol_stack"] for d in docs if d["event"]["dataset"] == "rtp"]
    if capture.name != "not_rtp.pcap":
        assert rtp
    for ours in rtp:
        assert ours.endswith(":udp:rtp") and any(_is_cut(ours, theirs) for theirs in stacks), (ours, stacks)


def _udp_dns() -> bytes:
    return g.ipv4("10.0.0.1", "10.0.0.2", 17, g.udp("10.0.0.1", "10.0.0.2", 1000, 53, bytes(12)))


def _arp() -> bytes:
    return (b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x02" * 6 + bytes([10, 0, 0, 1])
            + b"\x00" * 6 + bytes([10, 0, 0, 2]))


VARIANTS = {
    "vlan": (g.LINKTYPE_ETHERNET, lambda: g.ethernet(_udp_dns(), vlans=[10])),
    "vlan_vlan": (g.LINKTYPE_ETHERNET, lambda: g.ethernet(_udp_dns(), vlans=[10, 20])),
    "qinq": (g.LINKTYPE_ETHERNET, lambda: g.ethernet(_udp_dns(), vlans=g.qinq(100, 10))),
    "sll": (113, lambda: g.linux_sll(_udp_dns())),
    "sll2": (276, lambda: g.linux_sll2(_udp_dns())),
    "null": (0, lambda: g.bsd_null(_udp_dns())),
    "loop": (108, lambda: g.bsd_loop(_udp_dns())),
    "raw": (101, _udp_dns),
    "raw_ipv4": (228, _udp_dns),
    "arp": (g.LINKTYPE_ETHERNET, lambda: g.ethernet(_arp(), ethertype=0x0806)),
    "llc": (g.LINKTYPE_ETHERNET, lambda: g.ethernet(b"\x42\x42\x03" + bytes(40), ethertype=46)),
    "lldp": (g.LINKTYPE_ETHERNET, lambda: g.ethernet(b"\x02\x07\x04" + bytes(30), ethertype=0x88CC)),
    "ipv6_hop_by_hop": (g.LINKTYPE_ETHERNET, lambda: g.ethernet(g.ipv6(
        "fe80::1", "ff02::16", 58, g.icmpv6("fe80::1", "ff02::16", 143, 0, bytes(4)),
        extensions=[g.hop_by_hop([(5, b"\0\0")])]))),
    "ipv4_fragment": (g.LINKTYPE_ETHERNET, lambda: g.ethernet(g.fragment_ipv4(g.ipv4(
        "10.0.0.1", "10.0.0.2", 17, g.udp("10.0.0.1", "10.0.0.2", 1000, 53, bytes(200))), 64)[1])),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_stacks_of_link_layer_variants_are_cuts_of_tsharks(variant: str, tmp_path: Path):
    linktype, frame = VARIANTS[variant]
    path = tmp_path / f"{variant}.pcap"
    g.write_pcap(path, [(1.0, frame())], linktype=linktype)
    [doc] = [d for d in _check_packets(path) if d["event"]["dataset"] == "packet"]
    assert doc["network"].get("protocol_stack")


def test_late_transactions_name_their_own_frames_link_layers(tmp_path: Path):
    """A transaction emitted later (an unanswered DNS query at its timeout, found when
    an unrelated frame moves packet time on) shows the link layers of its own frames,
    not those of the frame that happened to trigger the timeout. The oracle is tshark's
    `frame.protocols` of the query frame, cut after `dns`."""
    query = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\x03foo\x00\x00\x01\x00\x01"
    tagged = g.ethernet(g.ipv4("10.0.0.1", "10.0.0.2", 17, g.udp("10.0.0.1", "10.0.0.2", 1000, 53, query)),
                        vlans=g.qinq(100, 200))
    untagged = g.ethernet(g.ipv4("10.9.0.1", "10.9.0.2", 1, g.icmp_echo(7, 1)),
                          src="02:00:00:00:00:09", dst="02:00:00:00:00:0a")
    path = tmp_path / "late.pcap"
    g.write_pcap(path, [(1000.0, tagged), (1100.0, untagged)])
    theirs = _tshark(path)[0]["frame.protocols"][0].removeprefix("frame:")
    assert theirs.endswith(":dns") and ":vlan:" in theirs      # the oracle saw what was built
    dns = [d for d in decode_file(path) if d["event"]["dataset"] == "dns"]
    assert len(dns) == 1 and dns[0]["status"] != "OK"
    assert dns[0]["network"]["protocol_stack"] == theirs
