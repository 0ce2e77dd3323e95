"""The ZeroMQ receiver: a process of its own that drains a collector's feed at collector speed.

osmo-pcap's feed is PUB/SUB. When a subscriber does not read fast enough,
its socket's high-water mark fills, TCP pushes back, and the collector drops
what it cannot queue for that subscriber, silently. A receive thread inside
the decoding process reads only when it gets the interpreter lock, which
decoding holds most of the time: every bit of a burst that outlasts the
socket's buffers is lost before anything counts it.

So the SUB socket lives in this small process, which does nothing but
receive and forward, with its own interpreter lock. It forwards batches of up
to BATCH_ITEMS messages over a PUSH socket (ipc://, in a directory only the
wirebeat user can enter) to the wirebeat process, as fast as wirebeat takes
them. What wirebeat has not taken yet waits here, in the receive queue,
capped at `wirebeat.sources.zmq.queue_messages` messages. When it is full,
because decoding has been behind for longer than the queue lasts, the
receiver drops further messages and counts them per topic; the counts reach
wirebeat in the stream itself, as soon as there is room. From the moment a
message leaves the SUB socket, nothing is dropped without being counted.

Messages from the receiver to wirebeat (multipart):

| first part | what follows | meaning |
| --- | --- | --- |
| `R` | nothing | ready: subscribed and connected |
| `B` + one byte per message (its number of parts, at most 255) | the parts of every message, in order | a batch |
| `D` | topic, count (ASCII), topic, count ... | messages dropped since the last report |
| `E` | nothing | the receiver stopped; nothing follows |

The receiver is forked, not started as a new interpreter: after wirebeat has
dropped its privileges, the user it runs as may not be allowed to execute
one. It needs no privilege of its own.
"""
from __future__ import annotations

import os
import signal
import sys
from collections import Counter, deque

import zmq

__all__ = ["BATCH_ITEMS", "MAX_PARTS", "receive", "split_batch"]

BATCH_ITEMS = 256           # messages forwarded at most per batch (as wirebeat.sources.feed)
MAX_PARTS = 255             # parts kept of one message (osmo-pcap sends at most 3)
POLL_MS = 200               # how often the receiver looks at its stop pipe when nothing happens
DRAIN_ITEMS = 1024          # messages read from the SUB socket between two looks at the rest
PUSH_HWM = 4                # batches in the forward socket (the queue proper is _Queue, counted)
STOP_SEND_MS = 1000         # at stop: how long the last drop report and `E` may wait for room


def split_batch(frames: list[bytes]) -> list[list[bytes]]:
    """The messages of one `B` batch: its parts regrouped by the counts in part 1."""
    counts = frames[0]
    messages = []
    pos = 1
    for i in range(1, len(counts)):
        end = pos + counts[i]
        messages.append(frames[pos:end])
        pos = end
    return messages


def receive(endpoint: str, forward: str, rcvhwm: int, rcvbuf: int, queue_messages: int,
            prefixes: list[str], stop_fd: int) -> int:
    """The receiver's life: subscribe to `endpoint`, forward to `forward` until `stop_fd` ends.

    Runs in a child forked by wirebeat before it opened any ZeroMQ socket of
    its own, so it starts its own context. Returns the exit code."""
    # Signals are wirebeat's to handle (a terminal's Ctrl-C, systemd's SIGTERM to the
    # whole service): the receiver stops when its pipe from wirebeat ends, i.e. when
    # wirebeat closes it or exits, however it exits.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = zmq.Context(1)
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, PUSH_HWM)
    push.setsockopt(zmq.LINGER, STOP_SEND_MS)
    push.connect(forward)
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, rcvhwm)
    if rcvbuf:
        sub.setsockopt(zmq.RCVBUF, rcvbuf)
    for prefix in prefixes:
        sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    try:
        sub.connect(endpoint)
    except zmq.ZMQError as err:
        print(f"wirebeat: --zmq {endpoint}: {err}", file=sys.stderr)
        return 2
    push.send(b"R")
    queue = _Queue(push, queue_messages)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(stop_fd, zmq.POLLIN)
    recv, noblock, append = sub.recv_multipart, zmq.NOBLOCK, queue.messages.append
    while True:
        # Waiting for room in the forward socket too while messages wait for it.
        poller.register(push, zmq.POLLOUT if queue.messages or queue.dropped else 0)
        ready = dict(poller.poll(POLL_MS))
        if stop_fd in ready and not os.read(stop_fd, 64):
            break
        if sub in ready:
            room = queue.capacity - len(queue.messages)
            try:
                for _ in range(DRAIN_ITEMS):
                    parts = recv(noblock)
                    if room > 0:
                        append(parts)
                        room -= 1
                    else:                           # the queue is full: decoding is behind
                        queue.dropped[parts[0]] += 1
            except zmq.Again:
                pass
        queue.forward()
    # Stopping: what still fits goes on, the rest is counted, then the end marker.
    queue.forward()
    for parts in queue.messages:
        queue.dropped[parts[0]] += 1
    queue.messages.clear()
    push.setsockopt(zmq.SNDTIMEO, STOP_SEND_MS)
    try:
        queue.report_drops(0)
        push.send(b"E")
    except zmq.ZMQError:
        pass
    sub.close(0)
    push.close()
    context.term()
    return 0


class _Queue:
    """The receive queue: messages received and not yet forwarded, and the drops not yet reported."""

    def __init__(self, push: zmq.Socket, capacity: int) -> None:
        self.push = push
        self.capacity = capacity
        self.messages: deque[list[bytes]] = deque()
        self.dropped: Counter[bytes] = Counter()

    def forward(self) -> None:
        """Send batches while the forward socket has room (never waits)."""
        push, messages = self.push, self.messages
        while messages and push.getsockopt(zmq.EVENTS) & zmq.POLLOUT:
            counts = bytearray(b"B")
            frames: list[bytes] = [b""]
            popleft = messages.popleft
            for _ in range(min(BATCH_ITEMS, len(messages))):
                parts = popleft()
                if len(parts) > MAX_PARTS:
                    parts = parts[:MAX_PARTS]       # still not 3 parts: counted malformed downstream
                counts.append(len(parts))
                frames += parts
            frames[0] = bytes(counts)
            try:
                push.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:                       # room went: put the batch back
                pos, batch = 1, []
                for n in counts[1:]:
                    batch.append(frames[pos:pos + n])
                    pos += n
                messages.extendleft(reversed(batch))
                return
        if self.dropped and push.getsockopt(zmq.EVENTS) & zmq.POLLOUT:
            self.report_drops(zmq.NOBLOCK)

    def report_drops(self, flags: int) -> None:
        if not self.dropped:
            return
        frames = [b"D"]
        for topic, n in self.dropped.items():
            frames += [topic, str(n).encode()]
        try:
            self.push.send_multipart(frames, flags)
        except zmq.Again:
            return                                  # still full: reported with a later one
        self.dropped.clear()
