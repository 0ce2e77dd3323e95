"""The per-packet floor in C (wirebeat._speedups: locate_ip, pcap_records) against
its pure-Python reference (wirebeat.framecore, wirebeat.link, wirebeat.ip,
wirebeat.sources.pcapfile).

Every frame shape the C code has a branch for (every link type, VLAN/QinQ stacks
up to and past the limit, SLL v1/v2, BSD null/loop, raw IP, ARP, MPLS, IPv4 with
options, bad IHL and total lengths, IPv4 and IPv6 fragments, IPv6 extension
header chains up to and past the limit, AH), every truncation of them, random
mutations and random bytes: the C result must equal the Python one exactly
(same tuple, same reason string). Under CI=true the extension must be built.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

import pcapgen as g
from running import needs_extension
from test_speedups import CAPTURES, _capture_frames, _generated
from wirebeat import framecore

try:
    from wirebeat import _speedups
except ImportError:
    _speedups = None

needs_c = needs_extension(_speedups)

A6, B6 = "2001:db8::1", "2001:db8::2"


def _ipv6_chains() -> list[bytes]:
    """IPv6 packets with extension header chains: every kind, fragments, AH, too long."""
    payload = g.udp(A6, B6, 1000, 53, b"chain")
    out = []
    for ext in ([g.hop_by_hop()], [g.destination_options(), g.routing_header([B6])],
                [g.hop_by_hop(), g.fragment_header(offset_bytes=0, more_fragments=True, ident=7)],
                [g.fragment_header(offset_bytes=64, more_fragments=False, ident=0xFFFFFFFF)],
                [g.fragment_header(offset_bytes=0, more_fragments=False, ident=3)],     # atomic
                [g.destination_options()] * 7, [g.destination_options()] * 8,
                [g.destination_options()] * 9):
        out.append(g.ipv6(A6, B6, 17, payload, extensions=ext))
    ah = bytes((17, 4, 0, 0)) + b"\0" * 20       # AH, length (4 + 2) * 4 = 24 bytes
    out.append(g.ipv6(A6, B6, 51, ah + payload))
    out += g.fragment_ipv6(g.ipv6(A6, B6, 17, g.udp(A6, B6, 1, 2, b"f" * 300)), 96, ident=9)
    jumbo = bytearray(g.ipv6(A6, B6, 17, payload))
    jumbo[4:6] = b"\0\0"                        # payload length 0: to the end of the frame
    out.append(bytes(jumbo))
    return out


def _ipv4_oddities() -> list[bytes]:
    base = g.ipv4("10.0.0.1", "10.0.0.2", 17, g.udp("10.0.0.1", "10.0.0.2", 1, 2, b"four"))
    out = []
    for ihl in (0, 4, 5, 6, 15):
        p = bytearray(base)
        p[0] = 0x40 | ihl
        out.append(bytes(p))
    for total in (0, 19, 20, 27, 28, 29, 4000):
        p = bytearray(base)
        p[2:4] = total.to_bytes(2, "big")
        out.append(bytes(p))
    for flags in (0x2000, 0x0001, 0x4000, 0x3FFF, 0xFFFF):
        p = bytearray(base)
        p[6:8] = flags.to_bytes(2, "big")
        out.append(bytes(p))
    out.append(b"\x60" + base[1:])              # version 6 behind an IPv4 ethertype
    out += g.fragment_ipv4(g.ipv4("10.0.0.1", "10.0.0.2", 17, g.udp("10.0.0.1", "10.0.0.2", 1, 2,
                                                                   b"z" * 200)), 64)
    return out


def _frames() -> list[tuple[int, bytes]]:
    frames = [(lt, data) for _ts, lt, data in _generated()]
    for p in _ipv6_chains() + _ipv4_oddities():
        for lt in (g.LINKTYPE_ETHERNET, g.LINKTYPE_LINUX_SLL, g.LINKTYPE_LINUX_SLL2, g.LINKTYPE_NULL,
                   g.LINKTYPE_RAW):
            frames.append((lt, g.link_frame(lt, p)))
        frames.append((g.LINKTYPE_ETHERNET, g.ethernet(p, vlans=g.qinq(100, 10))))
        frames.append((g.LINKTYPE_ETHERNET, g.ethernet(p, ethertype=0x0800)))   # IPv6 bytes, IPv4 type
        frames.append((g.LINKTYPE_ETHERNET, g.ethernet(p, ethertype=0x86DD)))
    return frames


def _check(linktype: int, data: bytes) -> None:
    assert _speedups.locate_ip(linktype, data) == framecore.locate_ip_python(linktype, data), \
        (linktype, data.hex())


@needs_c
def test_locate_ip_matches_python_on_every_shape_and_truncation():
    frames = _frames()
    assert len(frames) > 400
    shapes = set()
    for lt, data in frames:
        for n in range(len(data) + 1):
            _check(lt, data[:n])
            got = framecore.locate_ip_python(lt, data[:n])
            shapes.add(got if got.__class__ is str else
                       "none" if got[3] is None else got[3] if got[3].__class__ is str else
                       "fragment" if got[3][4] is not None else "whole")
    # The reference itself reached every outcome (a test of the test's inputs).
    assert shapes >= {"link.truncated", "link.vlan_too_deep", "link.unsupported_linktype", "ip.truncated",
                      "ip.bad_version", "ip.bad_header_length", "ip.too_many_extension_headers",
                      "none", "fragment", "whole"}, shapes


@needs_c
def test_locate_ip_matches_python_on_bundled_captures():
    count = 0
    for path in CAPTURES:
        for _ts, lt, data in _capture_frames(path):
            _check(lt, data)
            count += 1
    assert count > 1000


@needs_c
def test_locate_ip_matches_python_on_mutated_frames():
    rng = random.Random(17)
    base = _frames()
    for _ in range(30_000):
        lt, data = rng.choice(base)
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(min(len(data), 120))] = rng.randrange(256)
        _check(lt, bytes(data))


@needs_c
@settings(max_examples=3000, deadline=None)
@given(st.sampled_from([0, 1, 12, 14, 101, 108, 113, 147, 228, 229, 276, -1, 2**31 - 1]),
       st.binary(max_size=160))
def test_locate_ip_random_bytes_match(linktype, data):
    _check(linktype, data)


def test_locate_ip_is_the_c_one_when_built():
    assert framecore.locate_ip is (_speedups.locate_ip if framecore.speedups is not None
                                   else framecore.locate_ip_python)


# pcap_records: the classic pcap records of a read buffer, in one call.

def _records_args(data: bytes, pos: int, little: bool, nano: bool, max_caplen: int, count: int):
    return (data, pos, little, 1e-9 if nano else 1e-6, max_caplen, 10**9 if nano else 10**6, 1, count)


def _pcap_buffers() -> list[tuple[bytes, bool, bool]]:
    rng = random.Random(23)
    out = []
    for little in (True, False):
        for nano in (False, True):
            body = b"".join(g.pcap_record(1_700_000_000 + i * 0.001 + rng.random(),
                                          rng.randbytes(rng.choice((0, 1, 14, 60, 1514))),
                                          nanosecond=nano, big_endian=not little) for i in range(60))
            out.append((body, little, nano))
    return out


@needs_c
def test_pcap_records_match_python_on_whole_cut_and_damaged_buffers():
    from wirebeat.sources.pcapfile import pcap_records_python
    rng = random.Random(29)
    checked = 0
    for body, little, nano in _pcap_buffers():
        variants = [body, body[:len(body) // 2], body[:15], b""]
        for _ in range(300):      # damaged headers: huge caplen, fraction out of range, ...
            damaged = bytearray(body)
            damaged[rng.randrange(min(len(damaged), 2000))] = rng.randrange(256)
            variants.append(bytes(damaged))
        for data in variants:
            for pos in (0, 1, 16, len(data) // 3):
                for max_caplen, count in ((262144, 4096), (100, 4096), (262144, 7), (262144, 0)):
                    args = _records_args(data, pos, little, nano, max_caplen, count)
                    got, want = _speedups.pcap_records(*args), pcap_records_python(*args)
                    assert got == want
                    assert [type(r[0]) for r in got[0]] == [float] * len(got[0])
                    checked += 1
    assert checked > 10_000


def test_batches_and_frames_read_the_same_records(tmp_path):
    """The run loop's batches and the Frame iterator give the same records, also past damage."""
    from wirebeat.sources.pcapfile import open_capture
    rng = random.Random(31)
    path = tmp_path / "damaged.pcap"
    frames = [(1_700_000_000 + i * 0.5, rng.randbytes(rng.randrange(20, 200))) for i in range(3000)]
    g.write_pcap(path, frames)
    raw = bytearray(path.read_bytes())
    at = 24 + sum(16 + len(data) for _ts, data in frames[:10])
    raw[at:at + 16] = b"\xff" * 16             # record 10's header is garbage: resynchronised
    raw = raw[:-7]                              # cut inside the last record
    path.write_bytes(bytes(raw))
    reader = open_capture(str(path))
    batched = [r for batch in reader.batches() for r in batch]
    assert reader.damage.truncated_tail == 1 and reader.damage.garbage_records == 1
    reader.close()
    reader = open_capture(str(path))
    assert [(f.ts, f.linktype, f.data, f.wire_len) for f in reader] == batched
    reader.close()
    # Records away from the damage are the ones written (the writer is the ground truth).
    assert [r[2] for r in batched[:10]] == [data for _ts, data in frames[:10]]
    assert [r[2] for r in batched[10:]] == [data for _ts, data in frames[11:-1]]   # resynchronised
    assert abs(batched[0][0] - frames[0][0]) < 1e-6


