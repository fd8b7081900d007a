"""A minimal, stateful stand-in for the queue server's node protocol, over real HTTP.

:class:`FakeQueue` keeps jobs, leases and everything the node sent;
:class:`FakeQueueServer` serves it on a loopback port, in a thread, to an
in-process node or a node subprocess alike. It enforces what the node relies
on: strict request bodies (the schemas' own models), the Bearer key, leases
with tokens, acks ``accepted``/``duplicate``/``stale``/``rejected``, and
heartbeats and lease watches that report cancelled and lost leases. :class:`LoopbackServer`
is the HTTP part on its own, for tests that script each answer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from openbeepboop_schemas import (
    FETCH_PATH,
    HEARTBEAT_PATH,
    LEASE_WATCH_PATH,
    QUEUE_SUBMIT_PATH,
    FetchRequest,
    HeartbeatRequest,
    LeaseWatchRequest,
    SubmitRequest,
)
from pydantic import ValidationError

NODE_KEY = "sk-node-" + "k" * 40
FETCH = FETCH_PATH
SUBMIT = QUEUE_SUBMIT_PATH
HEARTBEAT = HEARTBEAT_PATH
WATCH = LEASE_WATCH_PATH
#: How often a long-polling fetch looks at the queue again.
POLL_STEP_SECONDS = 0.01


@dataclass
class FakeLease:
    job_id: str
    token: str
    model: str
    request: dict[str, Any]
    attempt: int
    expires_at: float


@dataclass
class FakeQueue:
    lease_seconds: float = 30.0
    key: str = NODE_KEY
    #: True: every call fails as if the server were not there.
    down: bool = False
    #: Paths that fail as if the server were down (e.g. only submit).
    down_paths: set[str] = field(default_factory=set)
    #: Force this HTTP status on every call (e.g. 401, 503).
    fail_status: int | None = None
    #: Hand out jobs whatever models the node declared (to test a node's own check).
    ignore_routing: bool = False
    #: Seconds a fetch's answer takes to leave once its jobs are claimed (a slow round trip).
    fetch_delay: float = 0.0
    #: Paths whose requests get no answer while they are listed (a hung server).
    hung_paths: set[str] = field(default_factory=set)
    #: Every request that reached the fake, reachable or not: (path, time).
    attempts: list[tuple[str, float]] = field(default_factory=list)
    queued: deque[tuple[str, str, dict[str, Any], int]] = field(default_factory=deque)
    leases: dict[str, FakeLease] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)
    fetches: list[dict[str, Any]] = field(default_factory=list)
    submits: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    watches: list[dict[str, Any]] = field(default_factory=list)
    #: Answer lease watches with this status (404: a server older than the watch).
    watch_status: int | None = None
    acks: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    # -- test side -------------------------------------------------------

    def add_job(self, content: str, model: str = "standin", **params: Any) -> str:
        job_id = f"job-{next(self._ids):04d}"
        request = {"model": model, "messages": [{"role": "user", "content": content}], **params}
        with self.lock:
            self.queued.append((job_id, model, request, 1))
        return job_id

    def results(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {k: v for k, v in self.outcomes.items() if v["kind"] == "result"}

    def errors(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {k: v for k, v in self.outcomes.items() if v["kind"] == "error"}

    def heartbeat_leases(self) -> list[str]:
        with self.lock:
            return [ref["job_id"] for hb in self.heartbeats for ref in hb["leases"]]

    def unreachable(self, path: str) -> bool:
        return self.down or path in self.down_paths

    # -- server side -----------------------------------------------------

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if headers.get("authorization") != f"Bearer {self.key}":
            return 401, _error("invalid API key", "authentication_error")
        if self.fail_status is not None:
            return self.fail_status, _error("forced failure", "server_error")
        if path == WATCH and self.watch_status is not None:
            with self.lock:
                self.watches.append(json.loads(body))
            return self.watch_status, _error("not found", "not_found_error")
        handler = {
            FETCH: self._fetch,
            SUBMIT: self._submit,
            HEARTBEAT: self._heartbeat,
            WATCH: self._watch,
        }[path]
        try:
            return 200, handler(json.loads(body))
        except ValidationError as exc:
            return 400, _error(str(exc), "invalid_request_error")

    def respond(self, request: Received) -> Reply | None:
        """The HTTP side: a long-poll fetch waits for work; "down" drops the connection."""
        self.attempts.append((request.path, time.monotonic()))
        if self.unreachable(request.path):
            return DROP
        while request.path in self.hung_paths:
            if request.gone():
                return DROP
            time.sleep(POLL_STEP_SECONDS)
        if request.path == FETCH:
            data = json.loads(request.body)
            deadline = time.monotonic() + float(data.get("wait", 0))
            while time.monotonic() < deadline and not self.has_work(data.get("models", [])):
                if request.gone():
                    return DROP  # like the real server: claim nothing for a hung-up node
                time.sleep(POLL_STEP_SECONDS)
        if request.path == WATCH and self.watch_status is None:
            data = json.loads(request.body)
            with self.lock:
                self.watches.append(data)  # on arrival: a test can act while it waits
            deadline = time.monotonic() + float(data.get("wait", 0))
            while time.monotonic() < deadline and not self.watch_news(data.get("leases", [])):
                if request.gone():
                    return DROP
                time.sleep(POLL_STEP_SECONDS)
        status, payload = self.handle(request.path, request.headers, request.body)
        if request.path == FETCH and self.fetch_delay:
            time.sleep(self.fetch_delay)
        return Reply(status, payload)

    def has_work(self, models: list[str]) -> bool:
        with self.lock:
            return any(self._serves(models, model) for _, model, _, _ in self.queued)

    def watch_news(self, refs: list[dict[str, Any]]) -> bool:
        """True if a watch of ``refs`` has something to report."""
        with self.lock:
            return any(ref["job_id"] in self.cancelled | self.lost for ref in refs)

    def _serves(self, models: list[str], model: str) -> bool:
        return self.ignore_routing or model in models or "*" in models

    def _fetch(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        request = FetchRequest.model_validate(data)
        now = time.time()
        leases = []
        with self.lock:
            self.fetches.append(data)
            keep: deque[tuple[str, str, dict[str, Any], int]] = deque()
            while self.queued:
                job = self.queued.popleft()
                job_id, model, body, attempt = job
                if len(leases) < request.max_jobs and self._serves(request.models, model):
                    lease = FakeLease(job_id, f"tok-{job_id}-{attempt}", model, body, attempt, now)
                    lease.expires_at = now + self.lease_seconds
                    self.leases[job_id] = lease
                    leases.append(
                        {
                            "job_id": job_id,
                            "lease_token": lease.token,
                            "lease_expires_at": lease.expires_at,
                            "lease_seconds": self.lease_seconds,
                            "attempt": attempt,
                            "model": model,
                            "request": body,
                        }
                    )
                else:
                    keep.append(job)
            self.queued = keep
        return leases

    def _submit(self, data: dict[str, Any]) -> dict[str, Any]:
        request = SubmitRequest.model_validate(data)
        acks = []
        with self.lock:
            self.submits.append(data)
            for outcome, raw in zip(request.outcomes, data["outcomes"], strict=True):
                lease = self.leases.get(outcome.job_id)
                if lease is None or lease.token != outcome.lease_token:
                    ack = "rejected"
                elif outcome.job_id in self.outcomes:
                    ack = "duplicate"
                elif outcome.job_id in self.lost or outcome.job_id in self.cancelled:
                    ack = "stale"
                elif outcome.kind == "release":
                    self.released.append(outcome.job_id)
                    del self.leases[outcome.job_id]
                    self.queued.append(
                        (lease.job_id, lease.model, lease.request, lease.attempt + 1)
                    )
                    ack = "accepted"
                else:
                    self.outcomes[outcome.job_id] = raw
                    ack = "accepted"
                acks.append({"job_id": outcome.job_id, "ack": ack})
            self.acks.extend(acks)
        return {"acks": acks}

    def _heartbeat(self, data: dict[str, Any]) -> dict[str, Any]:
        request = HeartbeatRequest.model_validate(data)
        answer: dict[str, Any] = {
            "lease_seconds": self.lease_seconds,
            "lease_expires_at": time.time() + self.lease_seconds,
            "extended": [],
            "lost": [],
            "cancelled": [],
        }
        with self.lock:
            self.heartbeats.append(data)
            for ref in request.leases:
                lease = self.leases.get(ref.job_id)
                if ref.job_id in self.cancelled:
                    answer["cancelled"].append(ref.job_id)
                elif lease is None or lease.token != ref.lease_token or ref.job_id in self.lost:
                    answer["lost"].append(ref.job_id)
                else:
                    lease.expires_at = time.time() + self.lease_seconds
                    answer["extended"].append(ref.job_id)
        return answer

    def _watch(self, data: dict[str, Any]) -> dict[str, Any]:
        request = LeaseWatchRequest.model_validate(data)
        answer: dict[str, Any] = {"cancelled": [], "lost": []}
        with self.lock:
            for ref in request.leases:
                lease = self.leases.get(ref.job_id)
                if ref.job_id in self.cancelled:
                    answer["cancelled"].append(ref.job_id)
                elif ref.job_id in self.outcomes:
                    continue  # the node's own delivery: nothing to abort
                elif lease is None or lease.token != ref.lease_token or ref.job_id in self.lost:
                    answer["lost"].append(ref.job_id)
        return answer


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


@dataclass(frozen=True)
class Received:
    """One request as the loopback server read it."""

    path: str
    headers: dict[str, str]
    body: bytes
    #: The caller's (host, port): one per connection.
    peer: tuple[str, int]
    #: True once the caller hung up or the server is shutting down.
    gone: Callable[[], bool]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """An answer: JSON ``payload``, or ``text`` as it is."""

    status: int = 200
    payload: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


#: What a responder returns to drop the connection without answering, the way
#: a server that went away (or a broken proxy) does.
DROP = None

Responder = Callable[[Received], "Reply | None"]


def always(reply: Reply | None) -> Responder:
    """A responder giving every request the same answer (or :data:`DROP`)."""
    return lambda request: reply


class LoopbackServer:
    """HTTP/1.1 with keep-alive on a free loopback port, in a thread.

    Every request is recorded in :attr:`received` and answered by
    :attr:`respond` (replaceable while serving).
    """

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.received: list[Received] = []
        self.closing = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    self.client_address[:2],
                    lambda: outer.closing or self._client_gone(),
                )
                outer.received.append(request)
                reply = outer.respond(request)
                if reply is DROP:
                    self.close_connection = True
                    return
                self._send(reply)

            def _client_gone(self) -> bool:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""

            def _send(self, reply: Reply) -> None:
                if reply.text is not None:
                    data, kind = reply.text.encode(), "text/plain"
                else:
                    data, kind = json.dumps(reply.payload).encode(), "application/json"
                self.send_response(reply.status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                # The node may hang up first (a test of its timeouts): nobody to answer.
                with contextlib.suppress(ConnectionError):
                    self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies received on ``path``, in order."""
        return [request.json() for request in self.received if request.path == path]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.closing = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class FakeQueueServer(LoopbackServer):
    """``fake`` served over HTTP on a free loopback port."""

    def __init__(self, fake: FakeQueue) -> None:
        super().__init__(fake.respond)
        self.fake = fake

    def __enter__(self) -> FakeQueueServer:
        super().__enter__()
        return self
