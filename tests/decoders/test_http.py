"""HTTP/1.x decoder: framing, pairing, loss, caps, options and documents, fed as byte streams."""
from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wirebeat.decoders.api import DecodeError, FlowKey, Transaction
from wirebeat.decoders.http import (DECODER, NOTE_HOST_PORT_MISMATCH, NOTE_LOSS_REQUEST, NOTE_LOSS_RESPONSE,
                           NOTE_REQUEST_INCOMPLETE, NOTE_TOO_MANY_HEADERS, NOTE_UNMATCHED_REQUEST,
                           NOTE_UNMATCHED_RESPONSE, HTTPStream, document)

FLOW = FlowKey("tcp", "192.0.2.10", 40000, "192.0.2.80", 8080, "test")
BASE = {"transaction_timeout": 10.0, "send_request": False, "send_response": False}

# A step is (from_client, bytes, ts) for data, or (from_client, int, ts) for a gap.
Step = tuple[bool, "bytes | int", float]


def stream(**options: object) -> HTTPStream:
    return HTTPStream(FLOW, {**BASE, **options})


def run(steps: Iterable[Step], decoder: HTTPStream | None = None, close: bool = True,
        errors: list[DecodeError] | None = None) -> list[Transaction]:
    """Feed steps; collect transactions (and DecodeErrors into `errors`, else they fail)."""
    decoder = decoder or stream()
    out: list[Transaction] = []
    for from_client, payload, ts in steps:
        try:
            if isinstance(payload, int):
                out += decoder.on_gap(from_client, payload, ts)
            else:
                out += decoder.on_data(from_client, payload, ts)
        except DecodeError as err:
            if errors is None:
                raise
            errors.append(err)
    if close:
        out += decoder.on_close(steps[-1][2] + 1 if steps else 0.0)
    return out


def request(method: str = "GET", target: str = "/", headers: dict[str, str] | None = None,
            body: bytes = b"", version: str = "1.1", host: str | None = "example.org:8080") -> bytes:
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response(status: int = 200, phrase: str = "OK", headers: dict[str, str] | None = None,
             body: bytes = b"", version: str = "1.1", length: bool = True) -> bytes:
    lines = [f"HTTP/{version} {status} {phrase}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if length and not any(k.lower() in ("content-length", "transfer-encoding") for k in headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*chunks: bytes, trailers: str = "", extension: str = "") -> bytes:
    out = b"".join(f"{len(c):x}{extension}\r\n".encode() + c + b"\r\n" for c in chunks)
    return out + b"0\r\n" + trailers.encode() + b"\r\n"


def summary(txns: list[Transaction]) -> list[tuple]:
    """What a pairing test cares about, per transaction."""
    out = []
    for t in txns:
        req, resp = t.detail.request, t.detail.response
        out.append((req.method if req else None, req.target if req else None,
                    resp.status_code if resp else None,
                    req.body_bytes if req else None, resp.body_bytes if resp else None,
                    t.status, t.notes))
    return out


# -- ways TCP may cut a stream --------------------------------------------------------------

def whole(steps: list[Step]) -> list[Step]:
    return steps


def byte_by_byte(steps: list[Step]) -> list[Step]:
    return [(c, p[i:i + 1], ts) for c, p, ts in steps for i in range(len(p))]


def in_threes(steps: list[Step]) -> list[Step]:
    return [(c, p[i:i + 3], ts) for c, p, ts in steps for i in range(0, len(p), 3)]


SPLITS = [whole, byte_by_byte, in_threes]

KEEPALIVE = [
    (True, request("GET", "/one"), 1.0),
    (False, response(200, body=b"first body"), 1.1),
    (True, request("POST", "/two", {"Content-Type": "application/json"}, body=b'{"a": 1}'), 2.0),
    (False, response(201, "Created", {"Transfer-Encoding": "chunked"})
     + chunked(b"abc", b"defgh", trailers="X-Checksum: 1\r\n", extension=";name=v"), 2.1),
    (True, request("HEAD", "/three"), 3.0),
    (False, response(200, headers={"Content-Length": "12345"}), 3.1),
    (True, request("GET", "/four"), 4.0),
    (False, response(304, "Not Modified", length=False), 4.1),
    (True, request("DELETE", "/five"), 5.0),
    (False, response(204, "No Content", length=False), 5.1),
    (True, request("GET", "/six"), 6.0),
    (False, response(404, "Not Found", body=b"nope"), 6.1),
]
KEEPALIVE_EXPECTED = [
    ("GET", "/one", 200, 0, 10, "OK", ()),
    ("POST", "/two", 201, 8, 8, "OK", ()),
    ("HEAD", "/three", 200, 0, 0, "OK", ()),
    ("GET", "/four", 304, 0, 0, "OK", ()),
    ("DELETE", "/five", 204, 0, 0, "OK", ()),
    ("GET", "/six", 404, 0, 4, "Error", ()),
]


@pytest.mark.parametrize("split", SPLITS)
def test_keepalive_connection_pairs_every_framing_however_tcp_splits_it(split: Callable) -> None:
    assert summary(run(split(KEEPALIVE))) == KEEPALIVE_EXPECTED


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_split_of_the_streams_gives_the_same_transactions(data: st.DataObject) -> None:
    steps = []
    for from_client, payload, ts in KEEPALIVE:
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(payload) - 1)), max_size=6)))
        bounds = [0, *cuts, len(payload)]
        steps += [(from_client, payload[a:b], ts) for a, b in zip(bounds, bounds[1:]) if b > a]
    assert summary(run(steps)) == KEEPALIVE_EXPECTED


def test_message_sizes_count_every_byte_on_the_wire() -> None:
    txns = run(KEEPALIVE)
    for (from_client, payload, _), txn in zip(KEEPALIVE[::2], txns):
        assert txn.request_bytes == len(payload)
    for (_, payload, _), txn in zip(KEEPALIVE[1::2], txns):
        assert txn.response_bytes == len(payload)


