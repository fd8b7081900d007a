"""Each HTTP status maps to its own error class, carrying what the server said."""

from __future__ import annotations

import httpx
import openbeepboop
import pytest
import respx
from conftest import API_KEY, BASE_URL, error_body
from openbeepboop import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    UnprocessableEntityError,
)

STATUS_CLASSES = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (409, ConflictError),
    (413, RequestTooLargeError),
    (418, APIStatusError),
    (422, UnprocessableEntityError),
    (429, RateLimitError),
    (500, InternalServerError),
    (502, InternalServerError),
    (503, InternalServerError),
]


@pytest.mark.parametrize(("status", "error_class"), STATUS_CLASSES)
def test_status_maps_to_error_class(
    server: respx.MockRouter, client: Client, status: int, error_class: type[APIStatusError]
) -> None:
    server.get("/v1/jobs/job-1").respond(
        status,
        json=error_body("what went wrong", "some_type", param="ids.0", code="bad"),
        headers={"x-request-id": "req-123"},
    )
    with pytest.raises(error_class) as raised:
        client.with_options(max_retries=0).jobs.get("job-1")
    error = raised.value
    assert type(error) is error_class
    assert error.status_code == status
    assert error.request_id == "req-123"
    assert "what went wrong" in error.message
    assert str(status) in str(error)
    assert (error.type, error.param, error.code) == ("some_type", "ids.0", "bad")
    assert error.body == error_body("what went wrong", "some_type", param="ids.0", code="bad")
    assert error.response.status_code == status


@pytest.mark.parametrize(("status", "error_class"), STATUS_CLASSES)
async def test_async_status_maps_to_error_class(
    server: respx.MockRouter, status: int, error_class: type[APIStatusError]
) -> None:
    server.post("/v1/jobs/job-1/cancel").respond(status, json=error_body("nope"))
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY, max_retries=0) as client:
        with pytest.raises(error_class) as raised:
            await client.jobs.cancel("job-1")
    assert raised.value.status_code == status
    assert raised.value.request_id is None


def test_non_json_error_body_still_gives_one_line(server: respx.MockRouter, client: Client) -> None:
    server.get("/v1/jobs/job-1").respond(502, text="<html>\nBad gateway\n</html>")
    with pytest.raises(InternalServerError) as raised:
        client.with_options(max_retries=0).jobs.get("job-1")
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("502 Bad Gateway")


def test_unreadable_success_body(server: respx.MockRouter, client: Client) -> None:
    server.get("/v1/jobs/job-1").respond(200, text="not json")
    with pytest.raises(APIResponseValidationError, match="not JSON"):
        client.jobs.get("job-1")
    server.get("/v1/jobs/job-2").respond(200, json={"id": 5})
    with pytest.raises(APIResponseValidationError, match="wire contract"):
        client.jobs.get("job-2")


def test_connection_refused_is_api_connection_error(
    server: respx.MockRouter, client: Client
) -> None:
    server.get("/v1/jobs/job-1").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError) as raised:
        client.jobs.get("job-1")
    assert not isinstance(raised.value, APITimeoutError)
    assert BASE_URL in str(raised.value)


def test_timeout_is_api_timeout_error(server: respx.MockRouter, client: Client) -> None:
    server.get("/v1/jobs/job-1").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError):
        client.jobs.get("job-1")


def test_hierarchy_matches_the_docstring() -> None:
    assert issubclass(openbeepboop.APITimeoutError, openbeepboop.APIConnectionError)
    assert issubclass(openbeepboop.APIConnectionError, openbeepboop.APIError)
    assert issubclass(openbeepboop.APIStatusError, openbeepboop.APIError)
    assert issubclass(openbeepboop.JobFailedError, openbeepboop.JobError)
    assert issubclass(openbeepboop.JobCancelledError, openbeepboop.JobError)
    assert issubclass(openbeepboop.JobTimeoutError, TimeoutError)
    assert issubclass(openbeepboop.InvalidRequestError, ValueError)
    for name in ("APIError", "JobError", "ConfigError", "BulkSubmitError"):
        assert name in openbeepboop._exceptions.__doc__
