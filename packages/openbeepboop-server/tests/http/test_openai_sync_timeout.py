"""The synchronous chat's 504 says what its job is doing: queued, or running on a node."""

from __future__ import annotations

import asyncio

import pytest

from tests.http.test_http_longpoll import Live, fetch_body, live  # noqa: F401 (fixture)
from tests.support.surface import bearer, chat, idle_fetch
from tests.support.waiting import eventually

#: Long enough to wait on, short enough for a test: the timeout itself is what is tested.
SHORT_SYNC_TIMEOUT = 0.3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_job_running_on_a_node_is_not_said_to_stay_queued(live: Live) -> None:  # noqa: F811
    live.context.settings.openai.sync_timeout_seconds = SHORT_SYNC_TIMEOUT
    # A parked node takes the job in the submit's own transaction: it is PROCESSING
    # for the whole wait, and nothing delivers it.
    parked = asyncio.ensure_future(
        live.http.post("/internal/queue/fetch", json=fetch_body(["m"]), headers=bearer(live.node))
    )
    # Parked: past its claim, which records the node, so its model is served.
    await eventually(lambda: live.context.wakeups.parked_fetch_waiters == 1, "the node to park")
    response = await live.http.post(
        "/openai/v1/chat/completions", json=chat("m"), headers=bearer(live.user)
    )
    assert response.status_code == 504, response.text
    [lease] = (await parked).json()
    message = response.json()["error"]["message"]
    assert "is running on node waiting-node" in message and "queued" not in message
    assert f"GET /v1/jobs/{lease['job_id']}" in message


@pytest.mark.anyio
async def test_a_job_no_node_took_stays_queued(live: Live) -> None:  # noqa: F811
    live.context.settings.openai.sync_timeout_seconds = SHORT_SYNC_TIMEOUT
    await live.http.post("/internal/queue/fetch", json=idle_fetch("m"), headers=bearer(live.node))
    response = await live.http.post(
        "/openai/v1/chat/completions", json=chat("m"), headers=bearer(live.user)
    )
    assert response.status_code == 504, response.text
    assert "stays queued" in response.json()["error"]["message"]


@pytest.mark.anyio
async def test_a_model_no_node_serves_is_a_404_at_once_and_nothing_is_queued(live: Live) -> None:  # noqa: F811
    # It would otherwise wait out the sync timeout (600 s by default) for nothing.
    live.context.settings.openai.sync_timeout_seconds = 2.0
    await live.http.post("/internal/queue/fetch", json=idle_fetch("m"), headers=bearer(live.node))
    response = await live.http.post(
        "/openai/v1/chat/completions", json=chat("gpt-4o-mini"), headers=bearer(live.user)
    )
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert '"gpt-4o-mini"' in error["message"] and "nothing was queued" in error["message"]
    listed = await live.http.get("/v1/jobs", headers=bearer(live.user))
    assert listed.json()["data"] == []
