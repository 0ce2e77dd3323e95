"""The optional C accelerator (beat/_speedups.c) against its pure-Python twin.

The pure-Python per-packet path (wirebeat.packets, link, stack, document) is
the reference: every test here feeds the same frames to a PacketDocuments
with the extension and to one without it, and requires the same `_id`s and
byte-identical JSON, on every bundled capture, on generated frames of every
link type / VLAN / IPv6 / ARP / ICMP / fragment / tunnel shape, and on every
truncation and on mutations of those frames (malformed input, ground truth
from the Python path). The CLI test does the same end to end on generated
mixed traffic with flows on and off. Under CI=true the extension must have
been built: a missing compiler is then a failure, not a silent slowdown.
"""
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings, strategies as st

import pcapgen as g
import tunnelgen as tg
from running import CONSOLE_WITH_IDS, needs_extension
from wirebeat import packets
from wirebeat.decoders.api import iso_time_python
from wirebeat.document import DocumentBuilder, community_id_packed_python
from wirebeat.link import locate_network
from wirebeat.sources.pcapfile import open_capture

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = sorted(p for p in (ROOT / "pcaps").rglob("*") if p.suffix in (".pcap", ".pcapng"))
UDP_LAYERS = {53: "dns", 67: "dhcp", 68: "dhcp", 5060: "sip", 40000: "rtp"}

try:
    from wirebeat import _speedups
except ImportError:
    _speedups = None

needs_c = needs_extension(_speedups)


def test_extension_is_built_under_ci():
    if os.environ.get("CI") == "true":
        assert _speedups is not None, "wirebeat._speedups was not built (C compiler / Python headers?)"
        assert packets.ACCELERATED or os.environ.get("WIREBEAT_PURE_PYTHON") not in (None, "", "0")


class _Docs:
    """A PacketDocuments with or without the extension; `out` is [(_id, JSON bytes)]."""

    def __init__(self, accelerated: bool, tunnels: bool = True) -> None:
        self.out: list[tuple[str, bytes]] = []
        builder = DocumentBuilder({"type": "wirebeat", "version": "test", "name": "test"}, [], {}, False, [])
        saved = packets._speedups
        packets._speedups = _speedups if accelerated else None
        try:
            self.docs = packets.PacketDocuments(builder, lambda i, d: self.out.append((i, orjson.dumps(d))),
                                                UDP_LAYERS, tunnels, raw_json=True)
        finally:
            packets._speedups = saved
        assert (self.docs.fast is not None) == accelerated

    def feed(self, frames, source: str = "test") -> list[tuple[str, bytes]]:
        for ts, linktype, data in frames:
            self.docs.on_frame(ts, linktype, data, locate_network(linktype, data), source)
        return self.out


def _same(frames, tunnels: bool = True) -> int:
    frames = list(frames)
    c, py = _Docs(True, tunnels).feed(frames), _Docs(False, tunnels).feed(frames)
    assert len(c) == len(py) == len(frames)
    for i, (a, b) in enumerate(zip(c, py)):
        assert a == b, f"frame {i} ({frames[i][1]}, {frames[i][2].hex()}): C {a} != Python {b}"
    return len(frames)


def _capture_frames(path: Path) -> list[tuple[float, int, bytes]]:
    reader = open_capture(str(path))
    try:
        return [(f.ts, f.linktype, f.data) for f in reader]
    finally:
        reader.close()


