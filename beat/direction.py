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
with `ipaddress` and kept in a dict keyed by its packed bytes (at most
ADDRESS_CACHE_SIZE addresses; a full cache starts over, counted as
`direction.address_cache_resets`). Flows ask with the packed addresses of
their key (`of_packed`), transactions with text (`of`, an LRU of pairs).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from functools import lru_cache

from wirebeat.processors.conditions import NAMED_NETWORKS, IPAddress, network_test, parse_ip

__all__ = ["ADDRESS_CACHE_SIZE", "CACHE_SIZE", "NetworkDirection"]

CACHE_SIZE = 65536          # address pairs whose direction is remembered (least recently used go)
ADDRESS_CACHE_SIZE = 65536  # packed addresses whose kind is remembered (full: starts over)
_HOST, _INTERNAL = 1, 2     # an address's kind: bits

_LOOPBACK = NAMED_NETWORKS["loopback"]
_LINK_LOCAL_UNICAST = NAMED_NETWORKS["link_local_unicast"]
_LINK_LOCAL_MULTICAST = NAMED_NETWORKS["link_local_multicast"]


def _host_side(ip: IPAddress) -> bool:
    return _LOOPBACK(ip) or _LINK_LOCAL_UNICAST(ip) or _LINK_LOCAL_MULTICAST(ip)


class NetworkDirection:
    """Callable (source IP, destination IP) -> direction; ConfigError on a bad range."""

    def __init__(self, internal_networks: Sequence[str],
                 key: str = "wirebeat.interfaces.internal_networks") -> None:
        self.tests: list[Callable[[IPAddress], bool]] = [
            network_test(item, f"{key}[{i}]") for i, item in enumerate(internal_networks)]
        self.of = lru_cache(maxsize=CACHE_SIZE)(self._compute)
        self.kinds: dict[bytes, int] = {}       # packed address -> _HOST | _INTERNAL bits
        self.address_cache_resets = 0

    def counters(self) -> dict[str, int]:
        return {"direction.address_cache_resets": self.address_cache_resets}

    def _kind(self, packed: bytes) -> int:
        kind = self.kinds.get(packed)
        if kind is None:
            ip = ipaddress.ip_address(packed)
            kind = (_HOST if _host_side(ip) else 0) | (_INTERNAL if self._internal(ip) else 0)
            if len(self.kinds) >= ADDRESS_CACHE_SIZE:
                self.kinds.clear()
                self.address_cache_resets += 1
            self.kinds[packed] = kind
        return kind

    def of_packed(self, source: bytes, destination: bytes) -> str:
        """The direction from packed (4- or 16-byte) addresses, as `of` gives for their text."""
        destination_kind = self._kind(destination)
        if destination_kind & _HOST:
            return "ingress"
        source_kind = self._kind(source)
        if source_kind & _HOST:
            return "egress"
        if not self.tests:
            return "unknown"
        if source_kind & _INTERNAL:
            return "internal" if destination_kind & _INTERNAL else "outbound"
        return "inbound" if destination_kind & _INTERNAL else "external"

    def __call__(self, source_ip: str, destination_ip: str) -> str:
        return self.of(source_ip, destination_ip)

    def _internal(self, ip: IPAddress) -> bool:
        return any(test(ip) for test in self.tests)

    def _compute(self, source_ip: str, destination_ip: str) -> str:
        source, destination = parse_ip(source_ip), parse_ip(destination_ip)
        if source is None or destination is None:
            return "unknown"
        return self.of_packed(source.packed, destination.packed)

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
