"""A collector's burst, from a process of its own: DNS transactions of several clients, paced.

    python tests/burst_publisher.py --pairs N --rate MSGS_PER_S --clients a,b

Publishes in osmo-pcap's wire format (tests/osmo_publisher.py) on an XPUB
socket with ZeroMQ's default send high-water mark (1000), as a publisher
that sets none. Where osmo-pcap-server would drop a message because the
subscriber's pipe is full, this one (ZMQ_XPUB_NODROP) counts a stall, waits
for room and sends it: so nothing is lost, and the rate it reaches says
whether the subscriber kept up. Prints `port P`, waits until a subscriber
has subscribed to `data.` and `event.`, sends N DNS query/answer pairs per
client (2 N messages per client, the clients interleaved) at the given rate,
prints `sent M messages in S seconds, K stalls`, and exits when its stdin
ends (so that nothing is cut off by closing the socket).

Client c's transaction i: query from 10.c.0.1, port 10000 + i % 20000, id
i % 65536, name q<i, 6 digits>.example, answered with A 192.0.2.1 by 10.c.0.53; so
every transaction of one client is distinct for i < 65536.
"""
from __future__ import annotations

import argparse
import struct
import sys
import time

import zmq

import pcapgen as g
from osmo_publisher import Client

T0_NS = 1_760_000_000_000_000_000
CHUNK = 500                     # messages sent between looks at the clock


def dns_message(ident: int, name: str, answer: bool) -> bytes:
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    question += struct.pack("!HH", 1, 1)
    if not answer:
        return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([192, 0, 2, 1])
    return struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + record


class Transactions:
    """One client's messages. Names have a fixed length, so the Ethernet and IPv4
    headers of each direction are the same for every transaction: built once
    (by pcapgen, checksum included); UDP checksums are 0 (none, RFC 768)."""

    def __init__(self, client: Client, number: int) -> None:
        self.client = client
        asker, resolver = f"10.{number}.0.1", f"10.{number}.0.53"
        query, reply = dns_message(0, _name(0), False), dns_message(0, _name(0), True)
        self.query_head = self._head(asker, resolver, 8 + len(query))
        self.reply_head = self._head(resolver, asker, 8 + len(reply))

    @staticmethod
    def _head(src: str, dst: str, udp_length: int) -> bytes:
        return g.ethernet(g.ipv4(src, dst, 17, b"\0" * udp_length))[:34]

    def messages(self, i: int) -> list[list[bytes]]:
        port = 10000 + i % 20000
        ts = T0_NS + i * 20_000
        query, reply = dns_message(i % 65536, _name(i), False), dns_message(i % 65536, _name(i), True)
        up = self.query_head + struct.pack("!HHHH", port, 53, 8 + len(query), 0) + query
        down = self.reply_head + struct.pack("!HHHH", 53, port, 8 + len(reply), 0) + reply
        return [self.client.message(ts, up), self.client.message(ts + 100_000, down)]


def _name(i: int) -> str:
    return f"q{i:06d}.example"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, required=True, help="DNS transactions per client")
    parser.add_argument("--rate", type=float, required=True, help="messages per second, all clients")
    parser.add_argument("--clients", default="edge1", help="client names, comma-separated")
    args = parser.parse_args()
    clients = [Transactions(Client(name), number) for number, name in enumerate(args.clients.split(","), 1)]
    messages = []
    for i in range(args.pairs):
        for client in clients:
            messages += client.messages(i)
    context = zmq.Context()
    sock = context.socket(zmq.XPUB)          # default SNDHWM: 1000
    sock.setsockopt(zmq.LINGER, 10000)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(f"port {port}", flush=True)
    subscribed: set[bytes] = set()
    while not {b"data.", b"event."} <= subscribed:
        frame = sock.recv()
        if frame[:1] == b"\x01":
            subscribed.add(frame[1:])
    time.sleep(0.2)                           # the other prefixes of the same subscriber, if any
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    send, noblock = sock.send_multipart, zmq.NOBLOCK
    stalls = 0
    started = time.monotonic()
    for start in range(0, len(messages), CHUNK):
        for parts in messages[start:start + CHUNK]:
            try:
                send(parts, noblock)
            except zmq.Again:                 # osmo-pcap-server would drop it here
                stalls += 1
                send(parts)
        ahead = started + (start + CHUNK) / args.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    took = time.monotonic() - started
    print(f"sent {len(messages)} messages in {took:.3f} seconds, {stalls} stalls", flush=True)
    sys.stdin.read()
    sock.close()
    context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
