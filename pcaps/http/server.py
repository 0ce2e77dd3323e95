"""The HTTP/1.1 peer that pcaps/http/make_captures.sh records (stdlib only).

    server.py serve PORT            keep-alive HTTP/1.1 server on 127.0.0.1:PORT
    server.py pipeline PORT PATH... one connection, every request sent in one write

Server routes (all keep-alive unless said otherwise):
    GET/HEAD /hello                 200, Content-Length body
    GET /chunked?parts=N&size=M&delay_ms=D
                                    200, chunked (N chunks of M bytes, D ms apart), a trailer
    GET /status/NNN                 that status, small JSON body
    POST /echo                      200, the request body back (same Content-Type)
    GET /auth                       401 without "Authorization: Basic" alice:wonderland, else 200
    GET /slow?parts=N&size=M&delay_ms=D
                                    200, Content-Length body written in N pieces D ms apart
                                    (TCP_NODELAY: each piece is its own segment)
    GET /close                      200 without Content-Length: the body ends with the connection
    GET /hang?delay_ms=D            200 after D ms (to record a request left unanswered)
Expect: 100-continue is answered by http.server itself (an interim 100).
"""
from __future__ import annotations

import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

USER, PASSWORD = "alice", "wonderland"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "wirebeat-test/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:   # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _params(self) -> dict[str, int]:
        query = parse_qs(urlsplit(self.path).query)
        return {k: int(v[0]) for k, v in query.items() if v and v[0].isdigit()}

    def _send(self, status: int, body: bytes, content_type: str = "text/plain",
              head_only: bool = False, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        path = urlsplit(self.path).path
        if path == "/hello":
            self._send(200, b"hello, world\n", head_only=True)
        else:
            self._send(404, b"", head_only=True)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        params = self._params()
        if path == "/hello":
            self._send(200, b"hello, world\n")
        elif path == "/chunked":
            self._chunked(params.get("parts", 3), params.get("size", 20), params.get("delay_ms", 0))
        elif path.startswith("/status/") and path[8:].isdigit():
            code = int(path[8:])
            self._send(code, json.dumps({"status": code}).encode(), "application/json")
        elif path == "/auth":
            self._auth()
        elif path == "/slow":
            self._slow(params.get("parts", 5), params.get("size", 500), params.get("delay_ms", 20))
        elif path == "/hang":
            time.sleep(params.get("delay_ms", 1000) / 1000)
            self._send(200, b"too late\n")
        elif path == "/close":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"this body ends when the connection does\n")
            self.close_connection = True
        else:
            self._send(404, b"not found\n")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if urlsplit(self.path).path == "/echo":
            self._send(200, body, self.headers.get("Content-Type", "application/octet-stream"))
        else:
            self._send(404, b"not found\n")

    def _chunked(self, parts: int, size: int, delay_ms: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Trailer", "X-Parts")
        self.end_headers()
        self.wfile.flush()
        for i in range(parts):
            if delay_ms:
                time.sleep(delay_ms / 1000)
            data = (f"chunk {i} ".encode() * size)[:size]
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(f"0\r\nX-Parts: {parts}\r\n\r\n".encode())

    def _slow(self, parts: int, size: int, delay_ms: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(parts * size))
        self.end_headers()
        self.wfile.flush()
        for i in range(parts):
            time.sleep(delay_ms / 1000)
            self.wfile.write(bytes([65 + i % 26]) * size)
            self.wfile.flush()

    def _auth(self) -> None:
        import base64
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") == expected:
            self._send(200, b"welcome, alice\n")
        else:
            self._send(401, b"who are you?\n", extra={"WWW-Authenticate": 'Basic realm="test"'})


def serve(port: int) -> None:
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


def _read_response(sock: socket.socket, buf: bytes) -> bytes:
    """Read one response (Content-Length or chunked); returns what is left after it."""
    def fill(need: int) -> None:
        nonlocal buf
        while len(buf) < need:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError("connection closed mid-response")
            buf += more

    def line() -> bytes:
        nonlocal buf
        while b"\r\n" not in buf:
            fill(len(buf) + 1)
        text, _, buf = buf.partition(b"\r\n")
        return text

    head = []
    while True:
        text = line()
        if not text:
            break
        head.append(text)
    fields = {}
    for text in head[1:]:
        name, _, value = text.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int(line().split(b";")[0], 16)
            if size == 0:
                while line():            # trailers, up to the empty line
                    pass
                return buf
            fill(size + 2)
            buf = buf[size + 2:]
    length = int(fields.get(b"content-length", b"0"))
    fill(length)
    return buf[length:]


def pipeline(port: int, paths: list[str]) -> None:
    """Send every request at once (pipelining, RFC 9112 §9.3), then read the responses."""
    requests = b"".join(f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        f"User-Agent: pipeline-client/1.0\r\n\r\n".encode() for p in paths)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(requests)
        rest = b""
        for _ in paths:
            rest = _read_response(sock, rest)


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "serve":
        serve(port)
    elif mode == "pipeline":
        pipeline(port, sys.argv[3:])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
