"""Self-monitoring: counters and process stats as JSON on 127.0.0.1, and as documents.

`http.enabled: true` serves, like a beat's HTTP endpoint:
- `GET /`       who is running (name, version, host, uptime);
- `GET /stats`  every counter (flat dotted names, as in the metrics log line),
                per-source details, and process stats (CPU time,
                RSS, open file descriptors).

It binds 127.0.0.1 only: the numbers are for the operator on the host, or a
local agent, never for the network. The engine runs in the main thread and
must not be read from another, so the main loop publishes a snapshot about
once a second (`update`) and the server thread serves the latest one; process
stats are read when asked.

`monitoring.enabled: true` also indexes a snapshot every `monitoring.period`
(and a last one when wirebeat stops) as a document with event.dataset
`wirebeat.stats`, plus one document per capture source (file, interface,
collector client) with numeric packets/dropped/malformed counts, which the
Kibana "Collector health" dashboard and `wirebeat report` aggregate (the
counters themselves are a flattened object, searchable but not summable).
"""
from __future__ import annotations

import base64
import os
import socket
import threading
import time
from typing import Any

import orjson

from wirebeat import __version__, logs
from wirebeat.document import iso_time
from wirebeat.hashes import blake2b
from wirebeat.stats import Stats

__all__ = ["StatsServer", "source_documents", "stats_document", "totals"]

log = logs.get("monitor")


class StatsServer:
    """The JSON endpoint on 127.0.0.1:`port`, served by one daemon thread."""

    def __init__(self, port: int, stats: Stats) -> None:
        # Imported with the endpoint (~7 ms a run without it saves); `run` makes it before
        # any privilege drop.
        import http.server
        self.stats = stats
        self.started = time.time()
        self.latest: dict[str, Any] = {"counters": {}, "sources": []}
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:       # noqa: N802 (http.server's spelling)
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if path == "/":
                    body = owner.info()
                elif path == "/stats":
                    body = owner.current()
                else:
                    self.send_error(404, "try / or /stats")
                    return
                data = orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:   # noqa: A002
                pass                        # requests are not worth a log line each

        # Raises OSError (port taken): the caller turns it into one line.
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="http stats", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("stats endpoint listening", url=f"http://127.0.0.1:{self.port}/stats")

    def update(self, counters: dict[str, Any], sources: list[dict[str, Any]]) -> None:
        """Main thread: publish the newest snapshot."""
        with self.lock:
            self.latest = {"counters": counters, "sources": sources}

    def info(self) -> dict[str, Any]:
        return {"beat": "wirebeat", "version": __version__, "hostname": socket.gethostname(),
                "uptime_s": round(time.time() - self.started, 3)}

    def current(self) -> dict[str, Any]:
        with self.lock:
            latest = dict(self.latest)
        latest["process"] = self.stats.process()
        latest["uptime_s"] = round(time.time() - self.started, 3)
        return latest

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def stats_document(counters: dict[str, Any], process: dict[str, Any], ts: float,
                   host: str) -> tuple[str, dict[str, Any]]:
    """A wirebeat.stats document: counters as a flattened object, process stats as fields."""
    doc = {
        "@timestamp": iso_time(ts),
        "event": {"kind": "metric", "dataset": "wirebeat.stats"},
        "wirebeat": {"stats": {"counters": counters, "process": process, "totals": totals(counters)}},
    }
    key = f"{host}|{os.getpid()}|wirebeat.stats|{round(ts * 1e6)}"
    return _doc_id(key), doc


def _doc_id(key: str) -> str:
    return base64.urlsafe_b64encode(blake2b(key.encode(), digest_size=15).digest()).decode()


_MALFORMED = ("packets.malformed.", "decoder.malformed.", "zmq.malformed.")


def totals(counters: dict[str, Any]) -> dict[str, int]:
    """The few numbers an operator charts, summed from the flat counters."""
    def total(test: Any) -> int:
        return sum(v for k, v in counters.items() if isinstance(v, int) and test(k))

    return {
        "packets": counters.get("packets.read", 0),
        "bytes": counters.get("packets.bytes", 0),
        "malformed": total(lambda k: k.startswith(_MALFORMED) or k in (
            "capture.truncated_records", "capture.garbage_records")),
        "dropped": total(lambda k: k.startswith("zmq.dropped.") or k == "queue.dropped" or (
            k.startswith("interface.") and k.endswith("_dropped"))),
        "documents": counters.get("events.published", 0),
    }


def source_documents(details: list[dict[str, Any]], ts: float,
                     host: str) -> list[tuple[str, dict[str, Any]]]:
    """One wirebeat.stats document per capture source, from `Runner.source_details()`.

    Files: frames read and damaged records; ZeroMQ: per collector client,
    messages received and dropped (capture.collector is the endpoint);
    interfaces: frames received and dropped by the kernel or interface.
    """
    rows: list[tuple[str, str | None, dict[str, int]]] = []
    for d in details:
        if d["kind"] == "file":
            rows.append((d["name"], None, {"kind": "file", "packets": d.get("packets", 0), "dropped": 0,
                                           "malformed": d.get("malformed", 0)}))
        elif d["kind"] == "zmq":
            dropped = d.get("dropped_per_client", {})
            for client, n in d.get("received_per_client", {}).items():
                rows.append((client, d["name"], {"kind": "zmq", "packets": n, "dropped": dropped.get(client, 0)}))
        else:
            prefix = f"interface.{d['name']}."
            rows.append((d["name"], None, {
                "kind": "interface", "packets": d.get(prefix + "received", 0),
                "dropped": d.get(prefix + "kernel_dropped", 0) + d.get(prefix + "interface_dropped", 0)}))
    out = []
    for source, collector, numbers in rows:
        capture = {"source": source, **({"collector": collector} if collector else {})}
        doc = {"@timestamp": iso_time(ts), "event": {"kind": "metric", "dataset": "wirebeat.stats"},
               "capture": capture, "wirebeat": {"stats": {"source": numbers}}}
        out.append((_doc_id(f"{host}|{os.getpid()}|wirebeat.stats|{collector}|{source}|{round(ts * 1e6)}"), doc))
    return out
