"""The NetFlow/IPFIX collector: UDP listeners whose datagrams go to the netflow decoder.

An exporter (router, firewall, softflowd) is a capture source like any other:
each listener is one source named `netflow:HOST:PORT`, and its datagrams enter
the engine as the raw IP/UDP frames they arrived in (exporter address and port
as the sender, the listener's address and port as the receiver). So the very
same path decodes a listener's datagrams, export packets inside a capture
(`-I`) and those in a ZeroMQ feed, and gives the same documents; the listener's
port is routed to the netflow decoder.

The receive thread only reads: it takes up to 256 datagrams at a time off the
socket and hands them to the main thread (`wirebeat.sources.feed`). When the
decoder falls behind, the thread waits, as live capture does, so a burst
piles up in the socket buffer (`read_buffer`, SO_RCVBUF) instead of being
dropped; what the kernel then drops because that buffer is full is read from
/proc/net/udp{,6} and reported as `netflow.<host>.kernel_drops`.

Binding needs no privileges above port 1024; for a lower one, see
deploy/README.md (AmbientCapabilities=CAP_NET_BIND_SERVICE).
"""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from wirebeat import logs
from wirebeat.accel import nfcore
from wirebeat.decoders.api import DecoderSpec, iso_time
from wirebeat.decoders.netflow import _EVENT_HEAD as EVENT_HEAD, _TRANSPORTS, RecordSet
from wirebeat.document import DocumentBuilder, id_source
from wirebeat.sources.feed import BATCH_ITEMS, SourceError

__all__ = ["Listener", "NetflowListener", "PROTOCOL_VERSIONS", "RecordSet", "parse_host", "publish_set"]

log = logs.get("netflow")

LINKTYPE_RAW = 101
MAX_DATAGRAM = 65535
POLL_S = 0.2                       # how often the receive thread looks at the stop flag
# Listener protocol names (as Filebeat's `protocols`) -> NetFlow header versions.
PROTOCOL_VERSIONS = {"v1": 1, "v5": 5, "v7": 7, "v9": 9, "ipfix": 10}
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")


@dataclass(slots=True)
class Listener:
    """One `wirebeat.sources.netflow` entry (or a --netflow HOST:PORT)."""

    host: str                                   # "0.0.0.0:2055", "[::]:4739"
    tags: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    protocols: list[str] = field(default_factory=lambda: ["v1", "v5", "v7", "v9", "ipfix"])
    read_buffer: int = 0                        # SO_RCVBUF bytes; 0: the system's default


