"""Per-key caps on long-polls: past the cap a ``429`` with ``Retry-After``; other keys not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from openbeepboop_schemas import FETCH_PATH, OPENAI_CHAT_COMPLETIONS_PATH, Role
from openbeepboop_server.app import create_app
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.dispatch.slots import LongPollSlots, TooManyLongPolls

from tests.support.surface import bearer, chat, idle_fetch, make_settings

WAIT = 20.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _until(condition: object) -> None:
    assert callable(condition)
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_slots_count_per_key_and_free_on_exit() -> None:
    slots = LongPollSlots("polls", 2, "max_polls_per_key")
    with slots.hold(1), slots.hold(1):
        with pytest.raises(TooManyLongPolls, match="max_polls_per_key"), slots.hold(1):
            pass
        with slots.hold(2):
            assert (slots.held(1), slots.held(2)) == (2, 1)
    assert slots.held(1) == 0
    with slots.hold(1):
        pass


@pytest.mark.anyio
async def test_polls_and_fetches_past_their_key_caps_get_429(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server={"max_polls_per_key": 2, "max_fetches_per_key": 1})
    upgrade_to_head(settings.database.url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context: ServerContext = app.state.context
        alice = context.keys.create(Role.USER, "alice")[0]
        bob = context.keys.create(Role.USER, "bob")[0]
        node = context.keys.create(Role.NODE, "n")[0]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            ids = {}
            for key in (alice, bob):
                job = await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
                ids[key] = job.json()["id"]

            def poll(key: str, wait: float | None = WAIT) -> asyncio.Future[httpx.Response]:
                body = {"ids": [ids[key]], "wait": wait}
                return asyncio.ensure_future(
                    http.post("/v1/results/poll", json=body, headers=bearer(key))
                )

            parked = [poll(alice), poll(alice)]
            await _until(lambda: context.wakeups.watch_waiters == 2)
            refused = await poll(alice)
            # Without `wait` a poll never counts; another key has its own cap.
            unwaited = await poll(alice, None)
            other = poll(bob)
            fetches = [
                asyncio.ensure_future(
                    http.post(
                        "/internal/queue/fetch",
                        json={"node_id": f"n{i}", "models": ["nobody"], "wait": WAIT},
                        headers=bearer(node),
                    )
                )
                for i in range(2)
            ]
            await _until(lambda: context.wakeups.watch_waiters == 3)
            fetch_refused = await asyncio.wait_for(
                asyncio.shield(asyncio.wait(fetches, return_when=asyncio.FIRST_COMPLETED)), WAIT
            )
            for key, job_id in ids.items():
                await http.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(key))
            answers = await asyncio.gather(*parked, other)
            context.wakeups.close()
            fetched = await asyncio.gather(*fetches)

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "too_many_long_polls" and error["type"] == "rate_limit_error"
    assert "max_polls_per_key" in error["message"]
    assert unwaited.status_code == 200
    assert [answer.json()[0]["status"] for answer in answers] == ["CANCELLED"] * 3
    assert len(fetch_refused[0]) == 1
    assert sorted(response.status_code for response in fetched) == [200, 429]
    # Every slot was given back.
    assert context.poll_slots.held(1) == context.fetch_slots.held(1) == 0


@pytest.mark.anyio
async def test_a_sync_chat_past_the_cap_is_refused_before_its_job_exists(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, openai={"max_sync_requests_per_key": 1})
    upgrade_to_head(settings.database.url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context: ServerContext = app.state.context
        alice = context.keys.create(Role.USER, "alice")[0]
        node = context.keys.create(Role.NODE, "node")[0]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            # Its model is served (by a node that takes nothing): the chat waits.
            await http.post(FETCH_PATH, json=idle_fetch(chat()["model"]), headers=bearer(node))
            parked = asyncio.ensure_future(
                http.post(OPENAI_CHAT_COMPLETIONS_PATH, json=chat(), headers=bearer(alice))
            )
            await _until(lambda: context.wakeups.watch_waiters == 1)
            refused = await http.post(
                OPENAI_CHAT_COMPLETIONS_PATH, json=chat(), headers=bearer(alice)
            )
            listing = await http.get("/v1/jobs", headers=bearer(alice))
            [waiting] = listing.json()["data"]
            await http.post(f"/v1/jobs/{waiting['id']}/cancel", headers=bearer(alice))
            await parked

    # The SDK retries a 429: had the job been queued first, each retry would add one.
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "too_many_long_polls"
    assert "[openai] max_sync_requests_per_key" in error["message"]
    assert context.sync_chat_slots.held(1) == 0
