"""Network layer: IPv4 and IPv6 headers, and fragment reassembly.

`parse_ipv4` / `parse_ipv6` return plain tuples (this runs per packet):
(src, dst, protocol, payload, fragment) where addresses are packed bytes and
`fragment` is None or (identification, offset_bytes, more_fragments).
A reason string ("ip.*") is returned instead when the header is unusable.

`Defragmenter` rebuilds fragmented datagrams (RFC 791, RFC 8200 §4.5) with
bounded memory: at most `max_datagrams` partial datagrams, each at most
`max_datagram_bytes`, each forgotten `timeout_s` of packet time after its
first fragment. Overlapping fragments are a known evasion technique (RFC 5722
forbids them for IPv6): the datagram is dropped and counted, not guessed at.
"""
from __future__ import annotations

from collections import OrderedDict
import socket
import struct
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = ["Defragmenter", "ip_text", "parse_ipv4", "parse_ipv6"]

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_FRAG6 = struct.Struct("!BBHI")
_EXT_HEADERS = frozenset({0, 43, 60, 135, 139, 140})   # hop-by-hop, routing, dst opts, mobility, HIP, shim6
MAX_EXT_HEADERS = 8     # a longer chain is an attack on parsers, not traffic


@lru_cache(maxsize=65536)   # the same addresses come back packet after packet
def ip_text(packed: bytes) -> str:
    """An address as text, from its 4 or 16 packed bytes."""
    return socket.inet_ntop(socket.AF_INET6 if len(packed) == 16 else socket.AF_INET, packed)


@lru_cache(maxsize=16384)   # a transaction's two addresses, looked up in flow and MAC tables
def ip_packed(text: str) -> bytes:
    """An address's 4 or 16 packed bytes, from its text (OSError if it is not one)."""
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def parse_ipv4(data: bytes, offset: int) -> tuple | str:
    if len(data) < offset + 20:
        return "ip.truncated"
    (ver_ihl, _tos, total_len, ident, flags_frag, _ttl, proto, _csum, src, dst) = \
        _IPV4.unpack_from(data, offset)
    if ver_ihl >> 4 != 4:
        return "ip.bad_version"
    header_len = (ver_ihl & 0x0F) * 4
    if header_len < 20 or total_len < header_len:
        return "ip.bad_header_length"
    end = offset + total_len
    if end > len(data):
        end = len(data)     # cut by the snap length: decode what was captured
    payload = data[offset + header_len:end]
    frag_offset = (flags_frag & 0x1FFF) * 8
    more = bool(flags_frag & 0x2000)
    fragment = (ident, frag_offset, more) if (more or frag_offset) else None
    return src, dst, proto, payload, fragment


def parse_ipv6(data: bytes, offset: int) -> tuple | str:
    if len(data) < offset + 40:
        return "ip.truncated"
    vtf, payload_len, next_header, _hop, src, dst = _IPV6.unpack_from(data, offset)
    if vtf >> 28 != 6:
        return "ip.bad_version"
    pos = offset + 40
    end = min(pos + payload_len, len(data)) if payload_len else len(data)  # 0: jumbogram
    fragment = None
    for _ in range(MAX_EXT_HEADERS):
        if next_header in _EXT_HEADERS:
            if pos + 8 > end:
                return "ip.truncated"
            following, ext_len = data[pos], data[pos + 1]
            pos += (ext_len + 1) * 8
            next_header = following
        elif next_header == 44:     # Fragment header
            if pos + 8 > end:
                return "ip.truncated"
            following, _res, off_flags, ident = _FRAG6.unpack_from(data, pos)
            fragment = (ident, off_flags & 0xFFF8, bool(off_flags & 1))
            pos += 8
            next_header = following
        elif next_header == 51:     # AH: length in 4-byte words, minus 2
            if pos + 8 > end:
                return "ip.truncated"
            following, ah_len = data[pos], data[pos + 1]
            pos += (ah_len + 2) * 4
            next_header = following
        else:
            break
    else:
        return "ip.too_many_extension_headers"
    if pos > end:
        return "ip.truncated"
    if fragment is not None and fragment[1] == 0 and not fragment[2]:
        fragment = None             # an atomic fragment (RFC 6946) is a whole datagram
    return src, dst, next_header, data[pos:end], fragment


@dataclass(slots=True)
class _Partial:
    """The fragments of one datagram received so far."""

    first_ts: float
    pieces: dict[int, bytes] = field(default_factory=dict)   # offset -> bytes
    received: int = 0
    total: int | None = None        # known once the last fragment arrived


@dataclass(slots=True)
class DefragStats:
    """Defragmentation counters."""

    fragments: int = 0
    reassembled: int = 0
    timed_out: int = 0
    evicted: int = 0            # max_datagrams reached: the oldest partial is dropped
    too_large: int = 0
    overlapping: int = 0


class Defragmenter:
    """Reassembles IP datagrams from fragments, keyed per capture source."""

    def __init__(self, max_datagrams: int = 4096, max_datagram_bytes: int = 65535 + 8,
                 timeout_s: float = 30.0) -> None:
        self.max_datagrams = max_datagrams
        self.max_datagram_bytes = max_datagram_bytes
        self.timeout_s = timeout_s
        self.partials: OrderedDict[tuple, _Partial] = OrderedDict()
        self.stats = DefragStats()

    def add(self, key: tuple, ts: float, offset: int, more: bool, data: bytes) -> bytes | None:
        """Add one fragment; return the whole payload once every byte is here.

        `key` is (source, version, src, dst, protocol, identification).
        """
        stats = self.stats
        stats.fragments += 1
        partial = self.partials.get(key)
        if partial is None:
            if len(self.partials) >= self.max_datagrams:
                self.partials.popitem(last=False)
                stats.evicted += 1
            partial = self.partials[key] = _Partial(ts)
        end = offset + len(data)
        if end > self.max_datagram_bytes:
            del self.partials[key]
            stats.too_large += 1
            return None
        if not more:
            if partial.total is not None and partial.total != end:
                del self.partials[key]
                stats.overlapping += 1
                return None
            partial.total = end
        if offset in partial.pieces:
            if partial.pieces[offset] != data:
                del self.partials[key]
                stats.overlapping += 1
            return None         # an exact duplicate (retransmission) adds nothing
        for start, piece in partial.pieces.items():
            if start < end and offset < start + len(piece):
                del self.partials[key]
                stats.overlapping += 1
                return None
        partial.pieces[offset] = data
        partial.received += len(data)
        if partial.total is None or partial.received != partial.total:
            return None
        del self.partials[key]
        stats.reassembled += 1
        return b"".join(partial.pieces[o] for o in sorted(partial.pieces))

    def expire(self, now: float) -> None:
        deadline = now - self.timeout_s
        while self.partials:
            key = next(iter(self.partials))
            if self.partials[key].first_ts > deadline:
                break
            del self.partials[key]
            self.stats.timed_out += 1
