"""Synchronous chats wait in a pool of their own per key: ``[openai] max_sync_requests_per_key``.

An SDK script gathering hundreds of calls is the usual way to use the
synchronous surface; it must neither be refused at the polls' limit (100)
nor take the slots the same key's polls need.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.http.test_http_longpoll import Live, live  # noqa: F401 (fixture)
from tests.support.surface import bearer, chat, idle_fetch
from tests.support.waiting import eventually


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_past_the_sync_limit_a_chat_is_refused_and_polls_still_wait(live: Live) -> None:  # noqa: F811
    context = live.context
    context.sync_chat_slots.limit = 2
    context.poll_slots.limit = 1
    seen = await live.http.post(
        "/internal/queue/fetch", json=idle_fetch("nobody-takes"), headers=bearer(live.node)
    )
    assert seen.json() == []
    waiting = [
        asyncio.ensure_future(
            live.http.post(
                "/openai/v1/chat/completions", json=chat("nobody-takes"), headers=bearer(live.user)
            )
        )
        for _ in range(2)
    ]
    caller = context.keys.authenticate(live.user)
    assert caller is not None
    await eventually(lambda: context.sync_chat_slots.held(caller.key_id) == 2, "both chats to wait")
    refused = await live.http.post(
        "/openai/v1/chat/completions", json=chat("nobody-takes"), headers=bearer(live.user)
    )
    assert refused.status_code == 429, refused.text
    assert refused.headers["Retry-After"] == "1"
    message = refused.json()["error"]["message"]
    assert "2 chat completions waiting" in message
    assert "[openai] max_sync_requests_per_key" in message and "batch" in message
    # Nothing stored for the refused one: the two waiting chats' jobs only.
    jobs: list[dict[str, object]] = []
    for _ in range(400):
        jobs = (await live.http.get("/v1/jobs", headers=bearer(live.user))).json()["data"]
        if len(jobs) >= 2:
            break
        await asyncio.sleep(0.05)
    assert len(jobs) == 2

    # The key's one poll slot is still free for a poll with wait.
    ids = [job["id"] for job in jobs]
    poll = await live.http.post(
        "/v1/results/poll", json={"ids": ids, "wait": 0.1}, headers=bearer(live.user)
    )
    assert poll.status_code == 200, poll.text
    for request in waiting:
        request.cancel()