# Dedup: the C table against wirebeat.dedup.Dedup, decision by decision.

def _dedup_stream(rng: random.Random, n: int, distinct: int = 40) -> list[tuple]:
    """Packets drawn from a small pool (so copies and repeats are common), the clock moving
    on by random steps, sometimes back (merged captures)."""
    pool = []
    for i in range(distinct):
        v6 = i % 3 == 0
        src, dst = (rng.randbytes(16), rng.randbytes(16)) if v6 else (rng.randbytes(4), rng.randbytes(4))
        ip = g.ipv6(src, dst, 17, b"p%d" % i) if v6 else g.ipv4(src, dst, 17, b"p%d" % i, ident=i % 4)
        data = g.ethernet(ip)
        parsed = framecore.locate_ip_python(1, data)[3]
        pool.append((rng.choice(("a", "b")), rng.choice(((), (5,), (5, 7))), data, 14, parsed))
    ts, out = 1_700_000_000.0, []
    for _ in range(n):
        ts += rng.choice((0.0, 0.00001, 0.001, 0.05, 0.0999999, 0.1, 0.1000001, 0.3, 2.0, -0.05, -1.0))
        recent = [o[1:] for o in out[-3:]]
        out.append((ts, *(rng.choice(recent) if recent and rng.random() < 0.2 else rng.choice(pool))))
    return out


