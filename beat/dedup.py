"""Exact duplicate packets: detected, counted and dropped before flows, reassembly and decoders.

Captures taken on Linux's `any` device (a packet forwarded between two
interfaces, or sent over a bridge, is captured once per interface), from a
SPAN port that mirrors both directions of a link between two monitored hosts,
or merged from several taps, carry the same packet two or more times, a few
microseconds to milliseconds apart. Decoded twice, a DNS answer or an HTTP
response would make a second, phantom transaction (or an "unmatched response"
error), and flows would count its packets and bytes twice.

**What is a duplicate.** A packet of the same capture source, within `window`
seconds (either side: merged captures go back in time) of an earlier one, with
the same VLAN tags (as flows: another VLAN may be another network with the
same addresses), the same IP addresses, IP protocol, IPv4 identification and fragment fields
(the IPv6 fragment header's too), and the same bytes above IP (transport header
and payload). Ignored, because they are what differs between copies of one
packet seen at different points: the link layer (an `any` capture's Linux
cooked header against a SPAN port's Ethernet header, MAC addresses rewritten by a
router), the TTL / hop limit and, with it, the IPv4 header
checksum, DSCP/ECN, IPv4 options and IPv6 extension headers other than the
fragment header.

A real retransmission is not a duplicate in IPv4: the sender gives every IP
packet a new identification. In IPv6 (no identification), an identical TCP
retransmission without the timestamp option or a UDP retry within the window
is taken as a duplicate; the default window (100 ms) is below TCP's minimum
retransmission timeout on Linux (200 ms), SIP's T1 (500 ms) and DNS resolvers'
retry intervals (one second or more), and far above the spacing of `any` and
SPAN copies. TCP reassembly ignores retransmitted bytes anyway, so such a
packet changes no transaction either way; it is only absent from flow counts.

**How.** One table for all sources maps a 64-bit hash of the fields above
(and the source's name) to the time it was first seen, in insertion order;
past `max_packets` entries the oldest is forgotten. A hash match is taken as a
duplicate without comparing the bytes: two different packets collide with a
probability of about max_packets / 2**64.

Counters: `dedup.dropped` (duplicates dropped), `dedup.evicted_in_window`
(entries forgotten for the cap while still inside the window: the cap is too
small for the traffic's packet rate, and duplicates may get through).

Per-packet documents (`wirebeat.packets.enabled`) are made before this check
and keep duplicates, like tshark's frame list.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from wirebeat.accel import speedups

__all__ = ["DEFAULT_MAX_PACKETS", "DEFAULT_WINDOW_S", "Dedup", "from_config"]

DEFAULT_WINDOW_S = 0.1
DEFAULT_MAX_PACKETS = 8192


class Dedup:
    """The recently seen packets of every source, and what was dropped."""

    __slots__ = ("window", "max_packets", "seen", "dropped", "evicted_in_window")

    def __init__(self, window: float = DEFAULT_WINDOW_S, max_packets: int = DEFAULT_MAX_PACKETS) -> None:
        self.window = window
        self.max_packets = max(1, max_packets)
        # hash -> first time seen, oldest first. An OrderedDict: taking the oldest out of
        # a plain dict (next(iter(d))) scans the slots already deleted at its front, which
        # cost about 7 microseconds per packet once the table was full (0.6 with this).
        self.seen: OrderedDict[int, float] = OrderedDict()
        self.dropped = 0
        self.evicted_in_window = 0

    def duplicate(self, source: str, ts: float, vlans: Any, data: bytes, offset: int,
                  parsed: tuple) -> bool:
        """Whether this IP packet (`parsed` from wirebeat.ip at `offset` of `data`) was just seen.

        A packet that is not a duplicate is remembered.
        """
        src, dst, proto, payload, fragment = parsed
        ident = data[offset + 4:offset + 8] if len(src) == 4 else b""   # IPv4 id, flags, offset
        key = hash((source, vlans, src, dst, proto, ident, fragment, payload))
        seen = self.seen
        first = seen.get(key)
        if first is not None:
            if -self.window <= ts - first <= self.window:
                self.dropped += 1
                return True
            del seen[key]                   # an old packet seen again: a repeat, not a copy
        seen[key] = ts
        if len(seen) > self.max_packets:
            if ts - seen.popitem(last=False)[1] <= self.window:
                self.evicted_in_window += 1
        return False

    def counters(self) -> dict[str, int]:
        return {"dedup.dropped": self.dropped, "dedup.evicted_in_window": self.evicted_in_window}


def from_config(config: Any) -> Dedup | None:
    """The engine's deduplicator, or None with `wirebeat.dedup.enabled: false`.

    With the C accelerator, its `Dedup` (beat/_speedups.c): the same decisions and
    counters, without a Python call, a tuple and an OrderedDict operation per
    packet (tests/beat/test_framecore.py compares the two). Its key hashes the same
    fields, the bytes ones (addresses, identification, payload) with a keyed
    multiply hash 16 bytes at a time instead of SipHash (about 2,100 instructions
    per packet): the two classes never
    share a table, so their keys need not be equal, only as unlikely to collide."""
    if not config["wirebeat.dedup.enabled"]:
        return None
    make = speedups.Dedup if speedups is not None else Dedup
    return make(config["wirebeat.dedup.window"], config["wirebeat.dedup.max_packets"])
