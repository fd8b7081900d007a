"""Refuse request bodies over ``[server] max_body_bytes`` before they cost memory.

Two checks, because a client may lie or not say: a declared ``Content-Length``
over the limit is refused before a byte of the body is read, and a body sent
without one (chunked) is counted as it streams in and refused the moment it
crosses the limit.
"""

from __future__ import annotations

from collections.abc import Mapping

from openbeepboop_schemas import ErrorEnvelope
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openbeepboop_server.http.errors import BodyTooLargeError


class BodySizeLimit:
    """Pure ASGI middleware: ``413`` for bodies over ``max_bytes``."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: Paths with a limit of their own (file uploads: ``[openai] max_file_bytes``).
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.path_limits.get(scope.get("path", ""), self.max_bytes)
        declared = _content_length(scope)
        if declared is None:
            await _reject(
                send, 400, "Content-Length header is not a valid number", "invalid_header"
            )
            return
        if declared > max_bytes:
            error = BodyTooLargeError(max_bytes)
            await _send_envelope(send, 413, error.envelope)
            return

        limit = max_bytes
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Raised inside the handler's body read, so the app's
                    # exception handlers turn it into the 413 envelope.
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length, 0 when absent, ``None`` when unparseable."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
            return length if length >= 0 else None
    return 0


async def _reject(send: Send, status: int, message: str, code: str) -> None:
    envelope = ErrorEnvelope.build(message=message, type="invalid_request_error", code=code)
    await _send_envelope(send, status, envelope)


async def _send_envelope(send: Send, status: int, envelope: ErrorEnvelope) -> None:
    body = envelope.model_dump_json().encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