@needs_c
@pytest.mark.parametrize("max_packets", [100, 1000, 8192])
def test_c_dedup_grows_and_compacts_as_the_python_one_decides(max_packets):
    """Many distinct packets: the C table grows its ring and index, and compacts them."""
    from wirebeat.dedup import Dedup
    rng = random.Random(max_packets)
    c, py = _speedups.Dedup(0.1, max_packets), Dedup(0.1, max_packets)
    for ts, source, vlans, data, offset, parsed in _dedup_stream(rng, 30_000, distinct=5000):
        assert c.duplicate(source, ts, vlans, data, offset, parsed) == \
            py.duplicate(source, ts, vlans, data, offset, parsed)
    assert len(c) == len(py.seen) and c.counters() == py.counters()
    assert py.dropped


@needs_c
@pytest.mark.parametrize("max_packets", [1, 2, 3, 7, 64, 8192])
@pytest.mark.parametrize("window", [0.0, 0.1, 1.0])
def test_c_dedup_decides_as_the_python_one(max_packets, window):
    from wirebeat.dedup import Dedup
    rng = random.Random(max_packets * 1000 + int(window * 10))
    c, py = _speedups.Dedup(window, max_packets), Dedup(window, max_packets)
    decisions = []
    for ts, source, vlans, data, offset, parsed in _dedup_stream(rng, 20_000):
        got = c.duplicate(source, ts, vlans, data, offset, parsed)
        assert got == py.duplicate(source, ts, vlans, data, offset, parsed)
        assert len(c) == len(py.seen)
        decisions.append(got)
    assert c.counters() == py.counters()
    assert 0 < sum(decisions) < len(decisions)      # both outcomes were exercised
    if max_packets < 40:
        assert py.evicted_in_window or window == 0.0


