"""Endpoints for USER (and ADMIN) keys: submit, bulk submit, poll, get, list, cancel, models."""

from __future__ import annotations

import hashlib
from functools import partial

from openbeepboop_schemas import (
    BULK_SUBMIT_PATH,
    CHAT_COMPLETIONS_PATH,
    JOB_CANCEL_PATH,
    JOB_PATH,
    JOBS_PATH,
    MAX_WAIT_SECONDS,
    MODELS_PATH,
    POLL_PATH,
    WARNING_HEADER,
    BulkSubmitRequest,
    BulkSubmitResponse,
    ChatCompletionRequest,
    Job,
    JobStatus,
    JobWarning,
    ModelCard,
    ModelList,
    PollRequest,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openbeepboop_server.dispatch.handoff import submit_handing_off
from openbeepboop_server.dispatch.waiting import poll_entries
from openbeepboop_server.http.bodies import (
    bulk_submit_response,
    job_list_response,
    model_response,
    poll_entries_response,
    poll_entry_response,
)
from openbeepboop_server.http.budgets import BUDGET_CODE
from openbeepboop_server.http.disconnect import disconnect_watch
from openbeepboop_server.http.endpoints import (
    USERS,
    Call,
    Endpoint,
    QueryParam,
    array_of,
    component,
)
from openbeepboop_server.http.errors import ApiError
from openbeepboop_server.http.openai.paging import bad_cursor
from openbeepboop_server.http.openai.wrong_base import refuse_openai_sdk
from openbeepboop_server.http.query import parse_query
from openbeepboop_server.queue.views import JOB_CURSOR, CursorError

IDEMPOTENCY_HEADER = "idempotency-key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def idempotency_key_header(call: Call) -> str | None:
    """The request's ``Idempotency-Key`` (None: not sent), or a ``400`` when it is malformed."""
    value = call.request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_IDEMPOTENCY_KEY_LENGTH or not value.isprintable():
        raise ApiError(
            400,
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable characters",
            param="Idempotency-Key",
            code="invalid_header",
        )
    return value


def idempotency_hash(key: str | None, body: bytes) -> str | None:
    """What an idempotency key remembers of its request: the body's SHA-256 (None: no key).

    The bytes, not the parsed request: a retry sends the same bytes, and a
    hash of them costs a few milliseconds for the largest bulk (on a worker
    thread there), nothing like a second serialisation of 5,000 requests.
    """
    return None if key is None else hashlib.sha256(body).hexdigest()


def _job_not_found(job_id: str) -> ApiError:
    # The same answer for a job that never existed and another key's job.
    return ApiError(404, f"no job with id '{job_id}'", param="job_id", code="job_not_found")


#: The most :data:`WARNING_HEADER` headers one answer carries, the summary
#: line included: a person reads a few, a program reads the body's
#: ``warnings`` (every one). One header per warning let a bulk of 5,000
#: unserved models answer with 750 KB of headers, past what HTTP clients
#: read (httpx gives up at about 100 KB, Python's http.client at 100 headers).
MAX_WARNING_HEADERS = 10


def _warned(response: Response, warnings: list[JobWarning]) -> Response:
    """``response`` with a :data:`WARNING_HEADER` per warning, at most :data:`MAX_WARNING_HEADERS`.

    Past the cap, the last header says how many more the body holds
    (messages are ASCII: the model names in them are JSON-quoted).
    """
    shown = warnings
    if len(warnings) > MAX_WARNING_HEADERS:
        shown = warnings[: MAX_WARNING_HEADERS - 1]
    for warning in shown:
        response.headers.append(WARNING_HEADER, warning.message)
    more = len(warnings) - len(shown)
    if more:
        response.headers.append(
            WARNING_HEADER,
            f'and {more} more warnings: the response body\'s "warnings" lists all {len(warnings)}',
        )
    return response


async def submit(call: Call) -> Response:
    """Queue one chat completion request; warn when no node serves its model.

    The job is queued either way (a node may come later); the warning comes
    from memory, never from a read of its own.
    """
    refuse_openai_sdk(call.request)
    request = call.body_as(ChatCompletionRequest)
    context = call.context
    body = await call.request.body()
    key = idempotency_key_header(call)
    job = await submit_handing_off(
        context,
        call.user,
        request,
        key,
        len(body),
        request_hash=idempotency_hash(key, body),
    )
    context.metrics.submitted.inc()
    warnings = context.queue.submit_warnings((job.model,))
    if warnings:
        job.warnings = warnings
    return _warned(model_response(job, 202), warnings)


async def submit_bulk(call: Call) -> Response:
    """Queue many requests in one transaction; one warning per model no node serves."""
    bulk = call.body_as(BulkSubmitRequest)
    context = call.context
    key = idempotency_key_header(call)
    body = await call.request.body()

    def submit_many() -> list[Job]:
        request_hash = idempotency_hash(key, body)
        return context.queue.submit_many(call.user, bulk.requests, key, request_hash=request_hash)

    jobs = await run_in_threadpool(submit_many)
    context.metrics.submitted.inc(len(jobs))
    models = list(dict.fromkeys(job.model for job in jobs))
    context.wakeups.jobs_available(models)
    warnings = context.queue.submit_warnings(models)
    answer = BulkSubmitResponse(data=jobs, warnings=warnings)
    return _warned(bulk_submit_response(answer), warnings)


async def poll(call: Call) -> Response:
    """One entry per distinct id, in the order of first mention; optionally long-polls.

    A repeated id is answered once: a poll naming one finished job 1,000
    times must not make the server send its result 1,000 times.
    """
    body = call.body_as(PollRequest)
    limits = call.context.settings.limits
    if len(body.ids) > limits.max_poll_ids:
        raise ApiError(
            400,
            f"the poll names {len(body.ids)} ids: the server's limit is {limits.max_poll_ids} "
            f"([limits] max_poll_ids = {limits.max_poll_ids})",
            param="ids",
            code=BUDGET_CODE,
        )
    ids = list(dict.fromkeys(body.ids))
    entries = await poll_entries(
        call.context, call.user, ids, body.wait, partial(disconnect_watch, call.request)
    )
    return poll_entries_response(entries, limits.max_poll_answer_bytes)


async def get_job(call: Call) -> Response:
    """One job, or 404 (also for another key's job)."""
    job_id = call.request.path_params["job_id"]
    entry = await run_in_threadpool(call.context.queue.get, call.user, job_id)
    if entry is None:
        raise _job_not_found(job_id)
    return poll_entry_response(entry)


async def cancel_job(call: Call) -> Response:
    """Cancel a job; a job already finished is returned unchanged."""
    job_id = call.request.path_params["job_id"]
    context = call.context
    entry = await run_in_threadpool(context.queue.cancel, call.user, job_id)
    if entry is None:
        raise _job_not_found(job_id)
    if entry.status == JobStatus.CANCELLED.value:
        context.metrics.cancelled.inc()
    context.wakeups.jobs_changed([entry.id])
    return poll_entry_response(entry)


class _ListQuery(BaseModel):
    """The query string of ``GET /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    after: str | None = Field(default=None, min_length=1, max_length=128)
    batch_id: str | None = Field(default=None, min_length=1, max_length=64)


#: What ``GET /v1/jobs``'s parameters take, said when a value does not fit.
_LIST_QUERY_TAKES = {"limit": f"must be an integer from 1 to {MAX_PAGE_SIZE}"}


async def list_jobs(call: Call) -> Response:
    """The caller's jobs, newest first, paged with ``after``."""
    query = parse_query(call.request.query_params, _ListQuery, _LIST_QUERY_TAKES)
    try:
        page = await run_in_threadpool(
            call.context.queue.list_jobs,
            call.user,
            status=query.status,
            limit=query.limit,
            after=query.after,
            batch_id=query.batch_id,
        )
    except CursorError as exc:
        raise bad_cursor(exc) from None
    return job_list_response(page)


async def list_models(call: Call) -> Response:
    """Models that nodes seen recently serve, each with how many nodes serve it."""
    served = await run_in_threadpool(call.context.queue.served_listing)
    cards = [ModelCard(id=name, nodes=served.nodes_for(name)) for name in served.models()]
    return model_response(ModelList(data=cards, any_model_nodes=served.any_model))


JOB_ID_PARAM_DOC = "A job id (``job-...``)."

ENDPOINTS = (
    Endpoint(
        "POST",
        CHAT_COMPLETIONS_PATH,
        "submitJob",
        "Submit one chat completion request as a job",
        submit,
        USERS,
        status=202,
        body=ChatCompletionRequest,
        response=component("Job"),
        idempotent=True,
        strict=True,
        description=(
            "The body is an OpenAI chat completion request; fields this server does not "
            "know are kept and passed to the node. `stream: true` is refused. A `202` "
            "means the job is durable. Send an `Idempotency-Key` header to make "
            "retries safe: the same key from the same API key returns the first job. "
            "When no node serving the model has been seen recently the job is still "
            f"queued, and `warnings` (and an `{WARNING_HEADER}` header) say so."
        ),
    ),
    Endpoint(
        "POST",
        BULK_SUBMIT_PATH,
        "submitJobs",
        "Submit many chat completion requests in one transaction",
        submit_bulk,
        USERS,
        status=202,
        body=BulkSubmitRequest,
        response=component("BulkSubmitResponse"),
        idempotent=True,
        strict=True,
        description=(
            "All requests are queued or none is. Honours `Idempotency-Key`. `warnings` "
            "name every model no node seen recently serves, once per model; up to "
            f"{MAX_WARNING_HEADERS} are also `{WARNING_HEADER}` headers (past that, the "
            f"first {MAX_WARNING_HEADERS - 1} and one saying how many more the body holds)."
        ),
    ),
    Endpoint(
        "POST",
        POLL_PATH,
        "pollJobs",
        "Status and results of many jobs, optionally long-polling",
        poll,
        USERS,
        body=PollRequest,
        response=array_of("PollEntry"),
        description=(
            "One entry per distinct id, in the order each was first named (a repeated id "
            "is answered once); ids the caller may not see answer `NOT_FOUND`. Past the "
            "server's answer size, entries leave their `result` out (`result_omitted`). "
            f"With `wait` (at most {MAX_WAIT_SECONDS:g} s) the answer is held until a listed "
            "job that was not terminal becomes terminal, or the wait elapses."
        ),
    ),
    Endpoint(
        "GET",
        JOBS_PATH,
        "listJobs",
        "The caller's jobs, newest first",
        list_jobs,
        USERS,
        response=component("JobList"),
        query=(
            QueryParam(
                "status",
                {"type": "string", "enum": [status.value for status in JobStatus]},
                "Only jobs with this status.",
            ),
            QueryParam(
                "limit",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "default": DEFAULT_PAGE_SIZE,
                },
                "Page size.",
            ),
            QueryParam(
                "after",
                {"type": "string", "maxLength": 128, "pattern": JOB_CURSOR},
                "The `next_after` of the previous page.",
            ),
            QueryParam(
                "batch_id",
                {"type": "string", "minLength": 1, "maxLength": 64},
                "Only the jobs of this OpenAI batch (`/openai/v1/batches`).",
            ),
        ),
    ),
    Endpoint(
        "GET",
        JOB_PATH,
        "getJob",
        "One job",
        get_job,
        USERS,
        response=component("PollEntry"),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        JOB_CANCEL_PATH,
        "cancelJob",
        "Cancel a job",
        cancel_job,
        USERS,
        response=component("PollEntry"),
        errors=(404,),
        description=(
            "A queued job is cancelled at once; a processing one too, and its node learns "
            "at its next heartbeat. A job already finished is returned unchanged."
        ),
    ),
    Endpoint(
        "GET",
        MODELS_PATH,
        "listModels",
        "Models that recently seen nodes serve",
        list_models,
        USERS,
        response=component("ModelList"),
    ),
)
