"""``/openai/v1/batches``: create, retrieve, cancel, list.

A batch is created ``validating`` and answered at once; the batch driver
(:mod:`openbeepboop_server.dispatch.batches`) validates every input line and
creates its jobs, or fails it with line-numbered errors, moments later.
``completion_window`` takes OpenAI's ``24h`` and, beyond it, any duration
written ``<N>h``, ``<N>m`` or ``<N>s`` between ``[openai]
min_completion_window_seconds`` and ``max_completion_window_seconds``.
"""

from __future__ import annotations

import re

from anyio.to_thread import run_sync
from openbeepboop_schemas import BatchCreateRequest
from starlette.responses import Response

from openbeepboop_server.config import OpenAISection
from openbeepboop_server.http.bodies import model_response
from openbeepboop_server.http.endpoints import Call
from openbeepboop_server.http.errors import ApiError
from openbeepboop_server.http.openai.files import file_not_found
from openbeepboop_server.http.openai.paging import bad_cursor, page_query
from openbeepboop_server.http.user_routes import idempotency_hash, idempotency_key_header
from openbeepboop_server.queue.batches import (
    MAX_PAGE,
    BatchService,
    InputFileRefusedError,
    NotCancellableError,
)
from openbeepboop_server.queue.views import CursorError

#: The schema's window (``COMPLETION_WINDOW_PATTERN``: ASCII digits, a unit,
#: nothing around them), with groups for the number and the unit.
_WINDOW = re.compile(r"([0-9]+(?:\.[0-9]+)?)([hms])")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
DEFAULT_BATCH_PAGE = 20


def window_seconds(window: str, limits: OpenAISection) -> float:
    """``completion_window`` in seconds, or a ``400`` saying what is accepted."""
    match = _WINDOW.fullmatch(window)
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else None
    low, high = limits.min_completion_window_seconds, limits.max_completion_window_seconds
    if seconds is None or not low <= seconds <= high:
        raise ApiError(
            400,
            f"'completion_window': expected a duration like '24h' between {low:g} and "
            f"{high:g} seconds",
            param="completion_window",
            code="invalid_value",
        )
    return seconds


def _service(call: Call) -> BatchService:
    return BatchService(call.context.db, call.context.queue.policy)


def _kick(call: Call) -> None:
    call.request.app.state.batch_driver.kick()


def batch_not_found(batch_id: str) -> ApiError:
    """The same 404 for an unknown batch and another key's batch."""
    return ApiError(
        404, f"No such Batch object: {batch_id}", param="batch_id", code="batch_not_found"
    )


async def create(call: Call) -> Response:
    """A new batch over an uploaded file; validated right after."""
    body = call.body_as(BatchCreateRequest)
    seconds = window_seconds(body.completion_window, call.context.settings.openai)
    key = idempotency_key_header(call)
    request_hash = idempotency_hash(key, await call.request.body())
    service = _service(call)
    try:
        batch = await run_sync(
            lambda: service.create(
                call.user,
                input_file_id=body.input_file_id,
                endpoint=body.endpoint,
                completion_window=body.completion_window,
                window_seconds=seconds,
                metadata=body.metadata,
                idempotency_key=key,
                request_hash=request_hash,
            )
        )
    except InputFileRefusedError as exc:
        raise ApiError(400, str(exc), param="input_file_id", code="invalid_file") from None
    if batch is None:
        raise file_not_found(body.input_file_id, param="input_file_id")
    _kick(call)
    return model_response(batch)


async def retrieve(call: Call) -> Response:
    """One batch, its counts as of now."""
    batch_id = call.request.path_params["batch_id"]
    batch = await run_sync(_service(call).get, call.user, batch_id)
    if batch is None:
        raise batch_not_found(batch_id)
    return model_response(batch)


async def cancel(call: Call) -> Response:
    """Cancel a batch: queued lines stop now, running ones finish, then it ends ``cancelled``."""
    batch_id = call.request.path_params["batch_id"]
    try:
        batch, cancelled = await run_sync(_service(call).cancel, call.user, batch_id)
    except NotCancellableError as exc:
        # 400 rather than OpenAI-ish 409: the SDK retries a 409, and no retry helps.
        raise ApiError(400, str(exc), param="batch_id", code="batch_not_cancellable") from None
    if batch is None:
        raise batch_not_found(batch_id)
    if cancelled:
        call.context.metrics.cancelled.inc(len(cancelled))
        call.context.wakeups.jobs_changed(cancelled)
    _kick(call)
    return model_response(batch)


async def list_batches(call: Call) -> Response:
    """The caller's batches, newest first, paged with ``after`` and ``limit``."""
    limit, after, _ = page_query(call.request, default_limit=DEFAULT_BATCH_PAGE, max_limit=MAX_PAGE)
    try:
        page = await run_sync(lambda: _service(call).list_page(call.user, limit=limit, after=after))
    except CursorError as exc:
        raise bad_cursor(exc) from None
    return model_response(page)
