"""Redis over TCP (RESP2, https://redis.io/docs/latest/develop/reference/protocol-spec/).

One document per command and its reply. Replies come in the order of the
commands, so pipelined commands pair up through a queue; an error reply gives
status Error. Fields as packetbeat's redis module: method, resource (the key),
query, redis.return_value, redis.error. Not decoded: inline commands, RESP3.
"""
from __future__ import annotations

import json
from collections import deque
from importlib import resources
from typing import Any

from wirebeat.api import DecodeError, DecoderSpec, FlowKey, Option, Transaction


class RedisError(str):
    """The text of an error reply."""


def read_value(buf: bytes, pos: int = 0, depth: int = 0) -> tuple[Any, int] | None:
    """The RESP value at buf[pos:] and where it ends; None until all its bytes are there."""
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        return None
    kind, line, end = buf[pos:pos + 1], buf[pos + 1:eol], eol + 2
    if kind in (b"+", b"-"):
        text = line.decode("utf-8", "replace")
        return (RedisError(text) if kind == b"-" else text), end
    if kind not in (b":", b"$", b"*") or depth > 8:     # depth: no recursion bombs
        raise DecodeError("redis.not_resp", pos)
    try:
        number = int(line)
    except ValueError:
        raise DecodeError("redis.bad_number", pos) from None
    if kind == b":" or number < 0:                      # an integer, or nil
        return (number if kind == b":" else None), end
    if kind == b"$":
        if len(buf) < end + number + 2:
            return None
        return buf[end:end + number].decode("utf-8", "replace"), end + number + 2
    items = []
    for _ in range(number):
        if (got := read_value(buf, end, depth + 1)) is None:
            return None
        item, end = got
        items.append(item)
    return items, end


def render(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    return "nil" if value is None else str(value)


class RedisStream:
    """One connection: commands wait in a queue for their replies."""

    def __init__(self, flow: FlowKey, options: dict[str, Any]) -> None:
        self.flow = flow
        self.max_pending, self.max_bytes = options["max_pending"], options["max_message_bytes"]
        self.buffers = {True: b"", False: b""}
        self.pending: deque[tuple[float, Any, int]] = deque()    # (ts, command, its size)
        self.counters = {"unmatched_replies": 0, "pending_dropped": 0, "oversized": 0}
        self.sequence = 0       # pipelined replies share a packet time: this tells them apart

    def on_data(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]:
        buf, out = self.buffers[from_client] + data, []
        self.buffers[from_client] = b""         # bytes that are not RESP are dropped
        # Empty lines between commands are allowed (redis-cli --pipe sends one): skip them.
        while (got := read_value(buf := buf.lstrip(b"\r\n"))) is not None:
            value, size = got
            buf = buf[size:]
            if from_client:
                if len(self.pending) >= self.max_pending:
                    self.pending.popleft()
                    self.counters["pending_dropped"] += 1
                self.pending.append((ts, value, size))
            elif self.pending:
                start, command, request_size = self.pending.popleft()
                status = "Error" if isinstance(value, RedisError) else "OK"
                self.sequence += 1
                out.append(Transaction(self.flow, start, ts, status, (command, value), request_size,
                                       size, identity=str(self.sequence)))
            else:
                self.counters["unmatched_replies"] += 1
        if len(buf) > self.max_bytes:
            buf = b""
            self.counters["oversized"] += 1
        self.buffers[from_client] = buf
        return out

    def on_gap(self, from_client: bool, missing: int, ts: float) -> list[Transaction]:
        self.buffers[from_client] = b""         # framing lost, and with it the pairing
        self.pending.clear()
        return []

    def on_close(self, ts: float) -> list[Transaction]:
        return []

    def expire(self, now: float) -> list[Transaction]:
        return []


def document(txn: Transaction) -> dict[str, Any]:
    command, reply = txn.detail
    words = [render(w) for w in command] if isinstance(command, list) and command else [render(command)]
    doc: dict[str, Any] = {"method": words[0].upper(), "query": " ".join(words)}
    if len(words) > 1:
        doc["resource"] = words[1]
    doc["redis"] = {"error" if isinstance(reply, RedisError) else "return_value": render(reply)}
    return doc


DECODER = DecoderSpec(
    name="redis", document=document, stream=RedisStream, ports=(6379,),
    options={"max_pending": Option("int", 1000, "commands awaiting a reply, per connection"),
             "max_message_bytes": Option("int", 1 << 20, "an incomplete message larger is dropped")},
    # The index template fragment ships in the package, next to this module.
    mappings=json.loads(resources.files(__package__).joinpath("fields.json").read_text()),
)
