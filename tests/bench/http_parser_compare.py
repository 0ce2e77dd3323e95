"""Benchmark: our HTTP/1.x framing parser next to httptools (llhttp) on the same stream.

Run with `.venv/bin/python tests/bench/http_parser_compare.py` (httptools must be
installed; it is not a dependency of wirebeat). Not a test: nothing here asserts.

The stream is one keep-alive connection: browser-like requests (10-12 headers,
one in ten a POST with a JSON body) and responses with 6-10 headers and bodies
of 0 to 24 KiB, a third of them chunked in 4 KiB chunks; each direction is cut
into 1448-byte segments as TCP would deliver it. Both parsers do the same work
per message: start line, a dict of lower-cased header names (repeats joined),
body length.

- "own": decoders.http's per-direction parser, with a stand-in for the stream
  (no pairing, no documents);
- "httptools": HttpRequestParser / HttpResponseParser with Python callbacks;
- "decoder": the whole HTTPStream (both parsers, pairing, Transaction records),
  both directions interleaved as the engine delivers them.
"""
from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from wirebeat.decoders.api import FlowKey  # noqa: E402
from wirebeat.decoders.http import HTTPStream, _Direction, _Settings  # noqa: E402

SEGMENT = 1448


def make_exchanges(count: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    sizes = [0, 0, 180, 900, 2400, 6000, 12000, 24000]
    out = []
    for i in range(count):
        path = f"/static/{rng.choice(['app', 'lib', 'img', 'api'])}/{i}/{rng.randrange(10**6)}.js"
        headers = [
            f"Host: www.example.org",
            "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "Accept-Language: en-US,en;q=0.5",
            "Accept-Encoding: gzip, deflate",
            "Connection: keep-alive",
            f"Referer: http://www.example.org/page/{i}",
            f"Cookie: session={rng.randrange(10**12):x}; theme=dark; consent=yes",
            "Upgrade-Insecure-Requests: 1",
            "Cache-Control: max-age=0",
        ]
        if rng.random() < 0.1:
            body = ('{"items": [' + ",".join(str(rng.randrange(1000)) for _ in range(rng.randrange(20, 300)))
                    + "]}").encode()
            request = (f"POST /api/v1/items?page={i} HTTP/1.1\r\n" + "\r\n".join(headers)
                       + f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        else:
            request = (f"GET {path}?v={i} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode()
        size = rng.choice(sizes)
        body = bytes(rng.getrandbits(8) for _ in range(64)) * (size // 64) + b"x" * (size % 64)
        head = ["HTTP/1.1 200 OK", "Server: nginx/1.26.0", "Date: Tue, 25 Nov 2025 22:31:54 GMT",
                "Content-Type: application/javascript", "Connection: keep-alive",
                "Cache-Control: public, max-age=3600", 'ETag: "5f3a-12ab"',
                "Last-Modified: Mon, 24 Nov 2025 10:00:00 GMT"]
        if size and rng.random() < 0.33:
            head.append("Transfer-Encoding: chunked")
            chunks = b"".join(f"{len(body[j:j + 4096]):x}\r\n".encode() + body[j:j + 4096] + b"\r\n"
                              for j in range(0, len(body), 4096))
            response = ("\r\n".join(head) + "\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
        else:
            head.append(f"Content-Length: {size}")
            response = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        out.append((request, response))
    return out


def segments(data: bytes) -> list[bytes]:
    return [data[i:i + SEGMENT] for i in range(0, len(data), SEGMENT)]


class _Stub:
    """Stands in for HTTPStream: the parser's callbacks do nothing."""

    def __init__(self) -> None:
        self.counters = {"bytes_skipped": 0, "gaps": 0}
        self.tunneled = False
        self.hold_exchange = None
        self.messages = 0

    def on_request_head(self, draft) -> None:
        draft.exchange = _EXCHANGE

    def on_response_head(self, draft) -> str:
        draft.exchange = _EXCHANGE
        return "GET"

    def on_interim(self, draft) -> None:
        pass

    def on_complete(self, draft, size: int) -> None:
        self.messages += 1


class _Ex:
    last_ts = 0.0
    response_done = False


_EXCHANGE = _Ex()


def run_own(req_segments: list[bytes], resp_segments: list[bytes]) -> int:
    stub = _Stub()
    settings = _Settings.from_options({})
    requests, responses = _Direction(stub, True, settings), _Direction(stub, False, settings)
    for seg in req_segments:
        requests.feed(seg, 0.0)
    for seg in resp_segments:
        responses.feed(seg, 0.0)
    return stub.messages


def run_httptools(req_segments: list[bytes], resp_segments: list[bytes]) -> int:
    import httptools

    class Collector:
        def __init__(self) -> None:
            self.messages = 0
            self.headers: dict[str, str] = {}
            self.url = b""
            self.body_bytes = 0

        def on_message_begin(self) -> None:
            self.headers = {}
            self.url = b""
            self.body_bytes = 0

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_status(self, status: bytes) -> None:
            self.phrase = status

        def on_header(self, name: bytes, value: bytes) -> None:
            key = name.decode("latin-1").lower()
            text = value.decode("utf-8", "replace")
            previous = self.headers.get(key)
            self.headers[key] = text if previous is None else previous + ", " + text

        def on_headers_complete(self) -> None:
            self.version = self.parser.get_http_version()
            self.method_or_status = (self.parser.get_method() if hasattr(self.parser, "get_method")
                                     else self.parser.get_status_code())

        def on_body(self, body: bytes) -> None:
            self.body_bytes += len(body)

        def on_message_complete(self) -> None:
            self.messages += 1

    total = 0
    for parser_class, segs in ((httptools.HttpRequestParser, req_segments),
                               (httptools.HttpResponseParser, resp_segments)):
        collector = Collector()
        parser = parser_class(collector)
        collector.parser = parser
        for seg in segs:
            parser.feed_data(seg)
        total += collector.messages
    return total


def run_decoder(exchanges: list[tuple[list[bytes], list[bytes]]]) -> int:
    stream = HTTPStream(FlowKey("tcp", "192.0.2.1", 40000, "192.0.2.2", 80), {"transaction_timeout": 10.0})
    count = 0
    ts = 0.0
    for req_segs, resp_segs in exchanges:
        ts += 0.001
        for seg in req_segs:
            count += len(stream.on_data(True, seg, ts))
        for seg in resp_segs:
            count += len(stream.on_data(False, seg, ts))
    count += len(stream.on_close(ts))
    return count


def measure(label: str, fn, total_bytes: int, repeat: int) -> None:
    times = []
    result = 0
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    best = statistics.median(times)
    print(f"{label:10s} {result:7d} items  {total_bytes / best / 1e6:7.1f} MB/s  "
          f"{result / best:10,.0f} items/s  (median of {repeat}: {best * 1000:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    exchanges = make_exchanges(args.exchanges)
    req_stream = b"".join(r for r, _ in exchanges)
    resp_stream = b"".join(r for _, r in exchanges)
    req_segments, resp_segments = segments(req_stream), segments(resp_stream)
    per_exchange = [(segments(r), segments(s)) for r, s in exchanges]
    total = len(req_stream) + len(resp_stream)
    # The inputs are many small objects; keep the collector from rescanning
    # them on every run (it would time the set-up, not the parsers).
    gc.collect()
    gc.freeze()
    print(f"{args.exchanges} exchanges, {total / 1e6:.1f} MB, "
          f"{len(req_segments) + len(resp_segments)} segments of <= {SEGMENT} bytes")
    print("messages parsed (requests + responses):")
    measure("own", lambda: run_own(req_segments, resp_segments), total, args.repeat)
    try:
        import httptools
    except ImportError:
        print("httptools        not installed")
    else:
        measure(f"httptools {httptools.__version__}", lambda: run_httptools(req_segments, resp_segments),
                total, args.repeat)
    print("transactions (whole decoder, both directions, pairing):")
    measure("decoder", lambda: run_decoder(per_exchange), total, args.repeat)


if __name__ == "__main__":
    main()
