"""Outputs: Elasticsearch (bulk), console (NDJSON on stdout), file (NDJSON, rotated).

All three receive the same (id, document) batches from the pipeline. The
console and file outputs write exactly the document Elasticsearch would get.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, BinaryIO

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import TransportError
from elasticsearch import ApiError, AuthenticationException, Elasticsearch, helpers

from wirebeat import logs
from wirebeat.pipeline import Batch, OutputStopped

__all__ = ["ConsoleOutput", "ElasticsearchOutput", "FileOutput", "OutputError", "make_client"]

log = logs.get("output")
SUPPORTED_ES_MAJOR = 9      # the 9.x client speaks to 9.x servers


class OutputError(Exception):
    """The output cannot work at all (the message is one line for the operator)."""


class ConsoleOutput:
    name = "console"

    def __init__(self, pretty: bool = False, stream: BinaryIO | None = None) -> None:
        self.stream = stream or sys.stdout.buffer
        self.option = orjson.OPT_INDENT_2 if pretty else 0

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
    """An Elasticsearch client from the output.elasticsearch.* section."""
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
        mode = cfg["ssl.verification_mode"]
        kwargs["verify_certs"] = mode != "none"
        if mode == "certificate":
            kwargs["ssl_assert_hostname"] = False
        if cfg["ssl.certificate_authorities"]:
            kwargs["ca_certs"] = cfg["ssl.certificate_authorities"][0]
    try:
        return Elasticsearch(**kwargs)
    except (ValueError, TypeError) as err:
        raise OutputError(f"output.elasticsearch: {err}") from None


def check_connection(client: Elasticsearch, hosts: list[str]) -> str:
    """The server's version, or OutputError with one line saying what is wrong."""
    where = ", ".join(hosts)
    try:
        version = _server_version(client)
    except AuthenticationException:
        raise OutputError(f"Elasticsearch at {where} rejected the credentials (401): "
                          "check output.elasticsearch.username/password or api_key") from None
    except ApiError as err:
        if err.status_code == 403:
            raise OutputError(f"Elasticsearch at {where}: the user lacks privileges (403)") from None
        if err.status_code in (400, 406):
            raise OutputError(f"Elasticsearch at {where} refused this client's version "
                              f"({err.status_code}); wirebeat needs Elasticsearch "
                              f"{SUPPORTED_ES_MAJOR}.x") from None
        raise OutputError(f"Elasticsearch at {where} answered {err.status_code}: {err.message}") from None
    except TransportError as err:
        raise OutputError(f"Elasticsearch at {where} is unreachable: {_short(err)}") from None
    except Exception as err:     # e.g. a non-Elasticsearch server answering on that port
        raise OutputError(f"Elasticsearch at {where}: {type(err).__name__}: {_short(err)}") from None
    major = int(version.split(".")[0])
    if major != SUPPORTED_ES_MAJOR:
        raise OutputError(f"Elasticsearch at {where} is version {version}; wirebeat needs "
                          f"{SUPPORTED_ES_MAJOR}.x")
    return version


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


class ElasticsearchOutput:
    """Bulk indexing with a deterministic _id; retries until acknowledged.

    Transient failures (connection refused, timeouts, 429, 5xx, for the whole
    request or single items) are retried with exponential backoff from
    backoff.init to backoff.max, for as long as the process runs. Documents
    Elasticsearch rejects for good (a 4xx on the item, e.g. a mapping
    conflict) are counted as failed and logged with the reason, never dropped
    silently.
    """

    name = "elasticsearch"

    def __init__(self, cfg: dict[str, Any], index: str, on_connect: Any = None) -> None:
        self.cfg = cfg
        self.index = index
        self.client = make_client(cfg)
        self.on_connect = on_connect        # called once with the client after first contact
        self.connected = False
        self.retries = 0
        self.logged_failures = 0

    def connect_now(self) -> None:
        """First contact at start-up if Elasticsearch answers; unreachable is not an error yet.

        Raises TemplateError when the index template cannot be installed.
        """
        try:
            self._first_contact()
        except (TransportConnectionError, TransportError, OutputError):
            pass

    def _first_contact(self) -> None:
        check_connection(self.client, self.cfg["hosts"])
        if self.on_connect is not None:
            self.on_connect(self.client)
        self.connected = True

    def _actions(self, batch: Batch) -> list[dict[str, Any]]:
        return [{"_op_type": "index", "_index": self.index, "_id": doc_id, "_source": doc}
                for doc_id, doc in batch]

    def send(self, batch: Batch, stopping: threading.Event) -> int:
        pending = {doc_id: doc for doc_id, doc in batch}
        # The same _id twice in one batch is one document: both count as acknowledged.
        failed = 0
        backoff = self.cfg["backoff.init"]
        while pending:
            if stopping.is_set():
                raise OutputStopped()
            retry: dict[str, dict[str, Any]] = {}
            try:
                if not self.connected:
                    self._first_contact()
                for ok, item in helpers.streaming_bulk(
                        self.client, self._actions(list(pending.items())),
                        chunk_size=self.cfg["bulk_max_size"], max_retries=0,
                        raise_on_error=False, raise_on_exception=False, yield_ok=True):
                    result = next(iter(item.values()))
                    doc_id = result.get("_id")
                    if ok:
                        pending.pop(doc_id, None)
                        continue
                    status = result.get("status", 0)
                    if status == 429 or status >= 500 or not isinstance(status, int):
                        retry[doc_id] = pending[doc_id]
                    else:
                        failed += 1
                        pending.pop(doc_id, None)
                        self._log_failure(doc_id, status, result.get("error"))
            except (TransportConnectionError, TransportError, OutputError) as err:
                self.connected = False
                log.warning("elasticsearch unreachable, will retry", error=_short(err),
                            retry_in_s=backoff, pending=len(pending))
                retry = pending
            if not retry:
                break
            pending = retry
            self.retries += 1
            if stopping.wait(backoff):
                raise OutputStopped()
            backoff = min(backoff * 2, self.cfg["backoff.max"])
        return failed

    def _log_failure(self, doc_id: str, status: int, error: Any) -> None:
        # Log the first failures in full; after that the counter speaks.
        if self.logged_failures < 20:
            self.logged_failures += 1
            log.error("document rejected by elasticsearch", id=doc_id, status=status,
                      error=error if isinstance(error, (str, dict)) else str(error))

    def close(self) -> None:
        self.client.close()
