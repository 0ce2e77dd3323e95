"""A TCP path to a real server that a test can break: forward, refuse, or accept and hang.

wirebeat talks to the real Elasticsearch node through it. `refuse()` closes the
listening socket and every open connection (what a stopped node looks like:
connections reset, new ones refused); `hang()` listens again but never answers
(a node or middlebox that accepts and goes silent); `forward()` passes bytes
both ways again. The forwarder notes when bulk requests pass, so a test can
measure how soon delivery resumed after the path healed, and can trip an
outage itself at an exact point of the stream (`trip_after_bulks`).
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

__all__ = ["Forwarder"]


class Forwarder:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "forward"
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.bulks = 0                              # bulk requests forwarded
        self.resumed_at: float | None = None        # monotonic time of the last forward()
        self.first_bulk_after_resume: float | None = None
        self.trip_after_bulks: int | None = None
        self.on_trip: Callable[[], None] | None = None
        self._listen()

    # -- modes ------------------------------------------------------------------

    def refuse(self) -> None:
        with self.lock:
            self.mode = "refuse"
            self._close_all()

    def hang(self) -> None:
        with self.lock:
            self.mode = "hang"
        self._listen()

    def forward(self) -> None:
        with self.lock:
            self.mode = "forward"
            self.resumed_at = time.monotonic()
            self.first_bulk_after_resume = None
        self._listen()

    def close(self) -> None:
        with self.lock:
            self.mode = "closed"
            self._close_all()

    # -- internals --------------------------------------------------------------

    def _listen(self) -> None:
        with self.lock:
            if self.listener is not None:
                return
            self.listener = socket.create_server(("127.0.0.1", self.port))   # SO_REUSEADDR
            listener = self.listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _close_all(self) -> None:
        if self.listener is not None:
            # shutdown() first: close() alone does not wake a thread blocked in
            # accept(), and the socket would go on accepting.
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self.connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                mode = self.mode
                self.connections.append(client)
            if mode in ("refuse", "closed"):
                client.close()
                return
            if mode == "hang":
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections.append(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    @staticmethod
    def _swallow(conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    def _pipe(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        try:
            while data := src.recv(65536):
                if to_server and b"/_bulk" in data and self._count_bulk():
                    return        # tripped: this request does not reach the node
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _count_bulk(self) -> bool:
        """Count a bulk request; True when it trips the outage instead of passing."""
        with self.lock:
            if self.trip_after_bulks is not None and self.bulks >= self.trip_after_bulks:
                self.trip_after_bulks = None
                trip = self.on_trip
            else:
                trip = None
                self.bulks += 1
                if self.resumed_at is not None and self.first_bulk_after_resume is None:
                    self.first_bulk_after_resume = time.monotonic()
        if trip is not None:
            trip()
            return True
        return False
