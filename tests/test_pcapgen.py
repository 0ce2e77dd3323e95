"""Check tests/pcapgen.py against independent decoders: tshark and dpkt.

tshark is run a handful of times on files holding many cases each, so the whole
module stays fast; its checks are skipped where tshark is not installed.
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import dpkt
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pcapgen as pg

# tshark is the independent oracle here: when it is missing these tests fail
# (scripts/install-deps.sh installs it), they never skip.
TSHARK = shutil.which("tshark") or "tshark"

A4, B4 = "192.0.2.1", "198.51.100.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
T0 = 1_700_000_000          # a whole second, so fractions below are exact

CHECK_CHECKSUMS = ["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
                   "-o", "tcp.check_checksum:TRUE"]
GOOD = "1"                   # tshark's *.checksum.status value for "Good"


def run_tshark(path: Path, fields: list[str]) -> list[dict[str, list[str]]]:
    """One dict per frame: field name -> every occurrence tshark found (absent: [])."""
    command = [TSHARK, "-n", "-r", str(path), "-T", "json", *CHECK_CHECKSUMS]
    for field in fields:
        command += ["-e", field]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    frames = json.loads(result.stdout)
    return [{f: frame["_source"]["layers"].get(f, []) for f in fields} for frame in frames]


def epoch_text(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return f"{seconds}.{fraction:09d}"


# ---------------------------------------------------------------------------
# One Ethernet capture with every network/transport builder, decoded once
# ---------------------------------------------------------------------------

BIG_UDP4 = pg.ipv4(A4, B4, pg.IPPROTO_UDP, pg.udp(A4, B4, 4000, 4001, bytes(range(256)) * 12),
                   ident=0x4242, options=b"\x94\x04\x00\x00")   # Router Alert: copied
BIG_UDP6 = pg.ipv6(A6, B6, pg.IPPROTO_UDP, pg.udp(A6, B6, 4000, 4001, bytes(3000)),
                   extensions=[pg.hop_by_hop(), pg.routing_header([B6], segments_left=0),
                               pg.destination_options([(0x1E, b"xyz")])])
PORT_PROBE4 = pg.ipv4(B4, A4, pg.IPPROTO_UDP, pg.udp(B4, A4, 33000, 9, b"probe"))
PORT_PROBE6 = pg.ipv6(B6, A6, pg.IPPROTO_UDP, pg.udp(B6, A6, 33000, 9, b"probe"))

# (name, IP packet or list of fragments, VLAN tags)
ETHERNET_CASES: list[tuple[str, list[bytes], list[pg.VLANTag]]] = [
    ("udp4", [pg.ipv4(A4, B4, pg.IPPROTO_UDP, pg.udp(A4, B4, 1234, 5678, b"odd"))], []),
    ("udp6", [pg.ipv6(A6, B6, pg.IPPROTO_UDP, pg.udp(A6, B6, 1234, 5678, b"odd"))], []),
    ("tcp4", [pg.ipv4(A4, B4, pg.IPPROTO_TCP,
                      pg.tcp(A4, B4, 40000, 80, b"GET / HTTP/1.0\r\n\r\n", seq=1000,
                             ack=2000, flags="PA", options=b"\x01\x01\x08\x0a" + bytes(8)),
                      ttl=3, tos=0x10, dont_fragment=True)], [100]),
    ("tcp6", [pg.ipv6(A6, B6, pg.IPPROTO_TCP,
                      pg.tcp(A6, B6, 40000, 80, seq=0xFFFFFFFF, flags=pg.SYN | pg.ECE | pg.CWR),
                      flow_label=0xABCDE)], pg.qinq(200, 20)),
    ("echo4", [pg.ipv4(A4, B4, pg.IPPROTO_ICMP, pg.icmp_echo(7, 1, b"ping!"))], []),
    ("reply4", [pg.ipv4(B4, A4, pg.IPPROTO_ICMP, pg.icmp_echo(7, 1, b"ping!", reply=True))], []),
    ("echo6", [pg.ipv6(A6, B6, pg.IPPROTO_ICMPV6, pg.icmpv6_echo(A6, B6, 7, 1, b"ping!"),
                       extensions=[pg.hop_by_hop(), pg.destination_options()])], []),
    ("reply6", [pg.ipv6(B6, A6, pg.IPPROTO_ICMPV6,
                        pg.icmpv6_echo(B6, A6, 7, 1, b"ping!", reply=True))], []),
    ("unreach4", [pg.ipv4(A4, B4, pg.IPPROTO_ICMP, pg.icmp_unreachable(3, PORT_PROBE4))], []),
    ("unreach6", [pg.ipv6(A6, B6, pg.IPPROTO_ICMPV6,
                          pg.icmpv6_unreachable(A6, B6, 4, PORT_PROBE6))], []),
    ("atomic6", [pg.ipv6(A6, B6, pg.IPPROTO_UDP, pg.udp(A6, B6, 1, 2, b"whole"),
                         extensions=[pg.fragment_header(ident=5)])], []),
    ("frag4", pg.fragment_ipv4(BIG_UDP4, 1000), []),
    ("frag6", pg.fragment_ipv6(BIG_UDP6, 1232, ident=0x99), [(pg.ETH_P_8021Q, 5, 3)]),
]

ETH_FIELDS = ["frame.protocols", "vlan.id", "ieee8021ad.id", "ip.checksum.status",
              "udp.checksum.status", "tcp.checksum.status", "icmp.checksum.status",
              "icmpv6.checksum.status", "icmp.type", "icmpv6.type", "icmp.code",
              "icmpv6.code", "ip.reassembled.length", "ipv6.reassembled.length",
              "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "ip.ttl", "ip.dsfield",
              "ip.flags.df", "ipv6.flow", "ip.opt.type", "ipv6.fraghdr.ident",
              "ip.frag_offset", "ip.flags.mf"]


@pytest.fixture(scope="module")
def ethernet_frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Each case name -> tshark's fields for each of its frames."""
    path = tmp_path_factory.mktemp("pcapgen") / "ethernet.pcap"
    packets, names = [], []
    for name, ip_packets, vlans in ETHERNET_CASES:
        for ip_packet in ip_packets:
            packets.append((T0 + len(packets), pg.ethernet(ip_packet, vlans=vlans)))
            names.append(name)
    pg.write_pcap(path, packets)
    frames: dict[str, list[dict]] = {}
    for name, frame in zip(names, run_tshark(path, ETH_FIELDS), strict=True):
        frames.setdefault(name, []).append(frame)
    return frames


