"""Generate a realistic Ethernet pcap for the throughput benchmark, with its ground truth.

    python tests/bench/gen_realistic.py OUT.pcap --packets 500000 [--seconds 300]
        [--concurrent 2000] [--seed 1] [--counts-json F]

Where tests/bench/gen_mixed.py stresses the decoders, this capture looks like
an uplink: most packets belong to traffic no decoder claims, so the cost that
matters is what every packet pays (link, IP, flow accounting). Shares are of
packets, approximately:

- ~67% TCP, TLS 1.3 connections on 443 (and a tenth on 853, 993, 5222,
  8443), each a real handshake (a ClientHello naming the server, the
  ServerHello, then encrypted-looking records: the TLS decoder reports it and
  stops reading the connection, as on a real link), then 1-20 rounds of a
  client record and a response of full-size (1460-byte) segments ACKed every
  second segment; 85% end with FIN both ways, 10% with a client RST, 5% are
  abandoned (no close: they end by idle timeout);
- ~2.5% HTTP/1.1 on port 80 (8 segments a connection, gen_mixed's);
- ~3.4% DNS on port 53, IPv4 and IPv6 (gen_mixed's);
- ~22% RTP-like UDP between high ports (20 ms, 160-byte payloads, both ways);
- ~1.3% ICMP and ICMPv6 echo pairs; ~3% lone UDP datagrams; ~1% ARP.

These follow the real capture issue #15 describes: about 60% TCP no decoder
claims, about 10% of packets reaching a decoder (here ~7% HTTP, DNS and ICMP,
plus the TLS decoder's look at each connection's first records), one
transaction document per ~33 packets, 1% non-IP. (Until 2026-12-01 the mix gave DNS 12%, HTTP 8% and ICMP 4%: 24% of
packets reached a decoder and a document came every 10 packets.)

`--concurrent` conversations are open at once (thousands, so the flow and
connection tables hold thousands of entries) and their packets interleave;
timestamps spread the packets over `--seconds` of packet time (exponential
gaps), so periodic flow reports and idle timeouts fire as they would live.
The average frame is ~370 bytes (printed, with every count, on stderr).
Output is deterministic for a given seed and streamed: memory grows with
--concurrent (open conversations are built ahead), not with --packets.

Used by tests/bench/run.py (`make bench`), which times wirebeat on it with
flows on and off.
"""
from __future__ import annotations

import argparse
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))            # tests/, for pcapgen
import pcapgen as pg  # noqa: E402
from gen_mixed import START_NS, Frames, Generator, interleave, print_counts  # noqa: E402

MSS = 1460
OTHER_TLS_PORTS = (853, 993, 5222, 8443)
CHANGE_CIPHER_SPEC = b"\x14\x03\x03\x00\x01\x01"      # TLS 1.3's compatibility record


def extension(kind: int, data: bytes) -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


def handshake_record(msg_type: int, body: bytes) -> bytes:
    message = struct.pack("!I", msg_type << 24 | len(body)) + body
    return struct.pack("!BHH", 22, 0x0301 if msg_type == 1 else 0x0303, len(message)) + message
ETH_P_ARP = 0x0806


