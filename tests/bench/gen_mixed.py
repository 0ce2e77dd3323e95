"""Generate a mixed-traffic Ethernet pcap for the benchmark, with its ground truth.

    python tests/bench/gen_mixed.py OUT.pcap --packets 500000 [--seed 1] [--counts-json F]

Traffic (shares are of packets, approximately):
- ~40% ICMP echo request/reply pairs, IPv4 and IPv6;
- ~30% UDP: DNS queries and answers on port 53 (A over IPv4, AAAA over IPv6),
  and single datagrams between high ports that no decoder claims;
- ~25% TCP: short HTTP/1.1 connections on port 80 (handshake, one request,
  one response, FIN both ways: 8 segments), IPv4 and IPv6;
- ~5% special: 802.1Q-tagged ICMP echo pairs, QinQ-tagged DNS pairs, and IPv4
  ICMP echo pairs of 3000 bytes, each message cut into 3 fragments.

Up to 32 conversations are open at once and their packets interleave; every
conversation is complete (the file ends with single UDP datagrams to hit the
packet count exactly), so the printed counts are exact ground truth: e.g. ICMP
documents expected = all echo pairs. Identifiers (ICMP id/seq, DNS id and client
port, TCP client port) come from counters so no two concurrent transactions
collide. Timestamps start at 2023-11-14T22:13:20Z and grow by random gaps
(exponential, mean 20 us, at least 1 us, so they strictly increase even at the
pcap's microsecond resolution). All checksums are correct.

Packets are built one at a time and streamed to disk: memory does not grow
with --packets. Output is deterministic for a given seed.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # tests/, for pcapgen
import pcapgen as pg  # noqa: E402

START_NS = 1_700_000_000 * 10**9
MEAN_GAP_NS = 20_000
MAX_OPEN_CONVERSATIONS = 32

Frames = Iterator[bytes]


class Generator:
    """Builds conversations (as frame iterators) and counts what it built."""

    def __init__(self, seed: int, mix: str = "mixed") -> None:
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.serial = 0                    # source of unique ids and ports
        # Packed once: building packets from bytes skips address parsing.
        self.clients4 = [ipaddress.IPv4Address(0x0A000000 + i).packed for i in range(1, 4097)]
        self.servers4 = [ipaddress.IPv4Address(0xC6336400 + i).packed for i in range(1, 65)]
        self.clients6 = [ipaddress.IPv6Address((0x20010DB8_0001 << 80) + i).packed
                         for i in range(1, 1025)]
        self.servers6 = [ipaddress.IPv6Address((0x20010DB8_00FF << 80) + i).packed
                         for i in range(1, 65)]
        self.client_macs = [bytes([2, 0xC1, 0, 0, i >> 8, i & 0xFF]) for i in range(256)]
        self.router_mac = bytes([2, 0xEE, 0, 0, 0, 1])
        # (builder, packets per conversation, share of packets)
        self.kinds: list[tuple[Callable[[], Frames], int, float]] = [
            (self.icmp4_echo, 2, 0.25), (self.icmp6_echo, 2, 0.15),
            (self.dns4, 2, 0.16), (self.dns6, 2, 0.04), (self.udp_other, 1, 0.10),
            (self.http4, 8, 0.20), (self.http6, 8, 0.05),
            (self.vlan_icmp4_echo, 2, 0.015), (self.qinq_dns4, 2, 0.01),
            (self.fragmented_icmp4_echo, 6, 0.025),
        ]
        if mix == "http":
            # The HTTP-heavy capture of the benchmark: web traffic only.
            self.kinds = [(self.http4, 8, 0.8), (self.http6, 8, 0.2)]
        # A conversation of n packets is started with weight share/n so that
        # each kind ends up with its share of packets, not of conversations.
        self.kind_weights = [share / length for _b, length, share in self.kinds]

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def start_conversation(self, budget: int) -> tuple[int, Frames]:
        """A random new conversation no longer than `budget` packets."""
        builder, length, _share = self.rng.choices(self.kinds, self.kind_weights)[0]
        if length > budget:                # near the end: fill up with single datagrams
            builder, length = self.udp_other, 1
        return length, builder()

    # -- framing --------------------------------------------------------------

    def pair4(self) -> tuple[bytes, bytes, bytes]:
        return (self.rng.choice(self.clients4), self.rng.choice(self.servers4),
                self.rng.choice(self.client_macs))

    def pair6(self) -> tuple[bytes, bytes, bytes]:
        return (self.rng.choice(self.clients6), self.rng.choice(self.servers6),
                self.rng.choice(self.client_macs))

    def to_server(self, client_mac: bytes, ip_packet: bytes,
                  vlans: list[pg.VLANTag] | None = None) -> bytes:
        return pg.ethernet(ip_packet, src=client_mac, dst=self.router_mac, vlans=vlans or ())

    def to_client(self, client_mac: bytes, ip_packet: bytes,
                  vlans: list[pg.VLANTag] | None = None) -> bytes:
        return pg.ethernet(ip_packet, src=self.router_mac, dst=client_mac, vlans=vlans or ())

    # -- ICMP -----------------------------------------------------------------

    def echo_ids(self) -> tuple[int, int]:
        serial = self.next_serial()
        return (serial >> 16) & 0xFFFF, serial & 0xFFFF

    def ping_data(self, size: int = 56) -> bytes:
        # Like iputils ping: 8-byte timestamp, then an incrementing byte pattern.
        return struct.pack("!II", 1_700_000_000, self.serial & 0xFFFFF) + bytes(
            i & 0xFF for i in range(8, size))

    def icmp4_echo(self, vlans: list[pg.VLANTag] | None = None) -> Frames:
        client, server, client_mac = self.pair4()
        ident, seq = self.echo_ids()
        data = self.ping_data()
        self.counts["icmp4_vlan_echo_pairs" if vlans else "icmp4_echo_pairs"] += 1
        yield self.to_server(client_mac, pg.ipv4(client, server, pg.IPPROTO_ICMP,
                                                 pg.icmp_echo(ident, seq, data),
                                                 ident=seq, dont_fragment=True), vlans)
        yield self.to_client(client_mac, pg.ipv4(server, client, pg.IPPROTO_ICMP,
                                                 pg.icmp_echo(ident, seq, data, reply=True),
                                                 ident=seq ^ 0x5555), vlans)

    def vlan_icmp4_echo(self) -> Frames:
        return self.icmp4_echo(vlans=[100 + self.rng.randrange(10)])

    def icmp6_echo(self) -> Frames:
        client, server, client_mac = self.pair6()
        ident, seq = self.echo_ids()
        data = self.ping_data()
        self.counts["icmp6_echo_pairs"] += 1
        yield self.to_server(client_mac, pg.ipv6(client, server, pg.IPPROTO_ICMPV6,
                                                 pg.icmpv6_echo(client, server, ident, seq, data)))
        yield self.to_client(client_mac, pg.ipv6(
            server, client, pg.IPPROTO_ICMPV6,
            pg.icmpv6_echo(server, client, ident, seq, data, reply=True)))

    def fragmented_icmp4_echo(self) -> Frames:
        # ping -s 2992: 3000 bytes of ICMP, so 3 fragments at a 1500-byte MTU.
        client, server, client_mac = self.pair4()
        ident, seq = self.echo_ids()
        data = self.ping_data(2992)
        self.counts["icmp4_fragmented_echo_pairs"] += 1
        request = pg.ipv4(client, server, pg.IPPROTO_ICMP, pg.icmp_echo(ident, seq, data),
                          ident=seq)
        reply = pg.ipv4(server, client, pg.IPPROTO_ICMP,
                        pg.icmp_echo(ident, seq, data, reply=True), ident=seq ^ 0x5555)
        for fragment in pg.fragment_ipv4(request, 1480):
            self.counts["ipv4_fragments"] += 1
            yield self.to_server(client_mac, fragment)
        for fragment in pg.fragment_ipv4(reply, 1480):
            self.counts["ipv4_fragments"] += 1
            yield self.to_client(client_mac, fragment)

    # -- UDP ------------------------------------------------------------------

    def dns_messages(self, serial: int, qtype: int, answer: bytes) -> tuple[bytes, bytes]:
        """A DNS query (RD) and its answer (one record, name by pointer to the question)."""
        query_id = serial & 0xFFFF
        name = b"".join(bytes([len(label)]) + label for label in (
            b"host%d" % (serial % 5000), b"example", b"com")) + b"\0"
        question = name + struct.pack("!HH", qtype, 1)
        query = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question
        record = struct.pack("!HHHIH", 0xC00C, qtype, 1, 300, len(answer)) + answer
        response = struct.pack("!HHHHHH", query_id, 0x8180, 1, 1, 0, 0) + question + record
        return query, response

    def dns4(self, vlans: list[pg.VLANTag] | None = None) -> Frames:
        client, server, client_mac = self.pair4()
        serial = self.next_serial()
        port = 1024 + serial % 64000
        query, response = self.dns_messages(serial, 1, struct.pack("!I", 0xCB007100 + serial % 250))
        self.counts["dns4_qinq_pairs" if vlans else "dns4_pairs"] += 1
        yield self.to_server(client_mac, pg.ipv4(client, server, pg.IPPROTO_UDP,
                                                 pg.udp(client, server, port, 53, query),
                                                 ident=serial & 0xFFFF), vlans)
        yield self.to_client(client_mac, pg.ipv4(server, client, pg.IPPROTO_UDP,
                                                 pg.udp(server, client, 53, port, response),
                                                 ident=(serial ^ 0x5555) & 0xFFFF), vlans)

    def qinq_dns4(self) -> Frames:
        return self.dns4(vlans=pg.qinq(300, 30 + self.rng.randrange(4)))

    def dns6(self) -> Frames:
        client, server, client_mac = self.pair6()
        serial = self.next_serial()
        port = 1024 + serial % 64000
        query, response = self.dns_messages(
            serial, 28, b"\x20\x01\x0d\xb8" + bytes(8) + struct.pack("!I", serial))
        self.counts["dns6_pairs"] += 1
        yield self.to_server(client_mac, pg.ipv6(client, server, pg.IPPROTO_UDP,
                                                 pg.udp(client, server, port, 53, query)))
        yield self.to_client(client_mac, pg.ipv6(server, client, pg.IPPROTO_UDP,
                                                 pg.udp(server, client, 53, port, response)))

    def udp_other(self) -> Frames:
        client, server, client_mac = self.pair4()
        serial = self.next_serial()
        payload = b"wirebeat-bench %d " % serial + bytes(self.rng.randrange(0, 200))
        self.counts["udp_other_datagrams"] += 1
        yield self.to_server(client_mac, pg.ipv4(
            client, server, pg.IPPROTO_UDP,
            pg.udp(client, server, 20000 + serial % 10000, 30000 + self.rng.randrange(1000),
                   payload), ident=serial & 0xFFFF))

    # -- TCP ------------------------------------------------------------------

    def http4(self) -> Frames:
        client, server, client_mac = self.pair4()
        self.counts["http4_connections"] += 1
        return self.http_connection(client, server, client_mac, pg.ipv4)

    def http6(self) -> Frames:
        client, server, client_mac = self.pair6()
        self.counts["http6_connections"] += 1
        return self.http_connection(client, server, client_mac, pg.ipv6)

    def http_connection(self, client: bytes, server: bytes, client_mac: bytes,
                        ip: Callable[..., bytes]) -> Frames:
        """One HTTP/1.1 request and response on a fresh connection: 8 segments."""
        serial = self.next_serial()
        port = 32768 + serial % 28000
        body = b"x" * self.rng.randrange(100, 1200)
        request = (b"GET /item/%d HTTP/1.1\r\nHost: www.example.com\r\n"
                   b"User-Agent: wirebeat-bench\r\nConnection: close\r\n\r\n" % serial)
        response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
        c_isn = (serial * 2654435761) & 0xFFFFFFFF       # spread ISNs over the space
        s_isn = (c_isn ^ 0xA5A5A5A5)
        c_seq, s_seq = c_isn + 1, s_isn + 1

        def out(payload: bytes, seq: int, ack: int, flags: int) -> bytes:
            segment = pg.tcp(client, server, port, 80, payload, seq=seq, ack=ack, flags=flags)
            return self.to_server(client_mac, ip(client, server, pg.IPPROTO_TCP, segment))

        def back(payload: bytes, seq: int, ack: int, flags: int) -> bytes:
            segment = pg.tcp(server, client, 80, port, payload, seq=seq, ack=ack, flags=flags)
            return self.to_client(client_mac, ip(server, client, pg.IPPROTO_TCP, segment))

        yield out(b"", c_isn, 0, pg.SYN)
        yield back(b"", s_isn, c_seq, pg.SYN | pg.ACK)
        yield out(b"", c_seq, s_seq, pg.ACK)
        yield out(request, c_seq, s_seq, pg.PSH | pg.ACK)
        c_seq += len(request)
        yield back(response, s_seq, c_seq, pg.PSH | pg.ACK)
        s_seq += len(response)
        yield out(b"", c_seq, s_seq, pg.FIN | pg.ACK)
        yield back(b"", s_seq, c_seq + 1, pg.FIN | pg.ACK)
        yield out(b"", c_seq + 1, s_seq + 1, pg.ACK)


def interleave(gen: Generator, packets: int, max_open: int,
               mean_gap_ns: float) -> Iterator[tuple[int, bytes]]:
    """(ts_ns, frame) of `packets` frames from up to `max_open` conversations at once.

    Each frame comes from a randomly chosen open conversation; gaps are
    exponential with the given mean (at least 1 us, so timestamps increase).
    """
    rng = gen.rng
    open_conversations: list[Frames] = []
    pending = 0              # packets promised by open conversations, not yet written
    written = 0
    ts_ns = START_NS
    while written < packets:
        while len(open_conversations) < max_open and written + pending < packets:
            length, frames = gen.start_conversation(packets - written - pending)
            open_conversations.append(frames)
            pending += length
        index = rng.randrange(len(open_conversations))
        frame = next(open_conversations[index], None)
        if frame is None:        # finished: swap-remove, O(1)
            open_conversations[index] = open_conversations[-1]
            open_conversations.pop()
            continue
        ts_ns += max(1000, int(rng.expovariate(1.0 / mean_gap_ns)))
        yield ts_ns, frame
        written += 1
        pending -= 1


def write_mixed(path: Path, packets: int, seed: int, mix: str = "mixed") -> Counter[str]:
    """Write `packets` frames of mixed traffic to `path`; return the ground-truth counts."""
    gen = Generator(seed, mix)
    written = 0
    ts_ns = START_NS
    with open(path, "wb", buffering=1 << 20) as out:
        out.write(pg.pcap_header(pg.LINKTYPE_ETHERNET))
        for ts_ns, frame in interleave(gen, packets, MAX_OPEN_CONVERSATIONS, MEAN_GAP_NS):
            out.write(pg.pcap_record(ts_ns, frame))
            written += 1
            gen.counts["vlan_frames"] += frame[12:14] in (b"\x81\x00", b"\x88\xa8")
    counts = gen.counts
    counts["packets"] = written
    counts["expected_icmp_documents"] = (counts["icmp4_echo_pairs"] + counts["icmp6_echo_pairs"]
                                         + counts["icmp4_vlan_echo_pairs"]
                                         + counts["icmp4_fragmented_echo_pairs"])
    counts["expected_dns_documents"] = (counts["dns4_pairs"] + counts["dns6_pairs"]
                                        + counts["dns4_qinq_pairs"])
    counts["expected_http_documents"] = counts["http4_connections"] + counts["http6_connections"]
    counts["last_ts_ns"] = ts_ns
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="pcap file to write")
    parser.add_argument("--packets", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mix", choices=["mixed", "http"], default="mixed",
                        help="mixed (default) or http: only HTTP connections")
    parser.add_argument("--counts-json", type=Path, help="also write the counts here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    counts = write_mixed(args.out, args.packets, args.seed, args.mix)
    print_counts(counts, args.out, time.monotonic() - started, args.counts_json)
    return 0


def print_counts(counts: Counter[str], out: Path, elapsed_s: float, counts_json: Path | None) -> None:
    """The ground truth on stderr, and as JSON in `counts_json` if given."""
    for key in sorted(counts):
        print(f"{key}: {counts[key]}", file=sys.stderr)
    print(f"wrote {out} in {elapsed_s:.1f} s", file=sys.stderr)
    if counts_json:
        counts_json.write_text(json.dumps(dict(sorted(counts.items())), indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
