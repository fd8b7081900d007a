"""A job that failed is answered on the synchronous OpenAI surface with a status that
says whose problem it is: a backend refusing the node's credentials is never a 401."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.http.test_http_longpoll import Live, fetch_body, live  # noqa: F401 (fixture)
from tests.support.surface import bearer, chat
from tests.support.waiting import eventually


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _fail_sync_chat(world: Live, error_type: str, message: str) -> Any:
    """Run a synchronous chat whose job the node fails with ``error_type``; the answer."""
    parked = asyncio.ensure_future(
        world.http.post("/internal/queue/fetch", json=fetch_body(["m"]), headers=bearer(world.node))
    )
    await eventually(lambda: world.context.wakeups.parked_fetch_waiters == 1, "the node to park")
    answer = asyncio.ensure_future(
        world.http.post("/openai/v1/chat/completions", json=chat("m"), headers=bearer(world.user))
    )
    [lease] = (await parked).json()
    error = {"type": error_type, "message": message, "retryable": False}
    outcome = {"kind": "error", **{k: lease[k] for k in ("job_id", "lease_token")}, "error": error}
    delivered = await world.http.post(
        "/internal/queue/submit",
        json={"node_id": "waiting-node", "outcomes": [outcome]},
        headers=bearer(world.node),
    )
    assert delivered.status_code == 200, delivered.text
    return await answer


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error_type", "says"),
    [
        ("authentication_error", "refused the node's credentials"),
        ("permission_error", "refused the node access to this model"),
        ("not_found_error", "does not have the model"),
    ],
)
async def test_a_backend_refusing_the_node_is_a_502_not_the_callers_401(
    live: Live,  # noqa: F811
    error_type: str,
    says: str,
) -> None:
    response = await _fail_sync_chat(live, error_type, "Incorrect API key provided: sk-no***")
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["type"] == f"backend_{error_type}" and error["code"] == "job_failed"
    assert says in error["message"] and "Incorrect API key provided" in error["message"]
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.anyio
async def test_a_prompt_over_the_context_window_is_the_callers_400(live: Live) -> None:  # noqa: F811
    response = await _fail_sync_chat(live, "context_window_exceeded", "too many tokens")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == "too many tokens"
