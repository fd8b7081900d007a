"""A failed batch line carries the status the synchronous surface would answer."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from openbeepboop_server.queue.batch_output import error_line


def _failed_line(error_type: str, message: str) -> dict[str, object]:
    row = SimpleNamespace(
        id="job-7", custom_id="c7", status="FAILED", error_type=error_type, error_message=message
    )
    line: dict[str, object] = json.loads(error_line(row, "batch_expired"))
    return line


@pytest.mark.parametrize("error_type", ["authentication_error", "permission_error"])
def test_a_backend_refusing_the_nodes_credentials_is_a_502_line(error_type: str) -> None:
    line = _failed_line(error_type, "Incorrect API key provided")
    response = line["response"]
    assert isinstance(response, dict) and response["status_code"] == 502
    error = response["body"]["error"]
    assert error["type"] == f"backend_{error_type}"
    assert "refused the node" in error["message"]
    assert "Incorrect API key provided" in error["message"]


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("not_found_error", 502),
        ("context_window_exceeded", 400),
        ("invalid_request_error", 400),
        ("rate_limit_error", 429),
        ("lease_expired", 504),
        ("something_new", 500),
    ],
)
def test_other_failures_keep_their_type_and_message(error_type: str, status: int) -> None:
    response = _failed_line(error_type, "why")["response"]
    assert isinstance(response, dict) and response["status_code"] == status
    if status != 502:
        assert response["body"]["error"] == {
            "message": "why",
            "type": error_type,
            "param": None,
            "code": None,
        }