@pytest.mark.parametrize("name", [case[0] for case in ETHERNET_CASES])
def test_every_checksum_is_good_per_tshark(ethernet_frames: dict, name: str) -> None:
    statuses = [status for frame in ethernet_frames[name]
                for field in ("ip", "udp", "tcp", "icmp", "icmpv6")
                for status in frame[f"{field}.checksum.status"]]
    assert statuses and set(statuses) == {GOOD}


@pytest.mark.parametrize("name, layers", [
    ("udp4", "eth:ethertype:ip:udp:data"), ("udp6", "eth:ethertype:ipv6:udp:data"),
    ("tcp4", "eth:ethertype:vlan:ethertype:ip:tcp:http"),
    ("tcp6", "eth:ethertype:ieee8021ad:ethertype:vlan:ethertype:ipv6:tcp"),
    ("echo6", "eth:ethertype:ipv6:ipv6.hopopts:ipv6.dstopts:icmpv6:data"),
])
def test_layers_are_recognised(ethernet_frames: dict, name: str, layers: str) -> None:
    assert ethernet_frames[name][0]["frame.protocols"] == [layers]


def test_vlan_and_qinq_ids(ethernet_frames: dict) -> None:
    assert ethernet_frames["tcp4"][0]["vlan.id"] == ["100"]
    assert ethernet_frames["tcp6"][0]["ieee8021ad.id"] == ["200"]
    assert ethernet_frames["tcp6"][0]["vlan.id"] == ["20"]


def test_ip_and_tcp_fields_are_as_set(ethernet_frames: dict) -> None:
    tcp4, tcp6 = ethernet_frames["tcp4"][0], ethernet_frames["tcp6"][0]
    assert (tcp4["tcp.seq_raw"], tcp4["tcp.ack_raw"], tcp4["tcp.flags"]) == (
        ["1000"], ["2000"], ["0x0018"])
    assert (tcp4["ip.ttl"], tcp4["ip.dsfield"], tcp4["ip.flags.df"]) == (
        ["3"], ["0x10"], ["1"])
    assert (tcp6["tcp.seq_raw"], tcp6["tcp.flags"], tcp6["ipv6.flow"]) == (
        ["4294967295"], ["0x00c2"], ["0x0abcde"])


@pytest.mark.parametrize("name, family, icmp_type, code", [
    ("echo4", "icmp", "8", "0"), ("reply4", "icmp", "0", "0"),
    ("echo6", "icmpv6", "128", "0"), ("reply6", "icmpv6", "129", "0"),
    ("unreach4", "icmp", "3", "3"), ("unreach6", "icmpv6", "1", "4"),
])
def test_icmp_type_and_code(ethernet_frames: dict, name: str, family: str,
                            icmp_type: str, code: str) -> None:
    frame = ethernet_frames[name][0]
    assert (frame[f"{family}.type"], frame[f"{family}.code"]) == ([icmp_type], [code])


