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
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from wirebeat.processors.conditions import NAMED_NETWORKS, IPAddress, network_test, parse_ip

__all__ = ["CACHE_SIZE", "NetworkDirection"]

CACHE_SIZE = 65536          # address pairs whose direction is remembered (least recently used go)

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

    def __call__(self, source_ip: str, destination_ip: str) -> str:
        return self.of(source_ip, destination_ip)

    def _internal(self, ip: IPAddress) -> bool:
        return any(test(ip) for test in self.tests)

    def _compute(self, source_ip: str, destination_ip: str) -> str:
        source, destination = parse_ip(source_ip), parse_ip(destination_ip)
        if source is None or destination is None:
            return "unknown"
        if _host_side(destination):
            return "ingress"
        if _host_side(source):
            return "egress"
        if not self.tests:
            return "unknown"
        source_in, destination_in = self._internal(source), self._internal(destination)
        if source_in:
            return "internal" if destination_in else "outbound"
        return "inbound" if destination_in else "external"

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
