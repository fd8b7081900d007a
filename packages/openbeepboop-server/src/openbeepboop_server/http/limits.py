"""Refuse request bodies over ``[server] max_body_bytes`` before they cost memory.

Two checks, because a client may lie or not say: a declared ``Content-Length``
over the limit is refused before a byte of the body is read, and a body sent
without one (chunked) is counted as it streams in and refused the moment it
crosses the limit.

The route nodes deliver results on has its own, larger limit
(``[limits] max_result_bytes``, :func:`result_body_limit`): a completion may be
bigger than any request, and losing it to the request limit would lose paid
work. Over that limit the answer is ``413`` with the code
:data:`~openbeepboop_schemas.RESULT_TOO_LARGE`, which tells the node to deliver
an error outcome of that type instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from openbeepboop_schemas import ErrorEnvelope
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openbeepboop_server.http.errors import ApiError, BodyTooLargeError, ResultTooLargeError

#: Room for the delivery's own JSON around a result of exactly ``max_result_bytes``.
RESULT_ENVELOPE_BYTES = 64 * 1024


def result_body_limit(max_result_bytes: int, max_body_bytes: int) -> int:
    """The deliver route's body limit: one result at the limit fits; never below the rest."""
    return max(max_body_bytes, max_result_bytes + RESULT_ENVELOPE_BYTES)


class BodySizeLimit:
    """Pure ASGI middleware: ``413`` for bodies over ``max_bytes`` (or a route's own limit).

    ``path_limits`` give routes a limit of their own (file uploads: ``[openai]
    max_file_bytes``); ``result_paths`` name routes whose bodies carry results:
    they may be up to ``max_result_bytes`` (:func:`result_body_limit`) and are
    refused with :class:`ResultTooLargeError`.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_limits: Mapping[str, int] | None = None,
        result_paths: frozenset[str] = frozenset(),
        max_result_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        result_limit = result_body_limit(max_result_bytes or max_bytes, max_bytes)
        #: Each route with a limit of its own, and the kind of error past it.
        self._limits: dict[str, tuple[int, Callable[[int], ApiError]]] = {
            path: (limit, BodyTooLargeError) for path, limit in (path_limits or {}).items()
        }
        for path in result_paths:
            self._limits[path] = (result_limit, ResultTooLargeError)
        self._default: tuple[int, Callable[[int], ApiError]] = (max_bytes, BodyTooLargeError)

    def _limit(self, scope: Scope) -> tuple[int, ApiError]:
        # A new error each time: one raised again and again would grow its traceback.
        limit, error = self._limits.get(scope.get("path", ""), self._default)
        return limit, error(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None:
            await _reject(
                send, 400, "Content-Length header is not a valid number", "invalid_header"
            )
            return
        limit, error = self._limit(scope)
        if declared > limit:
            await _send_envelope(send, 413, error.envelope)
            return

        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Raised inside the handler's body read, so the app's
                    # exception handlers turn it into the 413 envelope.
                    raise error
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
