"""`wirebeat setup --dashboards`: import kibana/*.ndjson through Kibana's saved objects API.

    POST {host}[/s/{space}]/api/saved_objects/_import?overwrite=true
    kbn-xsrf: true, multipart/form-data with one part `file` (the NDJSON)

The objects ship inside the package (`wirebeat.kibana`, read through
importlib.resources), so an installed wheel imports the same files as a
checkout. Standard library HTTP only: one request to check the server
(`GET /api/status`: reachable, credentials accepted, version recent enough)
and one to import.
"""
from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["KibanaError", "ImportResult", "import_dashboards", "saved_objects"]

MIN_VERSION = (8, 9)        # the objects' typeMigrationVersion (kibana/generate.py)


class KibanaError(Exception):
    """Kibana unreachable, credentials refused, wrong version: the one line the operator sees."""


@dataclass(frozen=True)
class ImportResult:
    version: str
    lines: list[str]         # one per object: "created|overwritten|failed  type  id  title"
    failed: int


def saved_objects() -> bytes:
    """The NDJSON to import: the data view first, then one file per dashboard."""
    from wirebeat.kibana.generate import DATA_VIEW_FILE
    from wirebeat.kibana.panels import DASHBOARDS

    folder = resources.files("wirebeat.kibana")
    names = [DATA_VIEW_FILE] + [f"{d.id}.ndjson" for d in DASHBOARDS]
    return b"".join((folder / name).read_bytes() for name in names)


class _Client:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.host = settings["host"].rstrip("/")
        if "://" not in self.host:
            self.host = "http://" + self.host
        self.timeout = settings["timeout"]
        self.headers = {"kbn-xsrf": "true"}
        if settings["api_key"]:
            key = settings["api_key"]
            if ":" in key:         # id:key, as the output's api_key accepts
                key = base64.b64encode(key.encode()).decode()
            self.headers["Authorization"] = f"ApiKey {key}"
        elif settings["username"]:
            token = base64.b64encode(f"{settings['username']}:{settings['password']}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.context = None
        mode = settings["ssl.verification_mode"]
        if mode not in ("full", "certificate", "none"):
            raise KibanaError(f"config key 'setup.kibana.ssl.verification_mode': expected full, certificate "
                              f"or none, got {mode!r}")
        if self.host.startswith("https://"):
            self.context = ssl.create_default_context()
            for ca in settings["ssl.certificate_authorities"]:
                try:
                    self.context.load_verify_locations(cafile=ca)
                except (OSError, ssl.SSLError) as err:
                    raise KibanaError(f"setup.kibana.ssl.certificate_authorities: cannot read {ca}: {err}") from None
            if mode in ("certificate", "none"):
                self.context.check_hostname = False
            if mode == "none":
                self.context.verify_mode = ssl.CERT_NONE
        space = settings["space.id"]
        self.base = self.host + (f"/s/{urllib.parse.quote(space)}" if space else "")

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
        req = urllib.request.Request(url, data=body, method=method, headers={**self.headers, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as response:
                data = response.read()
        except urllib.error.HTTPError as err:
            detail = _message(err.read())
            if err.code == 401:
                raise KibanaError(f"Kibana at {self.host} refused the credentials (HTTP 401): set "
                                  "setup.kibana.username/password or setup.kibana.api_key") from None
            if err.code == 403:
                raise KibanaError(f"Kibana at {self.host}: this user may not import saved objects "
                                  f"(HTTP 403{': ' + detail if detail else ''})") from None
            if err.code == 404 and "/s/" in url:
                raise KibanaError(f"Kibana at {self.host}: no such space (setup.kibana.space.id, HTTP 404)") from None
            raise KibanaError(f"Kibana at {self.host}: {method} {urllib.parse.urlsplit(url).path} failed "
                              f"with HTTP {err.code}{': ' + detail if detail else ''}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, ssl.SSLError):
                raise KibanaError(f"Kibana at {self.host}: TLS failed: {getattr(reason, 'verify_message', '') or reason}"
                                  " (see setup.kibana.ssl.certificate_authorities and "
                                  "setup.kibana.ssl.verification_mode)") from None
            raise KibanaError(f"Kibana at {self.host} is unreachable: {reason}") from None
        try:
            return json.loads(data)
        except ValueError:
            raise KibanaError(f"Kibana at {self.host}: {urllib.parse.urlsplit(url).path} did not answer "
                              "JSON (is this Kibana?)") from None


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))[:200]
    except (ValueError, AttributeError):
        return ""


def _multipart(ndjson: bytes) -> tuple[bytes, str]:
    boundary = f"wirebeat-{uuid.uuid4().hex}"
    body = (f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="wirebeat.ndjson"\r\n'
            "Content-Type: application/ndjson\r\n\r\n").encode() + ndjson + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _check_version(host: str, status: dict[str, Any]) -> str:
    number = str(status.get("version", {}).get("number", ""))
    try:
        major, minor = (int(x) for x in number.split(".")[:2])
    except ValueError:
        raise KibanaError(f"Kibana at {host}: /api/status gave no version number (is this Kibana?)") from None
    if (major, minor) < MIN_VERSION:
        raise KibanaError(f"Kibana at {host} is version {number}: the wirebeat dashboards need "
                          f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer")
    return number


def import_dashboards(settings: dict[str, Any], ndjson: bytes | None = None) -> ImportResult:
    """Import (with overwrite) and say per object what happened. Raises KibanaError."""
    client = _Client(settings)
    version = _check_version(client.host, client.request("GET", client.host + "/api/status"))
    body, content_type = _multipart(saved_objects() if ndjson is None else ndjson)
    answer = client.request("POST", client.base + "/api/saved_objects/_import?overwrite=true", body,
                            {"Content-Type": content_type})
    lines = []
    for ok in answer.get("successResults", []):
        what = "overwritten" if ok.get("overwrite") else "created"
        lines.append(f"{what:<12} {ok.get('type', '?'):<14} {ok.get('id', '?')}  {ok.get('meta', {}).get('title', '')}")
    errors = answer.get("errors", [])
    for bad in errors:
        error = bad.get("error", {})
        reason = error.get("type", "error")
        if reason == "missing_references":
            reason += " " + ", ".join(f"{r.get('type')}/{r.get('id')}" for r in error.get("references", []))
        lines.append(f"{'failed':<12} {bad.get('type', '?'):<14} {bad.get('id', '?')}  "
                     f"{bad.get('title', bad.get('meta', {}).get('title', ''))}: {reason}")
    return ImportResult(version, lines, len(errors))
