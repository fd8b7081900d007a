"""Node-side bodies: fetch, leases, outcomes, heartbeat."""

from __future__ import annotations

import json

import pytest
from openbeepboop_schemas import (
    MAX_FETCH_JOBS,
    MAX_HEARTBEAT_LEASES,
    MAX_SUBMIT_OUTCOMES,
    ErrorOutcome,
    FetchRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    Lease,
    NodeError,
    Outcome,
    PollRequest,
    ReleaseOutcome,
    ResultOutcome,
    SubmitRequest,
    SubmitResponse,
)
from pydantic import BaseModel, TypeAdapter, ValidationError

COMPLETION = {
    "id": "c",
    "created": 1,
    "model": "m",
    "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
}
REF = {"job_id": "job-1", "lease_token": "tok"}


def test_fetch_defaults_and_limits() -> None:
    fetch = FetchRequest.model_validate({"node_id": "gpu-1", "models": ["*"]})
    assert fetch.max_jobs == 1 and fetch.wait == 0
    for bad in (
        {"node_id": "gpu-1", "models": []},
        {"node_id": "", "models": ["m"]},
        {"node_id": "has space", "models": ["m"]},
        {"node_id": "n", "models": ["m"], "max_jobs": 0},
        {"node_id": "n", "models": ["m"], "max_jobs": MAX_FETCH_JOBS + 1},
        {"node_id": "n", "models": ["m"], "wait": 1000},
        {"node_id": "n", "models": ["m"], "surprise": 1},
    ):
        with pytest.raises(ValidationError):
            FetchRequest.model_validate(bad)


def test_lease_carries_the_request_with_pass_through_fields() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "seed": 3}
    lease = Lease.model_validate(
        {
            "job_id": "job-1",
            "lease_token": "t",
            "lease_expires_at": 10.5,
            "lease_seconds": 300,
            "attempt": 1,
            "model": "m",
            "request": request,
        }
    )
    assert lease.request.to_payload() == request


def test_outcomes_are_a_tagged_union() -> None:
    adapter: TypeAdapter[Outcome] = TypeAdapter(Outcome)
    assert isinstance(
        adapter.validate_python({"kind": "result", **REF, "result": COMPLETION}), ResultOutcome
    )
    error = adapter.validate_python(
        {"kind": "error", **REF, "error": {"message": "boom", "retryable": True}}
    )
    assert isinstance(error, ErrorOutcome) and error.error.retryable
    assert isinstance(adapter.validate_python({"kind": "release", **REF}), ReleaseOutcome)
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "maybe", **REF})
    with pytest.raises(ValidationError):  # retryable is required: no guessing
        adapter.validate_python({"kind": "error", **REF, "error": {"message": "boom"}})
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "result", **REF})


def test_submit_request_limits() -> None:
    one = {"kind": "release", **REF}
    assert len(SubmitRequest.model_validate({"node_id": "n", "outcomes": [one]}).outcomes) == 1
    with pytest.raises(ValidationError):
        SubmitRequest.model_validate({"node_id": "n", "outcomes": []})
    with pytest.raises(ValidationError):
        SubmitRequest.model_validate(
            {"node_id": "n", "outcomes": [one] * (MAX_SUBMIT_OUTCOMES + 1)}
        )


def test_submit_response_acks() -> None:
    response = SubmitResponse.model_validate(
        {"acks": [{"job_id": "job-1", "ack": "duplicate", "status": "COMPLETED"}]}
    )
    assert response.acks[0].ack == "duplicate"
    with pytest.raises(ValidationError):
        SubmitResponse.model_validate({"acks": [{"job_id": "job-1", "ack": "maybe"}]})


def test_heartbeat_round_trip() -> None:
    beat = HeartbeatRequest.model_validate({"node_id": "n", "leases": [REF]})
    assert beat.leases[0].job_id == "job-1"
    with pytest.raises(ValidationError):
        HeartbeatRequest.model_validate(
            {"node_id": "n", "leases": [REF] * (MAX_HEARTBEAT_LEASES + 1)}
        )
    answer = HeartbeatResponse.model_validate(
        {
            "lease_expires_at": 1.0,
            "lease_seconds": 300,
            "extended": [],
            "lost": ["job-2"],
            "cancelled": ["job-1"],
        }
    )
    assert answer.cancelled == ["job-1"] and answer.lost == ["job-2"]


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (FetchRequest, {"node_id": "n", "models": ["m"], "wait": False}),
        (FetchRequest, {"node_id": "n", "models": ["m"], "max_jobs": True}),
        (FetchRequest, {"node_id": "n", "models": ["m"], "max_jobs": "3"}),
        (PollRequest, {"ids": ["job-1"], "wait": "5"}),
        (NodeError, {"message": "x", "retryable": "yes"}),
        (NodeError, {"message": "x", "retryable": 1}),
    ],
)
def test_request_scalars_take_only_their_json_type(model: type[BaseModel], body: object) -> None:
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps(body))


def test_a_whole_float_is_still_an_integer() -> None:
    body = {"node_id": "n", "models": ["m"], "max_jobs": 4.0, "wait": 5}
    fetch = FetchRequest.model_validate_json(json.dumps(body))
    assert (fetch.max_jobs, fetch.wait) == (4, 5.0)
