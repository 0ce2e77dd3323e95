"""A stand-in for osmo-pcap-server's ZeroMQ publisher, for tests.

It emits exactly the wire format of ../shared/reference/osmo-pcap-zmq.md:
`data.v1.<client>` + the client's header + one record per frame, and
`event.v1.<action>.<client>` events. It binds an XPUB socket, which is a PUB
socket on the wire, so a test can wait until wirebeat has subscribed before it
publishes (a PUB socket silently drops what it sends before that).
"""
from __future__ import annotations

import time

import zmq

import pcapgen as g

__all__ = ["Client", "Publisher"]


class Client:
    """One osmo-pcap client: its name, header part and record format."""

    def __init__(self, name: str, linktype: int = g.LINKTYPE_ETHERNET, *, pcapng: bool = False,
                 big_endian: bool = False, nanosecond: bool = False, snaplen: int = 65535,
                 interfaces: list[tuple[int, int | None]] | None = None) -> None:
        self.name = name
        self.pcapng = pcapng
        self.big_endian = big_endian
        self.nanosecond = nanosecond
        if pcapng:
            self.interfaces = interfaces or [(linktype, None)]
            self.header = g.pcapng_shb(big_endian=big_endian) + b"".join(
                g.pcapng_idb(lt, tsresol, snaplen=snaplen, big_endian=big_endian)
                for lt, tsresol in self.interfaces)
        else:
            self.header = g.pcap_header(linktype, nanosecond=nanosecond, snaplen=snaplen,
                                        big_endian=big_endian)

    @property
    def topic(self) -> bytes:
        return b"data.v1." + self.name.encode()

    def record(self, ts_ns: int, frame: bytes, interface: int = 0) -> bytes:
        if self.pcapng:
            return g.pcapng_epb(interface, ts_ns, frame, tsresol=self.interfaces[interface][1],
                                big_endian=self.big_endian)
        return g.pcap_record(ts_ns, frame, nanosecond=self.nanosecond, big_endian=self.big_endian)

    def message(self, ts_ns: int, frame: bytes, interface: int = 0) -> list[bytes]:
        return [self.topic, self.header, self.record(ts_ns, frame, interface)]


class Publisher:
    def __init__(self, port: int = 0) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 2000)
        self.socket.setsockopt(zmq.SNDHWM, 0)        # a test never wants its own messages dropped
        if port:
            self.socket.bind(f"tcp://127.0.0.1:{port}")
        else:
            port = int(self.socket.bind_to_random_port("tcp://127.0.0.1"))
        self.port = port
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.subscriptions: set[bytes] = set()

    def wait_for_subscriber(self, *prefixes: bytes, timeout_s: float = 20.0) -> None:
        """Block until a subscriber has subscribed to every one of `prefixes`."""
        wanted = set(prefixes or (b"data.", b"event."))
        deadline = time.monotonic() + timeout_s
        while not wanted <= self.subscriptions:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise TimeoutError(f"no subscriber for {sorted(wanted - self.subscriptions)} "
                                   f"on {self.endpoint}")
            if self.socket.poll(remaining_ms):
                message = self.socket.recv()
                if message[:1] == b"\x01":
                    self.subscriptions.add(message[1:])

    def send(self, parts: list[bytes]) -> None:
        self.socket.send_multipart(parts)

    def event(self, action: str, client: str, path: str | None = None) -> None:
        parts = [f"event.v1.{action}.{client}".encode()]
        if path is not None:
            parts.append(path.encode())
        self.send(parts)

    def close(self) -> None:
        self.socket.close()
        self.context.term()
