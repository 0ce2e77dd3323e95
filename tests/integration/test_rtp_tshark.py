"""RTP stream quality agrees with Wireshark's RTP stream analysis, capture by capture.

For every capture with RTP in pcaps/, `tshark -q -z rtp,streams` (with
`-o rtp.heuristic_rtp:TRUE` where no SDP announces the streams) is the oracle:
the same streams, and per stream the same packet count and lost count (exactly)
and max delta, mean delta, max jitter and mean jitter (within 0.01 ms; tshark
prints three decimals). The two deliberate differences of docs/fields-rtp.md
are asserted as such: a sender restart is not loss (restart.pcap), and
telephone-event packets stay out of the jitter estimate (call_dtmf.pcap), which
is then checked against the RFC 3550 estimate computed here from tshark's own
per-packet fields.
"""
from __future__ import annotations

import functools
import re
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import PCAPS, decode_file

HEURISTIC = {"jitter.pcap", "reorder_duplicate.pcap", "wraparound.pcap", "ssrc_change.pcap",
             "restart.pcap", "not_rtp.pcap", "webrtc_mux.pcap", "interleaved_ssrc.pcap",
             "short_streams.pcap", "rtcp_mux.pcap", "lone_streams.pcap"}
CAPTURES = sorted(PCAPS.glob("rtp/*.pcap")) + sorted(PCAPS.glob("sip/call_*.pcap"))
TOLERANCE_MS = 0.01

_ROW = re.compile(
    r"^\s*\S+\s+\S+\s+(?P<src>\S+)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)\s+"
    r"(?P<ssrc>0x[0-9A-Fa-f]+)\s+(?P<payload>.+?)\s+(?P<packets>\d+)\s+(?P<lost>-?\d+) \(\S+%\)\s+"
    r"(?P<min_delta>-?[\d.]+)\s+(?P<mean_delta>[\d.]+)\s+(?P<max_delta>[\d.]+)\s+"
    r"(?P<min_jitter>-?[\d.]+)\s+(?P<mean_jitter>[\d.]+)\s+(?P<max_jitter>[\d.]+)\s*X?\s*$")

Key = tuple[str, int, str, int, int]


def _tshark(*args: str) -> str:
    return subprocess.run(["tshark", "-n", *args], capture_output=True, text=True,
                          check=True).stdout


@functools.cache
def tshark_streams(capture: Path) -> dict[Key, dict[str, float]]:
    options = ["-o", "rtp.heuristic_rtp:TRUE"] if capture.name in HEURISTIC else []
    out = _tshark("-r", str(capture), *options, "-q", "-z", "rtp,streams")
    streams = {}
    for line in out.splitlines():
        m = _ROW.match(line)
        if m:
            key = (m["src"], int(m["sport"]), m["dst"], int(m["dport"]), int(m["ssrc"], 16))
            streams[key] = {name: float(m[name]) for name in
                            ("packets", "lost", "mean_delta", "max_delta", "mean_jitter",
                             "max_jitter")}
    return streams


@functools.cache
def our_streams(capture: Path) -> dict[Key, dict]:
    overrides = ["wirebeat.protocols.rtp.heuristic=true"] if capture.name in HEURISTIC else []
    if capture.name == "reorder_duplicate.pcap":    # packet 350 duplicated by the network, as
        overrides.append("wirebeat.dedup.enabled=false")   # tshark counts it (docs/reliability.md)
    streams = {}
    for d in decode_file(capture, *overrides):
        if d["type"] == "rtp" and d["rtp"]["final"]:
            key = (d["source"]["ip"], d["source"]["port"], d["destination"]["ip"],
                   d["destination"]["port"], d["rtp"]["ssrc"])
            assert key not in streams
            streams[key] = d["rtp"]
    return streams


