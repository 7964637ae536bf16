"""Receivers of notifications for the tests: a real HTTP server on 127.0.0.1 that records the
JSON it is posted (answering with a chosen status, or only after a delay), and a command that
writes its environment to a file."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

__all__ = ["Receiver", "env_command", "read_env"]


class Receiver:
    """An HTTP server on 127.0.0.1 (a free port) recording every POST as (path, JSON)."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay
        self.posts: list[tuple[str, Any]] = []
        self.released = threading.Event()  # ends a delayed answer early
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append((self.path, json.loads(body)))
                if receiver.delay:
                    receiver.released.wait(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "/services/T000/B000/XXXXSECRETXXXX") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def env_command(folder: Path, out: Path, exit_status: int = 0, sleep: Optional[float] = None
                ) -> Path:
    """An executable script that writes its environment to `out` (NUL-separated), then
    optionally sleeps, then exits with `exit_status` (saying so on stderr when not 0)."""
    script = folder / "on-scale"
    lines = ["#!/bin/sh", f"env -0 > '{out}'"]
    if sleep is not None:
        lines.append(f"sleep {sleep}")
    if exit_status:
        lines += ["echo 'hook: something went wrong' >&2", f"exit {exit_status}"]
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


def read_env(path: Path) -> dict[str, str]:
    """The environment env_command wrote."""
    pairs = [item.split("=", 1) for item in path.read_text().split("\0") if "=" in item]
    return dict(pairs)