def test_pipelined_requests_pair_in_order_and_get_distinct_identities() -> None:
    steps = [
        (True, request("GET", "/a") + request("GET", "/b") + request("GET", "/c"), 1.0),
        (False, response(200, body=b"A") + response(500, "Internal Server Error", body=b"BB"), 1.2),
        (False, response(200, body=b"CCC"), 1.3),
    ]
    txns = run(steps, close=False)
    assert [(t.detail.request.target, t.detail.response.status_code) for t in txns] == [
        ("/a", 200), ("/b", 500), ("/c", 200)]
    assert [t.status for t in txns] == ["OK", "Error", "OK"]
    assert len({t.identity for t in txns}) == 3
    assert all(t.ts == 1.0 for t in txns)


def test_close_delimited_response_ends_with_the_connection() -> None:
    steps = [(True, request("GET", "/old", version="1.0"), 1.0),
             (False, response(200, version="1.0", length=False) + b"part one,", 1.1),
             (False, b" part two", 1.2)]
    decoder = stream()
    assert run(steps, decoder, close=False) == []
    [txn] = decoder.on_close(1.5)
    assert txn.detail.response.body_bytes == len(b"part one, part two")
    assert txn.detail.request.version == "1.0" and txn.notes == ()


def test_interim_100_continue_is_not_a_transaction() -> None:
    steps = [(True, request("PUT", "/up", {"Expect": "100-continue", "Content-Length": "5"}), 1.0),
             (False, b"HTTP/1.1 100 Continue\r\n\r\n", 1.1),
             (True, b"hello", 1.2),
             (False, response(201, "Created"), 1.3)]
    [txn] = run(steps)
    assert (txn.detail.request.body_bytes, txn.detail.response.status_code) == (5, 201)
    assert txn.end_ts == 1.3


def test_response_before_the_request_body_is_complete_still_pairs() -> None:
    steps = [(True, request("POST", "/big", {"Content-Length": "10"}) + b"12345", 1.0),
             (False, response(413, "Payload Too Large"), 1.1),
             (True, b"67890", 1.2)]
    [txn] = run(steps, close=False)
    assert txn.detail.request.body_bytes == 10 and txn.detail.response.status_code == 413


def test_connect_tunnel_bytes_are_not_parsed() -> None:
    steps = [(True, request("CONNECT", "example.org:443", host="example.org:443"), 1.0),
             (False, b"HTTP/1.1 200 Connection established\r\n\r\n", 1.1),
             (True, b"\x16\x03\x01\x02\x00garbage that is TLS", 1.2),
             (False, b"\x16\x03\x03 more TLS", 1.3)]
    [txn] = run(steps)
    assert txn.detail.request.method == "CONNECT" and txn.detail.response.status_code == 200
    doc = document(txn)
    assert doc["query"] == "CONNECT example.org:443" and "full" not in doc["url"]


def test_refused_connect_lets_the_client_go_on_with_http() -> None:
    steps = [(True, request("CONNECT", "example.org:443"), 1.0),
             (False, response(407, "Proxy Authentication Required"), 1.1),
             (True, request("GET", "/after"), 1.2),
             (False, response(200), 1.3)]
    txns = run(steps)
    assert [(t.detail.request.method, t.detail.response.status_code) for t in txns] == [
        ("CONNECT", 407), ("GET", 200)]


def test_websocket_upgrade_switches_to_a_tunnel() -> None:
    steps = [(True, request("GET", "/ws", {"Upgrade": "websocket", "Connection": "Upgrade"}), 1.0),
             (False, response(101, "Switching Protocols", {"Upgrade": "websocket"}, length=False), 1.1),
             (True, b"\x81\x85\x00\x00\x00\x00hello", 1.2),
             (False, b"\x81\x05world", 1.3)]
    [txn] = run(steps)
    assert txn.detail.response.status_code == 101


def test_response_without_request_is_reported_alone_with_a_note() -> None:
    [txn] = run([(False, response(200, body=b"x"), 1.0)])
    assert txn.detail.request is None and txn.status == "Error"
    assert txn.notes == (NOTE_UNMATCHED_RESPONSE,) and txn.end_ts is None
    assert "method" not in document(txn)


def test_request_without_response_times_out_with_a_note() -> None:
    decoder = stream(transaction_timeout=5.0)
    assert run([(True, request("GET", "/lonely"), 100.0)], decoder, close=False) == []
    assert decoder.expire(104.0) == []
    [txn] = decoder.expire(105.5)
    assert txn.status == "Error" and txn.notes == (NOTE_UNMATCHED_REQUEST,)
    assert txn.detail.response is None and txn.response_bytes is None


def test_expire_waits_while_a_slow_response_keeps_arriving() -> None:
    decoder = stream(transaction_timeout=5.0)
    run([(True, request("GET", "/slow"), 0.0),
         (False, response(200, headers={"Content-Length": "30"}) + b"0123456789", 4.0)], decoder, close=False)
    assert decoder.expire(8.0) == []
    run([(False, b"0123456789", 8.5)], decoder, close=False)
    assert decoder.expire(12.0) == []
    [txn] = decoder.on_data(False, b"0123456789", 12.5)
    assert txn.detail.response.body_bytes == 30 and txn.notes == ()


def test_connection_closed_mid_body_reports_the_incomplete_message() -> None:
    steps = [(True, request("POST", "/cut", {"Content-Length": "100"}) + b"only this", 1.0)]
    [txn] = run(steps)
    assert NOTE_REQUEST_INCOMPLETE in txn.notes and NOTE_UNMATCHED_REQUEST in txn.notes
    assert txn.detail.request.body_bytes == len(b"only this")


