"""A stand-in queue server on loopback that can be stopped and started again on its port.

While it is stopped the port is closed, so the client's connections are
refused, exactly as during a real server restart. It answers only
``POST /v1/results/poll``, every job with the status it holds now, and
``POST /v1/chat/completions/bulk``, with a new queued job per request.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import completion_body, entry_body, job_body
from openbeepboop_schemas import BULK_SUBMIT_PATH


class JsonHandler(BaseHTTPRequestHandler):
    """A stand-in server's handler: JSON answers, and no log lines of its own."""

    def answer(self, status: int, data: object) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test's output is the client's."""


class RestartableServer:
    """Polls over a set status, and bulk submits; ``stop()`` and ``start()`` keep the port."""

    def __init__(self, status: str = "QUEUED", answer: str | None = None) -> None:
        self.status = status
        #: What every completed job answered, when not the usual short greeting.
        self.answer = answer
        self.polls = 0
        #: How many jobs bulk submits have made.
        self.submitted = 0
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

    def made(self, requests: list[dict]) -> list[dict]:
        """The jobs of one bulk submit: one per request, numbered on from the last."""
        jobs = []
        for request in requests:
            self.submitted += 1
            jobs.append(job_body(f"job-{self.submitted}", model=request["model"]))
        return jobs

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                sent = json.loads(self.rfile.read(length))
                if self.path == BULK_SUBMIT_PATH:
                    self.answer(202, {"object": "list", "data": owner.made(sent["requests"])})
                    return
                fields = {}
                if owner.answer is not None and owner.status == "COMPLETED":
                    fields["result"] = completion_body(owner.answer)
                entries = [entry_body(job_id, owner.status, **fields) for job_id in sent["ids"]]
                self.answer(200, entries)
                owner.polls += 1
                owner.answered.set()

        return Handler
