"""Outputs: Elasticsearch (bulk), console (NDJSON on stdout), file (NDJSON, rotated).

All three receive the same (id, document) batches from the pipeline. The
console and file outputs write exactly the document Elasticsearch would get.
"""
from __future__ import annotations

import atexit
import os
import re
import ssl
import sys
import tempfile
import threading
import time
from typing import Any, BinaryIO

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import TransportError
from elasticsearch import ApiError, AuthenticationException, Elasticsearch, helpers

from wirebeat import logs
from wirebeat.pipeline import Batch, OutputStopped

__all__ = ["ConsoleOutput", "DeadLetterFile", "ElasticsearchOutput", "FileOutput", "OutputError",
           "check_connection", "make_client", "redact_hosts"]

log = logs.get("output")
SUPPORTED_ES_MAJOR = 9      # the 9.x client speaks to 9.x servers


class OutputError(Exception):
    """The output cannot work (the message is one line for the operator).

    `permanent`: waiting will not help (credentials refused, TLS verification
    failed, wrong server version), so `run` stops at start-up with this line.
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ConsoleOutput:
    name = "console"

    def __init__(self, pretty: bool = False, stream: BinaryIO | None = None) -> None:
        self.stream = stream or sys.stdout.buffer
        self.option = orjson.OPT_INDENT_2 if pretty else 0
        # Documents may be orjson.Fragment (JSON text: flow reports, per-packet documents),
        # except when pretty-printed: a fragment is written as it is, not indented.
        self.accepts_fragments = not pretty

    def send(self, batch: Batch, stopping: threading.Event) -> int:
        dumps, option = orjson.dumps, self.option
        try:
            self.stream.write(b"".join(dumps(doc, option=option) + b"\n" for _, doc in batch))
            self.stream.flush()
        except BrokenPipeError:
            # `wirebeat run ... --console | head`: the reader left, nothing more to deliver.
            raise OutputStopped() from None
        return 0

    def close(self) -> None:
        try:
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass


class FileOutput:
    """NDJSON files rotated by size: name, name.1, ... name.(number_of_files - 1)."""

    name = "file"
    accepts_fragments = True    # documents may be orjson.Fragment (JSON text)

    def __init__(self, path: str, filename: str, rotate_every_kb: int, number_of_files: int) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as err:
            raise OutputError(f"output.file.path {path}: {err.strerror}") from None
        self.file_path = os.path.join(path, filename)
        self.max_bytes = max(1, rotate_every_kb) * 1024
        self.keep = max(1, number_of_files)
        self.fh = self._open()
        self.size = self.fh.tell()

    def _open(self) -> BinaryIO:
        try:
            return open(self.file_path, "ab")
        except OSError as err:
            raise OutputError(f"output file {self.file_path}: {err.strerror}") from None

    def _rotate(self) -> None:
        self.fh.close()
        for n in range(self.keep - 1, 0, -1):
            older = f"{self.file_path}.{n}" if n > 1 else f"{self.file_path}.1"
            newer = f"{self.file_path}.{n - 1}" if n > 1 else self.file_path
            if n == self.keep - 1 and os.path.exists(older):
                os.remove(older)
            if os.path.exists(newer):
                os.replace(newer, older)
        if self.keep == 1:
            os.remove(self.file_path)
        self.fh = self._open()
        self.size = 0

    def send(self, batch: Batch, stopping: threading.Event) -> int:
        for _, doc in batch:
            line = orjson.dumps(doc) + b"\n"
            if self.size and self.size + len(line) > self.max_bytes:
                self._rotate()
            self.fh.write(line)
            self.size += len(line)
        self.fh.flush()
        return 0

    def close(self) -> None:
        self.fh.close()


def make_client(cfg: dict[str, Any]) -> Elasticsearch:
    """An Elasticsearch client from the output.elasticsearch.* section. Raises OutputError."""
    kwargs: dict[str, Any] = {
        "hosts": cfg["hosts"],
        "request_timeout": cfg["timeout"],
        "max_retries": 0,                # the output's own retry loop decides
        "retry_on_timeout": False,
    }
    if cfg["username"]:
        kwargs["basic_auth"] = (cfg["username"], cfg["password"])
    if cfg["api_key"]:
        api_key = cfg["api_key"]
        kwargs["api_key"] = tuple(api_key.split(":", 1)) if ":" in api_key else api_key
    if any(h.startswith("https") for h in cfg["hosts"]):
        kwargs.update(_tls_options(cfg))
    try:
        return Elasticsearch(**kwargs)
    except (ValueError, TypeError) as err:
        raise OutputError(f"output.elasticsearch: {_redact(str(err), cfg)}") from None


def _tls_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """TLS as beats configure it: own CAs (else the system's), verification_mode, client cert."""
    mode = cfg.get("ssl.verification_mode", "full")
    if mode not in ("full", "certificate", "none"):
        raise OutputError(f"output.elasticsearch.ssl.verification_mode: {mode!r} is not "
                          "full, certificate or none", permanent=True)
    options: dict[str, Any] = {"ssl_show_warn": False}
    if mode == "none":
        options["verify_certs"] = False
    else:
        options["verify_certs"] = True
        if mode == "certificate":
            options["ssl_assert_hostname"] = False      # the chain is still verified
        cas = cfg.get("ssl.certificate_authorities") or []
        for ca in cas:
            _check_pem(f"output.elasticsearch.ssl.certificate_authorities {ca}",
                       lambda context, ca=ca: context.load_verify_locations(cafile=ca))
        if len(cas) == 1:
            options["ca_certs"] = cas[0]
        elif cas:
            options["ca_certs"] = _ca_bundle(cas)
    if cfg.get("ssl.certificate"):
        cert, key = cfg["ssl.certificate"], cfg.get("ssl.key") or None
        _check_pem(f"output.elasticsearch.ssl.certificate {cert}",
                   lambda context: context.load_cert_chain(cert, key))
        options["client_cert"] = cert
        if key:
            options["client_key"] = key
    return options


def _check_pem(where: str, load: Any) -> None:
    """A missing or unreadable certificate file is a one-line error at start-up."""
    try:
        load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    except OSError as err:
        if isinstance(err, ssl.SSLError):
            raise OutputError(f"{where}: not a usable PEM file ({err.reason or err})", permanent=True) from None
        raise OutputError(f"{where}: {err.strerror or err}", permanent=True) from None


def _ca_bundle(paths: list[str]) -> str:
    """Several CA files as the one bundle file the client takes (kept while the process runs)."""
    bundle = tempfile.NamedTemporaryFile("wb", prefix="wirebeat-ca-", suffix=".pem", delete=False)
    with bundle:
        for path in paths:
            with open(path, "rb") as fh:
                bundle.write(fh.read().rstrip(b"\n") + b"\n")
    atexit.register(os.unlink, bundle.name)
    return bundle.name


def _redact(text: str, cfg: dict[str, Any]) -> str:
    """No credential in any message: user:password@ in URLs and the configured secrets."""
    text = re.sub(r"(\w+://)[^/@\s]*@", r"\1", text)
    for secret in (cfg.get("password"), cfg.get("api_key")):
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def redact_hosts(hosts: list[str]) -> list[str]:
    """Hosts as they may be printed: without user:password@."""
    return [_redact(h, {}) for h in hosts]


def check_connection(client: Elasticsearch, hosts: list[str], cfg: dict[str, Any] | None = None) -> str:
    """The server's version, or OutputError with one line saying what is wrong."""
    cfg = cfg or {}
    where = _redact(", ".join(hosts), cfg)
    credential, keys = (("API key", "output.elasticsearch.api_key") if cfg.get("api_key") else
                        ("username/password", "output.elasticsearch.username/password") if cfg.get("username")
                        else ("request without credentials", "output.elasticsearch.username/password or api_key"))
    try:
        version = _server_version(client)
    except AuthenticationException as err:
        detail = _auth_detail(err, cfg)
        raise OutputError(f"Elasticsearch at {where} rejected the {credential} ({detail}401): "
                          f"check {keys}", permanent=True) from None
    except ApiError as err:
        if err.status_code == 403:
            raise OutputError(f"Elasticsearch at {where}: the user lacks privileges (403)",
                              permanent=True) from None
        if err.status_code in (400, 406):
            raise OutputError(f"Elasticsearch at {where} refused this client's version "
                              f"({err.status_code}); wirebeat needs Elasticsearch "
                              f"{SUPPORTED_ES_MAJOR}.x", permanent=True) from None
        raise OutputError(f"Elasticsearch at {where} answered {err.status_code}: "
                          f"{_redact(str(err.message), cfg)}") from None
    except TransportError as err:
        tls = _tls_problem(err)
        if tls:
            raise OutputError(f"Elasticsearch at {where}: TLS: {tls}", permanent=True) from None
        raise OutputError(f"Elasticsearch at {where} is unreachable: {_redact(_short(err), cfg)}") from None
    except Exception as err:     # e.g. a non-Elasticsearch server answering on that port
        raise OutputError(f"Elasticsearch at {where}: {type(err).__name__}: "
                          f"{_redact(_short(err), cfg)}") from None
    major = int(version.split(".")[0])
    if major != SUPPORTED_ES_MAJOR:
        raise OutputError(f"Elasticsearch at {where} is version {version}; wirebeat needs "
                          f"{SUPPORTED_ES_MAJOR}.x", permanent=True)
    return version


def _auth_detail(err: ApiError, cfg: dict[str, Any]) -> str:
    """Why an API key was refused, as the server says it ("api key is expired" ...), then ", "."""
    try:
        reason = err.body["error"]["additional_unsuccessful_credentials"]
    except (TypeError, KeyError):
        return ""
    if not isinstance(reason, str):
        return ""
    reason = reason.removeprefix("API key: ")
    return _redact(reason[:200], cfg) + ", "


def _tls_problem(err: BaseException) -> str:
    """What a failed TLS handshake means for the operator, or '' when it was no TLS failure."""
    causes: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and len(causes) < 10:      # the client wraps urllib3's error
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(c) for c in causes)
    if "match" in text and ("Hostname mismatch" in text or "IP address mismatch" in text
                            or "doesn't match" in text):
        return ("the server certificate does not name this host (ssl.verification_mode: "
                "certificate checks the chain only)")
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return ("the server certificate is not signed by a trusted CA "
                "(check output.elasticsearch.ssl.certificate_authorities)")
    if isinstance(err, TransportConnectionError) and ("SSL" in text or "TLS" in text):
        return "handshake failed: " + _short(causes[-1])
    return ""


