"""osmo-pcap's ZeroMQ data interface, version 1: frames and collector events.

The wire format is described in ../shared/reference/osmo-pcap-zmq.md. Every
captured frame is one 3-part message: the topic `data.v1.<client>`, the
client's capture file header (classic pcap, or a pcapng Section Header Block
with one Interface Description Block per device), and one record (a pcap
record, or one pcapng packet block). Collector events are
`event.v1.<action>.<client>`, with the closed trace file's path as part 2 for
`closingtracefile`.

`MessageDecoder` is the sans-IO part: parts in, a frame, an event or the
reason a message is skipped out. It caches each client's parsed header and
re-parses only when the header bytes change, so a client switching link type
or format mid-stream is followed at once. Headers and records are read by the
same parsers as capture files (beat/sources/pcapfile.py).

`ZMQSource` is one endpoint. Its SUB socket lives in a receiver process of
its own (wirebeat.sources.zmqrecv), which drains the collector at the
collector's speed into wirebeat's receive queue; a thread here takes the
batches off and hands them to the main thread (`wirebeat.sources.feed`), which
decodes. ZeroMQ reconnects by itself, so a publisher that restarts is picked
up without anything here noticing. Messages the collector drops for a
subscriber that does not keep up are invisible (PUB/SUB says nothing), which
is why the receive count per client is reported; messages dropped in
wirebeat's own queues are counted per client.

Decoding state is keyed by (client, collector): the capture source key of a
client is `<client>\0<endpoint>` (document.capture_fields shows it as
capture.source and capture.collector), so two collectors' clients of the same
name never share fragments, TCP streams, flows or transactions.
"""
from __future__ import annotations

from collections import OrderedDict
import base64
import os
import signal
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

from wirebeat import logs
from wirebeat.document import COLLECTOR_SEPARATOR, iso_time
from wirebeat.hashes import blake2b
from wirebeat.sources.feed import SourceError
from wirebeat.sources.pcapfile import (PACKET_BLOCK_TYPES, FormatError, Frame, Interface, PcapHeader,
                                   parse_idb, parse_pcap_header, parse_shb, read_packet_block)

__all__ = ["CollectorEvent", "MessageDecoder", "ZMQSource", "event_document", "parse_header"]

log = logs.get("zmq")

DATA_PREFIX = b"data.v1."
EVENT_PREFIX = b"event.v1."
EVENT_ACTIONS = {"connect": 1, "disconnect": 1, "closingtracefile": 2}     # action -> parts
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
POLL_MS = 200                   # how often the receive thread looks at the stop flag
PULL_HWM = 4                    # batches waiting in this process's end of the receive queue
RECEIVER_START_S = 30           # how long the receiver process may take to subscribe
RECEIVER_STOP_S = 0.8           # at stop: how long its last batches, counts and exit may take
MAX_CLIENTS = 65536             # client headers remembered (a collector has far fewer clients)
LOGGED_HEADER_CHANGES = 100     # then only the zmq.header_changes counter says so
_RECEIVER_PIPES: set[int] = set()   # stop pipes of this process's receivers (a fork closes the others')


class CollectorEvent(NamedTuple):     # (not a frozen dataclass: the same ==, repr; ~1 ms less start-up)
    client: str
    action: str             # connect, disconnect, closingtracefile
    path: str | None        # the trace file closed, for closingtracefile


# A plain class, not a dataclass: @dataclass made each class at every start-up
# (~0.5 ms each; docs/performance.md, start9).
class _PcapngHeader:
    __slots__ = ("order", "interfaces")

    def __init__(self, order: str, interfaces: list[Interface]) -> None:
        self.order = order
        self.interfaces = interfaces


def parse_header(part: bytes) -> PcapHeader | _PcapngHeader:
    """A client's header part: classic pcap or pcapng (SHB + IDBs). Raises FormatError."""
    if part[:4] == _PCAPNG_SHB:
        return _parse_pcapng_header(part)
    header = parse_pcap_header(part)
    if len(part) != 24:
        raise FormatError("header", f"classic pcap header part is {len(part)} bytes, not 24")
    return header


