"""One log line and one latency observation per request, never a key.

The line holds the method, the path (no query string), the status, the time
taken in milliseconds and a request id that is also returned in the
``x-request-id`` header, so a user's report can be matched to the log. The
``Authorization`` header is never read here, let alone logged.

The line and the observation wait for one turn of the event loop after the
response went out: a request often wakes another one (a submit hands a job
to a waiting fetch, a result ends a client's poll), and that request's
answer should not wait behind this one's bookkeeping. The time recorded is
still taken when the response was finished.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openbeepboop_server.metrics import Metrics

logger = logging.getLogger("openbeepboop_server.access")

REQUEST_ID_HEADER = b"x-request-id"
#: Scope key where the matched route template is left by the endpoint wrapper.
ROUTE_KEY = "openbeepboop.route"
UNMATCHED_ROUTE = "unmatched"


class AccessLog:
    """Pure ASGI middleware, outermost: time, log and measure every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(8)
        scope["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER, request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            try:
                await asyncio.sleep(0)  # requests this one woke answer first
            finally:
                self._record(scope, status, elapsed, request_id)

    def _record(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        self.metrics.request_seconds.labels(
            scope["method"], scope.get(ROUTE_KEY, UNMATCHED_ROUTE), str(status)
        ).observe(elapsed)
        logger.info(
            "%s %s %d %.1fms %s",
            scope["method"],
            _printable(scope["path"]),
            status,
            elapsed * 1000,
            request_id,
        )


def _printable(path: str) -> str:
    # A decoded path may hold control characters; never let one forge a log line.
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")