def _server_version(client: Elasticsearch) -> str:
    """The server's version number; GET / where allowed, else the local node's info.

    Elastic's minimal server archive (used for tests) answers GET / with 405.
    """
    try:
        return client.info()["version"]["number"]
    except ApiError as err:
        if err.status_code != 405:
            raise
    nodes = client.nodes.info(node_id="_local", metric="_none", filter_path="nodes.*.version")
    return next(iter(nodes["nodes"].values()))["version"]


def _short(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:300]


class _Unreachable(Exception):
    """This attempt cannot finish: the node does not answer."""


class ElasticsearchOutput:
    """Bulk indexing with a deterministic _id; retries until acknowledged.

    Transient failures (connection refused, timeouts, 429, 5xx, for the whole
    request or single items) are retried with exponential backoff from
    backoff.init to backoff.max, for as long as the process runs. Documents
    Elasticsearch rejects for good (a 4xx on the item, e.g. a mapping
    conflict) are counted as failed, logged with the reason and, when
    `dead_letter.path` is set, appended there; they are never retried.

    Recovery is prompt (docs/reliability.md). Each bulk request runs in a
    thread of its own; while it is outstanding, and during every backoff wait,
    a cheap health probe on a separate connection pool (`GET /`, any HTTP
    answer counts, `health_probe.timeout`) asks whether the node still
    answers. A bulk request stuck on a path that accepts but never answers is
    abandoned as soon as a probe goes unanswered (resending is safe: `_id`s
    are deterministic), and a backoff wait ends as soon as a probe is
    answered, so delivery resumes within about one probe interval plus one
    probe timeout of the node answering again.
    """

    name = "elasticsearch"
    accepts_fragments = True    # see _actions
    MAX_ABANDONED = 6       # stuck requests left to time out; each holds one pooled connection

    def __init__(self, cfg: dict[str, Any], index: str, on_connect: Any = None) -> None:
        self.cfg = cfg
        self.index = index
        self.client = make_client(cfg)
        self.probe_client = make_client({**cfg, "timeout": cfg["health_probe.timeout"]})
        self.probe_interval_s = cfg["health_probe.interval"]
        self.on_connect = on_connect        # called once with the client after first contact
        self.connected = False
        self.logged_failures = 0
        self.dead_letter = DeadLetterFile(cfg["dead_letter.path"]) if cfg["dead_letter.path"] else None
        self.abandoned: list[threading.Thread] = []
        self.down_since: float | None = None
        # Counters (output.*): what the retries did.
        self.retries = 0                # bulk attempts that had to be repeated
        self.items_retried = 0          # documents sent again
        self.abandoned_requests = 0     # bulk requests given up on after an unanswered probe
        self.probes_failed = 0
        self.recoveries = 0             # the node answered again after failing
        self.dead_lettered = 0

    def counters(self) -> dict[str, int]:
        return {"output.retries": self.retries, "output.items_retried": self.items_retried,
                "output.requests_abandoned": self.abandoned_requests,
                "output.probes_failed": self.probes_failed, "output.recoveries": self.recoveries,
                "output.dead_lettered": self.dead_lettered}

    def connect_now(self) -> None:
        """First contact at start-up if Elasticsearch answers; unreachable is not an error yet.

        Raises TemplateError when the index template cannot be installed.
        """
        try:
            self._first_contact()
        except OutputError as err:
            if err.permanent:
                raise
        except (TransportConnectionError, TransportError):
            pass

    def _first_contact(self) -> None:
        # With the probe's short timeout: a node that accepts and never answers
        # must not hold the start (or a retry) for the whole bulk timeout.
        check_connection(self.probe_client, self.cfg["hosts"], self.cfg)
        if self.on_connect is not None:
            self.on_connect(self.client)
        self.connected = True

    def _actions(self, batch: Batch) -> list[dict[str, Any]]:
        # A Fragment (JSON text) goes as bytes, which the client sends as they are.
        return [{"_op_type": "index", "_index": self.index, "_id": doc_id,
                 "_source": orjson.dumps(doc) if doc.__class__ is orjson.Fragment else doc}
                for doc_id, doc in batch]

    def send(self, batch: Batch, stopping: threading.Event) -> int:
        pending = {doc_id: doc for doc_id, doc in batch}
        # The same _id twice in one batch is one document: both count as acknowledged.
        failed = 0
        backoff = self.cfg["backoff.init"]
        while pending:
            if stopping.is_set():
                raise OutputStopped()
            unreachable = False
            try:
                retry, rejected = self._attempt(pending, stopping)
            except (TransportConnectionError, TransportError, ApiError, OutputError, _Unreachable) as err:
                self.connected = False
                unreachable = True
                if self.down_since is None:
                    self.down_since = time.monotonic()
                log.warning("elasticsearch unreachable, will retry", error=_redact(_short(err), self.cfg),
                            retry_in_s=backoff, pending=len(pending))
                retry, rejected = pending, []
            else:
                self._note_recovery()
            for doc_id, status, error in rejected:
                failed += 1
                self._reject(doc_id, pending[doc_id], status, error)
            if not retry:
                break
            pending = retry
            self.retries += 1
            self.items_retried += len(retry)
            if unreachable:
                # Wait out the backoff, but retry as soon as the node answers a probe.
                self._wait_for_node(backoff, stopping)
            elif stopping.wait(backoff):      # it answered 429/5xx: it asked us to slow down
                raise OutputStopped()
            backoff = min(backoff * 2, self.cfg["backoff.max"])
        return failed

    def _attempt(self, pending: dict[str, dict[str, Any]], stopping: threading.Event,
                 ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, int, Any]]]:
        """One bulk attempt in its own thread, watched by health probes.

        Returns (documents to retry, documents rejected for good). Raises
        _Unreachable when the node stops answering while the request is out.
        """
        self._wait_for_a_free_connection(stopping)
        outcome: dict[str, Any] = {}
        done = threading.Event()
        items = list(pending.items())

        def work() -> None:
            try:
                outcome["value"] = self._bulk(items)
            except BaseException as err:     # handed to the output thread, which decides
                outcome["error"] = err
            finally:
                done.set()

        worker = threading.Thread(target=work, name="bulk", daemon=True)
        worker.start()
        while not done.wait(self.probe_interval_s):
            if stopping.is_set():
                raise OutputStopped()
            if not done.is_set() and not self._probe():
                # The path accepts but does not answer: waiting for the full request
                # timeout would hold back everything queued behind this batch.
                self.abandoned_requests += 1
                self.abandoned.append(worker)
                raise _Unreachable("a bulk request got no answer and a health probe neither")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _bulk(self, items: Batch) -> tuple[dict[str, dict[str, Any]], list[tuple[str, int, Any]]]:
        """Send once; touches no shared state, so an abandoned attempt may finish any time."""
        if not self.connected:
            self._first_contact()
        docs = dict(items)
        retry: dict[str, dict[str, Any]] = {}
        rejected: list[tuple[str, int, Any]] = []
        for ok, item in helpers.streaming_bulk(
                self.client, self._actions(items),
                chunk_size=self.cfg["bulk_max_size"], max_retries=0,
                raise_on_error=False, raise_on_exception=False, yield_ok=True):
            result = next(iter(item.values()))
            doc_id = result.get("_id")
            if ok:
                continue
            status = result.get("status", 0)
            exception = result.get("exception")
            busy = isinstance(status, int) and (status == 429 or status >= 500)
            if exception is not None and not busy:
                # The whole request failed (streaming_bulk reports that per item):
                # refused, reset, timed out, 401 ... none of it is the document's fault.
                raise exception
            if busy:
                retry[doc_id] = docs[doc_id]
            else:
                rejected.append((doc_id, status, result.get("error")))
        return retry, rejected

    def _probe(self) -> bool:
        """Does the node answer at all? Any HTTP status counts; only silence does not."""
        try:
            self.probe_client.info()
        except ApiError:
            return True      # e.g. 405 from the minimal server, 401: it answered
        except Exception:    # refused, reset, timed out, TLS failure: no answer
            self.probes_failed += 1
            return False
        return True

    def _wait_for_node(self, backoff_s: float, stopping: threading.Event) -> bool:
        """Wait up to backoff_s; True as soon as a health probe is answered. Raises OutputStopped."""
        deadline = time.monotonic() + backoff_s
        while True:
            step = min(self.probe_interval_s, deadline - time.monotonic())
            if step <= 0:
                return False
            if stopping.wait(step):
                raise OutputStopped()
            if self._probe():
                return True

    def _wait_for_a_free_connection(self, stopping: threading.Event) -> None:
        """Abandoned requests each hold a pooled connection until their timeout: bound them."""
        while True:
            self.abandoned = [t for t in self.abandoned if t.is_alive()]
            if len(self.abandoned) < self.MAX_ABANDONED:
                return
            if stopping.wait(self.probe_interval_s):
                raise OutputStopped()

    def _note_recovery(self) -> None:
        if self.down_since is None:
            return
        self.recoveries += 1
        log.info("elasticsearch answers again, delivering", down_s=round(time.monotonic() - self.down_since, 1))
        self.down_since = None

    def _reject(self, doc_id: str, doc: dict[str, Any], status: int, error: Any) -> None:
        """A document Elasticsearch refuses for good: counted (by the caller), logged, dead-lettered."""
        reason = error if isinstance(error, (str, dict)) else str(error)
        # Log the first failures in full; after that the counter speaks.
        if self.logged_failures < 20:
            self.logged_failures += 1
            log.error("document rejected by elasticsearch", id=doc_id, status=status, error=reason)
        if self.dead_letter is not None:
            self.dead_letter.write(self.index, doc_id, status, reason, doc)
            self.dead_lettered += 1

    def close(self) -> None:
        self.client.close()
        self.probe_client.close()
        if self.dead_letter is not None:
            self.dead_letter.close()


class DeadLetterFile:
    """Documents Elasticsearch rejected for good, one JSON line each, with the reason.

    Appended and flushed per document; each line holds `index`, `_id`, `status`,
    `error` and `document`, so the document can be fixed and indexed by hand.
    """

    def __init__(self, path: str) -> None:
        try:
            self.fh = open(path, "ab")
        except OSError as err:
            raise OutputError(f"output.elasticsearch.dead_letter.path {path}: {err.strerror}") from None

    def write(self, index: str, doc_id: str, status: int, error: Any, doc: dict[str, Any]) -> None:
        self.fh.write(orjson.dumps({"index": index, "_id": doc_id, "status": status,
                                    "error": error, "document": doc}) + b"\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