def _parse_pcapng_header(part: bytes) -> _PcapngHeader:
    order, total = parse_shb(part)
    end = len(part)
    if total > end:
        raise FormatError("header", f"section header block of {total} bytes in a {end}-byte part")
    pos = total
    interfaces: list[Interface] = []
    while pos < end:
        if end - pos < 12:
            raise FormatError("header", f"{end - pos} stray bytes after the blocks")
        block_type, length = struct.unpack_from(order + "II", part, pos)
        if length < 12 or length % 4 or pos + length > end:
            raise FormatError("header", f"block of bad length {length} at byte {pos}")
        if struct.unpack_from(order + "I", part, pos + length - 4)[0] != length:
            raise FormatError("header", f"block at byte {pos}: trailing length disagrees")
        if block_type == 1:
            if length < 20:
                raise FormatError("header", f"interface description block of {length} bytes")
            interfaces.append(parse_idb(part, pos, length, order))
        elif block_type == 0x0A0D0D0A:
            raise FormatError("header", "a second section header in one header part")
        pos += length
    return _PcapngHeader(order, interfaces)


class MessageDecoder:
    """Multipart messages in; (client, Frame), CollectorEvent, None or a reason out.

    `clients`: the only client names wanted (a prefix subscription also
    delivers longer names), or None for all. Reasons are counter labels:
    parts, topic, header, truncated, record_length, caplen_over_snaplen,
    bad_timestamp, block_length, not_a_packet_block, unknown_interface,
    unknown_event.
    """

    def __init__(self, clients: frozenset[str] | None = None) -> None:
        self.clients = clients
        self._names: dict[bytes, str] = {}                  # topic -> client name
        self._headers: OrderedDict[str, tuple[bytes, Any]] = OrderedDict()    # client -> (header part, parsed or reason)
        self.last_error = ""                                # detail of the last skipped message
        self.header_changes = 0

    def decode(self, parts: list[bytes]) -> tuple[str, Frame] | CollectorEvent | str | None:
        topic = parts[0]
        name = self._names.get(topic)
        if name is None:
            if topic.startswith(DATA_PREFIX):
                name = topic[len(DATA_PREFIX):].decode("utf-8", "replace")
                if not name:
                    return self._skip("topic", "data topic without a client name")
                if len(self._names) < MAX_CLIENTS:      # topics come from the collector's config
                    self._names[topic] = name
            elif topic.startswith(EVENT_PREFIX):
                return self._event(parts)
            else:
                return self._skip("topic", f"unknown topic {topic[:64]!r}")
        if self.clients is not None and name not in self.clients:
            return None
        if len(parts) != 3:
            return self._skip("parts", f"{name}: data message of {len(parts)} parts, not 3")
        header_part, record = parts[1], parts[2]
        cached = self._headers.get(name)
        if cached is None or cached[0] != header_part:
            try:
                parsed: Any = parse_header(header_part)
            except FormatError as err:
                parsed = f"header: {err}"
            if cached is not None:
                self.header_changes += 1
                if self.header_changes <= LOGGED_HEADER_CHANGES and parsed.__class__ is not str:
                    log.info("client header changed", client=name, header=_describe(parsed))
            elif len(self._headers) >= MAX_CLIENTS:
                self._headers.popitem(last=False)     # the longest-known client
            cached = self._headers[name] = (header_part, parsed)
        header = cached[1]
        if header.__class__ is PcapHeader:
            got = self._pcap_record(header, record)
        elif header.__class__ is _PcapngHeader:
            got = self._pcapng_block(header, record)
        else:
            return self._skip("header", f"{name}: {header}")
        if got.__class__ is str:
            return self._skip(got, f"{name}: {self.last_error}")
        return name, got

    def _pcap_record(self, header: PcapHeader, record: bytes) -> Frame | str:
        if len(record) < 16:
            self.last_error = f"record of {len(record)} bytes, shorter than its header"
            return "truncated"
        sec, frac, caplen, wire_len = header.record.unpack_from(record)
        if caplen != len(record) - 16:
            self.last_error = f"caplen {caplen} but {len(record) - 16} bytes follow the record header"
            return "truncated" if caplen > len(record) - 16 else "record_length"
        if caplen > header.max_caplen:
            self.last_error = f"caplen {caplen} above snaplen {header.snaplen}"
            return "caplen_over_snaplen"
        if frac >= header.frac_max:
            self.last_error = f"timestamp fraction {frac} out of range"
            return "bad_timestamp"
        return Frame(sec + frac * header.scale, header.linktype, record[16:], wire_len)

    def _pcapng_block(self, header: _PcapngHeader, block: bytes) -> Frame | str:
        order = header.order
        if len(block) < 12:
            self.last_error = f"block of {len(block)} bytes"
            return "truncated"
        block_type, length = struct.unpack_from(order + "II", block)
        if length != len(block):
            self.last_error = f"block_total_length {length} in a part of {len(block)} bytes"
            return "truncated" if length > len(block) else "block_length"
        if length % 4 or struct.unpack_from(order + "I", block, length - 4)[0] != length:
            self.last_error = f"block lengths disagree ({length})"
            return "block_length"
        if block_type not in PACKET_BLOCK_TYPES:
            self.last_error = f"block type {block_type:#x} is not a packet block"
            return "not_a_packet_block"
        got = read_packet_block(block, 0, block_type, length, order, header.interfaces)
        if got.__class__ is str:
            self.last_error = f"packet block: {got}"
            return "unknown_interface" if got == "unknown_interface" else "truncated"
        if block_type == 3:
            interface = header.interfaces[0]
        else:
            fmt = order + ("I" if block_type == 6 else "H")
            interface = header.interfaces[struct.unpack_from(fmt, block, 8)[0]]
        if interface.snaplen and len(got.data) > interface.snaplen:
            self.last_error = f"caplen {len(got.data)} above snaplen {interface.snaplen}"
            return "caplen_over_snaplen"
        return got

    def _event(self, parts: list[bytes]) -> CollectorEvent | str:
        # Client names may contain dots: split on the first three only.
        pieces = parts[0].decode("utf-8", "replace").split(".", 3)
        if len(pieces) != 4 or not pieces[3]:
            return self._skip("topic", f"event topic {parts[0][:64]!r} without a client name")
        action, name = pieces[2], pieces[3]
        if self.clients is not None and name not in self.clients:
            return None
        expected = EVENT_ACTIONS.get(action)
        if expected is None:
            return self._skip("unknown_event", f"{name}: unknown collector event {action!r}")
        if len(parts) != expected:
            return self._skip("parts", f"{name}: {action} event of {len(parts)} parts, not {expected}")
        path = parts[1].rstrip(b"\0").decode("utf-8", "replace") if expected == 2 else None
        return CollectorEvent(name, action, path)

    def _skip(self, reason: str, detail: str) -> str:
        self.last_error = detail
        return reason