def test_ipv4_fragments_reassemble_in_tshark(ethernet_frames: dict) -> None:
    frames = ethernet_frames["frag4"]
    assert len(frames) == 4
    # tshark, like the wire, counts the offset in 8-byte units.
    assert [f["ip.frag_offset"] for f in frames] == [["0"], ["125"], ["250"], ["375"]]
    assert [f["ip.flags.mf"] for f in frames] == [["1"], ["1"], ["1"], ["0"]]
    assert frames[-1]["ip.reassembled.length"] == [str(len(BIG_UDP4) - 24)]
    assert frames[-1]["udp.checksum.status"] == [GOOD]


def test_ipv4_fragments_keep_only_copied_options(ethernet_frames: dict) -> None:
    # Router Alert (148) has the copied bit, so RFC 791 puts it in every fragment.
    assert [f["ip.opt.type"] for f in ethernet_frames["frag4"]] == [["148"]] * 4
    no_copy = pg.ipv4(A4, B4, 17, bytes(64), options=b"\x07\x03\x04")  # Record Route
    first, second = pg.fragment_ipv4(no_copy, 32)
    assert (first[0] & 0x0F, second[0] & 0x0F) == (6, 5)


def test_ipv6_fragments_reassemble_in_tshark(ethernet_frames: dict) -> None:
    frames = ethernet_frames["frag6"]
    assert len(frames) == 3
    assert {id_ for f in frames for id_ in f["ipv6.fraghdr.ident"]} == {"0x00000099"}
    # Reassembled: the fragmentable part, i.e. Destination Options + UDP.
    assert frames[-1]["ipv6.reassembled.length"] == [str(8 + 8 + 3000)]
    assert frames[-1]["udp.checksum.status"] == [GOOD]


def test_atomic_fragment_header_is_decoded(ethernet_frames: dict) -> None:
    [frame] = ethernet_frames["atomic6"]
    assert frame["ipv6.fraghdr.ident"] == ["0x00000005"]
    assert frame["udp.checksum.status"] == [GOOD]


def test_ipv6_fragmenter_keeps_the_unfragmentable_part() -> None:
    fragments = pg.fragment_ipv6(BIG_UDP6, 1232, ident=0x99)
    first = dpkt.ip6.IP6(fragments[0])     # dpkt cannot parse the later ones alone
    assert [type(h).__name__ for h in first.all_extension_headers] == [
        "IP6HopOptsHeader", "IP6RoutingHeader", "IP6FragmentHeader", "IP6DstOptsHeader"]
    for fragment in fragments:
        # HBH (8 bytes) -> Routing (24) -> Fragment, which says Destination Options.
        assert (fragment[6], fragment[40], fragment[48], fragment[72]) == (
            pg.IPPROTO_HOPOPTS, pg.IPPROTO_ROUTING, pg.IPPROTO_FRAGMENT, pg.IPPROTO_DSTOPTS)
        assert struct.unpack("!H", fragment[4:6])[0] == len(fragment) - 40


# ---------------------------------------------------------------------------
# Linktypes and timestamp resolutions, in one pcapng with many interfaces
# ---------------------------------------------------------------------------

UDP4 = pg.ipv4(A4, B4, pg.IPPROTO_UDP, pg.udp(A4, B4, 1, 2, b"x"))
UDP6 = pg.ipv6(A6, B6, pg.IPPROTO_UDP, pg.udp(A6, B6, 1, 2, b"x"))

