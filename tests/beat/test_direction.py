"""network.direction (packetbeat 8 / ECS) from the addresses and wirebeat.interfaces.internal_networks.

Expected directions are worked out by hand from the address registries: RFC 1918
(10/8, 172.16/12, 192.168/16) and RFC 4193 (fc00::/7) are `private`; RFC 1122
loopback 127/8 and ::1; RFC 3927 / RFC 4291 link-local 169.254/16 and fe80::/10;
224.0.0/24 and ff02::/16 link-local multicast. 8.8.8.8, 1.1.1.1 and
2001:4860::8888 are public.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import decode_file
from wirebeat.config import ConfigError
from wirebeat.direction import NetworkDirection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pcapgen as pg  # noqa: E402

PRIVATE = NetworkDirection(["private"])


@pytest.mark.parametrize("source, destination, direction", [
    ("10.1.2.3", "192.168.1.1", "internal"),        # both RFC 1918
    ("10.0.0.1", "8.8.8.8", "outbound"),
    ("8.8.8.8", "172.16.5.4", "inbound"),
    ("8.8.8.8", "1.1.1.1", "external"),
    ("172.31.255.255", "8.8.8.8", "outbound"),      # last address of 172.16/12
    ("172.32.0.1", "10.0.0.1", "inbound"),          # just past it: public
    ("192.169.0.1", "8.8.8.8", "external"),         # just past 192.168/16
    ("fd00::1", "2001:4860::8888", "outbound"),     # RFC 4193 unique local
    ("2001:4860::8888", "fc00::5", "inbound"),
    ("10.0.0.1", "239.1.1.1", "outbound"),          # multicast, not link-local: not private
    # Host-based rules first (packetbeat step 1): loopback or link-local ends.
    ("127.0.0.1", "127.0.0.1", "ingress"),
    ("8.8.8.8", "127.0.0.53", "ingress"),
    ("127.0.0.1", "10.0.0.1", "egress"),
    ("10.0.0.1", "169.254.10.1", "ingress"),
    ("fe80::1", "2001:4860::8888", "egress"),
    ("10.0.0.1", "224.0.0.251", "ingress"),         # mDNS: link-local multicast
    ("::1", "::1", "ingress"),
])
def test_direction_of_address_pairs_with_private_internal(source, destination, direction):
    assert PRIVATE(source, destination) == direction


def test_without_internal_networks_only_the_host_rules_answer():
    none = NetworkDirection([])
    assert none("10.0.0.1", "8.8.8.8") == "unknown"
    assert none("10.0.0.1", "127.0.0.1") == "ingress"


def test_cidrs_and_named_ranges_mix_and_families_stay_apart():
    mine = NetworkDirection(["198.51.100.0/24", "2001:db8::/32", "loopback"])
    assert mine("198.51.100.7", "203.0.113.1") == "outbound"
    assert mine("203.0.113.1", "198.51.100.255") == "inbound"
    assert mine("10.0.0.1", "192.168.0.1") == "external"       # private is not listed
    assert mine("2001:db8::1", "2001:db9::1") == "outbound"
    public = NetworkDirection(["public"])
    assert public("8.8.8.8", "10.0.0.1") == "outbound"
    assert PRIVATE("not-an-ip", "10.0.0.1") == "unknown"


@pytest.mark.parametrize("bad, where", [(["private", "bogus"], "[1]"), (["10.0.0.0/33"], "[0]"),
                                        ([7], "[0]")])
def test_a_bad_range_is_a_config_error_naming_the_key(bad, where):
    with pytest.raises(ConfigError, match=rf"wirebeat\.interfaces\.internal_networks\{where}"):
        NetworkDirection(bad)


# (client, server, direction with [private]) of the capture below, by hand.
PAIRS = [("10.9.0.1", "10.9.0.2", "internal"), ("10.9.0.1", "8.8.8.8", "outbound"),
         ("1.1.1.1", "192.168.9.9", "inbound"), ("1.1.1.1", "8.8.4.4", "external"),
         ("fd00::9", "2001:4860::8888", "outbound")]


def _capture(path: Path) -> None:
    packets = []
    t = 1_767_225_600 * 10**9
    for n, (client, server, _direction) in enumerate(PAIRS):
        if ":" in client:
            request = pg.icmpv6_echo(client, server, 7, n)
            reply = pg.icmpv6_echo(server, client, 7, n, reply=True)
            proto = 58
        else:
            request, reply, proto = pg.icmp_echo(7, n), pg.icmp_echo(7, n, reply=True), 1
        packets.append((t + n * 10**6, pg.ethernet(pg.ip_packet(client, server, proto, request))))
        packets.append((t + n * 10**6 + 500_000,
                        pg.ethernet(pg.ip_packet(server, client, proto, reply))))
    pg.write_pcap(path, packets)


def test_transactions_and_flows_carry_the_direction(tmp_path: Path):
    capture = tmp_path / "directions.pcap"
    _capture(capture)
    docs = decode_file(capture, flows=True)
    expected = {(c, s): d for c, s, d in PAIRS}
    icmp = [d for d in docs if d["type"] == "icmp"]
    flows = [d for d in docs if d["type"] == "flow"]
    assert len(icmp) == len(flows) == len(PAIRS)
    for doc in icmp + flows:
        pair = (doc["source"]["ip"], doc["destination"]["ip"])
        assert doc["network"]["direction"] == expected[pair], (doc["type"], pair)


def test_an_empty_list_gives_unknown_and_the_option_is_used(tmp_path: Path):
    capture = tmp_path / "directions.pcap"
    _capture(capture)
    docs = decode_file(capture, "wirebeat.interfaces.internal_networks=[]", flows=True)
    assert {d["network"]["direction"] for d in docs} == {"unknown"}
    docs = decode_file(capture, "wirebeat.interfaces.internal_networks=[1.1.1.1/32]")
    assert {(d["source"]["ip"], d["network"]["direction"]) for d in docs} == {
        ("10.9.0.1", "external"), ("1.1.1.1", "outbound"), ("fd00::9", "external")}


def test_a_full_address_cache_starts_over_counted_and_answers_stay_right(monkeypatch):
    import wirebeat.direction as direction_module
    monkeypatch.setattr(direction_module, "ADDRESS_CACHE_SIZE", 2)
    mine = NetworkDirection(["private"])
    pairs = [("10.0.0.1", "8.8.8.8", "outbound"), ("8.8.4.4", "192.168.1.1", "inbound"),
             ("1.1.1.1", "9.9.9.9", "external"), ("10.0.0.2", "8.8.8.8", "outbound")]
    for source, destination, expected in pairs:
        assert mine(source, destination) == expected
    assert len(mine.text_kinds) <= 2 and len(mine.kinds) <= 2
    # each pair after the first brings two new addresses to full caches: both the text and
    # the packed one start over
    assert mine.counters() == {"direction.address_cache_resets": 6}


# (source, destination, with [private], with [], with [public, 198.51.100.0/24]), by hand.
@pytest.mark.parametrize("source, destination, private, none, public", [
    ("10.1.2.3", "8.8.8.8", "outbound", "unknown", "inbound"),
    ("8.8.8.8", "fe80::1", "ingress", "ingress", "ingress"),             # link-local destination
    ("fe80::1", "2001:4860::8888", "egress", "egress", "egress"),
    ("::ffff:10.0.0.1", "::1", "ingress", "ingress", "ingress"),         # loopback destination
    ("224.0.0.251", "10.0.0.1", "egress", "egress", "egress"),           # link-local multicast
    ("fd00::1", "fc00::5", "internal", "unknown", "external"),
    ("198.51.100.9", "10.0.0.1", "inbound", "unknown", "outbound")])
def test_flows_ask_with_packed_addresses(source, destination, private, none, public):
    import ipaddress
    packed = (ipaddress.ip_address(source).packed, ipaddress.ip_address(destination).packed)
    for networks, expected in ((["private"], private), ([], none),
                               (["public", "198.51.100.0/24"], public)):
        assert NetworkDirection(networks).of_packed(*packed) == expected


def _reference_kind(text: str, tests: NetworkDirection) -> int | None:
    """What an address text is, read by `ipaddress` alone: None for no address."""
    import ipaddress
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return tests._classify(ip)


def test_address_text_is_read_as_ipaddress_reads_it():
    """Text goes through inet_pton first: every spelling must mean what ipaddress says
    (canonical, upper-case, expanded, mapped, scoped, and text that is no address)."""
    import ipaddress
    import random
    rng = random.Random(7)
    texts = ["1.2.3.4", "01.2.3.4", "1.2.3", "1.2.3.4 ", " 1.2.3.4", "::1", "::ffff:10.0.0.1",
             "fe80::1%eth0", "fd00::1%2", "1::2::3", "0x1.2.3.4", "1.2.3.256", "::FFFF:10.1.2.3",
             "1:2:3:4:5:6:7:8:9", "::1.2.3.04", "00000::1", "1:0000:0:0:0:0:0:1", "", "::",
             "0.0.0.0", "10.0.0.1\x00", "127.0.0.1/8", "localhost", "FE80::1"]
    for _ in range(300):
        v4 = ipaddress.IPv4Address(rng.getrandbits(32))
        v6 = ipaddress.IPv6Address(rng.getrandbits(128) if rng.random() < 0.5
                                   else 0xFD00 << 112 | rng.getrandbits(64))
        texts += [str(v4), str(v6), v6.exploded, v6.exploded.upper()]
    reference = NetworkDirection(["private"])
    for text in texts:
        fresh = NetworkDirection(["private"])       # nothing cached
        expected = _reference_kind(text, reference)
        got = fresh.of(text, "8.8.8.8")
        if expected is None:
            assert got == "unknown", text
        else:
            want = reference._verdict(expected, reference._classify(ipaddress.ip_address("8.8.8.8")))
            assert got == want, text


@pytest.mark.parametrize("networks", [["private"], [], ["10.0.0.0/8", "2001:db8::/33", "loopback"],
                                      ["multicast", "link_local_unicast", "unspecified", "192.0.2.0/24"],
                                      ["public", "10.0.0.0/8"], ["unicast"]])
def test_packed_addresses_are_classified_as_ipaddress_classifies_them(networks):
    """Flows ask with packed addresses (of_packed): with CIDR-only tests an address's kind is
    worked out from its integer (int_ranges), which must be what `_classify` says of the
    ipaddress object, at every range's edges and at random; named ranges that are no CIDR
    list (public, unicast) take _classify itself."""
    import ipaddress
    import random
    from wirebeat.processors.conditions import NAMED_NETWORKS
    rng = random.Random(11)
    direction = NetworkDirection(networks)
    assert bool(direction.int_ranges) == all(hasattr(NAMED_NETWORKS.get(n, NAMED_NETWORKS["private"]), "ranges")
                                             for n in networks)
    edges = ["0.0.0.0", "255.255.255.255", "::", "::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1"]
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
                 "224.0.0.0/24", "224.0.0.0/4", "fc00::/7", "fe80::/10", "ff02::/16", "ff00::/8",
                 "2001:db8::/33", "192.0.2.0/24"):
        net = ipaddress.ip_network(cidr)
        first, last = int(net.network_address), int(net.broadcast_address)
        top = 2**32 - 1 if net.version == 4 else 2**128 - 1
        for value in (first - 1, first, first + 1, last - 1, last, last + 1):
            if 0 <= value <= top:
                edges.append(str(ipaddress.ip_address(value) if net.version == 4 else ipaddress.IPv6Address(value)))
    for _ in range(400):
        edges.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        edges.append(str(ipaddress.IPv6Address(rng.getrandbits(128))))
    for text in edges:
        ip = ipaddress.ip_address(text)
        assert direction._kind(ip.packed) == direction._classify(ip), text