def _describe(header: PcapHeader | _PcapngHeader) -> str:
    if header.__class__ is PcapHeader:
        resolution = "ns" if header.frac_max == 1_000_000_000 else "us"
        return f"pcap linktype {header.linktype} snaplen {header.snaplen} {resolution}"
    return "pcapng linktypes " + ",".join(str(i.linktype) for i in header.interfaces)


_EVENT_TYPES = {"connect": (["network"], ["connection", "start"]),
                "disconnect": (["network"], ["connection", "end"]),
                "closingtracefile": (["file"], ["info"])}


def event_document(event: CollectorEvent, endpoint: str, ts: float) -> tuple[str, dict[str, Any]]:
    """The (id, document) of a collector event received at `ts` (wall clock: events carry no time)."""
    category, types = _EVENT_TYPES[event.action]
    doc: dict[str, Any] = {
        "@timestamp": iso_time(ts),
        "event": {"kind": "event", "dataset": "wirebeat.collector", "action": event.action,
                  "category": category, "type": types},
        "capture": {"source": event.client, "collector": endpoint},
    }
    if event.path is not None:
        doc["file"] = {"path": event.path}
    key = f"{endpoint}|{event.client}|{event.action}|{event.path}|{round(ts * 1e6)}"
    doc_id = base64.urlsafe_b64encode(blake2b(key.encode(), digest_size=15).digest()).decode()
    return doc_id, doc


