"""HTTP documents of the real captures agree with tshark's dissection of them.

The captures in pcaps/http/ were recorded from curl, wget, python's http.server
and pcaps/http/server.py (pcaps/http/make_captures.sh). Each is decoded by the
real command line (`wirebeat run -I FILE --console --strict`) and by tshark,
the independent oracle. Per TCP connection, the requests (method and exact
request-target, in order) must be the same, and every response tshark
dissected must be ours too, with the same status code and body length
(Content-Length, sum of chunk sizes, or the bytes up to the close).

tshark's own request/response links are used where it sets them
(`http.request_in`); it leaves them out for pipelined responses, which are
then paired in order, as RFC 9112 §9.3 says they are answered.
"""
from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from conftest import PCAPS, decode_file

CAPTURES = sorted((PCAPS / "http").glob("*.pcap"))
FIELDS = ["frame.number", "tcp.stream", "tcp.srcport", "tcp.dstport", "http.request.method",
          "http.request.uri", "http.request.uri.path", "http.request.uri.query", "http.response.code",
          "http.request_in", "http.content_length_header", "http.chunk_size", "http.file_data"]
SERVER_PORTS = {8000, 8080}


def _tshark(path: Path) -> list[dict[str, list[str]]]:
    """One dict per HTTP frame: field -> every occurrence (pipelined messages share a frame)."""
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "http", "-T", "json",
                          *[a for f in FIELDS for a in ("-e", f)]],
                         capture_output=True, check=True, text=True).stdout
    return [packet["_source"]["layers"] for packet in json.loads(out or "[]")]


def _one(layers: dict[str, list[str]], field: str, index: int = 0) -> str | None:
    values = layers.get(field, [])
    return values[index] if index < len(values) else None


def tshark_exchanges(path: Path) -> dict[int, list[dict]]:
    """Client port -> the connection's exchanges as tshark sees them, in request order."""
    requests: dict[int, list[dict]] = defaultdict(list)
    responses: dict[int, list[dict]] = defaultdict(list)
    for layers in _tshark(path):
        frame = int(layers["frame.number"][0])
        src, dst = int(layers["tcp.srcport"][0]), int(layers["tcp.dstport"][0])
        for i, method in enumerate(layers.get("http.request.method", [])):
            requests[src].append({
                "frame": frame, "method": method, "uri": _one(layers, "http.request.uri", i),
                "content_length": _one(layers, "http.content_length_header", i),
                "response": None})
        for i, code in enumerate(layers.get("http.response.code", [])):
            if int(code) < 200:
                continue        # an interim response: not a transaction, here as in packetbeat
            chunks = layers.get("http.chunk_size")
            data = _one(layers, "http.file_data", i)
            responses[dst].append({
                "frame": frame, "code": int(code), "request_in": _one(layers, "http.request_in", i),
                "content_length": _one(layers, "http.content_length_header", i),
                "chunked_length": sum(int(c) for c in chunks) if chunks else None,
                "data_length": len(data.encode()) if data is not None else None})
    exchanges: dict[int, list[dict]] = {}
    for port in set(requests) | set(responses):
        reqs = requests[port]
        lone = []
        cursor = 0
        for resp in responses[port]:
            index = None
            if resp["request_in"] is not None:
                frame = int(resp["request_in"])
                index = next((i for i, r in enumerate(reqs)
                              if r["frame"] == frame and r["response"] is None), None)
            if index is None:        # pipelined: the next request not yet answered
                index = next((i for i in range(cursor, len(reqs)) if reqs[i]["response"] is None), None)
            if index is None:
                lone.append(resp)
                continue
            reqs[index]["response"] = resp
            cursor = index + 1
        exchanges[port] = reqs + [{"method": None, "uri": None, "response": r} for r in lone]
    return exchanges


def our_exchanges(docs: list[dict]) -> dict[int, list[dict]]:
    """Client port -> our documents, in the order they were emitted."""
    out: dict[int, list[dict]] = defaultdict(list)
    for doc in docs:
        assert doc["type"] == "http"
        out[doc["source"]["port"]].append(doc)
    return out


def _target(doc: dict) -> str | None:
    """The request-target exactly as sent, from the raw request text (send_request)."""
    if "request" not in doc:
        return None
    return doc["request"].split("\r\n", 1)[0].split(" ")[1]