def parse_host(text: str) -> tuple[str, int]:
    """"HOST:PORT" or "[V6]:PORT" -> (address literal, port). Raises SourceError."""
    host, colon, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise SourceError(f"netflow listener {text!r}: expected HOST:PORT with a port from 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SourceError(f"netflow listener {text!r}: {host!r} is not an IP address") from None
    return host, int(port)


class NetflowListener:
    """A bound UDP socket, its receive thread, and the frames it hands to the engine."""

    kind = "netflow"

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.host, self.port = parse_host(listener.host)
        self.name = f"netflow:{listener.host}"
        unknown = [p for p in listener.protocols if p not in PROTOCOL_VERSIONS]
        if unknown:
            raise SourceError(f"netflow listener {listener.host}: unknown protocol {unknown[0]!r} "
                              f"(known: {', '.join(PROTOCOL_VERSIONS)})")
        self.versions = frozenset(PROTOCOL_VERSIONS[p] for p in listener.protocols)
        self.family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.local = socket.inet_pton(self.family, self.host)
        self.socket: socket.socket | None = None
        self.inode = 0
        # The kernel's drop count read just before the socket closed: its /proc/net/udp
        # line goes with the socket, and the run's summary comes after.
        self.drops_at_close: int | None = None
        # Written by the receive thread only.
        self.received = 0
        self.dropped = 0
        # Written by the main thread only.
        self.rejected: Counter[str] = Counter()
        self.frames = 0
        self.last_seen: dict[str, tuple[float, float]] = {}

    def open(self) -> None:
        """Bind the socket. Raises SourceError (the CLI exits 2 with its line)."""
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            if self.listener.read_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.listener.read_buffer)
            sock.bind((self.host, self.port))
        except OSError as err:
            sock.close()
            hint = " (ports below 1024 need CAP_NET_BIND_SERVICE, see deploy/README.md)" \
                if self.port < 1024 and err.errno == 13 else ""
            raise SourceError(f"netflow listener {self.listener.host}: cannot bind: "
                              f"{err.strerror}{hint}") from None
        sock.settimeout(POLL_S)
        self.socket = sock
        self.inode = os.fstat(sock.fileno()).st_ino
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        log.info("listening", listener=self.listener.host, protocols=self.listener.protocols,
                 receive_buffer_bytes=granted)

    def run(self, hand_over: Callable[[Any, list[Any], bool], bool], stop: threading.Event) -> None:
        """The receive thread: read datagrams, hand them over in batches until `stop`."""
        sock = self.socket
        assert sock is not None
        recv = sock.recvfrom
        try:
            while not stop.is_set():
                try:
                    first = recv(MAX_DATAGRAM)
                except TimeoutError:
                    continue
                now = time.time()
                batch = [(now, *first)]
                sock.setblocking(False)
                try:
                    while len(batch) < BATCH_ITEMS:
                        batch.append((now, *recv(MAX_DATAGRAM)))
                except BlockingIOError:
                    pass
                finally:
                    sock.settimeout(POLL_S)
                self.received += len(batch)
                if not hand_over(self, batch, True):        # False only when stopping
                    self.dropped += len(batch)
        finally:
            self.drops_at_close = self.kernel_drops()
            sock.close()

    def deliver(self, batch: list[tuple[float, bytes, tuple[Any, ...]]],
                on_frame: Callable[[float, int, bytes, str], None],
                on_event: Callable[[Any, Any], None]) -> None:
        """Main thread: each datagram as the IP/UDP frame it arrived in."""
        versions, name, port, local = self.versions, self.name, self.port, self.local
        ts = 0.0
        for ts, data, address in batch:
            if len(data) < 2 or (data[0] << 8 | data[1]) not in versions:
                self.rejected["version_not_accepted" if len(data) >= 2 else "truncated"] += 1
                continue
            on_frame(ts, LINKTYPE_RAW, frame(address[0], address[1], local, port, data), name)
            self.frames += 1
        if batch:
            self.last_seen[name] = (ts, time.monotonic())

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on this socket (buffer full), from /proc/net/udp{,6};
        once the socket is closed, the count read just before."""
        if self.drops_at_close is not None:
            return self.drops_at_close
        path = "/proc/net/udp6" if self.family == socket.AF_INET6 else "/proc/net/udp"
        try:
            with open(path, encoding="ascii") as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 13 and parts[9] == str(self.inode):
                        return int(parts[-1])
        except (OSError, ValueError, StopIteration):
            pass
        return 0

    def counters(self) -> dict[str, int]:
        prefix = f"netflow.{self.listener.host}"
        out = {f"{prefix}.received": self.received, f"{prefix}.dropped": self.dropped,
               f"{prefix}.kernel_drops": self.kernel_drops()}
        for reason, n in self.rejected.items():
            out[f"{prefix}.rejected.{reason}"] = n
        return out

    def summary(self) -> str:
        line = f"netflow {self.listener.host}: {self.received} datagrams"
        if self.dropped:
            line += f", {self.dropped} dropped (decoder behind)"
        drops = self.kernel_drops()
        if drops:
            line += f", {drops} dropped by the kernel (socket buffer full)"
        rejected = sum(self.rejected.values())
        if rejected:
            line += f", {rejected} rejected (" + ", ".join(
                f"{reason} {n}" for reason, n in sorted(self.rejected.items())) + ")"
        return line


def frame(sender_ip: str, sender_port: int, local: bytes, local_port: int, payload: bytes) -> bytes:
    """The raw IPv4/IPv6 + UDP frame a datagram from sender to the listener arrived in."""
    udp = _UDP.pack(sender_port, local_port, 8 + len(payload), 0)
    if len(local) == 4:
        sender = socket.inet_aton(sender_ip)
        return _IPV4.pack(0x45, 0, 28 + len(payload), 0, 0, 64, 17, 0, sender, local) + udp + payload
    if "." in sender_ip and ":" not in sender_ip:
        sender = socket.inet_pton(socket.AF_INET6, "::ffff:" + sender_ip)
    else:
        sender = socket.inet_pton(socket.AF_INET6, sender_ip.partition("%")[0])
    return _IPV6.pack(6 << 28, 8 + len(payload), 17, 64, sender, local) + udp + payload


_TRANSPORT_NAMES = tuple(_TRANSPORTS.get(n, str(n)).encode() for n in range(256))


def publish_set(records: RecordSet, spec: DecoderSpec, builder: DocumentBuilder,
                publish: Callable[[str, Any], None], emit: Callable[[DecoderSpec, list[Any]], None]) -> int:
    """The engine's `_emit` for a NetFlow data set (decoders/netflow.py RecordSet): each
    record's document and _id made in C (wirebeat._nfcore.records) as whole_text and
    document_id_from would make them, and published; the number published. When the
    builder does not take text (processors, fields under the root, tunnels), and for a
    record the C code leaves out, the Python path's Transactions go to `emit` instead."""
    if not (builder.text_ok and builder.shared_ok and not builder.tunnels
            and spec.whole_text is not None and spec.whole_document is not None):
        emit(spec, records.transactions())
        return 0
    assert nfcore is not None
    source, export_ts, exporter = records.source, records.export_ts, records.exporter
    common, tail = builder.text_parts.get(source) or builder._text_parts(source)
    export_json = orjson.dumps(records.export).decode()
    consts = (export_ts, -1 if records.uptime is None else records.uptime, records.sampling,
              f'{{"@timestamp":"{iso_time(export_ts)}{EVENT_HEAD}'.encode(),
              f'{common},"netflow":{{'.encode(),
              f'"type":"netflow_flow","exporter":{export_json}}},"observer":{{"ip":"{exporter.ip}"}}{tail}'.encode(),
              f"{id_source(source)}|{spec.name}|".encode(),
              f"|{round(export_ts * 1e6)}|{records.prefix}".encode(),
              exporter.ip.encode(), _TRANSPORT_NAMES)
    template = records.template
    done = 0
    fragment = orjson.Fragment
    for item in nfcore.records(records.data, records.start, records.count, template.record_length,
                               template.c_plan, consts):
        if item.__class__ is tuple:
            publish(item[0], fragment(item[1]))
            done += 1
        else:
            emit(spec, records.transactions((item,)))
    return done