class ZMQSource:
    """One osmo-pcap publisher: a receiver process (wirebeat.sources.zmqrecv), the
    thread that takes its batches, and the decoding."""

    kind = "zmq"

    def __init__(self, endpoint: str, clients: list[str], receive_hwm: int,
                 receive_buffer: int = 0, queue_messages: int = 200_000) -> None:
        self.endpoint = endpoint
        self.name = endpoint
        self.clients = frozenset(clients) if clients else None
        self.receive_hwm = receive_hwm
        self.receive_buffer = receive_buffer
        self.queue_messages = queue_messages
        self.decoder = MessageDecoder(self.clients)
        # ZeroMQ is imported with the first feed (~20 ms of CPU a run without one saves),
        # and so are shutil and tempfile (the receive queue's directory; ~2 ms): here,
        # before the CLI drops privileges, so later imports of them read no file.
        import zmq  # noqa: F401
        from wirebeat.sources import zmqrecv  # noqa: F401
        import shutil  # noqa: F401
        import tempfile  # noqa: F401
        self.socket: zmq.Socket | None = None       # PULL: batches from the receiver process
        self.receiver_pid = 0
        self.exit_code: int | None = None           # the receiver's, once reaped
        self.stop_fd = -1                           # closing it stops the receiver
        self.directory = ""                         # the ipc socket's private directory
        self.forward = ""                           # the receive queue's ipc endpoint
        # Written by the receive thread only (read for reports): messages per topic.
        self.received: Counter[bytes] = Counter()
        self.dropped: Counter[bytes] = Counter()
        # Written by the main thread only.
        self.malformed: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.frames = 0
        self.filtered = 0
        self.last_seen: dict[str, tuple[float, float]] = {}   # source key -> (packet ts, monotonic)
        self._keys: dict[str, str] = {}             # client -> capture source key (client, collector)

    def check(self) -> None:
        """Reject a malformed endpoint before anything starts. Raises SourceError."""
        scheme, sep, address = self.endpoint.partition("://")
        host, colon, port = address.rpartition(":")
        if scheme == "ipc" and address:
            return
        if scheme != "tcp" or not sep or not colon or not host:
            raise SourceError(f"--zmq {self.endpoint}: expected an endpoint like tcp://HOST:PORT")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SourceError(f"--zmq {self.endpoint}: port {port!r} is not a number from 1 to 65535")

    def subscriptions(self) -> list[str]:
        if self.clients is None:
            prefixes = ["data."]
        else:
            prefixes = [DATA_PREFIX.decode() + client for client in sorted(self.clients)]
        return prefixes + ["event."]

    def start_receiver(self) -> None:
        """Fork the receiver process (call it for every feed before this process opens any
        ZeroMQ socket, and after dropping privileges: the receiver keeps the same user).
        A fork, not a new interpreter: the unprivileged user may not be allowed to run one."""
        import shutil       # (loaded by __init__)
        import tempfile
        try:
            self.directory = tempfile.mkdtemp(prefix="wirebeat-zmq-")     # mode 0700
        except OSError as err:
            raise SourceError(f"--zmq {self.endpoint}: cannot create the receive queue's directory: {err}") from None
        self.forward = f"ipc://{self.directory}/feed"
        from wirebeat.sources import zmqrecv     # (loaded by __init__)
        stop_read, stop_write = os.pipe()
        pid = os.fork()
        if pid == 0:                                # the receiver
            code = 1
            try:
                os.close(stop_write)
                for fd in _RECEIVER_PIPES:          # other feeds' receivers end with their own pipe
                    os.close(fd)
                code = zmqrecv.receive(self.endpoint, self.forward, self.receive_hwm, self.receive_buffer,
                                       self.queue_messages, self.subscriptions(), stop_read)
            except BaseException:                   # a bug: say so on stderr, exit 1
                import traceback                    # (before a user switch: privileges._LATE_IMPORTS)
                traceback.print_exc()
            finally:
                # Last to go (wirebeat has stopped it or is gone): the socket's directory too.
                shutil.rmtree(self.directory, ignore_errors=True)
                os._exit(code)
        os.close(stop_read)
        _RECEIVER_PIPES.add(stop_write)
        self.receiver_pid, self.stop_fd = pid, stop_write

    def open(self, context: zmq.Context) -> None:
        """Open this end of the receive queue and wait until the receiver has subscribed.
        Raises SourceError. Needs no privileges."""
        import zmq      # (loaded by __init__)
        if not self.receiver_pid:
            self.start_receiver()
        sock = context.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, PULL_HWM)
        self.socket = sock
        try:
            sock.bind(self.forward)
        except zmq.ZMQError as err:
            self.close()
            raise SourceError(f"--zmq {self.endpoint}: cannot open the receive queue {self.forward}: {err}") from None
        deadline = time.monotonic() + RECEIVER_START_S
        while not sock.poll(POLL_MS) and self.receiver_exit() is None and time.monotonic() < deadline:
            pass
        if not sock.poll(0) or sock.recv() != b"R":
            code = self.receiver_exit()
            self.close()
            raise SourceError(f"--zmq {self.endpoint}: the receiver process did not start"
                              + (f" (exit {code})" if code is not None else ""))
        log.info("subscribed", endpoint=self.endpoint, clients=sorted(self.clients or ["*"]),
                 receive_hwm=self.receive_hwm, receive_buffer=self.receive_buffer,
                 queue_messages=self.queue_messages, receiver_pid=self.receiver_pid)

    def receiver_exit(self) -> int | None:
        """The receiver's exit code once it has exited (reaped here), else None."""
        if self.exit_code is None and self.receiver_pid:
            pid, status = os.waitpid(self.receiver_pid, os.WNOHANG)
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
        return self.exit_code

    def run(self, hand_over: Callable[[Any, list[Any], bool], bool], stop: threading.Event) -> None:
        """The receive thread: take the receiver's batches, hand them over until `stop`.

        Waiting for room in the feed is fine here: the receiver keeps draining the
        collector and counts what its own queue cannot hold."""
        sock = self.socket
        assert sock is not None
        try:
            while not stop.is_set():
                if not sock.poll(POLL_MS):
                    if self.receiver_exit() is not None:
                        raise SourceError(f"zmq {self.endpoint}: the receiver process exited "
                                          f"with code {self.exit_code}")
                    continue
                if self._take(sock.recv_multipart(), hand_over, True) == b"E":
                    raise SourceError(f"zmq {self.endpoint}: the receiver process stopped")
            # Stopping: what is still on its way is decoded if the feed has room, else counted.
            self._stop_receiver()
            deadline = time.monotonic() + RECEIVER_STOP_S
            while (remaining := deadline - time.monotonic()) > 0 and sock.poll(int(remaining * 1000) + 1):
                if self._take(sock.recv_multipart(), hand_over, False) == b"E":
                    break
        finally:
            self.close()

    def _take(self, frames: list[bytes], hand_over: Callable[[Any, list[Any], bool], bool],
              wait: bool) -> bytes:
        """One message from the receiver: count it, hand a batch over. Returns its kind."""
        kind = frames[0][:1]
        if kind == b"B":
            from wirebeat.sources.zmqrecv import split_batch     # (loaded by __init__)
            batch = split_batch(frames)
            received = self.received
            for parts in batch:
                received[parts[0]] += 1
            if not hand_over(self, batch, wait):
                dropped = self.dropped
                for parts in batch:
                    dropped[parts[0]] += 1
        elif kind == b"D":
            for i in range(1, len(frames) - 1, 2):
                n = int(frames[i + 1])
                self.received[frames[i]] += n
                self.dropped[frames[i]] += n
        return kind

    def _stop_receiver(self) -> None:
        if self.stop_fd >= 0:
            _RECEIVER_PIPES.discard(self.stop_fd)
            os.close(self.stop_fd)                  # the receiver's signal to stop
            self.stop_fd = -1

    def close(self) -> None:
        """Stop the receiver process, close the socket, remove the ipc directory."""
        if self.receiver_pid:
            self._stop_receiver()
            deadline = time.monotonic() + RECEIVER_STOP_S
            while self.receiver_exit() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.receiver_exit() is None:
                os.kill(self.receiver_pid, signal.SIGKILL)     # only ours, by its pid
                os.waitpid(self.receiver_pid, 0)
                self.exit_code = -signal.SIGKILL
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None
        if self.directory:
            import shutil       # (loaded by __init__)
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""

    def deliver(self, batch: list[list[bytes]], on_frame: Callable[[float, int, bytes, str], None],
                on_event: Callable[[ZMQSource, CollectorEvent], None]) -> None:
        """Main thread: decode a batch of messages into frames and events."""
        decode = self.decoder.decode
        last_seen, keys = self.last_seen, self._keys
        now = time.monotonic()
        for parts in batch:
            got = decode(parts)
            if got.__class__ is tuple:
                name, frame = got
                key = keys.get(name) or self._key(name)
                on_frame(frame.ts, frame.linktype, frame.data, key)
                self.frames += 1
                last_seen[key] = (frame.ts, now)
            elif got.__class__ is CollectorEvent:
                self.events[got.action] += 1
                on_event(self, got)
            elif got is None:
                self.filtered += 1
            else:
                self.malformed[got] += 1
                log.debug("malformed message skipped", endpoint=self.endpoint, reason=got,
                          detail=self.decoder.last_error, topic=parts[0][:80])

    def _key(self, client: str) -> str:
        """The capture source key of a client of this collector (see document.capture_fields)."""
        key = client + COLLECTOR_SEPARATOR + self.endpoint
        if len(self._keys) < MAX_CLIENTS:
            self._keys[client] = key
        return key

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = {f"zmq.received.{name}": n for name, n in self.received_per_client().items()}
        for name, n in self.dropped_per_client().items():
            out[f"zmq.dropped.{name}"] = n
        for reason, n in self.malformed.items():
            out[f"zmq.malformed.{reason}"] = n
        for action, n in self.events.items():
            out[f"zmq.events.{action}"] = n
        out["zmq.frames"] = self.frames
        out["zmq.header_changes"] = self.decoder.header_changes
        out["zmq.other_clients"] = self.filtered
        return out

    def received_per_client(self) -> dict[str, int]:
        """Data messages received per client (before any drop or decoding)."""
        return _per_client(self.received)

    def dropped_per_client(self) -> dict[str, int]:
        """Data messages dropped per client because the decoder fell behind."""
        return _per_client(self.dropped)

    def summary(self) -> str:
        per_client = ", ".join(f"{name} {n}" for name, n in sorted(self.received_per_client().items()))
        parts = [f"zmq {self.endpoint}: messages per client: {per_client or 'none'}"]
        dropped = sum(dict(self.dropped).values())
        if dropped:
            parts.append(f"{dropped} dropped (decoder behind)")
        malformed = sum(self.malformed.values())
        if malformed:
            parts.append(f"{malformed} malformed (" + ", ".join(
                f"{reason} {n}" for reason, n in sorted(self.malformed.items())) + ")")
        if self.events:
            parts.append("events " + ", ".join(f"{a} {n}" for a, n in sorted(self.events.items())))
        return "; ".join(parts)


def _per_client(counts: Counter[bytes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for topic, n in dict(counts).items():      # a copy: the receive thread keeps counting
        if topic.startswith(DATA_PREFIX):
            name = topic[len(DATA_PREFIX):].decode("utf-8", "replace")
            out[name] = out.get(name, 0) + n
    return out
