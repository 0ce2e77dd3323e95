"""The Elasticsearch output: bulk requests to one or more nodes, with retries,
health probes and failover (see ElasticsearchOutput), and the client helpers
`wirebeat test output` and `setup` use.

Imported on first use (wirebeat.outputs forwards these names): the client
library is slow to import and console or file runs never need it.
"""
from __future__ import annotations

import atexit
import gzip
import logging
import os
import queue
import re
import ssl
import tempfile
import threading
import time
from typing import Any

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import TransportError
from elasticsearch import ApiError, AuthenticationException, Elasticsearch

from wirebeat import logs
from wirebeat.outputs import DeadLetterFile, OutputError
from wirebeat.pipeline import Batch, Block, OutputStopped, documents

__all__ = ["ElasticsearchOutput", "check_connection", "make_client", "redact_hosts"]

log = logs.get("output")
# The client's own per-request log lines, quieted where every client is made (here: this
# was in wirebeat.stats, whose import of stdlib logging cost every console run ~2 ms).
logging.getLogger("elastic_transport").setLevel(logging.WARNING)
SUPPORTED_ES_MAJOR = 9      # the 9.x client speaks to 9.x servers


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


NDJSON = "application/vnd.elasticsearch+x-ndjson; compatible-with=9"
JSON = "application/vnd.elasticsearch+json; compatible-with=9"
_DELIVERY_ERRORS = (TransportConnectionError, TransportError, ApiError, OutputError, _Unreachable)


class _Node:
    """One entry of output.elasticsearch.hosts: its own clients, and whether it is up."""

    def __init__(self, url: str, cfg: dict[str, Any]) -> None:
        self.url = url
        self.client = make_client({**cfg, "hosts": [url]})
        self.probe_client = make_client({**cfg, "hosts": [url], "timeout": cfg["health_probe.timeout"]})
        self.down = False
        self.down_until = 0.0       # monotonic time of the next probe while down
        self.backoff = 0.0
        self.in_flight = 0          # bulk requests out to this node now
        self.probe: threading.Thread | None = None     # a health probe running aside
        self.probe_answer: bool | None = None           # its result, for the sending thread

    def close(self) -> None:
        self.client.close()
        self.probe_client.close()


class _Request:
    """One bulk request out to one node, in a thread of its own."""

    def __init__(self, node: _Node, items: Batch) -> None:
        self.node = node
        self.items = items
        self.value: tuple[dict[str, dict[str, Any]], list[tuple[str, int, Any]], bool, int] | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None


class _Round:
    """What one round of bulk requests over the pending documents came to."""

    def __init__(self) -> None:
        self.retry: dict[str, dict[str, Any]] = {}
        self.rejected: list[tuple[str, int, Any]] = []
        self.busy = False                       # some node answered 429/5xx: slow down
        self.error: BaseException | None = None  # the last node failure