# -- loss ------------------------------------------------------------------------------------

def test_gap_inside_a_response_body_keeps_the_transaction_with_a_note() -> None:
    body = bytes(range(200))
    resp = response(200, body=body)
    head_len = len(resp) - len(body)
    steps = [(True, request("GET", "/a"), 1.0),
             (False, resp[:head_len + 50], 1.1),
             (False, 100, 1.2),
             (False, resp[head_len + 150:], 1.3),
             (True, request("GET", "/b"), 2.0),
             (False, response(200, body=b"ok"), 2.1)]
    first, second = run(steps)
    assert first.status == "OK" and first.notes == (NOTE_LOSS_RESPONSE,)
    assert first.detail.response.body_bytes == 200 and first.response_bytes == len(resp)
    assert second.notes == () and second.detail.request.target == "/b"


def test_gap_inside_a_request_body_notes_the_request() -> None:
    req = request("POST", "/up", body=b"x" * 100)
    steps = [(True, req[:-60], 1.0), (True, 40, 1.1), (True, req[-20:], 1.2),
             (False, response(200), 1.3)]
    [txn] = run(steps)
    assert txn.notes == (NOTE_LOSS_REQUEST,) and txn.detail.request.body_bytes == 100


def test_gap_inside_one_chunk_keeps_decoding_the_chunked_body() -> None:
    body = chunked(b"a" * 100, b"b" * 10)
    resp = response(200, headers={"Transfer-Encoding": "chunked"}) + body
    cut = resp.index(b"aaaa") + 10
    steps = [(True, request(), 1.0), (False, resp[:cut], 1.1), (False, 50, 1.2),
             (False, resp[cut + 50:], 1.3), (True, request("GET", "/next"), 2.0),
             (False, response(200), 2.1)]
    first, second = run(steps)
    assert first.detail.response.body_bytes == 110 and first.notes == (NOTE_LOSS_RESPONSE,)
    assert second.detail.request.target == "/next" and second.notes == ()


def test_gap_over_chunk_framing_ends_the_message_and_resynchronises() -> None:
    resp = response(200, headers={"Transfer-Encoding": "chunked"}) + chunked(b"a" * 30, b"b" * 30)
    cut = resp.index(b"aaaa") + 10
    steps = [(True, request("GET", "/a") + request("GET", "/b"), 1.0),
             (False, resp[:cut], 1.1), (False, 40, 1.2), (False, resp[cut + 40:], 1.3),
             (False, response(200, body=b"second"), 1.4)]
    first, second = run(steps)
    assert first.detail.request.target == "/a" and NOTE_LOSS_RESPONSE in first.notes
    assert second.detail.request.target == "/b" and second.detail.response.body_bytes == 6


def test_gap_in_response_headers_drops_that_response_and_keeps_pairing_aligned() -> None:
    lost = response(200, body=b"lost")
    steps = [(True, request("GET", "/a") + request("GET", "/b"), 1.0),
             (False, lost[:10], 1.1), (False, len(lost) - 10, 1.2),
             (False, response(404, "Not Found"), 1.3)]
    first, second = run(steps)
    assert first.detail.request.target == "/a" and first.detail.response is None
    assert first.status == "Error" and first.notes == (NOTE_LOSS_RESPONSE,)
    assert (second.detail.request.target, second.detail.response.status_code) == ("/b", 404)


def test_gap_in_request_headers_reports_its_response_with_a_note() -> None:
    lost = request("GET", "/lost")
    steps = [(True, lost[:5], 1.0), (True, len(lost) - 5, 1.0),
             (True, request("GET", "/kept"), 1.0),
             (False, response(200, body=b"for lost"), 1.1),
             (False, response(200, body=b"for kept"), 1.2)]
    first, second = run(steps)
    assert first.detail.request is None and first.notes == (NOTE_LOSS_REQUEST,)
    assert first.status == "Error"
    assert second.detail.request.target == "/kept" and second.notes == ()


def test_gap_in_a_close_delimited_body_is_counted() -> None:
    steps = [(True, request(version="1.0"), 1.0),
             (False, response(200, version="1.0", length=False) + b"abc", 1.1),
             (False, 1000, 1.2), (False, b"def", 1.3)]
    [txn] = run(steps)
    assert txn.detail.response.body_bytes == 1006 and txn.notes == (NOTE_LOSS_RESPONSE,)


def test_capture_started_mid_body_resynchronises_silently() -> None:
    steps = [(True, b"dy of an earlier request\r\n" + request("GET", "/seen"), 1.0),
             (False, b"tail of an earlier response body" + response(200, body=b"x"), 1.1)]
    errors: list[DecodeError] = []
    txns = run(steps, errors=errors)
    assert errors == []
    assert [(t.detail.request and t.detail.request.target, t.detail.response.status_code)
            for t in txns] == [("/seen", 200)]


