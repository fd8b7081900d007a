"""The HTTP side of the node protocol, with respx standing in for the server."""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from openbeepboop_node.exceptions import (
    KeyRejectedError,
    ServerRequestError,
    ServerUnavailableError,
)
from openbeepboop_node.queue_client import READ_TIMEOUT_MARGIN_SECONDS, QueueClient
from openbeepboop_schemas import LeaseRef, ReleaseOutcome

URL = "http://queue.test"
KEY = "sk-" + "q" * 40

LEASE = {
    "job_id": "job-1",
    "lease_token": "tok",
    "lease_expires_at": 1e10,
    "lease_seconds": 300,
    "attempt": 1,
    "model": "llama3",
    "request": {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "seed": 1},
    "future_field": "tolerated",
}


@pytest.fixture
def client() -> QueueClient:
    return QueueClient(URL, KEY, "node-1", version="9.9", fetch_wait=25)


@respx.mock(base_url=URL)
async def test_fetch_sends_models_slots_and_key(
    respx_mock: respx.MockRouter, client: QueueClient
) -> None:
    route = respx_mock.post("/internal/queue/fetch").respond(200, json=[LEASE])
    (lease,) = await client.fetch(["llama3", "*"], max_jobs=3, wait=25)
    assert lease.job_id == "job-1"
    assert lease.request.to_payload()["seed"] == 1  # unknown OpenAI fields preserved
    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(sent.content) == {
        "node_id": "node-1",
        "models": ["llama3", "*"],
        "max_jobs": 3,
        "wait": 25,
        "version": "9.9",
    }
    # The long-poll must not hit the read timeout.
    assert sent.extensions["timeout"]["read"] == 25 + READ_TIMEOUT_MARGIN_SECONDS


@respx.mock(base_url=URL)
async def test_submit_and_heartbeat_round_trip(
    respx_mock: respx.MockRouter, client: QueueClient
) -> None:
    respx_mock.post("/internal/queue/submit").respond(
        200, json={"acks": [{"job_id": "job-1", "ack": "accepted", "status": "QUEUED"}]}
    )
    respx_mock.post("/internal/queue/heartbeat").respond(
        200, json={"lease_seconds": 300, "extended": ["job-1"], "cancelled": ["job-2"]}
    )
    (ack,) = await client.submit([ReleaseOutcome(job_id="job-1", lease_token="tok")])
    assert ack.ack == "accepted"
    answer = await client.heartbeat(
        [LeaseRef(job_id="job-1", lease_token="a"), LeaseRef(job_id="job-2", lease_token="b")],
        ["llama3"],
    )
    assert answer.extended == ["job-1"] and answer.cancelled == ["job-2"] and answer.lost == []


@pytest.mark.parametrize("status", [401, 403])
@respx.mock(base_url=URL)
async def test_refused_key(respx_mock: respx.MockRouter, client: QueueClient, status: int) -> None:
    respx_mock.post("/internal/queue/fetch").respond(
        status, json={"error": {"message": "invalid API key", "type": "authentication_error"}}
    )
    with pytest.raises(KeyRejectedError, match="invalid API key") as caught:
        await client.fetch(["m"], 1, 0)
    assert caught.value.status_code == status
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
@respx.mock(base_url=URL)
async def test_overload_and_server_errors_mean_retry_later(
    respx_mock: respx.MockRouter, client: QueueClient, status: int
) -> None:
    respx_mock.post("/internal/queue/submit").respond(
        status, headers={"Retry-After": "7"}, text="busy"
    )
    with pytest.raises(ServerUnavailableError) as caught:
        await client.submit([ReleaseOutcome(job_id="job-1", lease_token="t")])
    assert caught.value.retry_after == 7.0


@respx.mock(base_url=URL)
async def test_connection_errors_and_timeouts_mean_retry_later(
    respx_mock: respx.MockRouter, client: QueueClient
) -> None:
    route = respx_mock.post("/internal/queue/fetch")
    route.side_effect = httpx.ConnectError("refused")
    with pytest.raises(ServerUnavailableError, match="cannot connect"):
        await client.fetch(["m"], 1, 0)
    route.side_effect = httpx.ReadTimeout("slow")
    with pytest.raises(ServerUnavailableError, match="ReadTimeout"):
        await client.fetch(["m"], 1, 0)


@respx.mock(base_url=URL)
async def test_a_200_that_is_not_the_contract_is_an_outage(
    respx_mock: respx.MockRouter, client: QueueClient
) -> None:
    respx_mock.post("/internal/queue/fetch").respond(200, text="<html>captive portal</html>")
    with pytest.raises(ServerUnavailableError, match="unexpected answer"):
        await client.fetch(["m"], 1, 0)


@respx.mock(base_url=URL)
async def test_invalid_request_is_not_retried(
    respx_mock: respx.MockRouter, client: QueueClient
) -> None:
    respx_mock.post("/internal/queue/fetch").respond(
        400,
        json={"error": {"message": "'models': too many", "type": "invalid_request_error"}},
    )
    with pytest.raises(ServerRequestError, match="too many") as caught:
        await client.fetch(["m"], 1, 0)
    assert caught.value.status_code == 400