@pytest.fixture(scope="module", params=CAPTURES, ids=[p.name for p in CAPTURES])
def capture(request: pytest.FixtureRequest) -> tuple[Path, dict, dict]:
    path: Path = request.param
    docs = decode_file(path, "wirebeat.protocols.http.send_request=true")
    return path, tshark_exchanges(path), our_exchanges(docs)


def test_there_are_http_captures() -> None:
    assert {p.name for p in CAPTURES} >= {
        "simple_server.pcap", "keepalive.pcap", "post_json.pcap", "basic_auth.pcap",
        "pipelined.pcap", "unanswered.pcap", "midstream.pcap", "lossy.pcap"}


def test_requests_agree_with_tshark(capture) -> None:
    path, theirs, ours = capture
    assert set(ours) == set(theirs), "TCP connections (client ports) differ"
    for port, exchanges in theirs.items():
        expected = [(e["method"], e["uri"]) for e in exchanges if e["method"] is not None]
        got = [(d["method"], _target(d)) for d in ours[port] if "method" in d]
        assert got == expected, f"{path.name} client port {port}"


def test_url_fields_agree_with_tsharks_uri(capture) -> None:
    path, theirs, ours = capture
    for port, exchanges in theirs.items():
        for theirs_one, doc in zip([e for e in exchanges if e["method"]], [d for d in ours[port] if "method" in d]):
            path_part, _, query = theirs_one["uri"].partition("?")
            assert doc["url"]["path"] == path_part
            assert doc["query"] == f"{theirs_one['method']} {path_part}"
            assert sorted(parse_qsl(doc["url"].get("query", ""))) == sorted(parse_qsl(query))


def test_responses_agree_with_tshark(capture) -> None:
    path, theirs, ours = capture
    compared = 0
    for port, exchanges in theirs.items():
        docs = ours[port]
        with_request = [d for d in docs if "method" in d]
        without_request = [d for d in docs if "method" not in d]
        requests = [e for e in exchanges if e["method"] is not None]
        lone = [e["response"] for e in exchanges if e["method"] is None]
        pairs = list(zip(requests, with_request)) + list(zip([{"response": r} for r in lone], without_request))
        assert len(without_request) == len(lone), f"{path.name}: responses without request"
        for exchange, doc in pairs:
            expected = exchange["response"]
            if expected is None:
                continue            # tshark dissected no response here (loss or cut): see below
            response = doc["http"]["response"]
            assert response["status_code"] == expected["code"]
            declared = response["headers"]["content-length"]
            body = response.get("body", {}).get("bytes", 0)
            if expected["chunked_length"] is not None:
                assert body == expected["chunked_length"]
            elif expected["content_length"] is not None:
                assert declared == int(expected["content_length"])
                assert body == (0 if doc.get("method") == "HEAD" else declared)
            else:                   # delimited by the close
                assert body == expected["data_length"]
            assert doc["status"] == ("Error" if expected["code"] >= 400 else "OK")
            compared += 1
    if path.name not in ("unanswered.pcap",):
        assert compared > 0


def test_request_bodies_agree_with_tshark(capture) -> None:
    path, theirs, ours = capture
    for port, exchanges in theirs.items():
        for exchange, doc in zip([e for e in exchanges if e["method"]], [d for d in ours[port] if "method" in d]):
            expected = int(exchange["content_length"] or 0)
            assert doc["http"]["request"].get("body", {}).get("bytes", 0) == expected
            assert doc["http"]["request"]["headers"]["content-length"] == expected


# -- what tshark cannot tell: loss, cuts, timeouts (made on purpose by make_captures.sh) -------

def _by_path(path: Path, *overrides: str) -> dict[str, dict]:
    return {d["url"]["path"]: d for d in decode_file(path, *overrides) if "url" in d}


