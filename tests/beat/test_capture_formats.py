"""Capture files and link layers: every format and link type decodes the same echo pair.

Ground truth is what tests/pcapgen.py put into the file: one ICMP echo
request 198.51.100.1 -> 198.51.100.2 (id 7, seq 1, 32 data bytes) and its
reply 1.5 ms later, so each capture must give exactly one OK ICMP document
with event.duration 1_500_000 ns and 32 bytes each way.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import pcapgen as g

T0 = 1_700_000_000_123_456_000          # ns, exact
REPLY_NS = T0 + 1_500_000
A, B = "198.51.100.1", "198.51.100.2"
A6, B6 = "2001:db8::1", "2001:db8::2"


def _echo_pair(v6: bool = False) -> tuple[bytes, bytes]:
    if v6:
        return (g.ipv6(A6, B6, g.IPPROTO_ICMPV6, g.icmpv6_echo(A6, B6, 7, 1, b"x" * 32)),
                g.ipv6(B6, A6, g.IPPROTO_ICMPV6, g.icmpv6_echo(B6, A6, 7, 1, b"x" * 32, reply=True)))
    return (g.ipv4(A, B, g.IPPROTO_ICMP, g.icmp_echo(7, 1, b"x" * 32)),
            g.ipv4(B, A, g.IPPROTO_ICMP, g.icmp_echo(7, 1, b"x" * 32, reply=True)))


def _assert_one_echo(docs: list[dict], v6: bool = False) -> None:
    assert len(docs) == 1, docs
    [doc] = docs
    assert doc["status"] == "OK"
    assert doc["icmp"]["version"] == (6 if v6 else 4)
    assert doc["icmp"]["request"]["type"] == (128 if v6 else 8)
    assert doc["icmp"]["response"]["type"] == (129 if v6 else 0)
    assert doc["source"]["ip"] == (A6 if v6 else A)
    assert doc["destination"]["ip"] == (B6 if v6 else B)
    assert doc["source"]["bytes"] == 32 and doc["destination"]["bytes"] == 32
    assert doc["event"]["duration"] == 1_500_000
    assert doc["@timestamp"] == "2023-11-14T22:13:20.123456Z"
    assert doc["network"]["type"] == ("ipv6" if v6 else "ipv4")


@pytest.mark.parametrize("big_endian", [False, True], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["usec", "nsec"])
def test_classic_pcap_in_both_byte_orders_and_resolutions(tmp_path: Path, decode, big_endian, nanosecond):
    req, rep = _echo_pair()
    path = tmp_path / "echo.pcap"
    g.write_pcap(path, [(T0, g.ethernet(req)), (REPLY_NS, g.ethernet(rep))],
                 nanosecond=nanosecond, big_endian=big_endian)
    _assert_one_echo(decode(path))


@pytest.mark.parametrize("tsresol", [None, 9, 0x80 | 20], ids=["usec-default", "nsec", "binary-2^-20"])
@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcapng_resolutions_and_byte_orders(tmp_path: Path, decode, tsresol, big_endian):
    req, rep = _echo_pair()
    path = tmp_path / "echo.pcapng"
    g.write_pcapng(path, [(g.LINKTYPE_ETHERNET, tsresol)],
                   [(0, T0, g.ethernet(req)), (0, REPLY_NS, g.ethernet(rep))], big_endian=big_endian)
    docs = decode(path)
    if tsresol == 0x80 | 20:
        # 2^-20 s ticks cannot hold 1.5 ms exactly: compare with what the ticks say.
        assert len(docs) == 1 and abs(docs[0]["event"]["duration"] - 1_500_000) <= 2000
    else:
        _assert_one_echo(docs)


def test_pcapng_with_several_interfaces_of_different_link_types(tmp_path: Path, decode):
    req, rep = _echo_pair()
    req6, rep6 = _echo_pair(v6=True)
    path = tmp_path / "multi.pcapng"
    g.write_pcapng(path, [(g.LINKTYPE_ETHERNET, None), (g.LINKTYPE_LINUX_SLL2, 9), (g.LINKTYPE_RAW, 9)], [
        (0, T0, g.ethernet(req)), (1, T0 + 10, g.linux_sll2(req6)),
        (2, REPLY_NS + 10, rep6), (0, REPLY_NS, g.ethernet(rep)),
    ])
    docs = sorted(decode(path), key=lambda d: d["icmp"]["version"])
    assert [d["icmp"]["version"] for d in docs] == [4, 6]
    assert all(d["status"] == "OK" and d["event"]["duration"] == 1_500_000 for d in docs)


LINK_CASES = {
    "ethernet": (g.LINKTYPE_ETHERNET, g.ethernet),
    "vlan": (g.LINKTYPE_ETHERNET, lambda p: g.ethernet(p, vlans=[100])),
    "qinq": (g.LINKTYPE_ETHERNET, lambda p: g.ethernet(p, vlans=g.qinq(200, 300))),
    "linux-sll": (g.LINKTYPE_LINUX_SLL, g.linux_sll),
    "linux-sll2": (g.LINKTYPE_LINUX_SLL2, g.linux_sll2),
    "raw": (g.LINKTYPE_RAW, lambda p: p),
    "raw-ipv4": (g.LINKTYPE_IPV4, lambda p: p),
    "null-le": (g.LINKTYPE_NULL, lambda p: g.bsd_null(p, big_endian=False)),
    "null-be": (g.LINKTYPE_NULL, lambda p: g.bsd_null(p, big_endian=True)),
    "loop": (g.LINKTYPE_LOOP, g.bsd_loop),
}


@pytest.mark.parametrize("case", sorted(LINK_CASES))
def test_every_link_type_reaches_the_decoder(tmp_path: Path, decode, case):
    linktype, wrap = LINK_CASES[case]
    req, rep = _echo_pair()
    path = tmp_path / f"{case}.pcap"
    g.write_pcap(path, [(T0, wrap(req)), (REPLY_NS, wrap(rep))], linktype=linktype)
    _assert_one_echo(decode(path))


@pytest.mark.parametrize("case", ["null-le", "linux-sll", "raw"])
def test_ipv6_over_other_link_types(tmp_path: Path, decode, case):
    linktype, wrap = LINK_CASES[case]
    req, rep = _echo_pair(v6=True)
    path = tmp_path / f"{case}6.pcap"
    g.write_pcap(path, [(T0, wrap(req)), (REPLY_NS, wrap(rep))], linktype=linktype)
    _assert_one_echo(decode(path), v6=True)


def test_stdin_is_read_with_dash(tmp_path: Path, wirebeat):
    import json
    req, rep = _echo_pair()
    data = (g.pcap_header() + g.pcap_record(T0, g.ethernet(req)) + g.pcap_record(REPLY_NS, g.ethernet(rep)))
    proc = wirebeat("run", "-I", "-", "--console", "--strict", "-E", "wirebeat.flows.enabled=false", input=data)
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    _assert_one_echo(docs)
    assert docs[0]["capture"]["source"] == "-"


def test_ipv6_extension_headers_are_walked(tmp_path: Path, decode):
    ext = [g.hop_by_hop(), g.destination_options()]
    req = g.ipv6(A6, B6, g.IPPROTO_ICMPV6, g.icmpv6_echo(A6, B6, 7, 1, b"x" * 32), extensions=ext)
    rep = g.ipv6(B6, A6, g.IPPROTO_ICMPV6, g.icmpv6_echo(B6, A6, 7, 1, b"x" * 32, reply=True),
                 extensions=ext)
    path = tmp_path / "ext.pcap"
    g.write_pcap(path, [(T0, g.ethernet(req)), (REPLY_NS, g.ethernet(rep))])
    _assert_one_echo(decode(path), v6=True)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_fragmented_echo_is_reassembled_in_any_order(tmp_path: Path, decode, v6):
    data = bytes(range(256)) * 10          # 2560 bytes: several fragments
    if v6:
        req = g.ipv6(A6, B6, g.IPPROTO_ICMPV6, g.icmpv6_echo(A6, B6, 7, 1, data))
        rep = g.ipv6(B6, A6, g.IPPROTO_ICMPV6, g.icmpv6_echo(B6, A6, 7, 1, data, reply=True))
        frags = g.fragment_ipv6(req, 1232, ident=99)
    else:
        req = g.ipv4(A, B, g.IPPROTO_ICMP, g.icmp_echo(7, 1, data), ident=99)
        rep = g.ipv4(B, A, g.IPPROTO_ICMP, g.icmp_echo(7, 1, data, reply=True), ident=100)
        frags = g.fragment_ipv4(req, 1000)
    assert len(frags) >= 3
    frags = [frags[-1], *frags[:-1]]       # last fragment first: order must not matter
    packets = [(T0 + i, g.ethernet(f)) for i, f in enumerate(frags)]
    packets.append((REPLY_NS, g.ethernet(rep)))
    path = tmp_path / "frag.pcap"
    g.write_pcap(path, packets)
    [doc] = decode(path)
    assert doc["status"] == "OK"
    assert doc["source"]["bytes"] == len(data) == doc["destination"]["bytes"]


def test_overlapping_fragments_are_dropped_and_counted(tmp_path: Path, wirebeat):
    data = b"A" * 64
    whole = g.ipv4(A, B, g.IPPROTO_ICMP, g.icmp_echo(7, 1, data), ident=5)
    first, second = g.fragment_ipv4(whole, 48)
    # A forged fragment overlapping the first one at offset 40 with other bytes.
    payload = g.icmp_echo(7, 1, data)
    forged = g.ipv4(A, B, g.IPPROTO_ICMP, b"Z" * 16, ident=5, more_fragments=True,
                    frag_offset_bytes=40, checksum=None)
    assert len(payload) > 48
    path = tmp_path / "overlap.pcap"
    g.write_pcap(path, [(T0, g.ethernet(first)), (T0 + 1, g.ethernet(forged)),
                        (T0 + 2, g.ethernet(second))])
    proc = wirebeat("run", "-I", str(path), "--console", "--strict")
    assert proc.returncode == 0
    assert proc.stdout == b""          # no datagram, so no document
    assert b'"ip.fragments.overlapping": 1' in proc.stderr


def test_vlan_ids_do_not_change_the_transaction(tmp_path: Path, decode):
    """Request and reply tagged differently (a trunk seen at two points) still pair."""
    req, rep = _echo_pair()
    path = tmp_path / "vlan2.pcap"
    g.write_pcap(path, [(T0, g.ethernet(req, vlans=[10])), (REPLY_NS, g.ethernet(rep, vlans=[20]))])
    _assert_one_echo(decode(path))


def test_orphan_reply_has_event_end_but_no_event_start(tmp_path: Path, decode):
    """packetbeat: without a request there is no start; @timestamp is the response's time."""
    _req, rep = _echo_pair()
    path = tmp_path / "orphan.pcap"
    g.write_pcap(path, [(REPLY_NS, g.ethernet(rep))])
    [doc] = decode(path)
    assert doc["status"] == "Error"
    assert "start" not in doc["event"] and "duration" not in doc["event"]
    assert doc["event"]["end"] == doc["@timestamp"] == "2023-11-14T22:13:20.124956Z"


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
def test_stdin_pipe_is_decoded_as_it_arrives_and_sigterm_stops_a_waiting_read(pcapng: bool):
    """`tcpdump -U -w - | wirebeat run -I -` (or dumpcap's pcapng): frames are decoded as
    they come (not once a read buffer or a batch fills), and a SIGTERM while wirebeat waits
    for more input stops it at once, cleanly, with what it had decoded delivered."""
    import json
    import select
    import signal
    import subprocess
    import time
    from conftest import ROOT, WIREBEAT
    req, rep = _echo_pair()
    proc = subprocess.Popen([*WIREBEAT, "run", "-I", "-", "--console", "-E", "wirebeat.flows.enabled=false"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        if pcapng:
            proc.stdin.write(g.pcapng_shb() + g.pcapng_idb(g.LINKTYPE_ETHERNET) + g.pcapng_epb(0, T0, g.ethernet(req))
                             + g.pcapng_epb(0, REPLY_NS, g.ethernet(rep)))
        else:
            proc.stdin.write(g.pcap_header() + g.pcap_record(T0, g.ethernet(req)) + g.pcap_record(REPLY_NS, g.ethernet(rep)))
        proc.stdin.flush()          # the pipe stays open: more could come
        # The echo transaction comes before any end of input.
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "frames written to the pipe were not decoded while it stayed open"
        assert json.loads(proc.stdout.readline())["event"]["dataset"] == "icmp"
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        waited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert waited < 5, f"SIGTERM took {waited:.1f} s to stop a read waiting on stdin"
    assert b"error" not in err.lower(), err.decode()
    assert b"1 file(s), 2 packets" in err, err.decode()


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
def test_frames_are_read_in_batches(tmp_path: Path, pcapng: bool):
    """Both formats hand the engine batches of up to BATCH_FRAMES frames (a batch of one
    per pcapng block made every per-batch cost a per-frame one), all frames in order."""
    from wirebeat.sources.pcapfile import BATCH_FRAMES, open_capture
    frames = [(T0 + i * 1000, g.ethernet(g.ipv4("10.0.0.1", "10.0.0.2", 17, g.udp("10.0.0.1", "10.0.0.2", 1, 2,
                                                                                  i.to_bytes(4, "big")))))
              for i in range(10_000)]
    path = tmp_path / "many.cap"
    if pcapng:
        g.write_pcapng(path, packets=[(0, ts, data) for ts, data in frames])
    else:
        g.write_pcap(path, frames)
    reader = open_capture(str(path))
    sizes, got = [], []
    for batch in reader.batches():
        sizes.append(len(batch))
        got += [data for _ts, _linktype, data, _wire in batch]
    reader.close()
    assert got == [data for _ts, data in frames]
    assert max(sizes) <= BATCH_FRAMES and len(sizes) <= 10_000 // 1000, sizes[:20]
