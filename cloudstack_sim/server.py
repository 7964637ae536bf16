"""HTTP on loopback: a threading HTTP/1.1 server whose handler passes each request to a backend
(the Simulator) and writes the Answer it returns, with the backend's clock in the Date header."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Protocol

__all__ = ["Answer", "ApiHttpServer", "Backend"]


@dataclass
class Answer:
    """What to send back: status, body and headers, and how long to wait after acting."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay_after: float = 0.0


class Backend(Protocol):
    """The one thing the HTTP layer needs: an answer per request, and a clock skew."""

    clock_skew: float

    def handle_http(self, method: str, target: str, body: str) -> Answer:
        """The answer to one request (method, path with query, form body)."""


class ApiHttpServer(ThreadingHTTPServer):
    """A threading server that tracks its connections so stop() can hang up on them."""

    daemon_threads = True
    block_on_close = False          # stop() must not wait for keep-alive or sleeping handlers
    request_queue_size = 128        # ~30 clients connect at once

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.backend = backend
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        """Remember an open connection, or forget a closed one."""
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Hang up on keep-alive clients so no stale handler answers after stop()."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts during slow faults) are expected; stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudstack-sim"
    timeout = 120                   # idle keep-alive connections go away eventually
    server: ApiHttpServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:
        self._serve("")

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "bad Content-Length")
            return
        self._serve(self.rfile.read(max(length, 0)).decode("utf-8", "replace"))

    def _serve(self, body: str) -> None:
        answer = self.server.backend.handle_http(self.command, self.path, body)
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)

    def date_time_string(self, timestamp: Optional[float] = None) -> str:
        if timestamp is None:
            timestamp = time.time() + self.server.backend.clock_skew
        return super().date_time_string(timestamp)

    def log_message(self, format: str, *args: Any) -> None:
        pass