def test_malformed_message_raises_decode_error_and_the_stream_recovers() -> None:
    decoder = stream()
    run([(True, request("GET", "/a"), 1.0), (False, response(200), 1.1)], decoder, close=False)
    run([(True, request("GET", "/b"), 2.0)], decoder, close=False)
    with pytest.raises(DecodeError) as info:
        decoder.on_data(False, b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n", 2.1)
    assert info.value.reason == "http.bad_content_length"
    txns = run([(True, request("GET", "/c"), 3.0), (False, response(200, body=b"c"), 3.1)], decoder)
    # The malformed response was /b's: /b is reported unanswered and /c pairs with its own.
    assert summary(txns) == [("GET", "/b", None, 0, None, "Error", (NOTE_UNMATCHED_REQUEST,)),
                             ("GET", "/c", 200, 0, 1, "OK", ())]


def test_transactions_finished_before_a_decode_error_are_returned_by_the_next_call() -> None:
    decoder = stream()
    decoder.on_data(True, request("GET", "/a"), 1.0)
    with pytest.raises(DecodeError):
        decoder.on_data(False, response(200) + b"HTTP/1.1 2xx Bad\r\n\r\n", 1.1)
    [txn] = decoder.expire(1.2)
    assert txn.detail.request.target == "/a" and txn.detail.response.status_code == 200


def test_garbage_in_a_synced_stream_is_a_decode_error() -> None:
    decoder = stream()
    decoder.on_data(True, request("GET", "/a"), 1.0)
    with pytest.raises(DecodeError) as info:
        decoder.on_data(True, b"\x00\x01\x02 binary junk", 1.1)
    assert info.value.reason == "http.bad_start_line"
    with pytest.raises(DecodeError) as info:
        decoder.on_data(True, request() + b"\x00\x01\x02 binary junk\r\n\r\n", 1.2)
    assert info.value.reason == "http.bad_request_line"


@pytest.mark.parametrize("payload,reason", [
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "http.bad_header_line"),
    (b"GET / HTTP/2.0\r\n\r\n", "http.unsupported_version"),
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "http.bad_transfer_encoding"),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "http.bad_content_length"),
    (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "http.bad_content_length"),
    (b"GET /\r\n\r\n", "http.bad_request_line"),
])
def test_malformed_requests_raise_named_reasons(payload: bytes, reason: str) -> None:
    decoder = stream()
    decoder.on_data(True, request(), 1.0)      # synced: what follows must be HTTP
    with pytest.raises(DecodeError) as info:
        decoder.on_data(True, payload, 1.1)
    assert info.value.reason == reason


def test_lenient_forms_are_accepted() -> None:
    steps = [(True, b"\r\nGET /lf HTTP/1.1\nHost: a\nX-Folded: one\n two\nX-Space : v\n\n", 1.0),
             (False, b"HTTP/1.1 200\nContent-Length: 2\n\nok", 1.1)]
    [txn] = run(steps)
    assert txn.detail.request.target == "/lf" and txn.detail.response.status_phrase == ""


# -- caps ------------------------------------------------------------------------------------

def test_huge_content_length_is_counted_not_buffered() -> None:
    decoder = stream(include_body_for=["octet"], max_body_bytes=1000)
    decoder.on_data(True, request(), 1.0)
    decoder.on_data(False, response(200, headers={"Content-Length": str(10**18),
                                                  "Content-Type": "application/octet-stream"}), 1.1)
    chunk = b"z" * 65536
    for i in range(64):
        decoder.on_data(False, chunk, 1.2)
    responses = decoder.responses
    assert len(responses.buf) == 0 and len(responses.draft.body) == 1000
    assert responses.draft.body_bytes == 64 * 65536 and responses.remaining == 10**18 - 64 * 65536


def test_content_length_beyond_an_int64_is_malformed() -> None:
    decoder = stream()
    with pytest.raises(DecodeError) as info:
        decoder.on_data(True, b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 20 + b"\r\n\r\n", 1.0)
    assert info.value.reason == "http.bad_content_length"


def test_endless_headers_stop_at_max_header_bytes() -> None:
    decoder = stream(max_header_bytes=4096)
    decoder.on_data(True, b"GET / HTTP/1.1\r\n", 1.0)
    with pytest.raises(DecodeError) as info:
        for _ in range(100):
            decoder.on_data(True, b"X-Filler: " + b"a" * 90 + b"\r\n", 1.0)
    assert info.value.reason == "http.headers_too_large"
    assert len(decoder.requests.buf) <= 8192
    for _ in range(1000):      # more of the same: skipped in a bounded window, no growth
        decoder.on_data(True, b"X-Filler: " + b"a" * 90 + b"\r\n", 1.0)
    assert len(decoder.requests.buf) <= 8192


def test_too_many_headers_keeps_the_first_max_headers_with_a_note() -> None:
    headers = {f"X-H{i}": str(i) for i in range(50)}
    [txn] = run([(True, request(headers=headers), 1.0), (False, response(), 1.1)],
                stream(max_headers=10, send_all_headers=True))
    sent = txn.detail.request.headers
    assert len(sent) == 1 + 10 and NOTE_TOO_MANY_HEADERS in txn.notes     # content-length + 10


def test_endless_chunk_size_line_is_malformed() -> None:
    decoder = stream()
    decoder.on_data(True, request(), 1.0)
    decoder.on_data(False, response(200, headers={"Transfer-Encoding": "chunked"}), 1.1)
    with pytest.raises(DecodeError) as info:
        for _ in range(10):
            decoder.on_data(False, b"1;" + b"e" * 1000, 1.2)
    assert info.value.reason == "http.line_too_long"
    assert len(decoder.responses.buf) <= 8192


def test_huge_chunk_size_is_counted_not_buffered() -> None:
    decoder = stream()
    decoder.on_data(True, request(), 1.0)
    decoder.on_data(False, response(200, headers={"Transfer-Encoding": "chunked"}) + b"ffffffffffffffff\r\n", 1.1)
    for _ in range(32):
        decoder.on_data(False, b"y" * 65536, 1.2)
    responses = decoder.responses
    assert len(responses.buf) == 0 and responses.draft.body is None
    assert responses.remaining == 0xffffffffffffffff - 32 * 65536


def test_chunk_size_over_16_hex_digits_is_malformed() -> None:
    decoder = stream()
    decoder.on_data(True, request(), 1.0)
    with pytest.raises(DecodeError) as info:
        decoder.on_data(False, response(200, headers={"Transfer-Encoding": "chunked"})
                        + b"1" * 17 + b"\r\n", 1.1)
    assert info.value.reason == "http.bad_chunk_size"


