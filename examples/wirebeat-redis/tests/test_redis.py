"""The Redis plug-in on a capture of real redis-server and redis-cli (capture/make_capture.sh).

Expected values come from redis-cli's own typed output of the same session
(capture/transcript.txt), not from the decoder: each command's reply as
redis-cli printed it is turned into the string packetbeat's `redis.return_value`
holds (`(integer) 42` -> "42", `(nil)` -> "nil", a numbered list -> "[a, b]").
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from wirebeat.api import DecodeError, FlowKey
from wirebeat.testing import decode_pcap
from wirebeat_redis import DECODER
from wirebeat_redis.decoder import RedisStream, read_value

CAPTURE = Path(__file__).resolve().parent.parent / "capture"


def transcript() -> tuple[list[tuple[str, str, bool]], str]:
    """([(command line, expected rendering, is_error)], the --pipe summary line)."""
    blocks = re.split(r"^> ", (CAPTURE / "transcript.txt").read_text(), flags=re.M)[1:]
    out, summary = [], ""
    for block in blocks:
        command, *lines = block.rstrip("\n").split("\n")
        if command.startswith("--pipe"):
            summary = lines[0]
            continue
        text = "\n".join(lines)
        if text.startswith("(error) "):
            out.append((command, text[len("(error) "):], True))
        elif text.startswith("(integer) "):
            out.append((command, text[len("(integer) "):], False))
        elif text == "(nil)":
            out.append((command, "nil", False))
        elif re.match(r"1\) ", text):
            items = [re.sub(r'^\d+\) "(.*)"$', r"\1", line) for line in lines]
            out.append((command, "[" + ", ".join(items) + "]", False))
        else:
            out.append((command, text.strip('"'), False))
    return out, summary


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    found, _ = decode_pcap(CAPTURE / "redis.pcap", [DECODER])
    return sorted(found, key=lambda d: d["@timestamp"])


def test_each_command_and_its_reply_match_redis_cli(docs):
    expected, _ = transcript()
    single = docs[:len(expected)]
    assert len(single) == len(expected) == 12
    for doc, (command, value, is_error) in zip(single, expected):
        assert doc["query"] == command
        assert doc["method"] == command.split()[0].upper()
        assert doc["resource"] == command.split()[1]
        if is_error:
            assert doc["status"] == "Error" and doc["redis"] == {"error": value}
        else:
            assert doc["status"] == "OK" and doc["redis"] == {"return_value": value}
        assert doc["event"]["duration"] >= 0 and doc["source"]["bytes"] > 0


def test_pipelined_commands_pair_in_order(docs):
    _, summary = transcript()
    errors, replies = map(int, re.match(r"errors: (\d+), replies: (\d+)", summary).groups())
    pipelined = docs[12:]
    # redis-cli --pipe ends with an ECHO of its own to know when every reply is in.
    assert len(pipelined) == replies + 1 and pipelined[-1]["method"] == "ECHO"
    assert len({d["source"]["port"] for d in pipelined}) == 1
    assert sum(d["status"] == "Error" for d in pipelined) == errors
    assert [d["method"] for d in pipelined[:replies]] == ["SET", "INCR", "GET", "LPUSH", "PING"]
    assert [d["redis"].get("return_value") for d in pipelined[:3]] == ["OK", "2", "2"]


def test_bytes_split_anywhere_decode_the_same():
    flow = FlowKey("tcp", "127.0.0.1", 5000, "127.0.0.1", 6379)
    options = {"max_pending": 10, "max_message_bytes": 1000}
    request, reply = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"*2\r\n$1\r\na\r\n$-1\r\n"
    stream = RedisStream(flow, options)
    txns = [t for i in range(len(request)) for t in stream.on_data(True, request[i:i + 1], 1.0)]
    txns += [t for i in range(len(reply)) for t in stream.on_data(False, reply[i:i + 1], 2.0)]
    [txn] = txns
    assert txn.detail == (["GET", "k"], ["a", None]) and txn.status == "OK"


@pytest.mark.parametrize("bad", [b"GET k\r\n", b"$x\r\n", b"*1\r\n" * 20 + b":1\r\n"])
def test_bytes_that_are_not_resp_raise_decode_error(bad):
    with pytest.raises(DecodeError):
        read_value(bad)


def test_replies_without_commands_and_too_many_commands_are_counted():
    stream = RedisStream(FlowKey("tcp", "a", 1, "b", 6379), {"max_pending": 2, "max_message_bytes": 10})
    assert stream.on_data(False, b"+OK\r\n", 1.0) == []
    stream.on_data(True, b"*1\r\n$4\r\nPING\r\n" * 3, 2.0)
    stream.on_data(True, b"$99\r\n" + b"x" * 20, 3.0)      # incomplete and over the cap
    assert stream.counters == {"unmatched_replies": 1, "pending_dropped": 1, "oversized": 1}