def test_lossy_capture_keeps_transactions_and_notes_the_loss() -> None:
    docs = _by_path(PCAPS / "http" / "lossy.pcap")
    assert set(docs) == {"/slow", "/hello", "/chunked", "/status/404"}
    slow = docs["/slow"]        # a body segment was dropped: kept, counted in full, noted
    assert slow["status"] == "OK" and slow["http"]["response"]["status_code"] == 200
    assert slow["http"]["response"]["body"]["bytes"] == 8 * 600
    assert slow["error"]["message"] == "Packet loss while capturing the response"
    hello = docs["/hello"]      # its response headers were dropped: request alone, noted
    assert hello["status"] == "Error" and "response" not in hello["http"]
    assert hello["error"]["message"] == "Packet loss while capturing the response"
    chunked = docs["/chunked"]  # a whole chunk was dropped: what came before it, noted
    assert chunked["http"]["response"]["status_code"] == 200
    assert chunked["error"]["message"] == "Packet loss while capturing the response"
    assert chunked["http"]["response"]["body"]["bytes"] < 6 * 300
    assert docs["/status/404"]["http"]["response"]["status_code"] == 404   # pairing stayed aligned
    assert "error" not in docs["/status/404"]


def test_capture_started_mid_connection_decodes_what_follows_the_cut() -> None:
    docs = decode_file(PCAPS / "http" / "midstream.pcap")
    got = [(d.get("query"), d["http"].get("response", {}).get("status_code")) for d in docs]
    # The cut fell inside /slow's response body: that transaction is not reported,
    # every later one is, complete and paired (tshark misses /hello's response).
    assert got == [("GET /hello", 200), ("GET /chunked", 200), ("GET /status/503", 503)]
    assert all("error" not in d for d in docs)


def test_unanswered_request_is_reported_with_packetbeats_note() -> None:
    [doc] = decode_file(PCAPS / "http" / "unanswered.pcap")
    assert doc["query"] == "GET /hang" and doc["status"] == "Error"
    assert doc["error"]["message"] == "Unmatched request"
    assert "response" not in doc["http"] and "duration" not in doc["event"]


def test_interim_100_continue_is_folded_into_the_transaction() -> None:
    docs = decode_file(PCAPS / "http" / "post_json.pcap")
    assert [d["http"]["response"]["status_code"] for d in docs] == [200, 200]
    big = docs[1]
    assert big["http"]["request"]["body"]["bytes"] == big["http"]["response"]["body"]["bytes"] == 2461


def test_post_json_body_is_captured_with_include_body_for() -> None:
    [small, _] = decode_file(PCAPS / "http" / "post_json.pcap",
                             "wirebeat.protocols.http.include_body_for=[application/json]")
    body = json.loads(small["http"]["request"]["body"]["content"])
    assert body == {"user": "alice", "items": [1, 2, 3], "note": "a JSON body"}
    assert small["http"]["response"]["body"]["content"] == small["http"]["request"]["body"]["content"]


def test_basic_auth_user_is_reported_and_credentials_can_be_redacted() -> None:
    overrides = ("wirebeat.protocols.http.redact_authorization=true",
                 "wirebeat.protocols.http.send_all_headers=true",
                 "wirebeat.protocols.http.send_request=true")
    docs = decode_file(PCAPS / "http" / "basic_auth.pcap", *overrides)
    assert [d["http"]["response"]["status_code"] for d in docs] == [401, 200, 401, 200]
    authorized = [d for d in docs if "user" in d]
    assert [d["user"]["name"] for d in authorized] == ["alice", "alice"]
    text = json.dumps(docs)
    assert "YWxpY2U6d29uZGVybGFuZA==" not in text and "wonderland" not in text
    assert all(d["http"]["request"]["headers"]["authorization"] == "*" for d in authorized)


def test_documents_carry_packetbeat_fields() -> None:
    docs = decode_file(PCAPS / "http" / "keepalive.pcap")
    for doc in docs:
        assert doc["type"] == "http" and doc["network"]["protocol"] == "http"
        assert doc["network"]["transport"] == "tcp" and doc["event"]["dataset"] == "http"
        assert doc["event"]["duration"] >= 0
        assert doc["url"]["full"].startswith("http://127.0.0.1:8080/")
        assert doc["user_agent"]["original"].startswith(("curl/", "Wget/"))
        assert doc["source"]["bytes"] == doc["http"]["request"]["bytes"]
        assert doc["destination"]["bytes"] == doc["http"]["response"]["bytes"]
        assert doc["network"]["bytes"] == doc["source"]["bytes"] + doc["destination"]["bytes"]
    assert [d["status"] for d in docs] == ["OK", "OK", "Error", "Error", "OK", "OK"]
