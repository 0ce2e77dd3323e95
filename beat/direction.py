"""`network.direction` of transactions and flows, as packetbeat 8 computes it.

1. Host-based: a destination that is loopback or link-local (unicast or
   multicast) makes the event `ingress`; else such a source makes it `egress`.
   Packetbeat also counts the addresses of the host it runs on; wirebeat mostly
   decodes other hosts' traffic (a collector's clients, files), so it does not,
   and the same capture gives the same documents on every machine.
2. Else, with `wirebeat.interfaces.internal_networks` (packetbeat's
   `packetbeat.interfaces.internal_networks`; CIDRs and the named ranges of
   the processors' `network` condition): both ends internal `internal`, only
   the source `outbound`, only the destination `inbound`, neither `external`.
   With no internal networks: `unknown`.

The default, `[private]`, is what the packetbeat.yml Elastic ships sets.

Cost: what an address is (host-side, internal) is worked out once per address
(text read with inet_pton, classified with `ipaddress`) and kept in two dicts, one keyed by its packed bytes (flows ask
with the packed addresses of their key, `of_packed`) and one by its text
(transactions ask with text, `of`). Each holds at most ADDRESS_CACHE_SIZE
addresses; a full one starts over, counted as `direction.address_cache_resets`.
A direction is then two dict lookups: on the transaction-dense benchmark most
address pairs are new, and an LRU of pairs, which this replaced, missed on
four transactions in five. Transaction documents written by wirebeat._doctext
(beat/document.py) and flow reports written by wirebeat._flowcore skip both:
with CIDR-only networks (`packed_ranges`) their direction is worked out in C
from the packed addresses, with no cache (beat/_direction.h;
tests/beat/test_doctext_c.py and test_flowcore.py hold it to `of` / `of_packed`).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from socket import AF_INET, AF_INET6, inet_pton

from wirebeat.processors.conditions import NAMED_NETWORKS, IPAddress, network_test, parse_ip

__all__ = ["ADDRESS_CACHE_SIZE", "NetworkDirection"]

ADDRESS_CACHE_SIZE = 65536  # addresses whose kind is remembered, per dict (full: starts over)
_HOST, _INTERNAL, _INVALID = 1, 2, 4    # an address's kind: bits (_INVALID: text that is no address)

_LOOPBACK = NAMED_NETWORKS["loopback"]
_LINK_LOCAL_UNICAST = NAMED_NETWORKS["link_local_unicast"]
_LINK_LOCAL_MULTICAST = NAMED_NETWORKS["link_local_multicast"]


def _packed(text: str) -> bytes | None:
    """The address `text` spells, packed; None if it is none. inet_pton (a tenth of
    ipaddress's time) reads the forms ipaddress reads, but not an IPv6 scope ("%eth0")."""
    try:
        return inet_pton(AF_INET6 if ":" in text else AF_INET, text)
    except (OSError, ValueError):       # (ValueError: an embedded NUL)
        ip = parse_ip(text)
        return None if ip is None else ip.packed


_HOST_TESTS = (_LOOPBACK, _LINK_LOCAL_UNICAST, _LINK_LOCAL_MULTICAST)


def _host_side(ip: IPAddress) -> bool:
    return _LOOPBACK(ip) or _LINK_LOCAL_UNICAST(ip) or _LINK_LOCAL_MULTICAST(ip)


class NetworkDirection:
    """Callable (source IP, destination IP) -> direction; ConfigError on a bad range."""

    def __init__(self, internal_networks: Sequence[str],
                 key: str = "wirebeat.interfaces.internal_networks") -> None:
        self.tests: list[Callable[[IPAddress], bool]] = [
            network_test(item, f"{key}[{i}]") for i, item in enumerate(internal_networks)]
        self.kinds: dict[bytes, int] = {}       # packed address -> _HOST | _INTERNAL bits
        # When every test is a list of CIDRs (`_in`: the named ranges but unicast/public, and
        # CIDRs), a packed address is classified from its integer against those masks, without
        # an ipaddress object: per packed length (4, 16), the host-side and the internal ranges.
        self.int_ranges: dict[int, tuple[tuple, tuple]] = {}
        if all(hasattr(test, "ranges") for test in (*_HOST_TESTS, *self.tests)):
            self.int_ranges = {size: (tuple(r for test in _HOST_TESTS for r in test.ranges[size]),
                                      tuple(r for test in self.tests for r in test.ranges[size]))
                               for size in (4, 16)}
        # The same ranges as bytes, for wirebeat._doctext.assemble and wirebeat._flowcore's
        # reports (beat/_direction.h), which work out transactions' and flows' direction from
        # the packed addresses (no cache, no call per document):
        # (IPv4 host-side, IPv4 internal, IPv6 host-side, IPv6 internal, whether there are
        # internal networks), each range a mask and a network, big-endian. None without int_ranges.
        self.packed_ranges: tuple[bytes, bytes, bytes, bytes, bool] | None = None
        if self.int_ranges:
            self.packed_ranges = (*(b"".join(mask.to_bytes(size, "big") + network.to_bytes(size, "big")
                                             for mask, network in self.int_ranges[size][side])
                                    for size in (4, 16) for side in (0, 1)), bool(self.tests))
        self.text_kinds: dict[str, int] = {}    # address text -> the same bits, or _INVALID
        self.address_cache_resets = 0
        # _verdict of every (source kind, destination kind), at [source << 3 | destination]:
        # `of` runs once per transaction, and an index costs less than the call.
        self.verdicts = tuple(self._verdict(kinds >> 3, kinds & 7) for kinds in range(64))

    def counters(self) -> dict[str, int]:
        return {"direction.address_cache_resets": self.address_cache_resets}

    def _kind(self, packed: bytes) -> int:
        kind = self.kinds.get(packed)
        if kind is None:
            ranges = self.int_ranges.get(len(packed))
            if ranges is None:
                kind = self._classify(ipaddress.ip_address(packed))
            else:       # what _classify answers, from the address's integer
                value = int.from_bytes(packed, "big")
                kind = 0
                for mask, network in ranges[0]:
                    if value & mask == network:
                        kind = _HOST
                        break
                for mask, network in ranges[1]:
                    if value & mask == network:
                        kind |= _INTERNAL
                        break
            if len(self.kinds) >= ADDRESS_CACHE_SIZE:
                self.kinds.clear()
                self.address_cache_resets += 1
            self.kinds[packed] = kind
        return kind

    def of_packed(self, source: bytes, destination: bytes) -> str:
        """The direction from packed (4- or 16-byte) addresses, as `of` gives for their text."""
        return self._verdict(self._kind(source), self._kind(destination))

    def of(self, source_ip: str, destination_ip: str) -> str:
        """The direction from address text ("unknown" if either is no address)."""
        text_kinds = self.text_kinds
        destination_kind = text_kinds.get(destination_ip)
        if destination_kind is None:
            destination_kind = self._text_kind(destination_ip)
        source_kind = text_kinds.get(source_ip)
        if source_kind is None:
            source_kind = self._text_kind(source_ip)
        return self.verdicts[source_kind << 3 | destination_kind]

    __call__ = of

    def _verdict(self, source_kind: int, destination_kind: int) -> str:
        # beat/_flowcore.c's direction_of gives flows this verdict from `kinds` and `tests`
        # when there are no packed_ranges (tests/beat/test_flowcore.py holds the two equal):
        # change both together.
        if (source_kind | destination_kind) & _INVALID:
            return "unknown"
        if destination_kind & _HOST:
            return "ingress"
        if source_kind & _HOST:
            return "egress"
        if not self.tests:
            return "unknown"
        if source_kind & _INTERNAL:
            return "internal" if destination_kind & _INTERNAL else "outbound"
        return "inbound" if destination_kind & _INTERNAL else "external"

    def _text_kind(self, text: str) -> int:
        packed = _packed(text)  # (the packed dict is shared with the flows: classifying is the dear part)
        kind = _INVALID if packed is None else self._kind(packed)
        if len(self.text_kinds) >= ADDRESS_CACHE_SIZE:
            self.text_kinds.clear()
            self.address_cache_resets += 1
        self.text_kinds[text] = kind
        return kind

    def _classify(self, ip: IPAddress) -> int:
        return (_HOST if _host_side(ip) else 0) | (_INTERNAL if any(test(ip) for test in self.tests) else 0)

    def annotate(self, doc: dict) -> None:
        """Set network.direction of a document from its source.ip and destination.ip
        (the inner addresses when tunnelled: [outer, inner])."""
        source, destination = doc.get("source", {}).get("ip"), doc.get("destination", {}).get("ip")
        if isinstance(source, list):
            source = source[-1]
        if isinstance(destination, list):
            destination = destination[-1]
        if isinstance(source, str) and isinstance(destination, str):
            doc.setdefault("network", {})["direction"] = self.of(source, destination)