# (linktype, tsresol, frame, timestamp in ns, frame.protocols)
INTERFACES = [
    (pg.LINKTYPE_ETHERNET, None, pg.ethernet(UDP4), T0 * 10**9 + 123_456_000,
     "eth:ethertype:ip:udp:data"),
    (pg.LINKTYPE_LINUX_SLL, 9, pg.linux_sll(UDP6, packet_type=4), T0 * 10**9 + 123_456_789,
     "sll:ethertype:ipv6:udp:data"),
    (pg.LINKTYPE_LINUX_SLL2, 3, pg.linux_sll2(UDP4, interface_index=7),
     T0 * 10**9 + 123_000_000, "sll:ethertype:ip:udp:data"),
    (pg.LINKTYPE_NULL, 0x80 | 10, pg.bsd_null(UDP4, big_endian=False),
     T0 * 10**9 + 500_000_000, "null:ip:udp:data"),
    (pg.LINKTYPE_NULL, 6, pg.bsd_null(UDP6, big_endian=True, family=pg.AF_INET6_FREEBSD),
     T0 * 10**9 + 1000, "null:ipv6:udp:data"),
    (pg.LINKTYPE_LOOP, 6, pg.bsd_loop(UDP6), T0 * 10**9 + 2000, "null:ipv6:udp:data"),
    (pg.LINKTYPE_RAW, 6, UDP6, T0 * 10**9 + 3000, "raw:ipv6:udp:data"),
    (pg.LINKTYPE_IPV4, 6, UDP4, T0 * 10**9 + 4000, "ip:udp:data"),
    (pg.LINKTYPE_IPV6, 9, UDP6, T0 * 10**9 + 5, "ipv6:udp:data"),
]


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcapng_interfaces_linktypes_and_resolutions(tmp_path: Path, big_endian: bool) -> None:
    path = tmp_path / "many.pcapng"
    # Packets in reverse interface order, so interface ids are not just frame numbers.
    packets = [(i, ts, frame) for i, (_lt, _res, frame, ts, _p) in enumerate(INTERFACES)][::-1]
    pg.write_pcapng(path, [(lt, res) for lt, res, *_ in INTERFACES], packets,
                    big_endian=big_endian)
    frames = run_tshark(path, ["frame.interface_id", "frame.time_epoch", "frame.protocols",
                               "udp.checksum.status", "sll.ifindex"])
    for (interface_id, ts, _frame), frame in zip(packets, frames, strict=True):
        assert frame["frame.interface_id"] == [str(interface_id)]
        assert frame["frame.time_epoch"] == [epoch_text(ts)]
        assert frame["frame.protocols"] == [INTERFACES[interface_id][4]]
        assert frame["udp.checksum.status"] == [GOOD]
        # Only SLL2 carries an interface index: proves v2 was told from v1.
        assert frame["sll.ifindex"] == (["7"] if interface_id == 2 else [])


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcapng_reads_back_in_dpkt(tmp_path: Path, big_endian: bool) -> None:
    path = tmp_path / "two.pcapng"
    ts = T0 * 10**9 + 250_000
    pg.write_pcapng(path, [(pg.LINKTYPE_ETHERNET, 6)], [(0, ts, pg.ethernet(UDP4))],
                    big_endian=big_endian)
    with open(path, "rb") as f:
        reader = dpkt.pcapng.Reader(f)
        [(read_ts, data)] = list(reader)
    assert reader.datalink() == pg.LINKTYPE_ETHERNET
    assert (round(read_ts * 1e6), data) == (ts // 1000, pg.ethernet(UDP4))


def test_pcapng_blocks_are_32_bit_aligned_with_matching_lengths() -> None:
    for block in (pg.pcapng_shb(), pg.pcapng_idb(1, 9, name="veth0"),
                  pg.pcapng_epb(0, 1.0, b"abc", flags=1)):
        leading, = struct.unpack_from("<I", block, 4)
        trailing, = struct.unpack_from("<I", block, len(block) - 4)
        assert leading == trailing == len(block) and len(block) % 4 == 0


# ---------------------------------------------------------------------------
# Classic pcap: byte order, resolution, snaplen
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
def test_pcap_variants_read_back_in_dpkt(tmp_path: Path, big_endian: bool,
                                         nanosecond: bool) -> None:
    path = tmp_path / "v.pcap"
    frames = [pg.ethernet(UDP4), pg.linux_sll(UDP6)]
    ts_ns = [T0 * 10**9 + 1_000, T0 * 10**9 + 999_999_000]
    pg.write_pcap(path, zip(ts_ns, frames), linktype=pg.LINKTYPE_ETHERNET,
                  nanosecond=nanosecond, big_endian=big_endian, snaplen=1500)
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        records = list(reader)
    assert (reader.datalink(), reader.snaplen) == (pg.LINKTYPE_ETHERNET, 1500)
    assert [data for _ts, data in records] == frames
    assert [round(float(ts) * 1e6) for ts, _data in records] == [t // 1000 for t in ts_ns]


def test_nanosecond_pcap_keeps_nanoseconds_and_snaplen_cuts(tmp_path: Path) -> None:
    path = tmp_path / "ns.pcap"
    frame = pg.ethernet(UDP4)
    pg.write_pcap(path, [(T0 * 10**9 + 123_456_789, frame)], nanosecond=True,
                  big_endian=True, snaplen=30)
    [fields] = run_tshark(path, ["frame.time_epoch", "frame.len", "frame.cap_len"])
    assert fields == {"frame.time_epoch": [f"{T0}.123456789"],
                      "frame.len": [str(len(frame))], "frame.cap_len": ["30"]}


def test_header_and_records_as_bytes_equal_the_written_file(tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    packets = [(T0 + 0.25, b"\x01" * 20), (T0 + 0.5, b"\x02" * 21)]
    pg.write_pcap(path, packets, linktype=pg.LINKTYPE_RAW)
    stream = pg.pcap_header(pg.LINKTYPE_RAW) + b"".join(
        pg.pcap_record(ts, data) for ts, data in packets)
    assert path.read_bytes() == stream


@pytest.mark.parametrize("ts, ns", [
    (1.5, 1_500_000_000), (1_500_000_000, 1_500_000_000), (1, 1),
    (1_700_000_000.000001, 1_700_000_000_000_001_000),
])
def test_float_is_seconds_and_int_is_nanoseconds(ts: float | int, ns: int) -> None:
    assert pg.to_ns(ts) == ns


# ---------------------------------------------------------------------------
# Builders on their own
# ---------------------------------------------------------------------------

def test_checksum_matches_rfc1071_example() -> None:
    # RFC 1071 §3: these bytes sum to 0xddf2, so the checksum is its complement.
    assert pg.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


@given(st.binary(max_size=300))
def test_a_checksummed_message_verifies_to_zero(data: bytes) -> None:
    data += b"\0" * (len(data) % 2)
    checked = data + struct.pack("!H", pg.internet_checksum(data))
    assert pg.internet_checksum(checked) == 0


def recompute_checksums_with_dpkt(packet: bytes) -> bytes:
    """Parse with dpkt, zero every checksum, and let dpkt compute them again."""
    ip = dpkt.ip.IP(packet) if packet[0] >> 4 == 4 else dpkt.ip6.IP6(packet)
    if isinstance(ip, dpkt.ip.IP):
        ip.sum = 0
    ip.data.sum = 0
    return bytes(ip)


@given(v6=st.booleans(), kind=st.sampled_from(["udp", "tcp", "icmp"]),
       ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
       seq=st.integers(0, 2**32 - 1), payload=st.binary(max_size=200))
def test_checksums_agree_with_dpkt(v6: bool, kind: str, ports: tuple[int, int], seq: int,
                                   payload: bytes) -> None:
    src, dst = (A6, B6) if v6 else (A4, B4)
    if kind == "udp":
        protocol, upper = pg.IPPROTO_UDP, pg.udp(src, dst, *ports, payload)
    elif kind == "tcp":
        protocol, upper = pg.IPPROTO_TCP, pg.tcp(src, dst, *ports, payload, seq=seq,
                                                 flags="PA")
    elif v6:
        protocol, upper = pg.IPPROTO_ICMPV6, pg.icmpv6_echo(src, dst, *ports, payload)
    else:
        protocol, upper = pg.IPPROTO_ICMP, pg.icmp_echo(*ports, payload)
    packet = pg.ip_packet(src, dst, protocol, upper)
    assert recompute_checksums_with_dpkt(packet) == packet


def test_ipv4_fields_round_trip_through_dpkt() -> None:
    packet = pg.ipv4(A4, B4, pg.IPPROTO_UDP, b"12345678", ttl=9, ident=0xBEEF,
                     more_fragments=True, frag_offset_bytes=1480, options=b"\x01")
    ip = dpkt.ip.IP(packet)
    # dpkt's offset is in 8-byte units, as on the wire.
    assert (ip.ttl, ip.id, ip.mf, ip.offset * 8, ip.hl, ip.opts) == (
        9, 0xBEEF, 1, 1480, 6, b"\x01\0\0\0")


def test_tcp_flag_letters_equal_bits() -> None:
    assert pg.tcp(A4, B4, 1, 2, flags="FSRPAUEC") == pg.tcp(A4, B4, 1, 2, flags=0xFF)
    segment = dpkt.tcp.TCP(pg.tcp(A6, B6, 1, 2, b"d", seq=5, ack=6, flags="SA"))
    assert (segment.seq, segment.ack, segment.flags) == (5, 6, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)


def test_link_headers_have_their_documented_sizes() -> None:
    assert len(pg.ethernet(UDP4)) - len(UDP4) == 14
    assert len(pg.ethernet(UDP4, vlans=pg.qinq(1, 2))) - len(UDP4) == 22
    assert len(pg.linux_sll(UDP4)) - len(UDP4) == 16
    assert len(pg.linux_sll2(UDP4)) - len(UDP4) == 20
    assert pg.bsd_loop(UDP6)[:4] == b"\0\0\0\x1e"
    assert pg.bsd_null(UDP4, big_endian=False)[:4] == b"\x02\0\0\0"
