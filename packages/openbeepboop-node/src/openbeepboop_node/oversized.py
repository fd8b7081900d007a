"""A result the server will never take, turned into a failure the user can read.

The server refuses a submit whose body is over its limit (HTTP 413). A
result that is too large alone would be refused on every attempt: dropping
it left the job to run again, pay again and end as ``lease_expired``, with
nothing to tell the user why. Instead it becomes a permanent error of type
:data:`RESULT_TOO_LARGE` naming its size and the server's answer (which
names the limit), and the job ends ``FAILED`` with that reason. A result the
server refuses otherwise (its 400: not a chat completion it can read) becomes
a permanent error of type :data:`RESULT_REFUSED` with the server's words.
"""

from __future__ import annotations

from openbeepboop_schemas import MAX_ERROR_MESSAGE_CHARS, ErrorOutcome, NodeError, ResultOutcome

#: The error type of a result the server refused as too large.
RESULT_TOO_LARGE = "result_too_large"
#: The error type of a result the server refused as invalid (as for an invalid LLM answer).
RESULT_REFUSED = "invalid_response"


def too_large_failure(outcome: ResultOutcome, detail: str = "") -> ErrorOutcome:
    """The permanent failure to deliver instead of ``outcome`` (``detail``: the server's words)."""
    size = len(outcome.model_dump_json())
    said = f" (server: {detail})" if detail else ""
    message = f"the result is {size:,} bytes, more than the server accepts{said}"
    return _permanent(outcome, message, RESULT_TOO_LARGE)


def refused_failure(outcome: ResultOutcome, status: int | None, detail: str) -> ErrorOutcome:
    """The permanent failure to deliver instead of a result the server refused as invalid."""
    message = f"the server refused the result (HTTP {status}): {detail}"
    return _permanent(outcome, message, RESULT_REFUSED)


def _permanent(outcome: ResultOutcome, message: str, error_type: str) -> ErrorOutcome:
    return ErrorOutcome(
        job_id=outcome.job_id,
        lease_token=outcome.lease_token,
        error=NodeError(
            message=message[:MAX_ERROR_MESSAGE_CHARS], type=error_type, retryable=False
        ),
    )
