"""Every failure answers with the OpenAI error envelope, whatever raised it.

Handlers raise :class:`ApiError`; Starlette's own 404/405 and anything
unexpected are converted here too, so no client ever sees a bare text body.
Unexpected exceptions are logged with the request's method, path and id, and
answer a generic ``500`` envelope that reveals nothing of the internals. A
database that is unreachable, dropped the connection, or did not free a lock
or a pooled connection in time is no bug: that answers ``503``
(``database_unavailable``, with ``Retry-After``), logged in one line. So does a
SQLite file found damaged (the first such error is also logged as such by
:class:`~openbeepboop_server.db.database.Database`, with what to do).
"""

from __future__ import annotations

import logging

from openbeepboop_schemas import RESULT_TOO_LARGE, ErrorEnvelope
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from openbeepboop_server.db.faults import describe, is_damaged, is_disk_full, is_unavailable
from openbeepboop_server.dispatch.slots import TooManyLongPolls
from openbeepboop_server.errors import KeyNoLongerValid, PriorityAboveCeiling, QuotaExceeded

logger = logging.getLogger(__name__)

#: ``type`` of the envelope by status, for errors that do not choose their own.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An expected failure with its HTTP status; becomes an error envelope."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.envelope = ErrorEnvelope.build(
            message=message,
            type=type or ERROR_TYPES.get(status_code, "invalid_request_error"),
            param=param,
            code=code,
        )
        self.headers = headers

    @classmethod
    def from_envelope(cls, status_code: int, envelope: ErrorEnvelope) -> ApiError:
        """An error carrying a ready-made envelope (e.g. from a validation error)."""
        body = envelope.error
        return cls(status_code, body.message, type=body.type, param=body.param, code=body.code)


def unauthorized(message: str, code: str) -> ApiError:
    """A ``401`` with the ``WWW-Authenticate: Bearer`` challenge."""
    return ApiError(401, message, code=code, headers={"WWW-Authenticate": "Bearer"})


def invalid_key() -> ApiError:
    """What a request with an unknown, revoked or expired key answers."""
    return unauthorized("invalid or revoked API key", "invalid_api_key")


class BodyTooLargeError(ApiError):
    """The request body is larger than ``[server] max_body_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body is larger than the server's limit of {limit} bytes; "
            "split the work into smaller requests",
            code="request_too_large",
        )


class ResultTooLargeError(ApiError):
    """A delivery's body is larger than the results limit (``[limits] max_result_bytes``).

    The code tells a node what to do: deliver an error outcome of type
    ``result_too_large`` for that job instead (permanent), or, if the body
    carried several outcomes, send them in smaller batches.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"delivery body is larger than the server's results limit of {limit} bytes "
            "([limits] max_result_bytes plus room for the delivery around it); deliver "
            f"outcomes one at a time, and a single result this large as an error of type "
            f"'{RESULT_TOO_LARGE}'",
            code=RESULT_TOO_LARGE,
        )


def envelope_response(
    status_code: int, envelope: ErrorEnvelope, headers: dict[str, str] | None = None
) -> Response:
    """The JSON response for an envelope."""
    return Response(
        envelope.model_dump_json(),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """:class:`ApiError` → its envelope."""
    assert isinstance(exc, ApiError)
    return envelope_response(exc.status_code, exc.envelope, exc.headers)


#: Seconds a client refused for holding too many long-polls is told to wait.
LONG_POLL_RETRY_AFTER_SECONDS = 1


async def handle_too_many_long_polls(request: Request, exc: Exception) -> Response:
    """A key past its long-poll limit (:class:`TooManyLongPolls`) → ``429`` with ``Retry-After``."""
    assert isinstance(exc, TooManyLongPolls)
    error = ApiError(
        429,
        str(exc),
        code="too_many_long_polls",
        headers={"Retry-After": str(LONG_POLL_RETRY_AFTER_SECONDS)},
    )
    return envelope_response(error.status_code, error.envelope, error.headers)


async def handle_priority_above_ceiling(request: Request, exc: Exception) -> Response:
    """A submit above its key's ``max_priority`` (:class:`PriorityAboveCeiling`) → ``403``.

    The body is valid (400 would say it is not): this key may not ask for
    that much, as a role may not call a route. Wherever the submit came in
    (native, bulk, the OpenAI surface): nothing was stored.
    """
    assert isinstance(exc, PriorityAboveCeiling)
    error = ApiError(403, str(exc), param="priority", code="priority_above_ceiling")
    return envelope_response(error.status_code, error.envelope)


async def handle_key_no_longer_valid(request: Request, exc: Exception) -> Response:
    """A waiting request whose key was revoked or expired meanwhile (:class:`KeyNoLongerValid`)
    → the ``401`` a new request with that key gets."""
    assert isinstance(exc, KeyNoLongerValid)
    error = invalid_key()
    return envelope_response(error.status_code, error.envelope, error.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's 404 (no such route) and 405 (wrong method) → envelopes."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        # Imported here: that module raises this module's ApiError.
        from openbeepboop_server.http.openai.wrong_base import openai_path_hint

        path = request.url.path
        message = f"no such endpoint: {request.method} {path}{openai_path_hint(path)}"
        code: str | None = "unknown_url"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} is not allowed on {request.url.path}" + (
            f" (allowed: {allowed})" if allowed else ""
        )
        code = "method_not_allowed"
    else:
        message = str(exc.detail)
        code = None
    envelope = ErrorEnvelope.build(
        message=message, type=ERROR_TYPES.get(status, "invalid_request_error"), code=code
    )
    return envelope_response(status, envelope, dict(exc.headers) if exc.headers else None)


