"""A stand-in queue server on loopback that can be stopped and started again on its port.

While it is stopped the port is closed, so the client's connections are
refused, exactly as during a real server restart. It answers only
``POST /v1/results/poll``, every job with the status it holds now.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import entry_body


class RestartableServer:
    """The poll endpoint over a set status; ``stop()`` and ``start()`` keep the port."""

    def __init__(self, status: str = "QUEUED") -> None:
        self.status = status
        self.polls = 0
        self.answered = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen on the port (a free one the first time) and answer polls."""
        handler = self._handler()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the port: from now on connections are refused."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                ids = json.loads(self.rfile.read(length))["ids"]
                body = json.dumps([entry_body(job_id, owner.status) for job_id in ids]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                owner.polls += 1
                owner.answered.set()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test's output is the client's."""

        return Handler