def _compare(ours: dict, theirs: dict[str, float], jitter: bool = True) -> None:
    assert ours["packets"] == theirs["packets"]
    assert ours["lost"] == theirs["lost"]
    assert ours["delta"]["max_ms"] == pytest.approx(theirs["max_delta"], abs=TOLERANCE_MS)
    assert ours["delta"]["mean_ms"] == pytest.approx(theirs["mean_delta"], abs=TOLERANCE_MS)
    if jitter:
        ours_jitter = ours.get("jitter", {"max_ms": 0.0, "mean_ms": 0.0})
        assert ours_jitter["max_ms"] == pytest.approx(theirs["max_jitter"], abs=TOLERANCE_MS)
        assert ours_jitter["mean_ms"] == pytest.approx(theirs["mean_jitter"], abs=TOLERANCE_MS)


@pytest.mark.parametrize("capture", CAPTURES, ids=[f"{p.parent.name}/{p.name}" for p in CAPTURES])
def test_streams_agree_with_tshark(capture: Path):
    theirs, ours = tshark_streams(capture), our_streams(capture)
    assert set(ours) == set(theirs)
    if capture.name != "not_rtp.pcap":
        assert ours
    for key, stream in ours.items():
        if capture.name == "restart.pcap":
            continue                           # the deliberate difference, tested below
        _compare(stream, theirs[key], jitter=stream["telephone_events"] == 0)


def test_a_restart_is_loss_for_tshark_and_a_restart_for_us():
    capture = PCAPS / "rtp" / "restart.pcap"
    [(key, theirs)] = tshark_streams(capture).items()
    ours = our_streams(capture)[key]
    # Sequence 1000..1199, then the sender restarts at 40000..40199.
    assert theirs["lost"] == 40199 - 1000 + 1 - 400
    assert (ours["lost"], ours["expected"], ours["restarts"]) == (0, 400, 1)
    _compare({**ours, "lost": theirs["lost"]}, theirs)


def _packets(capture: Path, ssrc: int) -> list[tuple[int, int, int, bool]]:
    """(arrival in us, RTP timestamp, payload type, marker) as tshark dissects them."""
    out = _tshark("-r", str(capture), "-Y", f"rtp.ssrc == {ssrc:#x}", "-T", "fields",
                  "-e", "frame.time_epoch", "-e", "rtp.timestamp", "-e", "rtp.p_type",
                  "-e", "rtp.marker")
    rows = []
    for line in out.splitlines():
        epoch, timestamp, payload_type, marker = line.split("\t")
        rows.append((int(Decimal(epoch) * 1_000_000), int(timestamp), int(payload_type),
                     marker in ("1", "True")))
    return rows


def test_telephone_events_stay_out_of_jitter_which_is_then_rfc_3550():
    capture = PCAPS / "sip" / "call_dtmf.pcap"
    ssrc = 0x5A5A0005                       # the caller's stream, with two events (type 101)
    [key] = [k for k in our_streams(capture) if k[4] == ssrc]
    ours, theirs = our_streams(capture)[key], tshark_streams(capture)[key]
    _compare(ours, theirs, jitter=False)    # packets, loss and delta agree with tshark
    packets = _packets(capture, ssrc)
    assert len(packets) == 200 and sum(pt == 101 for _, _, pt, _ in packets) == 22
    # The RFC 3550 estimate over the audio packets only; max and mean as for every
    # stream (mean over the packets after the first, one left out counting as the
    # mean so far; markers left out of both).
    first_arrival, _, _, _ = packets[0]
    jitter = mean = maximum = 0.0
    last = None
    for slot, (arrival, timestamp, payload_type, marker) in enumerate(packets):
        if payload_type == 101:
            continue
        if last is not None:
            d = (arrival - last[0]) / 1000 - (timestamp - last[1]) / 8
            jitter += (abs(d) - jitter) / 16
            if not marker:
                maximum = max(maximum, jitter)
                mean = (mean * (slot - 1) + jitter) / slot
        last = (arrival, timestamp)
    assert ours["jitter"]["max_ms"] == pytest.approx(maximum, abs=1e-3)
    assert ours["jitter"]["mean_ms"] == pytest.approx(mean, abs=1e-3)
    # tshark lets the events' timestamps into the estimate: far more "jitter".
    assert theirs["max_jitter"] > 5 * ours["jitter"]["max_ms"]