def _generated() -> list[tuple[float, int, bytes]]:
    """One frame of every shape the C code has a branch for, with known layouts."""
    a4, b4, a6, b6 = "10.0.0.1", "192.168.1.20", "2001:db8::1", "fe80::2"
    packets_ = [
        g.ipv4(a4, b4, 6, g.tcp(a4, b4, 40001, 443, b"x")),
        g.ipv4(b4, a4, 17, g.udp(b4, a4, 53, 5353, b"q")),                   # app by source port
        g.ipv4(a4, b4, 17, g.udp(a4, b4, 1234, 5060, b"INVITE")),
        g.ipv4(a4, a4, 17, g.udp(a4, a4, 9, 9, b"")),                         # same endpoints
        g.ipv4(a4, b4, 1, g.icmp_echo(1, 2)),
        g.ipv4(b4, a4, 1, g.icmp_echo(1, 2, reply=True)),
        g.ipv4(a4, b4, 1, g.icmp(3, 1)),                                      # one-way ICMP
        g.ipv4(a4, b4, 1, b"\x08"),                                           # ICMP cut short
        g.ipv4(a4, b4, 47, b"\0\0\x08\0" + g.ipv4(a4, b4, 17, g.udp(a4, b4, 1, 2, b""))),  # GRE
        g.ipv4(a4, b4, 132, b"sctp-ish"),                                     # no transport name
        g.ipv4(a4, b4, 17, tg.vxlan(g.ethernet(g.ipv4(a4, b4, 6, g.tcp(a4, b4, 1, 2, b""))), 7)),
        g.ipv6(a6, b6, 6, g.tcp(a6, b6, 40001, 80, b"GET")),
        g.ipv6(b6, a6, 17, g.udp(b6, a6, 53, 40000, b"")),
        g.ipv6(a6, b6, 58, g.icmpv6_echo(a6, b6, 5, 6)[0:]),
        g.ipv6(a6, b6, 58, b"\x87\0\0\0"),                                    # neighbour solicitation
        g.ipv6("::ffff:10.0.0.1", "::", 17, g.udp(a6, b6, 1, 2, b"")),        # mapped / zero text
    ]
    packets_ += g.fragment_ipv4(g.ipv4(a4, b4, 17, g.udp(a4, b4, 1, 53, b"z" * 100)), 48)
    frames: list[tuple[int, bytes]] = []
    for p in packets_:
        for lt in (g.LINKTYPE_ETHERNET, g.LINKTYPE_LINUX_SLL, g.LINKTYPE_LINUX_SLL2, g.LINKTYPE_NULL,
                   g.LINKTYPE_LOOP, g.LINKTYPE_RAW, g.LINKTYPE_IPV4, g.LINKTYPE_IPV6, 12, 14):
            frames.append((lt, g.link_frame(lt, p) if lt not in (12, 14) else p))
        for vlans in ([5], g.qinq(100, 10), [(0x88A8, 1), (0x88A8, 2), (0x8100, 3)], [(0x9100, 7), 8],
                      [1, 2, 3, 4], [1, 2, 3, 4, 5]):
            frames.append((g.LINKTYPE_ETHERNET, g.ethernet(p, vlans=vlans)))
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, b"\x02" * 6, bytes((10, 0, 0, 1)),
                      b"\0" * 6, bytes((10, 0, 0, 2)))
    frames += [
        (g.LINKTYPE_ETHERNET, g.ethernet(arp, ethertype=0x0806)),
        (g.LINKTYPE_ETHERNET, g.ethernet(arp, ethertype=0x0806, vlans=[9])),
        (g.LINKTYPE_LINUX_SLL, g.linux_sll(arp, protocol=0x0806)),
        (g.LINKTYPE_LINUX_SLL, g.linux_sll(arp, protocol=0x0806, address=b"\1\2\3\4")),   # not a MAC
        (g.LINKTYPE_ETHERNET, g.ethernet(arp[:20], ethertype=0x0806)),                    # cut ARP
        (g.LINKTYPE_ETHERNET, g.ethernet(b"\x42\x42\x03" + b"\0" * 40, ethertype=60)),   # 802.3 LLC
        (g.LINKTYPE_ETHERNET, g.ethernet(b"\0" * 30, ethertype=0x88CC)),                  # LLDP
        (g.LINKTYPE_ETHERNET, g.ethernet(b"\0\0\x01\xff" + packets_[0], ethertype=0x8847)),  # MPLS
        (147, b"\0" * 40),                                                                # unsupported
    ]
    return [(1_700_000_000.25 + i * 0.000001, lt, data) for i, (lt, data) in enumerate(frames)]


@needs_c
@pytest.mark.parametrize("tunnels", [True, False])
def test_generated_frames_are_identical(tunnels):
    assert _same(_generated(), tunnels) > 300


@needs_c
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(ROOT / "pcaps")))
def test_bundled_captures_are_identical(path):
    frames = _capture_frames(path)
    # Also the same frames under every other link layer, where they fit one.
    _same(frames)


@needs_c
def test_every_truncation_of_sample_frames_is_identical():
    """Frames cut at every length (malformed input whose truth the Python path gives)."""
    rng = random.Random(11)
    sample = [f for f in _generated()]
    for path in CAPTURES:
        frames = _capture_frames(path)
        sample += rng.sample(frames, min(3, len(frames)))
    cut = [(ts, lt, data[:n]) for ts, lt, data in sample for n in range(len(data) + 1)]
    assert _same(cut) > 10_000


@needs_c
def test_mutated_frames_are_identical():
    """Random bytes flipped in real frames: headers that lie about lengths, versions, tags."""
    rng = random.Random(5)
    base = _generated() + [f for p in CAPTURES[:20] for f in _capture_frames(p)[:20]]
    mutated = []
    for _ in range(20_000):
        ts, lt, data = rng.choice(base)
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(min(len(data), 80))] = rng.randrange(256)
        mutated.append((ts, lt, bytes(data)))
    _same(mutated)


@needs_c
@settings(max_examples=2000, deadline=None)
@given(st.sampled_from([0, 1, 12, 14, 101, 108, 113, 147, 228, 229, 276]), st.binary(max_size=120),
       st.one_of(st.floats(min_value=1.5e9, max_value=1.9e9), st.floats(min_value=-1e10, max_value=1e11),
                 st.just(float("nan")), st.just(7.99999999999e9)))
