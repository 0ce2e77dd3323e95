"""The capture reader never raises anything but CaptureError, whatever the bytes.

A damaged capture must give every complete record and a count of the damage;
only a file that is not a capture at all is refused (CaptureError, exit 2).
"""
from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

import pcapgen as g
from wirebeat.sources.pcapfile import CaptureError, CaptureReader

T0 = 1_700_000_000_000_000_000
PCAP_HEAD = g.pcap_header()
PCAP_RECORDS = [g.pcap_record(T0 + i * 1000, g.ethernet(g.ipv4("10.0.0.1", "10.0.0.2", 17, g.udp(
    "10.0.0.1", "10.0.0.2", 1000 + i, 53, b"q" * i)))) for i in range(8)]
PCAPNG_HEAD = g.pcapng_shb() + g.pcapng_idb(g.LINKTYPE_ETHERNET, 9)
PCAPNG_RECORDS = [g.pcapng_epb(0, T0 + i * 1000, g.ethernet(g.ipv4("10.0.0.1", "10.0.0.2", 1, g.icmp_echo(1, i))),
                               tsresol=9) for i in range(8)]
GOOD_PCAP = PCAP_HEAD + b"".join(PCAP_RECORDS)
GOOD_PCAPNG = PCAPNG_HEAD + b"".join(PCAPNG_RECORDS)


def _read_all(data: bytes) -> int:
    try:
        reader = CaptureReader(io.BytesIO(data), "fuzz", size=len(data))
    except CaptureError:
        return -1
    return sum(1 for _ in reader)


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_random_bytes_are_refused_or_read(data: bytes) -> None:
    _read_all(data)


@settings(max_examples=300)
@given(st.sampled_from([GOOD_PCAP, GOOD_PCAPNG]), st.data())
def test_mutated_captures_never_raise(base: bytes, data) -> None:
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    _read_all(bytes(buf))


@given(st.sampled_from([(PCAP_HEAD, PCAP_RECORDS), (PCAPNG_HEAD, PCAPNG_RECORDS)]), st.integers(min_value=0))
def test_a_cut_capture_gives_exactly_the_complete_records(parts, cut: int) -> None:
    head, records = parts
    whole = head + b"".join(records)
    cut %= len(whole) + 1
    got = _read_all(whole[:cut])
    if cut < len(head):
        assert got in (-1, 0)       # refused, or a header-only section: no records
        return
    end, complete = len(head), 0
    for record in records:
        end += len(record)
        if end <= cut:
            complete += 1
    assert got == complete