def test_endless_trailers_stop_at_max_header_bytes() -> None:
    decoder = stream(max_header_bytes=2048)
    decoder.on_data(True, request(), 1.0)
    decoder.on_data(False, response(200, headers={"Transfer-Encoding": "chunked"}) + b"0\r\n", 1.1)
    with pytest.raises(DecodeError) as info:
        for _ in range(100):
            decoder.on_data(False, b"X-Trailer: " + b"t" * 50 + b"\r\n", 1.2)
    assert info.value.reason in ("http.headers_too_large", "http.line_too_long")


def test_captured_body_is_capped_at_max_body_bytes() -> None:
    body = b"{" + b"x" * 5000 + b"}"
    [txn] = run([(True, request("POST", "/j", {"Content-Type": "application/json"}, body=body), 1.0),
                 (False, response(200), 1.1)], stream(include_body_for=["json"], max_body_bytes=100))
    assert txn.detail.request.body == body[:100].decode() and txn.detail.request.body_bytes == len(body)


def test_pending_requests_are_capped() -> None:
    decoder = stream(max_pending=4)
    txns = decoder.on_data(True, b"".join(request("GET", f"/{i}") for i in range(10)), 1.0)
    assert len(decoder.exchanges) == 4
    assert [t.detail.request.target for t in txns] == [f"/{i}" for i in range(6)]
    assert all(t.notes == (NOTE_UNMATCHED_REQUEST,) for t in txns)
    assert decoder.counters["pending_evicted"] == 6


def test_resync_window_is_bounded() -> None:
    decoder = stream()
    decoder.on_data(False, b"no http here " * 100, 1.0)     # never synced: silent
    for _ in range(200):
        decoder.on_data(False, b"still nothing " * 700, 1.0)
    assert len(decoder.responses.buf) <= 8192
    assert decoder.counters["bytes_skipped"] > 1_000_000


def test_bytes_held_after_connect_are_bounded() -> None:
    decoder = stream(max_header_bytes=1024)
    decoder.on_data(True, request("CONNECT", "example.org:443"), 1.0)
    for _ in range(100):
        decoder.on_data(True, b"t" * 500, 1.1)
    assert len(decoder.requests.buf) <= 1024


# -- options and documents --------------------------------------------------------------------

def one(steps: list[Step], **options: object) -> tuple[Transaction, dict]:
    [txn] = run(steps, stream(**options))
    return txn, document(txn)


def test_document_has_packetbeat_fields() -> None:
    steps = [(True, request("GET", "/dir/file.tar.gz?b=2&a=1&a=0", {
        "User-Agent": "curl/8.14.1", "Referer": "http://ref.example/x"}), 1.0),
             (False, response(503, "Service Unavailable", body=b"down"), 1.25)]
    txn, doc = one(steps)
    assert txn.status == "Error" and txn.end_ts == 1.25
    assert doc["method"] == "GET" and doc["query"] == "GET /dir/file.tar.gz"
    assert doc["url"] == {"scheme": "http", "domain": "example.org", "port": 8080,
                          "path": "/dir/file.tar.gz", "extension": "gz", "query": "a=1&a=0&b=2",
                          "full": "http://example.org:8080/dir/file.tar.gz?a=1&a=0&b=2"}
    assert doc["http"]["version"] == "1.1"
    assert doc["http"]["request"] == {"method": "GET", "bytes": txn.request_bytes,
                                      "headers": {"content-length": 0},
                                      "referrer": "http://ref.example/x"}
    assert doc["http"]["response"] == {"status_code": 503, "status_phrase": "service unavailable",
                                       "bytes": txn.response_bytes, "headers": {"content-length": 4},
                                       "body": {"bytes": 4}}
    assert doc["user_agent"] == {"original": "curl/8.14.1"}
    assert doc["destination"] == {"domain": "example.org"}
    assert doc["related"] == {"ip": ["192.0.2.10", "192.0.2.80"], "hosts": ["ref.example", "example.org"]}


def test_port_80_is_left_out_of_the_url() -> None:
    _, doc = one([(True, request(host="example.org"), 1.0), (False, response(), 1.1)])
    assert doc["url"]["port"] == 8080      # no port in Host: the destination's
    flow80 = FlowKey("tcp", "192.0.2.10", 40000, "192.0.2.80", 80, "t")
    decoder = HTTPStream(flow80, BASE)
    decoder.on_data(True, request(host="example.org"), 1.0)
    [txn] = decoder.on_data(False, response(), 1.1)
    doc = document(txn)
    assert "port" not in doc["url"] and doc["url"]["full"] == "http://example.org/"


def test_ip_literal_host_goes_to_related_ip_not_destination_domain() -> None:
    _, doc = one([(True, request(host="[2001:db8::1]:8080"), 1.0), (False, response(), 1.1)])
    assert "destination" not in doc and doc["url"]["domain"] == "2001:db8::1"
    assert doc["url"]["full"] == "http://[2001:db8::1]:8080/"
    assert "2001:db8::1" in doc["related"]["ip"]


def test_host_port_mismatch_is_noted() -> None:
    txn, _ = one([(True, request(host="example.org:9999"), 1.0), (False, response(), 1.1)])
    assert txn.notes == (NOTE_HOST_PORT_MISMATCH,)


def test_no_host_header_means_no_url_full() -> None:
    _, doc = one([(True, request(host=None, version="1.0"), 1.0), (False, response(), 1.1)])
    assert "full" not in doc["url"] and "domain" not in doc["url"]


def test_send_headers_picks_named_headers_and_send_all_headers_takes_all() -> None:
    steps = [(True, request(headers={"Accept": "*/*", "X-Trace": "t1", "Content-Type": "text/plain"},
                            body=b"hi"), 1.0),
             (False, response(headers={"Server": "test", "Set-Cookie": "a=1"}), 1.1)]
    txn, doc = one(steps, send_headers=["x-trace", "Server"])
    assert doc["http"]["request"]["headers"] == {"content-length": 2, "content-type": "text/plain",
                                                 "x-trace": "t1"}
    assert doc["http"]["response"]["headers"] == {"content-length": 0, "server": "test"}
    txn, doc = one(steps, send_all_headers=True)
    assert doc["http"]["request"]["headers"]["accept"] == "*/*"
    assert doc["http"]["response"]["headers"]["set-cookie"] == "a=1"


