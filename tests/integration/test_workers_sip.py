"""With several workers, RTP announced by SIP is still linked to its call when the
media and the signalling run between different addresses (a SIP proxy): the
worker that sees the media is not the one that owns the signalling flow, yet
it reads the SDP announcement first (shadowed SIP frames, beat/workers.py).

The capture is generated here with exactly known ground truth: 8 calls, all
signalled between the proxy pair 10.1.0.1 <-> 10.1.0.2, each with its media
between its own pair 10.20.i.1:40000 <-> 10.30.i.1:50000. The RTP heuristic
is off, so an RTP document exists only when the announcement routed the flow.
"""
from __future__ import annotations

import json
import struct
import zlib
from ipaddress import ip_address
from pathlib import Path

import pytest

import pcapgen as g

CALLS = 8
PACKETS_PER_DIRECTION = 50
T0 = 1_767_225_600.0
PROXY_A, PROXY_B = "10.1.0.1", "10.1.0.2"


def _sdp(address: str, port: int) -> str:
    return ("v=0\r\no=- 1 1 IN IP4 " + address + "\r\ns=call\r\nc=IN IP4 " + address +
            "\r\nt=0 0\r\nm=audio " + str(port) + " RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _sip(start: str, call_id: str, cseq: str, body: str = "") -> bytes:
    headers = [start, "Via: SIP/2.0/UDP 10.1.0.1:5060;branch=z9hG4bK" + call_id,
               "From: <sip:alice@example.com>;tag=1", "To: <sip:bob@example.com>",
               f"Call-ID: {call_id}", f"CSeq: {cseq}"]
    if body:
        headers.append("Content-Type: application/sdp")
    head = "\r\n".join([*headers, f"Content-Length: {len(body.encode())}"])
    return (head + "\r\n\r\n" + body).encode()


def _udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return g.ethernet(g.ipv4(src, dst, 17, g.udp(src, dst, sport, dport, payload)))


def media_pair(i: int) -> tuple[str, str]:
    return f"10.20.{i}.1", f"10.30.{i}.1"


def make_capture(path: Path) -> None:
    frames = []
    for i in range(CALLS):
        t = T0 + i * 5.0
        call_id = f"call-{i}@proxy"
        caller, callee = media_pair(i)
        sig = [
            (PROXY_A, PROXY_B, _sip("INVITE sip:bob@example.com SIP/2.0", call_id, "1 INVITE",
                                    _sdp(caller, 40000))),
            (PROXY_B, PROXY_A, _sip("SIP/2.0 200 OK", call_id, "1 INVITE", _sdp(callee, 50000))),
            (PROXY_A, PROXY_B, _sip("ACK sip:bob@example.com SIP/2.0", call_id, "1 ACK")),
        ]
        for k, (src, dst, payload) in enumerate(sig):
            frames.append((t + k * 0.01, _udp_frame(src, dst, 5060, 5060, payload)))
        for n in range(PACKETS_PER_DIRECTION):
            ts = t + 0.1 + n * 0.02
            for src, dst, sport, dport, ssrc in ((caller, callee, 40000, 50000, 0x1000 + i),
                                                 (callee, caller, 50000, 40000, 0x2000 + i)):
                rtp = struct.pack("!BBHII", 0x80, 0, n, n * 160, ssrc) + b"\xff" * 160
                frames.append((ts + (0.001 if ssrc & 0x2000 else 0), _udp_frame(src, dst, sport, dport, rtp)))
        bye = t + 0.1 + PACKETS_PER_DIRECTION * 0.02 + 0.1
        frames.append((bye, _udp_frame(PROXY_A, PROXY_B, 5060, 5060,
                                       _sip("BYE sip:bob@example.com SIP/2.0", call_id, "2 BYE"))))
        frames.append((bye + 0.01, _udp_frame(PROXY_B, PROXY_A, 5060, 5060,
                                              _sip("SIP/2.0 200 OK", call_id, "2 BYE"))))
    frames.sort(key=lambda f: f[0])
    g.write_pcap(path, frames)


def documented_worker(source: str, a: str, b: str, workers: int) -> int:
    """The hash docs/performance.md states: crc32(source, unordered address pair) % N."""
    x, y = ip_address(a).packed, ip_address(b).packed
    return zlib.crc32(min(x, y) + max(x, y), zlib.crc32(source.encode())) % workers


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sip") / "proxy_calls.pcap"
    make_capture(path)
    return path


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_rtp_behind_a_sip_proxy_is_linked_to_its_call(wirebeat, capture: Path, workers: int) -> None:
    source = str(capture)
    if workers > 1:
        # The point of the test: most calls' media land on another worker than their signalling.
        signalling = documented_worker(source, PROXY_A, PROXY_B, workers)
        elsewhere = [i for i in range(CALLS)
                     if documented_worker(source, *media_pair(i), workers) != signalling]
        assert len(elsewhere) >= 2, "choose other addresses: the media land with the signalling"
    proc = wirebeat("run", "-I", source, "--console", "--workers", str(workers),
                    "-E", "wirebeat.flows.enabled=false", "-E", "wirebeat.protocols.rtp.heuristic=false")
    assert proc.returncode == 0, proc.stderr.decode()
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    sip = [d for d in docs if d["type"] == "sip"]
    assert len(sip) == CALLS * 5            # INVITE, 200, ACK, BYE, 200: each once, by one worker
    rtp = [d for d in docs if d["type"] == "rtp"]
    streams = {(d["source"]["ip"], d["rtp"]["ssrc"]): d for d in rtp}
    assert len(streams) == CALLS * 2, sorted(streams)
    for i in range(CALLS):
        caller, callee = media_pair(i)
        for sender in (caller, callee):
            doc = next(d for (ip, _), d in streams.items() if ip == sender)
            assert doc.get("sip", {}).get("call_id") == f"call-{i}@proxy", doc
            assert doc["rtp"]["packets"] == PACKETS_PER_DIRECTION


@pytest.mark.parametrize("workers", [1, 2])
def test_counters_of_what_every_worker_reads_are_not_multiplied(wirebeat, capture: Path,
                                                                 workers: int) -> None:
    """Every worker reads every SIP message (shadows), so each worker's SIP decoder
    counts what one process would: shown once, not N times. With room for one dialog,
    each of the 8 calls (tracked after BYE until the dialog timeout) pushes out the one
    before it: 7 evictions, whatever N."""
    proc = wirebeat("run", "-I", str(capture), "--console", "--workers", str(workers),
                    "-E", "wirebeat.flows.enabled=false", "-E", "wirebeat.protocols.rtp.heuristic=false",
                    "-E", "wirebeat.protocols.sip.max_dialogs=1", "-E", "logging.level=info")
    assert proc.returncode == 0, proc.stderr.decode()
    summary = [json.loads(line) for line in proc.stderr.splitlines() if b'"summary"' in line][-1]
    assert summary["decoder.sip.dialogs_evicted"] == CALLS - 1