def test_random_bytes_never_crash_and_match(linktype, data, ts):
    for tunnels in (True, False):
        made = []
        for accelerated in (True, False):
            docs = _Docs(accelerated, tunnels)
            try:
                docs.feed([(ts, linktype, data)])
            except (ValueError, OverflowError, OSError) as err:   # the Python path's own limits
                made.append(type(err))
            else:
                made.append(docs.out)
        assert made[0] == made[1]
    if _speedups is not None:
        _speedups.header_walk(linktype, data)


@needs_c
def test_header_walk_matches_locate_network_and_flow_key():
    for ts, lt, data in _generated() + [f for p in CAPTURES for f in _capture_frames(p)]:
        for n in (len(data), len(data) // 2, 15, 3):
            frame = data[:n]
            walked, located = _speedups.header_walk(lt, frame), locate_network(lt, frame)
            if located.__class__ is str:
                assert walked is None
                continue
            assert walked[:3] == located
            ethertype, offset, _vlans = located
            key = packets._flow_key(frame, offset, ethertype == 0x86DD) \
                if ethertype in (0x0800, 0x86DD) else None
            if key is None:
                assert walked[3:] == (-1, None, None, 0)
            else:
                (proto, addresses, _head), transport_at = key
                assert walked[3:] == (proto, addresses[:len(addresses) // 2],
                                      addresses[len(addresses) // 2:], transport_at)


@needs_c
def test_community_id_matches_the_python_one_and_the_spec_example():
    # The Community ID spec's TCP example (https://github.com/corelight/community-id-spec).
    assert _speedups.community_id(6, bytes((128, 232, 110, 120)), 34855, bytes((66, 35, 250, 204)), 80) \
        == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    rng = random.Random(3)
    for _ in range(5000):
        size = rng.choice((4, 16))
        a, b = rng.randbytes(size), rng.randbytes(size)
        proto = rng.choice((1, 6, 17, 58))
        sport = rng.choice((0, 8, 13, 128, 133, 3, 255)) if proto in (1, 58) else rng.randrange(65536)
        dport = rng.randrange(256 if proto in (1, 58) else 65536)
        assert _speedups.community_id(proto, a, sport, b, dport) == community_id_packed_python(proto, a, sport, b, dport)


def test_pure_python_switch_turns_the_extension_off():
    code = "import wirebeat.packets as p; print(p.ACCELERATED)"
    env = {**os.environ, "WIREBEAT_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    if _speedups is not None:
        env.pop("WIREBEAT_PURE_PYTHON")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "True"


# The CLI end to end: console output of the accelerated and pure-Python runs, flows on and off.


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("speedups") / "mixed.pcap"
    subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "gen_mixed.py"), str(path),
                    "--packets", "4000"], check=True, capture_output=True)
    return path


@needs_c
@pytest.mark.parametrize("flows", ["true", "false"])
def test_cli_output_is_identical(mixed, flows):
    outputs = []
    for pure in ("0", "1"):
        proc = subprocess.run(
            [sys.executable, "-c", CONSOLE_WITH_IDS, "run", "-I", str(mixed), "--console", "-E", "logging.level=warning",
             "-E", "wirebeat.packets.enabled=true", "-E", f"wirebeat.flows.enabled={flows}"],
            env={**os.environ, "WIREBEAT_PURE_PYTHON": pure}, capture_output=True, check=True, cwd=ROOT)
        outputs.append(sorted(proc.stdout.splitlines()))
    assert len(outputs[0]) > 4000
    assert outputs[0] == outputs[1]


ISO_EDGES = [0, 0.0, 1.5, 0.0000005, 0.0000015, 0.9999995, 0.99999949, 1_700_000_000.9999996, 1_764_547_200.123456,
             951_782_400.5, 4_102_444_800.0, 7_999_999_999.999999, 8e9, 8e9 + 0.5, 253_402_300_799.0, -0.5, -1.0,
             -86_400.25, 1_700_000_000, 2**31, 2**31 - 1]


@needs_c
@given(st.one_of(st.floats(min_value=0, max_value=8.1e9, allow_nan=False),
                 st.floats(min_value=-1e9, max_value=2.5e11, allow_nan=False),
                 st.integers(min_value=0, max_value=8_000_000_000),
                 st.sampled_from(ISO_EDGES)))
@settings(max_examples=3000, deadline=None)
def test_c_iso_time_is_the_python_reference(ts):
    """Every timestamp: the C text equals decoders/api.py's (microsecond rounding half
    to even, leap years, the year 2000 and 2100 rules, the fallback outside 1970..2223)."""
    assert _speedups.iso_time(ts) == iso_time_python(ts)


@needs_c
def test_c_iso_time_edges_and_bad_values():
    for ts in ISO_EDGES:
        assert _speedups.iso_time(ts) == iso_time_python(ts), ts
    for bad in (float("nan"), float("inf"), "x"):
        with pytest.raises((ValueError, OverflowError, TypeError)) as c_err:
            _speedups.iso_time(bad)
        with pytest.raises(c_err.type):
            iso_time_python(bad)
