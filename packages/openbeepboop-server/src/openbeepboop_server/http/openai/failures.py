"""A finished job's failure as the OpenAI error the SDK expects, and the status that goes with it.

The queue stores a failed job's message and error type (the node's, or the
server's own such as ``lease_expired``); the OpenAI surface answers with the
HTTP status that type stands for, so the SDK raises its matching exception
class (``BadRequestError`` for a prompt the provider refused, and so on). A
backend refusing the node's own credentials is a ``502``, never the ``401``
that would tell the caller their key is wrong
(:func:`~openbeepboop_server.queue.batch_output.failure_answer`).
Answers about a job that has already run carry ``x-should-retry: false``:
the official SDK would otherwise retry a 5xx or 429 by queueing the same
request again, after the queue itself already spent its attempts on it.
"""

from __future__ import annotations

from openbeepboop_schemas import JobError

from openbeepboop_server.http.errors import ApiError
from openbeepboop_server.queue.batch_output import failure_answer

#: The header the official OpenAI SDKs read before retrying an answer.
SHOULD_RETRY_HEADER = "x-should-retry"
NO_RETRY = {SHOULD_RETRY_HEADER: "false"}


def job_failed(job_id: str, error: JobError | None) -> ApiError:
    """The error answer for a job that failed permanently: the node's message, its status."""
    if error is None:
        return ApiError(500, f"job {job_id} failed", code="job_failed", headers=dict(NO_RETRY))
    answer = failure_answer(error.type, error.message)
    return ApiError(
        answer.status, answer.message, type=answer.type, code="job_failed", headers=dict(NO_RETRY)
    )
