"""`wirebeat setup --dashboards` against a local HTTP server that records what it is sent.

No Kibana can run here. The server answers like Kibana's documented API
(GET /api/status with version.number; POST .../api/saved_objects/_import
answering successResults/errors) and records each request, which the tests
check for the documented form: multipart/form-data with one part `file`
holding the NDJSON, the kbn-xsrf header, overwrite=true, the space prefix
and the credentials. The multipart body is parsed with the standard
library's email parser, not with wirebeat's code.
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from running import require
from wirebeat.kibana.panels import DASHBOARDS

KIBANA = Path(__file__).resolve().parents[2] / "kibana"


class FakeKibana:
    """Records requests; `status`, `version`, `fail_ids` shape the answers."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.version = "9.1.3"
        self.fail_ids: set[str] = set()
        self.existing: set[str] = set()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                req = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                       "body": self.rfile.read(length)}
                owner.requests.append(req)
                return req

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:      # noqa: N802
                self._record()
                if owner.status != 200:
                    self._answer(owner.status, {"statusCode": owner.status, "message": "Unauthorized"})
                else:
                    self._answer(200, {"name": "kibana", "version": {"number": owner.version}})

            def do_POST(self) -> None:     # noqa: N802
                req = self._record()
                objects = [json.loads(line) for line in _file_part(req).splitlines() if line.strip()]
                ok = [{"type": o["type"], "id": o["id"], "meta": {"title": o["attributes"].get("title")},
                       **({"overwrite": True} if o["id"] in owner.existing else {})}
                      for o in objects if o["id"] not in owner.fail_ids]
                bad = [{"type": o["type"], "id": o["id"], "title": o["attributes"].get("title"),
                        "error": {"type": "unknown", "message": "refused by the test"}}
                       for o in objects if o["id"] in owner.fail_ids]
                self._answer(200, {"success": not bad, "successCount": len(ok), "successResults": ok,
                                   **({"errors": bad} if bad else {})})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _file_part(req: dict[str, Any]) -> str:
    """The `file` part of a multipart/form-data body, parsed by the standard library."""
    raw = f"Content-Type: {req['headers']['Content-Type']}\r\n\r\n".encode() + req["body"]
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart()
    parts = list(message.iter_parts())
    assert [p.get_param("name", header="content-disposition") for p in parts] == ["file"]
    assert parts[0].get_filename().endswith(".ndjson")
    return parts[0].get_payload(decode=True).decode()


@pytest.fixture
def kibana() -> Iterator[FakeKibana]:
    server = FakeKibana()
    yield server
    server.close()


def _expected_ndjson() -> str:
    names = ["data-view.ndjson"] + [f"{d.id}.ndjson" for d in DASHBOARDS]
    return "".join((KIBANA / n).read_text(encoding="utf-8") for n in names)


def test_import_request_is_the_documented_multipart_form(wirebeat, kibana):
    kibana.existing = {"wirebeat-data-view"}
    proc = wirebeat("setup", "--dashboards", "-E", f"setup.kibana.host={kibana.url}",
                    "-E", "setup.kibana.username=elastic", "-E", "setup.kibana.password=s3cret",
                    "-E", "setup.kibana.space.id=netops")
    assert proc.returncode == 0, proc.stderr.decode()
    status, post = kibana.requests
    assert status["method"] == "GET" and status["path"] == "/api/status"
    assert post["method"] == "POST"
    url = urllib.parse.urlsplit(post["path"])
    assert url.path == "/s/netops/api/saved_objects/_import"
    assert urllib.parse.parse_qs(url.query) == {"overwrite": ["true"]}
    headers = {k.lower(): v for k, v in post["headers"].items()}
    assert headers["kbn-xsrf"]
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    assert headers["authorization"] == "Basic " + base64.b64encode(b"elastic:s3cret").decode()
    assert _file_part(post) == _expected_ndjson()
    # One line per object saying what happened, then the summary.
    out = proc.stdout.decode().splitlines()
    total = len(_expected_ndjson().splitlines())
    assert len(out) == total + 1
    assert out[0].split()[:3] == ["overwritten", "index-pattern", "wirebeat-data-view"]
    assert sum(line.startswith("created ") for line in out) == total - 1
    assert out[-1] == f"Kibana 9.1.3 at {kibana.url}: {total} of {total} saved objects imported"