class ElasticsearchOutput:
    """Bulk indexing over one or more nodes with a deterministic _id; retries until acknowledged.

    Documents go as `create` with the deterministic `_id`: a request resent
    after a timeout or a node failure finds the documents that arrived the
    first time already there (409, counted as `output.already_indexed`) and
    never makes a second copy.

    Several hosts (`hosts`): each bulk request of up to `bulk_max_size`
    documents goes to the node with the fewest requests out (ties go round the
    list), up to `worker` requests at a time. A node that fails (refused,
    reset, no answer) is marked down: its requests go to another node at once,
    and it is probed again (`GET /`, cheap) after a backoff that doubles from
    backoff.init to backoff.max while it stays down.

    Transient failures (connection refused, timeouts, 429, 5xx, for the whole
    request or single items) are retried with exponential backoff from
    backoff.init to backoff.max, for as long as the process runs, once no node
    is left up. Documents Elasticsearch rejects for good (a 4xx on the item,
    e.g. a mapping conflict) are counted as failed, logged with the reason
    and, when `dead_letter.path` is set, appended there; they are never retried.

    Recovery is prompt (docs/reliability.md). Each bulk request runs in a
    thread of its own; while it is outstanding, and during every backoff wait,
    a cheap health probe on a separate connection pool (`GET /`, any HTTP
    answer counts, `health_probe.timeout`) asks whether its node still
    answers. A bulk request stuck on a path that accepts but never answers is
    abandoned as soon as a probe goes unanswered (resending is safe: `_id`s
    are deterministic), and a backoff wait ends as soon as a probe is
    answered, so delivery resumes within about one probe interval plus one
    probe timeout of a node answering again.
    """

    name = "elasticsearch"
    accepts_fragments = True    # orjson writes an orjson.Fragment's JSON text as it is (_body)
    # A Block (flow reports as NDJSON) becomes (id, Fragment) pairs here: retries, splits
    # over nodes and dead letters are per document.
    accepts_blocks = True
    MAX_ABANDONED = 6       # stuck requests left to time out; each holds one pooled connection
    MIN_SPLIT = 100         # a batch is split over the workers down to requests of this size

    def __init__(self, cfg: dict[str, Any], index: str, on_connect: Any = None) -> None:
        self.cfg = cfg
        self.index = index
        self.nodes = [_Node(url, cfg) for url in cfg["hosts"]]
        if not self.nodes:
            raise OutputError("output.elasticsearch.hosts: no host given", permanent=True)
        self.client = self.nodes[0].client      # for callers that need any client
        self.workers = max(1, cfg.get("worker", 1))
        self.compression_level = cfg.get("compression_level", 0)
        if not 0 <= self.compression_level <= 9:
            raise OutputError(f"output.elasticsearch.compression_level: {self.compression_level} "
                              "is not 0 (off) to 9", permanent=True)
        # The action line and the document as one bytes %-format (_body); a % in the
        # index name is doubled to stay literal.
        prefix = b'{"create":{"_index":' + orjson.dumps(index) + b',"_id":'
        self.action_pair = prefix.replace(b"%", b"%%") + b"%s}}\n%s\n"
        self.next_node = 0
        self.probe_interval_s = cfg["health_probe.interval"]
        self.on_connect = on_connect        # called once with a client after first contact
        self.connected = False
        self.contact_lock = threading.Lock()
        self.logged_failures = 0
        self.dead_letter = DeadLetterFile(cfg["dead_letter.path"]) if cfg["dead_letter.path"] else None
        self.abandoned: list[threading.Thread] = []
        self.down_since: float | None = None
        # Counters (output.*): what the retries did.
        self.retries = 0                # bulk rounds that had to be repeated
        self.items_retried = 0          # documents sent again
        self.abandoned_requests = 0     # bulk requests given up on after an unanswered probe
        self.probes_failed = 0
        self.recoveries = 0             # delivery went on after a node failed
        self.dead_lettered = 0
        self.already_indexed = 0        # 409 on create: arrived with an earlier attempt
        self.node_failures = 0          # a node stopped answering (marked down)
        self.requests = 0               # bulk requests sent

    def counters(self) -> dict[str, int]:
        return {"output.retries": self.retries, "output.items_retried": self.items_retried,
                "output.requests_abandoned": self.abandoned_requests,
                "output.probes_failed": self.probes_failed, "output.recoveries": self.recoveries,
                "output.dead_lettered": self.dead_lettered,
                "output.already_indexed": self.already_indexed,
                "output.bulk_requests": self.requests,
                "output.node_failures": self.node_failures,
                "output.nodes_down": sum(node.down for node in self.nodes)}

    def connect_now(self) -> None:
        """First contact at start-up if a node answers; unreachable is not an error yet.

        Raises TemplateError when the index template cannot be installed.
        """
        for node in self.nodes:
            try:
                self._first_contact(node)
                return
            except OutputError as err:
                if err.permanent:
                    raise
            except (TransportConnectionError, TransportError):
                pass

    def _first_contact(self, node: _Node) -> None:
        # With the probe's short timeout: a node that accepts and never answers
        # must not hold the start (or a retry) for the whole bulk timeout.
        with self.contact_lock:
            if self.connected:
                return
            check_connection(node.probe_client, [node.url], self.cfg)
            if self.on_connect is not None:
                self.on_connect(node.client)
            self.connected = True

    def _body(self, items: Batch) -> bytes:
        # One %-format per document (action line and document): 15% less than
        # four concatenations, each copying the document again.
        pair, dumps = self.action_pair, orjson.dumps
        return b"".join([pair % (dumps(doc_id), dumps(doc)) for doc_id, doc in items])

    def send(self, batch: Batch | Block, stopping: threading.Event) -> int:
        pending = {doc_id: doc for doc_id, doc in documents(batch)}
        # The same _id twice in one batch is one document: both count as acknowledged.
        failed = 0
        backoff = self.cfg["backoff.init"]
        while pending:
            if stopping.is_set():
                raise OutputStopped()
            result = self._round(pending, stopping)
            for doc_id, status, error in result.rejected:
                failed += 1
                self._reject(doc_id, pending[doc_id], status, error)
            if not result.retry:
                self._note_recovery()
                break
            pending = result.retry
            self.retries += 1
            self.items_retried += len(pending)
            if result.error is not None and not any(not node.down for node in self.nodes):
                self.connected = False
                if self.down_since is None:
                    self.down_since = time.monotonic()
                log.warning("elasticsearch unreachable, will retry",
                            error=_redact(_short(result.error), self.cfg), retry_in_s=backoff,
                            pending=len(pending))
                # Wait out the backoff, but retry as soon as a node answers a probe.
                self._wait_for_node(backoff, stopping)
            elif result.busy:
                if stopping.wait(backoff):      # it answered 429/5xx: it asked us to slow down
                    raise OutputStopped()
            else:
                continue        # a node failed, another is up: resend there now
            backoff = min(backoff * 2, self.cfg["backoff.max"])
        return failed

    def _round(self, pending: dict[str, dict[str, Any]], stopping: threading.Event) -> _Round:
        """Send every pending document once, up to `worker` bulk requests at a time.

        Each request runs in a thread of its own; every probe interval the
        nodes with requests out are probed, and the requests of a node that
        does not answer are abandoned (their documents go to `retry`).
        """
        items = list(pending.items())
        size = self._request_size(len(items))
        todo = [items[i:i + size] for i in range(0, len(items), size)]
        todo.reverse()                                  # pop() takes them in order
        result = _Round()
        finished: queue.Queue[_Request] = queue.Queue()
        out: list[_Request] = []
        while todo or out:
            while todo and len(out) < self.workers:
                self._wait_for_a_free_connection(stopping)
                node = self._pick()
                if node is None:                        # every node is down
                    for chunk in todo:
                        result.retry.update(chunk)
                    todo.clear()
                    # An error, so that `send` waits out its backoff: with none (no
                    # request was made) it resent at once, spinning a core until a
                    # node came back.
                    result.error = result.error or _Unreachable("every node is down")
                    break
                out.append(self._start(node, todo.pop(), finished))
            if not out:
                break
            try:
                request = finished.get(timeout=self.probe_interval_s)
            except queue.Empty:
                if stopping.is_set():
                    raise OutputStopped() from None
                self._probe_nodes_with_requests_out(out, result)
                continue
            if request not in out:
                continue                                # abandoned earlier, finished late
            out.remove(request)
            request.node.in_flight -= 1
            if request.error is not None:
                if not isinstance(request.error, _DELIVERY_ERRORS):
                    raise request.error
                self._node_failed(request.node, request.error)
                result.retry.update(request.items)
                result.error = request.error
                continue
            assert request.value is not None
            retry, rejected, busy, already = request.value
            result.retry.update(retry)
            result.rejected.extend(rejected)
            result.busy = result.busy or busy
            self.already_indexed += already
        return result

    def _request_size(self, documents: int) -> int:
        """Documents per bulk request: at most bulk_max_size, and small enough that a
        batch smaller than `worker` full requests still fills every worker (down to
        MIN_SPLIT documents a request: below that, requests cost more than they save)."""
        largest = max(1, self.cfg["bulk_max_size"])
        share = -(-documents // self.workers)
        return max(min(largest, share), min(largest, self.MIN_SPLIT))

    def _start(self, node: _Node, items: Batch, finished: queue.Queue[_Request]) -> _Request:
        request = _Request(node, items)

        def work() -> None:
            try:
                request.value = self._bulk(node, items)
            except BaseException as err:     # handed to the output thread, which decides
                request.error = err
            finally:
                finished.put(request)

        node.in_flight += 1
        self.requests += 1
        request.thread = threading.Thread(target=work, name="bulk", daemon=True)
        request.thread.start()
        return request

    def _probe_nodes_with_requests_out(self, out: list[_Request], result: _Round) -> None:
        for node in list(dict.fromkeys(request.node for request in out)):
            if self._probe(node):
                continue
            # The path accepts but does not answer: waiting for the full request
            # timeout would hold back everything queued behind these requests.
            for request in [r for r in out if r.node is node]:
                out.remove(request)
                node.in_flight -= 1
                self.abandoned_requests += 1
                assert request.thread is not None
                self.abandoned.append(request.thread)
                result.retry.update(request.items)
            result.error = _Unreachable(f"{_redact(node.url, {})}: a bulk request got no answer "
                                        "and a health probe neither")
            self._node_failed(node, result.error)

    def _pick(self) -> _Node | None:
        """The up node with the fewest requests out, ties going round the list.

        A down node whose backoff has run out is probed and comes back when it
        answers. While another node is up, the probe runs in a thread aside and
        its answer is taken at a later pick: a node that accepts and never
        answers must not hold delivery to the healthy ones for a probe timeout
        every backoff. None when every node is down.
        """
        count = len(self.nodes)
        order = [self.nodes[(self.next_node + i) % count] for i in range(count)]
        self.next_node = (self.next_node + 1) % count
        now = time.monotonic()
        others_up = any(not node.down for node in order)
        for node in order:
            if not node.down:
                continue
            if node.probe_answer is not None:
                answered, node.probe_answer, node.probe = node.probe_answer, None, None
                self._probed(node, answered)
            elif node.probe is None and node.down_until <= now:
                if others_up:
                    node.probe = threading.Thread(target=self._probe_aside, args=(node,), daemon=True,
                                                  name="wirebeat-es-probe")
                    node.probe.start()
                else:
                    self._probed(node, self._probe(node, count=False))
        up = [node for node in order if not node.down]
        return min(up, key=lambda node: node.in_flight) if up else None

    def _node_failed(self, node: _Node, error: BaseException | None) -> None:
        """Mark the node down until its backoff has passed (doubling while it stays down)."""
        if not node.down:
            self.node_failures += 1
            if self.down_since is None:
                self.down_since = time.monotonic()
            if len(self.nodes) > 1:
                log.warning("elasticsearch node failed, sending to the others", host=_redact(node.url, {}),
                            error=_redact(_short(error), self.cfg) if error else "no answer",
                            up=sum(not n.down for n in self.nodes) - 1)
            node.backoff = self.cfg["backoff.init"]
        else:
            node.backoff = min(node.backoff * 2, self.cfg["backoff.max"])
        node.down = True
        node.down_until = time.monotonic() + node.backoff

    def _node_up(self, node: _Node) -> None:
        if node.down and len(self.nodes) > 1:
            log.info("elasticsearch node answers again", host=_redact(node.url, {}))
        node.down = False
        node.backoff = 0.0

    def _bulk(self, node: _Node, items: Batch,
              ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, int, Any]], bool, int]:
        """Send once: (to retry, rejected for good, node busy, already indexed).

        Touches no shared state but the first contact, so an abandoned request may finish any time.
        """
        if not self.connected:
            self._first_contact(node)
        body = self._body(items)
        headers = {"content-type": NDJSON, "accept": JSON}
        if self.compression_level:
            body = gzip.compress(body, self.compression_level)
            headers["content-encoding"] = "gzip"
        try:
            response = node.client.perform_request("POST", "/_bulk", headers=headers, body=body)
        except ApiError as err:
            if err.status_code == 429 or err.status_code >= 500:
                return dict(items), [], True, 0      # the whole request: none of it is the documents' fault
            raise
        retry: dict[str, dict[str, Any]] = {}
        rejected: list[tuple[str, int, Any]] = []
        busy, already = False, 0
        if not response.body.get("errors"):
            return retry, rejected, busy, already
        docs = dict(items)
        for item in response.body["items"]:
            result = next(iter(item.values()))
            status = result.get("status", 0)
            if 200 <= status < 300:
                continue
            doc_id = result.get("_id")
            if status == 409:
                already += 1        # created by an earlier attempt of this document
            elif status == 429 or status >= 500:
                busy = True
                retry[doc_id] = docs[doc_id]
            else:
                rejected.append((doc_id, status, result.get("error")))
        return retry, rejected, busy, already

    def _probe(self, node: _Node, count: bool = True) -> bool:
        """Does the node answer at all? Any HTTP status counts; only silence does not."""
        try:
            node.probe_client.info()
        except ApiError:
            return True      # e.g. 405 from the minimal server, 401: it answered
        except Exception:    # refused, reset, timed out, TLS failure: no answer
            if count:
                self.probes_failed += 1
            return False
        return True

    def _probe_aside(self, node: _Node) -> None:
        """A probe in its own thread; only the sending thread acts on (and counts) its answer."""
        node.probe_answer = self._probe(node, count=False)

    def _probed(self, node: _Node, answered: bool) -> None:
        if answered:
            self._node_up(node)
        else:
            self.probes_failed += 1
            self._node_failed(node, None)

    def _wait_for_node(self, backoff_s: float, stopping: threading.Event) -> bool:
        """Wait up to backoff_s; True as soon as a node answers a probe. Raises OutputStopped."""
        deadline = time.monotonic() + backoff_s
        while True:
            step = min(self.probe_interval_s, deadline - time.monotonic())
            if step <= 0:
                return False
            if stopping.wait(step):
                raise OutputStopped()
            for node in self.nodes:
                if self._probe(node):
                    self._node_up(node)
                    return True

    def _wait_for_a_free_connection(self, stopping: threading.Event) -> None:
        """Abandoned requests each hold a pooled connection until their timeout: bound them."""
        while True:
            self.abandoned = [t for t in self.abandoned if t.is_alive()]
            if len(self.abandoned) < self.MAX_ABANDONED * len(self.nodes):
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
        for node in self.nodes:
            node.close()
        if self.dead_letter is not None:
            self.dead_letter.close()
