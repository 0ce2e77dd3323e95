"""ICMP echo request/reply pairs: traffic with an exact, independent count of documents.

Each answered pair is one ICMP document, so a test that publishes or writes
N pairs knows it must find N documents, whatever wirebeat did in between.
"""
from __future__ import annotations

from pathlib import Path

import pcapgen as g

__all__ = ["echo_pair", "write_echo_capture"]


def echo_pair(client: str, server: str, ident: int, seq: int, ts_ns: int,
              reply_after_ns: int = 100_000) -> list[tuple[int, bytes]]:
    """(timestamp, Ethernet frame) of a request and its reply."""
    return [(ts_ns, g.ethernet(g.ipv4(client, server, g.IPPROTO_ICMP, g.icmp_echo(ident, seq)))),
            (ts_ns + reply_after_ns, g.ethernet(g.ipv4(server, client, g.IPPROTO_ICMP,
                                                        g.icmp_echo(ident, seq, reply=True))))]


def write_echo_capture(path: Path, client: str, server: str, ident: int, pairs: int, t0_ns: int,
                       gap_ns: int = 10**8) -> Path:
    """A pcap of `pairs` answered echoes, `gap_ns` apart."""
    g.write_pcap(path, [p for seq in range(pairs)
                        for p in echo_pair(client, server, ident, seq, t0_ns + seq * gap_ns)])
    return path
