"""The receiver's queue over a real PUSH/PULL pair: order kept, room respected, drops reported."""
from __future__ import annotations

import zmq

from wirebeat.document import capture_fields
from wirebeat.sources.zmqrecv import BATCH_ITEMS, _Queue, split_batch


def _pair(hwm: int) -> tuple[zmq.Context, zmq.Socket, zmq.Socket]:
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, hwm)
    pull.bind("inproc://q")
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, hwm)
    push.connect("inproc://q")
    return context, push, pull


def _drain(pull: zmq.Socket) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    while pull.poll(100):
        frames = pull.recv_multipart()
        assert frames[0][:1] == b"B"
        batch = split_batch(frames)
        assert 1 <= len(batch) <= BATCH_ITEMS
        out += batch
    return out


def test_batches_keep_order_and_part_counts_and_wait_for_room():
    context, push, pull = _pair(hwm=2)
    try:
        queue = _Queue(push, capacity=10_000)
        sent = []
        for i in range(3000):
            # Messages of 1, 2 and 3 parts, as events and frames are.
            parts = [b"data.v1.c%d" % (i % 7), b"h" * (i % 5), b"r%d" % i][: 1 + i % 3]
            sent.append(parts)
            queue.messages.append(parts)
        queue.forward()
        # inproc holds 2 + 2 batches: the rest waits in the queue, nothing is lost.
        assert 0 < len(queue.messages) < 3000
        got: list[list[bytes]] = []
        while queue.messages:
            got += _drain(pull)
            queue.forward()
        got += _drain(pull)
        assert got == sent
    finally:
        push.close(0)
        pull.close(0)
        context.term()


def test_drops_are_reported_once_there_is_room():
    context, push, pull = _pair(hwm=1)
    try:
        queue = _Queue(push, capacity=1)
        queue.dropped[b"data.v1.edge1"] += 5
        queue.dropped[b"data.v1.edge.2"] += 2
        queue.forward()
        frames = pull.recv_multipart()
        assert frames == [b"D", b"data.v1.edge1", b"5", b"data.v1.edge.2", b"2"]
        assert not queue.dropped
    finally:
        push.close(0)
        pull.close(0)
        context.term()


def test_capture_fields_split_a_collector_clients_key_only():
    assert capture_fields("edge1\0tcp://10.0.0.1:6666") == {"source": "edge1", "collector": "tcp://10.0.0.1:6666"}
    assert capture_fields("/captures/a.pcap") == {"source": "/captures/a.pcap"}
    assert capture_fields("eth0") == {"source": "eth0"}
