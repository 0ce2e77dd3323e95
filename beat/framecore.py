"""The link layer and the IP header of a frame in one call: the per-packet floor.

`locate_ip(linktype, data)` is `wirebeat.link.locate_network` followed, for an
IPv4 or IPv6 ethertype, by `wirebeat.ip.parse_ipv4` / `parse_ipv6` at the
located offset. It returns what they return, in one tuple:

- a reason string ("link.*") when the link layer rejects the frame;
- else (ethertype, network offset, VLAN ids, parsed), where parsed is None for
  an ethertype that is not IPv4/IPv6 (ARP, MPLS/PPPoE shims the engine peels
  itself), or parse_ipv4/parse_ipv6's result: (src, dst, protocol, payload,
  fragment), or an "ip.*" reason string.

The C accelerator (wirebeat._speedups.locate_ip) does this without a Python
call per layer; `locate_ip_python` is the reference it is tested against
(tests/beat/test_framecore.py).
"""
from __future__ import annotations

from wirebeat.accel import speedups
from wirebeat.ip import parse_ipv4, parse_ipv6
from wirebeat.link import ETHERTYPE_IPV4, ETHERTYPE_IPV6, locate_network

__all__ = ["locate_ip", "locate_ip_python"]


def locate_ip_python(linktype: int, data: bytes) -> tuple | str:
    located = locate_network(linktype, data)
    if located.__class__ is str:
        return located
    ethertype, offset, vlans = located
    if ethertype == ETHERTYPE_IPV4:
        return ethertype, offset, vlans, parse_ipv4(data, offset)
    if ethertype == ETHERTYPE_IPV6:
        return ethertype, offset, vlans, parse_ipv6(data, offset)
    return ethertype, offset, vlans, None


locate_ip = speedups.locate_ip if speedups is not None else locate_ip_python
