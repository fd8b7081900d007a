"""``POST /openai/v1/chat/completions`` (synchronous) and ``GET /openai/v1/models``.

The request is queued as an ordinary job of the caller's key (native
validation, routing, retries, fair share; visible in ``/v1/jobs``), then the
request waits for it (:mod:`openbeepboop_server.dispatch.sync_wait`) and
answers ``200`` with the node's ``chat.completion`` exactly as the LLM server
returned it. ``stream: true`` is answered as server-sent events in the shape
of the SDK's stream iterator, emitted once the result is in: a node runs its
call to completion, so there is nothing to stream before that (docs/openai.md).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from openbeepboop_schemas import ChatCompletionRequest, JobStatus, PollEntry
from pydantic_core import to_json
from starlette.responses import Response

from openbeepboop_server.dispatch.context import DispatchContext
from openbeepboop_server.dispatch.handoff import submit_handing_off
from openbeepboop_server.dispatch.sync_wait import SyncOutcome, wait_for_job
from openbeepboop_server.http.bodies import JSON, read_chat_json, validate_strict
from openbeepboop_server.http.disconnect import disconnect_watch
from openbeepboop_server.http.endpoints import Call
from openbeepboop_server.http.errors import ApiError
from openbeepboop_server.http.openai.failures import NO_RETRY, job_failed
from openbeepboop_server.http.openai.stream import event_stream
from openbeepboop_server.http.user_routes import idempotency_hash, idempotency_key_header
from openbeepboop_server.nodes import not_served

#: The media type of a streamed answer.
EVENT_STREAM = "text/event-stream"
#: Fields of the OpenAI request this route handles itself; the job never sees them.
_STREAM_FIELDS = ("stream", "stream_options")


def _split_stream(data: Any) -> tuple[bool, bool]:
    """Take ``stream`` and ``stream_options`` out of the body: (stream?, include usage?)."""
    if not isinstance(data, dict):
        return False, False
    stream = data.pop("stream", None)
    options = data.pop("stream_options", None)
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "'stream': must be a boolean", param="stream", code="invalid_value")
    if options is not None and not isinstance(options, dict):
        raise ApiError(
            400, "'stream_options': must be an object", param="stream_options", code="invalid_value"
        )
    if options is not None and stream is not True:
        # As OpenAI answers it: the options would silently do nothing.
        raise ApiError(
            400,
            "'stream_options': only allowed when 'stream' is true",
            param="stream_options",
            code="invalid_value",
        )
    include_usage = (options or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise ApiError(
            400,
            "'stream_options.include_usage': must be a boolean",
            param="stream_options.include_usage",
            code="invalid_value",
        )
    return bool(stream), include_usage is True


async def chat_completions(call: Call) -> Response:
    """Queue the request as a job, wait for it, answer with its completion (or its error)."""
    data = await read_chat_json(call.request, call.request.app.state.budgets)
    stream, include_usage = _split_stream(data)
    request = validate_strict(data, ChatCompletionRequest)
    context = call.context
    _refuse_unserved(context, request.model)
    # A retry sent with the same Idempotency-Key waits for the first request's
    # job instead of queuing the work again (docs/openai.md, "Retries").
    key = idempotency_key_header(call)
    request_hash = None if key is None else idempotency_hash(key, await call.request.body())
    # The wait's slot is taken before the job exists: past the key's cap the
    # answer is a 429 with nothing stored, which the SDK retries after Retry-After.
    with context.sync_chat_slots.hold(call.user.key_id):
        job = await submit_handing_off(context, call.user, request, key, request_hash=request_hash)
        context.metrics.submitted.inc()
        outcome = await wait_for_job(
            context,
            call.user,
            job.id,
            context.settings.openai.sync_timeout_seconds,
            partial(disconnect_watch, call.request),
            idempotency_key=key,
            just_queued=key is None,
        )
    completion = _completion_or_raise(outcome)
    if stream:
        return Response(event_stream(completion, include_usage), media_type=EVENT_STREAM)
    return Response(to_json(completion), media_type=JSON)


def _refuse_unserved(context: DispatchContext, model: str) -> None:
    """A ``404`` before anything is queued when no node seen recently serves ``model``.

    Natively such a job is queued with a warning, for a node yet to come; a
    synchronous caller cannot see a warning and would only wait out
    ``sync_timeout_seconds`` (as long as the SDK's own read timeout, which
    then retries). OpenAI answers an unknown model with this ``404``, which
    the SDK raises as ``NotFoundError``.
    """
    if not context.queue.submit_warnings((model,)):
        return
    window = context.settings.queue.node_seen_window()
    raise ApiError(
        404,
        f"{not_served(model, window)}, so nothing was queued; GET /openai/v1/models "
        "lists the models served now",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def _completion_or_raise(outcome: SyncOutcome) -> dict[str, Any]:
    entry: PollEntry = outcome.entry
    job_id = entry.id
    if entry.status == JobStatus.COMPLETED.value and entry.result is not None:
        data: dict[str, Any] = entry.result.model_dump(mode="json", exclude_unset=True)
        return data
    if entry.status == JobStatus.FAILED.value:
        raise job_failed(job_id, entry.error)
    if entry.status == JobStatus.CANCELLED.value:
        raise ApiError(
            409, f"job {job_id} was cancelled", code="job_cancelled", headers=dict(NO_RETRY)
        )
    if outcome.closed:
        raise ApiError(
            503,
            f"the server is shutting down; job {job_id} {_where_it_is(entry)}: collect it "
            f"with GET /v1/jobs/{job_id}",
            code="server_shutting_down",
            headers=dict(NO_RETRY),
        )
    raise ApiError(
        504,
        f"job {job_id} did not finish within the server's sync_timeout_seconds; it "
        f"{_where_it_is(entry)} and its result can be collected later with "
        f"GET /v1/jobs/{job_id}",
        type="timeout",
        code="sync_timeout",
        headers=dict(NO_RETRY),
    )


def _where_it_is(entry: PollEntry) -> str:
    """What an unfinished job is doing, by its status as the wait last saw it."""
    if entry.status == JobStatus.PROCESSING.value:
        node = f" {entry.node_id}" if entry.node_id else ""
        return f"is running on node{node}"
    if entry.status == JobStatus.QUEUED.value:
        return "stays queued"
    return f"is {entry.status}"