def test_repeated_headers_are_joined() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\n\r\n"
    _, doc = one([(True, raw, 1.0), (False, response(), 1.1)], send_all_headers=True)
    assert doc["http"]["request"]["headers"]["x-a"] == "1, 2"


def test_split_cookie_makes_maps() -> None:
    steps = [(True, request(headers={"Cookie": "Session=abc; theme=dark"}), 1.0),
             (False, response(headers={"Set-Cookie": "id=7; Path=/"}), 1.1)]
    _, doc = one(steps, send_all_headers=True, split_cookie=True)
    assert doc["http"]["request"]["headers"]["cookie"] == {"session": "abc", "theme": "dark"}
    assert doc["http"]["response"]["headers"]["set-cookie"] == {"id": "7"}


def test_include_body_for_captures_matching_content_types_only() -> None:
    steps = [(True, request("POST", "/api", {"Content-Type": "application/json; charset=utf-8"},
                            body=b'{"k": "v"}'), 1.0),
             (False, response(headers={"Content-Type": "image/png"}, body=b"\x89PNG"), 1.1)]
    _, doc = one(steps, include_body_for=["application/json"])
    assert doc["http"]["request"]["body"] == {"bytes": 10, "content": '{"k": "v"}'}
    assert doc["http"]["response"]["body"] == {"bytes": 4}
    _, doc = one(steps, include_response_body_for=["image/"])
    assert "content" not in doc["http"]["request"]["body"]
    assert doc["http"]["response"]["body"]["content"] == "\ufffdPNG"


def test_chunked_body_is_captured_without_its_framing() -> None:
    resp = response(200, headers={"Transfer-Encoding": "chunked", "Content-Type": "text/plain"})
    _, doc = one([(True, request(), 1.0), (False, resp + chunked(b"hello ", b"world"), 1.1)],
                 include_body_for=["text"])
    assert doc["http"]["response"]["body"] == {"bytes": 11, "content": "hello world"}


def test_send_request_and_response_give_raw_text_with_captured_bodies() -> None:
    req = request("POST", "/f", {"Content-Type": "application/x-www-form-urlencoded"}, body=b"b=2&a=1")
    resp = response(200, headers={"Content-Type": "text/plain"}, body=b"fine")
    _, doc = one([(True, req, 1.0), (False, resp, 1.1)], send_request=True, send_response=True)
    assert doc["request"] == req.split(b"\r\n\r\n")[0].decode() + "\r\n\r\n"
    assert doc["response"] == resp[:-4].decode()
    _, doc = one([(True, req, 1.0), (False, resp, 1.1)], send_request=True, send_response=True,
                 include_body_for=["form", "text"])
    assert doc["request"] == req.decode() and doc["response"] == resp.decode()
    assert doc["url"]["query"] == "a=1&b=2"       # captured form parameters merge into url.query


def test_hide_keywords_masks_query_values() -> None:
    _, doc = one([(True, request("GET", "/login?user=ann&password=secret"), 1.0), (False, response(), 1.1)],
                 hide_keywords=["password"])
    assert doc["url"]["query"] == "password=xxxxx&user=ann"


def test_basic_auth_gives_user_name() -> None:
    credentials = base64.b64encode(b"alice:s3cret").decode()
    _, doc = one([(True, request(headers={"Authorization": f"Basic {credentials}"}), 1.0),
                  (False, response(), 1.1)])
    assert doc["user"] == {"name": "alice"} and doc["related"]["user"] == ["alice"]


def test_redact_authorization_masks_headers_and_raw_text() -> None:
    credentials = base64.b64encode(b"alice:s3cret").decode()
    req = request(headers={"Authorization": f"Basic {credentials}",
                           "Proxy-Authorization": "Bearer tok"})
    txn, doc = one([(True, req, 1.0), (False, response(), 1.1)],
                   redact_authorization=True, send_all_headers=True, send_request=True)
    headers = doc["http"]["request"]["headers"]
    assert headers["authorization"] == "*" and headers["proxy-authorization"] == "*"
    assert credentials not in doc["request"] and "tok" not in doc["request"]
    # packetbeat: every byte after the colon up to the line end, the space included, becomes '*'.
    assert f"\r\nAuthorization:{'*' * len(' Basic ' + credentials)}\r\n" in doc["request"]
    assert "\r\nProxy-Authorization:***********\r\n" in doc["request"]
    assert doc["user"] == {"name": "alice"}


def test_redact_headers_keeps_the_header_but_not_its_value() -> None:
    req = request(headers={"Cookie": "session=topsecret", "X-Api-Key": "k-123"})
    _, doc = one([(True, req, 1.0), (False, response(), 1.1)],
                 redact_headers=["cookie", "X-Api-Key"], send_all_headers=True, send_request=True)
    headers = doc["http"]["request"]["headers"]
    assert headers["cookie"] == "REDACTED" and headers["x-api-key"] == "REDACTED"
    assert "topsecret" not in doc["request"] and "k-123" not in doc["request"]


@pytest.mark.parametrize("value,expected", [
    ("203.0.113.7, 10.0.0.1", "203.0.113.7"),
    ("2001:db8::7", "2001:db8::7"),
    ("[2001:db8::7]:443", "2001:db8::7"),
    ("203.0.113.7:5555", "203.0.113.7"),
    ("unknown", None),
])
def test_real_ip_header_sets_forwarded_ip_and_client_ip(value: str, expected: str | None) -> None:
    _, doc = one([(True, request(headers={"X-Forwarded-For": value}), 1.0), (False, response(), 1.1)],
                 real_ip_header="X-Forwarded-For")
    if expected is None:
        assert "network" not in doc and "client" not in doc
    else:
        assert doc["network"]["forwarded_ip"] == expected and doc["client"] == {"ip": expected}
        assert expected in doc["related"]["ip"]


