"""A finished batch's jobs as OpenAI's output and error file lines, in input line order.

Output lines (one per COMPLETED job)::

    {"id": "batch_req_...", "custom_id": ..., "response": {"status_code": 200,
     "request_id": JOB_ID, "body": COMPLETION}, "error": null}

Error lines: a FAILED job carries the node's error as a non-200 ``response``
(the status its type stands for, :func:`failure_answer`); a line that never
ran (its job cancelled when the batch expired or was cancelled) carries
``error`` with code ``batch_expired`` or ``batch_cancelled``. ``request_id``
is the job id, so a line can be looked up through the native API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_json

#: Codes of lines whose job never ran.
EXPIRED_CODE = "batch_expired"
CANCELLED_CODE = "batch_cancelled"

#: The status of an LLM backend refusing the node, as a gateway answers an upstream's refusal.
BACKEND_REFUSED_STATUS = 502
#: Error types of an LLM backend refusing the *node* (its credentials, its
#: permissions, a model or URL the backend does not have as the node calls it),
#: with what the answer says. That is the node operator's configuration, never
#: the caller's key or route: answered with the backend's own 401/403/404, the
#: SDK would raise ``AuthenticationError`` (your key is wrong) or ``NotFoundError``.
_BACKEND_REFUSALS = {
    "authentication_error": "the LLM backend refused the node's credentials",
    "permission_error": "the LLM backend refused the node access to this model",
    "not_found_error": "the LLM backend does not have the model or URL the node called",
}
#: Prefix of the ``type`` a backend's refusal is answered with (``backend_authentication_error``).
BACKEND_TYPE_PREFIX = "backend_"

#: HTTP status by the error type a job failed with: a batch's error line and the
#: synchronous surface's answer (``http/openai/failures.py``) both use it.
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "bad_request": 400,
    "context_length_exceeded": 400,
    # What the node reports for LiteLLM's ContextWindowExceededError: the prompt's fault.
    "context_window_exceeded": 400,
    "content_policy_violation": 400,
    "unprocessable_entity": 422,
    "rate_limit_error": 429,
    "service_unavailable": 503,
    "timeout": 504,
    "lease_expired": 504,
    **dict.fromkeys(_BACKEND_REFUSALS, BACKEND_REFUSED_STATUS),
}


def error_status(error_type: str | None) -> int:
    """The HTTP status of a failed line, from the job's error type (else 500)."""
    return _STATUS_BY_TYPE.get(error_type or "", 500)


@dataclass(frozen=True)
class FailureAnswer:
    """What a failed job is answered with on the OpenAI surface: status, error type, message."""

    status: int
    type: str
    message: str


def failure_answer(error_type: str | None, message: str | None) -> FailureAnswer:
    """The answer for a job that failed with ``error_type`` and the node's ``message``.

    A backend's refusal of the node keeps its kind in the type
    (``backend_authentication_error``) and says whose configuration it is, so
    nobody takes it for a problem with their own key.
    """
    kind = error_type or "server_error"
    text = message or "the request failed"
    refusal = _BACKEND_REFUSALS.get(kind)
    if refusal is None:
        return FailureAnswer(error_status(kind), kind, text)
    return FailureAnswer(
        BACKEND_REFUSED_STATUS,
        BACKEND_TYPE_PREFIX + kind,
        f"{refusal} ({kind}); the caller's key and request are not the problem, the "
        f"node's operator must fix its configuration. The backend said: {text}",
    )


def _line_id(job_id: str) -> str:
    return "batch_req_" + job_id.removeprefix("job-")


def output_line(row: Any) -> bytes:
    """The output line of a COMPLETED job (its stored result embedded as is)."""
    head = {"id": _line_id(row.id), "custom_id": row.custom_id}
    text: str = row.result
    return (
        to_json(head)[:-1]
        + b',"response":{"status_code":200,"request_id":'
        + to_json(row.id)
        + b',"body":'
        + text.encode()
        + b'},"error":null}\n'
    )


def error_line(row: Any, cancelled_code: str) -> bytes:
    """The error line of a FAILED job, or of one cancelled before it ran."""
    line: dict[str, Any] = {"id": _line_id(row.id), "custom_id": row.custom_id}
    if row.status == "FAILED":
        answer = failure_answer(row.error_type, row.error_message)
        error = {"message": answer.message, "type": answer.type, "param": None, "code": None}
        line["response"] = {
            "status_code": answer.status,
            "request_id": row.id,
            "body": {"error": error},
        }
        line["error"] = None
    else:
        message = (
            "This request could not be executed before the completion window expired."
            if cancelled_code == EXPIRED_CODE
            else "This request was not executed because the batch was cancelled."
        )
        line["response"] = None
        line["error"] = {"code": cancelled_code, "message": message}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def split_rows(rows: Iterator[Any], cancelled_code: str) -> Iterator[tuple[bool, bytes]]:
    """``(is_output, line)`` for every finished row, in the order given."""
    for row in rows:
        if row.status == "COMPLETED" and row.result is not None:
            yield True, output_line(row)
        elif row.status in ("FAILED", "CANCELLED"):
            yield False, error_line(row, cancelled_code)
