"""User-side bodies: submit, bulk, poll, list — and their limits."""

from __future__ import annotations

import pytest
from openbeepboop_schemas import (
    MAX_BULK_SUBMIT,
    MAX_POLL_IDS,
    MAX_WAIT_SECONDS,
    MODEL_NOT_SERVED,
    NOT_FOUND,
    TERMINAL_STATUSES,
    BulkSubmitRequest,
    BulkSubmitResponse,
    Job,
    JobList,
    JobStatus,
    ModelList,
    PollEntry,
    PollRequest,
    Role,
)
from pydantic import ValidationError

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
_JOB = {"id": "job-1", "object": "job", "model": "m", "created_at": 1}


def test_status_strings_are_exactly_the_contracts() -> None:
    assert [s.value for s in JobStatus] == [
        "QUEUED",
        "PROCESSING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]
    assert {s.value for s in TERMINAL_STATUSES} == {"COMPLETED", "FAILED", "CANCELLED"}
    assert JobStatus.COMPLETED.is_terminal and not JobStatus.PROCESSING.is_terminal
    assert NOT_FOUND == "NOT_FOUND"
    assert [r.value for r in Role] == ["ADMIN", "NODE", "USER", "METRICS"]


def test_job_as_returned_on_submit() -> None:
    job = Job.model_validate(
        {"id": "job-1", "object": "job", "status": "QUEUED", "model": "m", "created_at": 5}
    )
    assert job.status is JobStatus.QUEUED
    with pytest.raises(ValidationError):
        Job.model_validate({"id": "job-1", "status": "DONE", "model": "m", "created_at": 5})


def test_job_tolerates_new_fields() -> None:
    job = Job.model_validate(
        {"id": "job-1", "status": "QUEUED", "model": "m", "created_at": 5, "priority": 3}
    )
    assert job.model_extra == {"priority": 3}


def test_bulk_submit_limits() -> None:
    assert len(BulkSubmitRequest.model_validate({"requests": [REQUEST] * 3}).requests) == 3
    with pytest.raises(ValidationError):
        BulkSubmitRequest.model_validate({"requests": []})
    with pytest.raises(ValidationError):
        BulkSubmitRequest.model_validate({"requests": [REQUEST] * (MAX_BULK_SUBMIT + 1)})
    with pytest.raises(ValidationError) as caught:
        BulkSubmitRequest.model_validate({"requests": [REQUEST, {"model": "m"}]})
    assert caught.value.errors()[0]["loc"][:3] == ("requests", 1, "messages")
    with pytest.raises(ValidationError):
        BulkSubmitRequest.model_validate({"requests": [REQUEST], "extra": 1})


@pytest.mark.parametrize(
    "body",
    [
        {"ids": []},
        {"ids": "job-1"},
        {"ids": ["job-1"] * (MAX_POLL_IDS + 1)},
        {"ids": ["job-1"], "wait": -1},
        {"ids": ["job-1"], "wait": MAX_WAIT_SECONDS + 1},
        {"ids": ["job-1"], "wait": "soon"},
        {"ids": ["job-1"], "unknown": True},
    ],
)
def test_invalid_poll_requests(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PollRequest.model_validate(body)


def test_valid_poll_request() -> None:
    poll = PollRequest.model_validate({"ids": ["job-1", "job-2"], "wait": 2.5})
    assert poll.ids == ["job-1", "job-2"] and poll.wait == 2.5


def test_poll_entry_not_found_and_completed() -> None:
    missing = PollEntry.model_validate({"id": "job-x", "status": NOT_FOUND, "completed": False})
    assert missing.result is None and missing.error is None
    done = PollEntry.model_validate(
        {
            "id": "job-1",
            "status": "COMPLETED",
            "completed": True,
            "result": {
                "id": "c",
                "created": 1,
                "model": "m",
                "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
            },
            "attempts": 1,
            "created_at": 1,
            "started_at": 2,
            "completed_at": 3,
        }
    )
    assert done.result is not None and done.result.choices[0].message.content == "hi"


def test_job_list_page() -> None:
    page = JobList.model_validate(
        {"object": "list", "data": [{"id": "job-1", "status": "QUEUED"}], "has_more": True}
    )
    assert page.has_more and page.data[0].id == "job-1"


def test_submit_warnings_default_to_empty_and_tolerate_new_fields() -> None:
    # An older server sends no warnings; a newer one may add fields to them.
    assert Job.model_validate({**_JOB, "status": "QUEUED"}).warnings == []
    job = Job.model_validate(
        {
            **_JOB,
            "status": "QUEUED",
            "warnings": [{"code": MODEL_NOT_SERVED, "message": "no node", "model": "m", "x": 1}],
        }
    )
    (warning,) = job.warnings
    assert (warning.code, warning.model, warning.message) == (MODEL_NOT_SERVED, "m", "no node")
    assert BulkSubmitResponse.model_validate({"data": []}).warnings == []


def test_model_cards_count_their_nodes() -> None:
    listed = ModelList.model_validate({"data": [{"id": "llama3", "nodes": 2}]})
    assert listed.data[0].nodes == 2 and listed.any_model_nodes == 0
    # What an OpenAI-shaped server without counts sends still parses.
    assert ModelList.model_validate({"data": [{"id": "x", "object": "model"}]}).data[0].nodes == 0