class RealisticGenerator(Generator):
    """gen_mixed's builders plus TLS-like bulk TCP, RTP-like UDP and ARP."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.random_pool = self.rng.randbytes(1 << 16)     # payload bytes, sliced
        # (builder, mean packets per conversation, share of packets)
        self.kinds = [
            (self.tls4, 64, 0.56), (self.tls6, 64, 0.11),
            (self.http4, 8, 0.02), (self.http6, 8, 0.005),
            (self.dns4, 2, 0.028), (self.dns6, 2, 0.006),
            (self.rtp4, 600, 0.218),
            (self.icmp4_echo, 2, 0.01), (self.icmp6_echo, 2, 0.003),
            (self.udp_other, 1, 0.03), (self.arp, 1, 0.01),
        ]
        self.kind_weights = [share / length for _b, length, share in self.kinds]

    def start_conversation(self, budget: int) -> tuple[int, Frames]:
        builder, _mean, _share = self.rng.choices(self.kinds, self.kind_weights)[0]
        counted = Counter(self.counts)
        frames = list(builder())            # lengths vary: built now, so the count is exact
        if len(frames) > budget:            # near the end: fill up with single datagrams
            self.counts = counted
            frames = list(self.udp_other())
        return len(frames), iter(frames)

    def payload(self, size: int) -> bytes:
        start = self.rng.randrange(0, len(self.random_pool) - size)
        return self.random_pool[start:start + size]

    # -- TLS-like bulk TCP -------------------------------------------------------

    def tls4(self) -> Frames:
        client, server, client_mac = self.pair4()
        return self.tls_connection(client, server, client_mac, pg.ipv4)

    def tls6(self) -> Frames:
        client, server, client_mac = self.pair6()
        return self.tls_connection(client, server, client_mac, pg.ipv6)

    def record(self, content_type: int, size: int) -> bytes:
        """A TLS record header and `size` opaque (encrypted-looking) bytes."""
        return struct.pack("!BHH", content_type, 0x0303, size) + self.payload(size)

    def client_hello(self, server_name: str) -> bytes:
        """A TLS 1.3 ClientHello record (RFC 8446 §4.1.2) offering X25519, naming `server_name`."""
        name = server_name.encode()
        extensions = b"".join((
            extension(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name),    # server_name
            extension(10, struct.pack("!HHH", 4, 0x001D, 0x0017)),                  # supported_groups
            extension(13, struct.pack("!HHHH", 6, 0x0403, 0x0804, 0x0401)),         # signature_algorithms
            extension(16, struct.pack("!H", 12) + b"\x02h2\x08http/1.1"),           # ALPN
            extension(43, struct.pack("!BHH", 4, 0x0304, 0x0303)),                  # supported_versions
            extension(51, struct.pack("!HHH", 36, 0x001D, 32) + self.payload(32)),  # key_share
        ))
        body = (struct.pack("!H", 0x0303) + self.payload(32) + b"\x20" + self.payload(32)
                + struct.pack("!HHHH", 6, 0x1301, 0x1302, 0x1303) + b"\x01\x00"
                + struct.pack("!H", len(extensions)) + extensions)
        return handshake_record(1, body)

    def server_hello(self) -> bytes:
        """The TLS 1.3 ServerHello record answering client_hello (TLS_AES_128_GCM_SHA256, X25519)."""
        extensions = (extension(43, struct.pack("!H", 0x0304))
                      + extension(51, struct.pack("!HH", 0x001D, 32) + self.payload(32)))
        body = (struct.pack("!H", 0x0303) + self.payload(32) + b"\x20" + self.payload(32)
                + struct.pack("!HB", 0x1301, 0) + struct.pack("!H", len(extensions)) + extensions)
        return handshake_record(2, body)

    def tls_connection(self, client: bytes, server: bytes, client_mac: bytes, ip) -> Frames:
        rng = self.rng
        serial = self.next_serial()
        cport = 32768 + serial % 28000
        sport = 443 if rng.random() < 0.9 else rng.choice(OTHER_TLS_PORTS)
        c_seq = (serial * 2654435761) & 0xFFFFFFFF
        s_seq = c_seq ^ 0x5A5A5A5A
        self.counts["tls_connections"] += 1

        next_seq = {True: c_seq, False: s_seq}      # by direction: to the server or back

        def segment(to_server: bool, payload: bytes, flags: int) -> bytes:
            a, b, pa, pb = (client, server, cport, sport) if to_server else (server, client, sport, cport)
            seq = next_seq[to_server]
            packet = ip(a, b, pg.IPPROTO_TCP, pg.tcp(a, b, pa, pb, payload, seq=seq,
                                                     ack=next_seq[not to_server], flags=flags))
            next_seq[to_server] = seq + len(payload) + (1 if flags & (pg.SYN | pg.FIN) else 0)
            self.counts["tls_packets"] += 1
            frame = self.to_server if to_server else self.to_client
            return frame(client_mac, packet)

        def out(payload: bytes, flags: int) -> bytes:
            return segment(True, payload, flags)

        def back(payload: bytes, flags: int) -> bytes:
            return segment(False, payload, flags)

        def response(data: bytes | int) -> Iterator[bytes]:
            """`data` (or a record of that many bytes) from the server in full segments,
            the client ACKing every second."""
            if isinstance(data, int):
                data = self.record(23, data - 5)
            for index, start in enumerate(range(0, len(data), MSS)):
                yield back(data[start:start + MSS], pg.ACK | (pg.PSH if start + MSS >= len(data) else 0))
                if index % 2 == 1 or rng.random() < 0.3:
                    yield out(b"", pg.ACK)

        yield out(b"", pg.SYN)
        yield back(b"", pg.SYN | pg.ACK)
        yield out(b"", pg.ACK)
        yield out(self.client_hello(f"www{serial % 97}.site{serial % 389}.example.com"),
                  pg.PSH | pg.ACK)
        # ServerHello, ChangeCipherSpec, then the encrypted rest of the server's flight
        # (EncryptedExtensions, Certificate, CertificateVerify, Finished) in full segments.
        flight = self.server_hello() + CHANGE_CIPHER_SPEC + self.record(23, 2 * MSS + rng.randrange(300, 1200))
        yield from response(flight)
        yield out(CHANGE_CIPHER_SPEC + self.record(23, 53), pg.PSH | pg.ACK)   # client Finished
        yield back(self.record(23, 246), pg.PSH | pg.ACK)                     # session tickets
        for _ in range(rng.randrange(1, 21)):
            yield out(self.record(23, rng.randrange(40, 700)), pg.PSH | pg.ACK)
            yield from response(rng.choice((100, 200, 400, 800, MSS, 4 * MSS))
                                + rng.randrange(0, 300))
            yield out(b"", pg.ACK)
        end = rng.random()
        if end < 0.85:
            self.counts["tls_closed_fin"] += 1
            yield out(self.record(23, 19), pg.FIN | pg.PSH | pg.ACK)   # close_notify, encrypted
            yield back(b"", pg.FIN | pg.ACK)
            yield out(b"", pg.ACK)
        elif end < 0.95:
            self.counts["tls_closed_rst"] += 1
            yield out(b"", pg.RST | pg.ACK)
        else:
            self.counts["tls_abandoned"] += 1

    # -- RTP-like UDP ------------------------------------------------------------

    def rtp4(self) -> Frames:
        client, server, client_mac = self.pair4()
        serial = self.next_serial()
        cport, sport = 16384 + 2 * (serial % 8000), 20000 + 2 * (serial % 5000)
        ssrc_out, ssrc_back = serial * 7919 & 0xFFFFFFFF, serial * 104729 & 0xFFFFFFFF
        self.counts["rtp_streams"] += 1
        for seq in range(self.rng.randrange(100, 500)):
            header_out = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, ssrc_out)
            header_back = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, ssrc_back)
            self.counts["rtp_packets"] += 2
            yield self.to_server(client_mac, pg.ipv4(
                client, server, pg.IPPROTO_UDP,
                pg.udp(client, server, cport, sport, header_out + self.payload(160))))
            yield self.to_client(client_mac, pg.ipv4(
                server, client, pg.IPPROTO_UDP,
                pg.udp(server, client, sport, cport, header_back + self.payload(160))))

    # -- ARP -------------------------------------------------------------------

    def arp(self) -> Frames:
        client, server, client_mac = self.pair4()
        self.counts["arp_frames"] += 1
        request = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, client_mac, client,
                              b"\0" * 6, server) + bytes(18)      # padded to 60 bytes
        yield pg.ethernet(request, ethertype=ETH_P_ARP, src=client_mac, dst=b"\xff" * 6)


def write_realistic(path: Path, packets: int, seconds: float, concurrent: int,
                    seed: int) -> Counter[str]:
    """Write `packets` frames to `path`; return the ground-truth counts."""
    gen = RealisticGenerator(seed)
    written = 0
    total_bytes = 0
    ts_ns = START_NS
    with open(path, "wb", buffering=1 << 20) as out:
        out.write(pg.pcap_header(pg.LINKTYPE_ETHERNET))
        for ts_ns, frame in interleave(gen, packets, concurrent, seconds * 1e9 / max(packets, 1)):
            out.write(pg.pcap_record(ts_ns, frame))
            written += 1
            total_bytes += len(frame)
    counts = gen.counts
    counts["packets"] = written
    counts["bytes"] = total_bytes
    counts["mean_frame_bytes"] = round(total_bytes / max(written, 1))
    counts["span_s"] = round((ts_ns - START_NS) / 1e9)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="pcap file to write")
    parser.add_argument("--packets", type=int, default=500_000)
    parser.add_argument("--seconds", type=float, default=300.0,
                        help="packet time the capture spans (default 300)")
    parser.add_argument("--concurrent", type=int, default=2000,
                        help="conversations open at once (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--counts-json", type=Path, help="also write the counts here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    counts = write_realistic(args.out, args.packets, args.seconds, args.concurrent, args.seed)
    print_counts(counts, args.out, time.monotonic() - started, args.counts_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