def test_api_key_and_default_space(wirebeat, kibana):
    proc = wirebeat("setup", "--dashboards", "-E", f"setup.kibana.host={kibana.url}",
                    "-E", "setup.kibana.api_key=myid:mykey")
    assert proc.returncode == 0, proc.stderr.decode()
    post = kibana.requests[-1]
    assert urllib.parse.urlsplit(post["path"]).path == "/api/saved_objects/_import"
    headers = {k.lower(): v for k, v in post["headers"].items()}
    assert headers["authorization"] == "ApiKey " + base64.b64encode(b"myid:mykey").decode()


def test_objects_kibana_refuses_are_listed_and_exit_1(wirebeat, kibana):
    kibana.fail_ids = {"wirebeat-dashboard-dns"}
    proc = wirebeat("setup", "--dashboards", "-E", f"setup.kibana.host={kibana.url}")
    assert proc.returncode == 1
    out = proc.stdout.decode().splitlines()
    [failed] = [line for line in out if line.startswith("failed")]
    assert "wirebeat-dashboard-dns" in failed and "[wirebeat] DNS" in failed and failed.endswith("unknown")
    assert out[-1].endswith("saved objects imported, 1 failed")


def _one_line_exit_2(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_credentials_refused_is_one_line_exit_2(wirebeat, kibana):
    kibana.status = 401
    proc = wirebeat("setup", "--dashboards", "-E", f"setup.kibana.host={kibana.url}")
    _one_line_exit_2(proc, "401", "setup.kibana.username")
    assert len(kibana.requests) == 1          # nothing was posted


def test_old_kibana_is_one_line_exit_2(wirebeat, kibana):
    kibana.version = "7.17.9"
    proc = wirebeat("setup", "--dashboards", "-E", f"setup.kibana.host={kibana.url}")
    _one_line_exit_2(proc, "7.17.9", "8.9 or newer")
    assert [r["method"] for r in kibana.requests] == ["GET"]


def test_unreachable_kibana_is_one_line_exit_2(wirebeat):
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = wirebeat("setup", "--dashboards", "-E", f"setup.kibana.host=http://127.0.0.1:{port}")
    _one_line_exit_2(proc, f"127.0.0.1:{port}", "unreachable")


def test_unknown_kibana_key_names_the_key(wirebeat):
    proc = wirebeat("setup", "--dashboards", "-E", "setup.kibana.hots=http://x")
    _one_line_exit_2(proc, "setup.kibana.hots", "setup.kibana.host")


@pytest.fixture
def tls_kibana(tmp_path) -> Iterator[tuple[FakeKibana, Path]]:
    """The recording server behind TLS, with a self-signed certificate openssl makes for 127.0.0.1."""
    require(shutil.which("openssl") is not None, "openssl")
    cert, key = tmp_path / "kibana.crt", tmp_path / "kibana.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = FakeKibana(tls=context)
    yield server, cert
    server.close()


def test_tls_with_the_kibana_ca(wirebeat, tls_kibana):
    kibana, cert = tls_kibana
    proc = wirebeat("setup", "--dashboards", "-E", f"setup.kibana.host={kibana.url}",
                    "-E", f"setup.kibana.ssl.certificate_authorities=[{cert}]")
    assert proc.returncode == 0, proc.stderr.decode()
    assert _file_part(kibana.requests[-1]) == _expected_ndjson()


def test_tls_unknown_ca_is_one_line_exit_2_and_verification_none_accepts_it(wirebeat, tls_kibana):
    kibana, _ = tls_kibana
    proc = wirebeat("setup", "--dashboards", "-E", f"setup.kibana.host={kibana.url}")
    _one_line_exit_2(proc, "TLS failed", "certificate", "setup.kibana.ssl.certificate_authorities")
    assert kibana.requests == []
    proc = wirebeat("setup", "--dashboards", "-E", f"setup.kibana.host={kibana.url}",
                    "-E", "setup.kibana.ssl.verification_mode=none")
    assert proc.returncode == 0, proc.stderr.decode()