def test_absolute_form_target_from_a_proxy_client() -> None:
    _, doc = one([(True, request("GET", "http://example.org:8080/p%20q?x=1"), 1.0), (False, response(), 1.1)])
    assert doc["url"]["path"] == "/p q" and doc["query"] == "GET /p q"
    assert doc["url"]["full"] == "http://example.org:8080/p%20q?x=1"


def test_options_are_declared_with_defaults() -> None:
    assert DECODER.name == "http" and DECODER.ports == (80, 8080, 8000, 5000, 8002)
    for key in ("send_headers", "send_all_headers", "include_body_for", "max_body_bytes",
                "redact_authorization", "redact_headers", "real_ip_header", "max_header_bytes",
                "max_headers", "max_pending"):
        assert key in DECODER.options


# -- fuzz ---------------------------------------------------------------------------------------

def _drive(decoder: HTTPStream, steps: list[tuple[bool, bytes | int]]) -> None:
    ts = 0.0
    for from_client, payload in steps:
        ts += 0.5
        try:
            if isinstance(payload, int):
                decoder.on_gap(from_client, payload, ts)
            else:
                decoder.on_data(from_client, payload, ts)
            decoder.expire(ts)
        except DecodeError:
            pass
    try:
        decoder.on_close(ts + 1)
    except DecodeError:
        pass
    for txn in decoder.on_close(ts + 2):
        document(txn)


_STEP = st.tuples(st.booleans(), st.one_of(st.binary(max_size=300), st.integers(1, 500)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, max_size=12))
def test_random_streams_never_raise_anything_but_decode_error(steps: list) -> None:
    _drive(stream(send_all_headers=True, include_body_for=["text"], send_request=True,
                  send_response=True, real_ip_header="x-forwarded-for", max_header_bytes=512), steps)


_CORPUS = b"".join(p for _, p, _ in KEEPALIVE)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_CORPUS) - 1), st.integers(0, 255), st.sampled_from(
    ["flip", "insert", "delete", "dup"])), max_size=8), st.integers(0, 2**32 - 1))
def test_mutated_streams_never_raise_anything_but_decode_error(mutations: list, seed: int) -> None:
    rng = random.Random(seed)
    steps: list[tuple[bool, bytes | int]] = []
    for from_client, payload, _ in KEEPALIVE:
        data = bytearray(payload)
        for where, byte, how in mutations:
            where %= max(1, len(data))
            if how == "flip" and data:
                data[where] = byte
            elif how == "insert":
                data.insert(where, byte)
            elif how == "delete" and data:
                del data[where]
            elif how == "dup":
                data[where:where] = data[where:where + 40]
        cut = rng.randrange(len(data) + 1)
        steps += [(from_client, bytes(data[:cut])), (from_client, bytes(data[cut:]))]
        if rng.random() < 0.2:
            steps.append((from_client, rng.randrange(1, 200)))
    _drive(stream(send_all_headers=True, include_body_for=["json"], split_cookie=True), steps)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n",
    b"\r\n", b"5\r\nhello\r\n", b"0\r\n\r\n", b"Host: a\r\n", b"HEAD / HTTP/1.0\r\n", b"Upgrade: x\r\n",
    b"CONNECT a:1 HTTP/1.1\r\n", b"HTTP/1.1 101 S\r\n", b"HTTP/1.1 100 C\r\n", b"ffffffff\r\n", b"xyz"]),
    max_size=30), st.lists(st.booleans(), min_size=30, max_size=30))
def test_streams_of_http_fragments_never_raise_anything_but_decode_error(parts: list, sides: list) -> None:
    _drive(stream(), [(side, part) for part, side in zip(parts, sides)])


# -- packetbeat 8 parity: url.query, redaction, bodies (facts from packetbeat's http.go) -------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_form_body_parameters_reach_url_query_without_include_body_for() -> None:
    # packetbeat keeps an urlencoded request body (saveBody) just to read its parameters.
    req = request("POST", "/login?b=url&z=1", FORM, body=b"b=form&a=x+y%21")
    _, doc = one([(True, req, 1.0), (False, response(), 1.1)])
    assert doc["url"]["query"] == "a=x+y%21&b=form&z=1"       # body's b replaces the URL's b
    assert "body" not in doc["http"]["request"] or "content" not in doc["http"]["request"]["body"]


def test_hide_keywords_masks_form_parameters_and_compares_names_lower_cased() -> None:
    req = request("POST", "/login?User=ann", FORM, body=b"PassWord=secret&PassWord=again")
    _, doc = one([(True, req, 1.0), (False, response(), 1.1)], hide_keywords=["password", "USER"])
    assert doc["url"]["query"] == "PassWord=xxxxx&PassWord=xxxxx&User=xxxxx"


def test_url_query_is_encoded_as_go_url_values_encode() -> None:
    target = "/s?q=a+b%2Fc&e=%7E~&u=%C3%A9&empty=&flag&bad=%zz&semi=1;2"
    _, doc = one([(True, request("GET", target), 1.0), (False, response(), 1.1)])
    # Keys sorted; space as '+', '/' escaped, '~' kept, UTF-8 escaped byte-wise;
    # pairs with a bad escape or a ';' dropped, as url.Query() does.
    assert doc["url"]["query"] == "e=~~&empty=&flag=&q=a+b%2Fc&u=%C3%A9"


