"""A minimal, stateful stand-in for the queue server's node protocol.

:class:`FakeQueue` keeps jobs, leases and everything the node sent. Tests talk
to it in-process through respx (:func:`respx_transport`) or, for a real node
subprocess, over loopback HTTP (:class:`FakeQueueServer`). It enforces what the
node relies on: strict request bodies (the schemas' own models), the Bearer
key, leases with tokens, acks ``accepted``/``duplicate``/``stale``/``rejected``,
and heartbeats that report cancelled and lost leases.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import respx
from openbeepboop_schemas import (
    FetchRequest,
    HeartbeatRequest,
    SubmitRequest,
)
from pydantic import ValidationError

NODE_KEY = "sk-node-" + "k" * 40
FETCH = "/internal/queue/fetch"
SUBMIT = "/internal/queue/submit"
HEARTBEAT = "/internal/queue/heartbeat"
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
        handler = {FETCH: self._fetch, SUBMIT: self._submit, HEARTBEAT: self._heartbeat}[path]
        try:
            return 200, handler(json.loads(body))
        except ValidationError as exc:
            return 400, _error(str(exc), "invalid_request_error")

    def has_work(self, models: list[str]) -> bool:
        with self.lock:
            return any(self._serves(models, model) for _, model, _, _ in self.queued)

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


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def respx_transport(fake: FakeQueue) -> tuple[respx.MockRouter, httpx.MockTransport]:
    """A respx router playing ``fake``, as a transport for the node's client only.

    Only the node's queue client goes through it, so LiteLLM's own HTTP calls
    to the stand-in LLM stay real.
    """
    router = respx.MockRouter(assert_all_called=False)

    async def effect(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        fake.attempts.append((path, time.monotonic()))
        if fake.unreachable(path):
            raise httpx.ConnectError("fake queue server is down", request=request)
        if path == FETCH:
            body = json.loads(request.content)
            deadline = time.monotonic() + float(body.get("wait", 0))
            while time.monotonic() < deadline and not fake.has_work(body.get("models", [])):
                await asyncio.sleep(POLL_STEP_SECONDS)
        status, payload = fake.handle(path, dict(request.headers), request.content)
        return httpx.Response(status, json=payload)

    for path in (FETCH, SUBMIT, HEARTBEAT):
        router.post(url__regex=rf".*{path}$", name=path).mock(side_effect=effect)
    return router, httpx.MockTransport(router.async_handler)


class FakeQueueServer:
    """``fake`` served over HTTP on a free loopback port, in a thread."""

    def __init__(self, fake: FakeQueue) -> None:
        self.fake = fake
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                path = self.path
                fake.attempts.append((path, time.monotonic()))
                if fake.unreachable(path):
                    self._send(503, _error("fake queue server is down", "server_error"))
                    return
                if path == FETCH:
                    data = json.loads(body)
                    deadline = time.monotonic() + float(data.get("wait", 0))
                    while (
                        time.monotonic() < deadline
                        and not outer.closing
                        and not fake.has_work(data.get("models", []))
                    ):
                        if self._client_gone():
                            return  # like the real server: claim nothing for a hung-up node
                        time.sleep(POLL_STEP_SECONDS)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload = fake.handle(path, headers, body)
                self._send(status, payload)

            def _client_gone(self) -> bool:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.closing = False
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeQueueServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closing = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)