def _near_payloads() -> list[bytes]:
    """Payloads a weak hash would confuse: every length of zeros (padding of the last
    block), one bit flipped at every byte of a full segment, 16-byte blocks swapped
    (next to each other, and 1,024 bytes apart: 64 blocks, where a rotate-by-step state
    comes round), and the same byte sequence shifted by one."""
    out = [bytes(n) for n in range(0, 70)]
    base = bytes(random.Random(7).randbytes(1460))
    out += [base[:i] + bytes([base[i] ^ (1 << (i % 8))]) + base[i + 1:] for i in range(len(base))]
    blocks = [base[i:i + 16] for i in range(0, 1456, 16)]
    for a, b in ((0, 1), (0, 64), (3, 67), (10, 74)):
        swapped = list(blocks)
        swapped[a], swapped[b] = swapped[b], swapped[a]
        out.append(b"".join(swapped))
    out += [base, base[1:], b"\0" + base]
    assert len(set(out)) == len(out)
    return out


@needs_c
def test_c_dedup_tells_near_payloads_apart():
    """The C key hashes payloads its own way (not the bytes' SipHash): payloads that
    differ anywhere are never taken for copies, and each, sent again, is one."""
    c = _speedups.Dedup(10.0, 100_000)
    src, dst = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
    payloads = _near_payloads()
    for i, payload in enumerate(payloads):
        assert not c.duplicate("s", 1.0 + i * 1e-6, (), b"", 0, (src, dst, 17, payload, None)), i
    assert c.counters()["dedup.dropped"] == 0 and len(c) == len(payloads)
    for i, payload in enumerate(payloads):
        assert c.duplicate("s", 1.5, (), b"", 0, (src, dst, 17, payload, None)), i
    assert c.counters()["dedup.dropped"] == len(payloads)


@needs_c
def test_c_dedup_rejects_what_python_rejects():
    c = _speedups.Dedup(0.1, 0)                      # a cap below 1 is 1, as in Python
    assert c.max_packets == 1
    with pytest.raises(TypeError):
        c.duplicate("s", 1.0, (), b"x" * 40, 14, ("too", "short"))
    with pytest.raises(TypeError):
        c.duplicate("s", "not a time", (), b"x" * 40, 14, (b"1234", b"5678", 17, b"", None))


@needs_c
def test_c_functions_reject_bad_arguments():
    for bad in ((1,), (1, "not bytes"), (1, bytearray(b"\0" * 40)), ("x", b"\0" * 40)):
        with pytest.raises(TypeError):
            _speedups.locate_ip(*bad)
    with pytest.raises(TypeError):
        _speedups.pcap_records(b"", 0, True, 1e-6, 100, 10**6, 1)          # one argument short
    with pytest.raises(TypeError):
        _speedups.pcap_records("text", 0, True, 1e-6, 100, 10**6, 1, 10)
