"""A finished batch's jobs as OpenAI's output and error file lines, in input line order.

Output lines (one per COMPLETED job)::

    {"id": "batch_req_...", "custom_id": ..., "response": {"status_code": 200,
     "request_id": JOB_ID, "body": COMPLETION}, "error": null}

Error lines: a FAILED job carries the node's error as a non-200 ``response``
(the status its type stands for); a line that never ran (its job cancelled
when the batch expired or was cancelled) carries ``error`` with code
``batch_expired`` or ``batch_cancelled``. ``request_id`` is the job id, so a
line can be looked up through the native API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic_core import to_json

#: Codes of lines whose job never ran.
EXPIRED_CODE = "batch_expired"
CANCELLED_CODE = "batch_cancelled"

#: HTTP status by the error type a job failed with: a batch's error line and the
#: synchronous surface's answer (``http/openai/failures.py``) both use it.
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "bad_request": 400,
    "context_length_exceeded": 400,
    "content_policy_violation": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "unprocessable_entity": 422,
    "rate_limit_error": 429,
    "service_unavailable": 503,
    "timeout": 504,
    "lease_expired": 504,
}


def error_status(error_type: str | None) -> int:
    """The HTTP status of a failed line, from the job's error type (else 500)."""
    return _STATUS_BY_TYPE.get(error_type or "", 500)


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
        error = {
            "message": row.error_message or "the request failed",
            "type": row.error_type or "server_error",
            "param": None,
            "code": None,
        }
        line["response"] = {
            "status_code": error_status(row.error_type),
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