def test_a_form_body_with_an_invalid_pair_leaves_url_query_out() -> None:
    req = request("POST", "/f?a=1", FORM, body=b"x=%zz")
    _, doc = one([(True, req, 1.0), (False, response(), 1.1)])
    assert "query" not in doc["url"]


def test_redaction_applies_to_requests_only() -> None:
    resp = response(headers={"Set-Cookie": "sid=abc", "Authorization": "Basic Zm9v"})
    _, doc = one([(True, request(), 1.0), (False, resp, 1.1)], redact_authorization=True,
                 redact_headers=["set-cookie"], send_all_headers=True, send_response=True)
    assert doc["http"]["response"]["headers"]["set-cookie"] == "sid=abc"
    assert "Authorization: Basic Zm9v" in doc["response"]


def test_decode_body_inflates_gzip_and_deflate_before_include_body_for() -> None:
    import gzip
    import zlib as zlib_module
    text = b"<html><body>" + b"hello " * 50 + b"</body></html>"
    for coding, packed in (("gzip", gzip.compress(text)), ("deflate", zlib_module.compress(text)),
                           ("deflate", zlib_module.compress(text)[2:-4])):   # raw deflate too
        resp = response(headers={"Content-Type": "text/html", "Content-Encoding": coding}, body=packed)
        _, doc = one([(True, request(), 1.0), (False, resp, 1.1)], include_body_for=["text/html"])
        body = doc["http"]["response"]["body"]
        assert body == {"bytes": len(packed), "content": text.decode()}      # bytes: on the wire
        assert doc["http"]["response"]["mime_type"] == "text/html; charset=utf-8"
    _, doc = one([(True, request(), 1.0), (False, resp, 1.1)], include_body_for=["text/html"],
                 decode_body=False)
    assert doc["http"]["response"]["body"]["content"] != text.decode()


def test_a_body_that_does_not_inflate_is_kept_with_a_note() -> None:
    resp = response(headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"}, body=b"plain!")
    txn, doc = one([(True, request(), 1.0), (False, resp, 1.1)], include_body_for=["text"])
    assert doc["http"]["response"]["body"]["content"] == "plain!"
    assert "http.body_decode_failed" in txn.notes


def test_inflated_body_is_capped_at_max_body_bytes() -> None:
    import gzip
    bomb = gzip.compress(b"A" * 1_000_000)
    resp = response(headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"}, body=bomb)
    _, doc = one([(True, request(), 1.0), (False, resp, 1.1)], include_body_for=["text"],
                 max_body_bytes=4096)
    assert doc["http"]["response"]["body"]["content"] == "A" * 4096


def test_max_message_size_keeps_the_message_without_the_rest_of_its_body() -> None:
    resp = response(headers={"Content-Type": "text/plain"}, body=b"x" * 1000)
    head_len = len(resp) - 1000
    txn, doc = one([(True, request(), 1.0), (False, resp, 1.1)], include_body_for=["text"],
                   max_message_size=head_len + 100)
    assert txn.status == "OK" and doc["http"]["response"]["bytes"] == len(resp)
    assert doc["http"]["response"]["body"] == {"bytes": 1000, "content": "x" * 100}


@pytest.mark.parametrize("body,mime", [
    (b"\x89PNG\r\n\x1a\n" + bytes(20), "image/png"),
    (b"  <!DOCTYPE html><html></html>", "text/html; charset=utf-8"),
    (b'<?xml version="1.0"?><a/>', "text/xml; charset=utf-8"),
    (b'{"a": 1}', "text/plain; charset=utf-8"),
    (b"%PDF-1.7\n", "application/pdf"),
    (b"\x00\x01\x02binary", None),          # octet-stream: the processor sets nothing
])
def test_mime_type_is_sniffed_from_the_captured_body(body: bytes, mime: str | None) -> None:
    resp = response(headers={"Content-Type": "application/whatever"}, body=body)
    _, doc = one([(True, request(), 1.0), (False, resp, 1.1)], include_body_for=["whatever"])
    assert doc["http"]["response"].get("mime_type") == mime
    _, doc = one([(True, request(), 1.0), (False, resp, 1.1)], include_body_for=["whatever"],
                 include_mime=False)
    assert "mime_type" not in doc["http"]["response"]


@pytest.mark.parametrize("path", ["/", "/item/8", "/a b", "/caf\u00e9", "/%41%zz", "/a?b", "/~user/x.y-z_",
                                  "/a#b", "/[x]", "/\"q\"", "/a|b", "", "/:@!$&'()*+,;=", "/\\"])
def test_url_full_quotes_the_path_as_quote_does_with_or_without_the_shortcut(path: str) -> None:
    from urllib.parse import quote

    from wirebeat.decoders.http import _full_url
    expected = "http://example.com" + quote(path, safe="/:@!$&'()*+,;=-._~%")
    assert _full_url("example.com", 80, path, "") == expected


@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "[2001:db8::1]:443", "[2001:db8::1]",
                                  "2001:db8::1", " example.com:80 ", "a:b:c", "example.com:99999", "x" * 300 + ":81"])
def test_host_and_port_are_split_the_same_cached_or_not(host: str) -> None:
    from wirebeat.decoders.http import _host_port, _split_host_port
    assert _host_port(host) == _host_port(host) == _split_host_port(host)


def test_a_closed_stream_is_freed_by_its_last_reference_not_the_garbage_collector():
    """Once closed, nothing refers back to the stream from its directions: dropping the
    engine's reference frees it at once (with the collector off), as it frees the other
    decoders' state; a cycle left for the collector made one of every three of its passes
    on the dense benchmark mix."""
    import gc
    import weakref
    decoder = stream()
    txns = run([(True, request(), 1.0), (False, response(), 1.1)], decoder)
    assert len(txns) == 1
    gone = weakref.ref(decoder)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del decoder
        assert gone() is None
    finally:
        if enabled:
            gc.enable()