#: Status recorded (access log, metrics) for a request whose client left before
#: its body arrived; nobody receives it (nginx's convention for the same case).
CLIENT_GONE_STATUS = 499


async def handle_client_gone(request: Request, exc: Exception) -> Response:
    """The connection closed while the body was read (the client left, or was cut for
    being too slow): nothing to answer and nothing wrong with the server."""
    logger.debug(
        "client left during the body of %s %s (request %s)",
        request.method,
        request.url.path,
        request.scope.get("request_id", "-"),
    )
    return Response(status_code=CLIENT_GONE_STATUS)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Anything else: log it with context, answer a ``500`` envelope."""
    logger.error(
        "unhandled error on %s %s (request %s)",
        request.method,
        request.url.path,
        request.scope.get("request_id", "-"),
        exc_info=exc,
    )
    envelope = ErrorEnvelope.build(
        message="the server hit an unexpected error; it has been logged",
        type="server_error",
        code="internal_error",
    )
    return envelope_response(500, envelope)


#: Seconds a client whose request met an unavailable database is told to wait.
DATABASE_RETRY_AFTER_SECONDS = 1


def database_unavailable_response(message: str) -> Response:
    """The ``503`` envelope for a database that could not serve a request now."""
    error = ApiError(
        503,
        message,
        code="database_unavailable",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )
    return envelope_response(error.status_code, error.envelope, error.headers)


async def handle_database_error(request: Request, exc: Exception) -> Response:
    """A database error (:data:`~openbeepboop_server.db.faults.DATABASE_ERRORS`): ``503``
    if the database was unavailable (one log line, no traceback), else a bug (``500``)."""
    if not is_unavailable(exc):
        return await handle_unexpected(request, exc)
    logger.warning(
        "database unavailable on %s %s (request %s): %s",
        request.method,
        request.url.path,
        request.scope.get("request_id", "-"),
        describe(exc),
    )
    if is_damaged(exc):
        context = getattr(request.app.state, "context", None)
        if context is not None:
            context.db.note_damage(exc)
        return database_unavailable_response(
            "the database file is damaged; the server's operator must restore it"
        )
    if is_disk_full(exc):
        # Nothing was stored; a retry succeeds only once space is freed.
        return database_unavailable_response(
            "the database's disk is full; nothing was stored, and the server's operator "
            "must free space before a retry can succeed"
        )
    return database_unavailable_response("the database is unavailable right now; retry shortly")


async def handle_quota_exceeded(request: Request, exc: Exception) -> Response:
    """A submit past its key's quota (:class:`QuotaExceeded`) → ``429`` with ``Retry-After``."""
    assert isinstance(exc, QuotaExceeded)
    error = ApiError(429, str(exc), code=exc.code, headers={"Retry-After": str(exc.retry_after)})
    return envelope_response(error.status_code, error.envelope, error.headers)


async def handle_scope_refused(request: Request, exc: Exception) -> Response:
    """A NODE key outside its scope (:class:`ScopeRefused`) → ``403``."""
    error = ApiError(403, str(exc), code="outside_key_scope")
    return envelope_response(error.status_code, error.envelope)


async def handle_idempotency_key_reused(request: Request, exc: Exception) -> Response:
    """An ``Idempotency-Key`` sent with another request (:class:`IdempotencyKeyReused`) → ``422``.

    As the IETF's Idempotency-Key draft has it; ``x-should-retry: false``
    tells SDKs that sending it again will not help.
    """
    error = ApiError(
        422,
        str(exc),
        param="Idempotency-Key",
        code="idempotency_key_reused",
        headers={"x-should-retry": "false"},
    )
    return envelope_response(error.status_code, error.envelope, error.headers)


async def handle_node_id_taken(request: Request, exc: Exception) -> Response:
    """A ``node_id`` another key acts under (:class:`NodeIdTaken`) → ``409``."""
    error = ApiError(409, str(exc), type="conflict_error", code="node_id_taken")
    return envelope_response(error.status_code, error.envelope)


#: Seconds a node refused for its key's live node ids is told to wait: ids age
#: out of the count after ``node_seen_seconds`` (at least 90 s by default).
NODE_LIMIT_RETRY_AFTER_SECONDS = 30


async def handle_too_many_nodes(request: Request, exc: Exception) -> Response:
    """A new ``node_id`` past its key's live nodes (:class:`TooManyNodes`) → ``429``."""
    return _node_limit_response(exc, param="node_id", code="too_many_nodes")


async def handle_too_many_models(request: Request, exc: Exception) -> Response:
    """A node declaring names past its key's distinct models (:class:`TooManyModels`) → ``429``.

    The same wait as for too many nodes: names leave the count when the nodes
    declaring them age out.
    """
    return _node_limit_response(exc, param="models", code="too_many_models")


def _node_limit_response(exc: Exception, *, param: str, code: str) -> Response:
    error = ApiError(
        429,
        str(exc),
        param=param,
        code=code,
        headers={"Retry-After": str(NODE_LIMIT_RETRY_AFTER_SECONDS)},
    )
    return envelope_response(error.status_code, error.envelope, error.headers)
