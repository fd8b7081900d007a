"""A node's lease watch (``POST /internal/queue/watch``): answered as soon as a lease ends.

Driven like the other long-poll tests: httpx's ASGI transport inside one
event loop, so the waiting watch and the request that ends it really run
concurrently. Timing assertions compare against the requested wait (10 s),
never against a tight bound: the machine is shared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from openbeepboop_schemas import LEASE_WATCH_PATH, Role
from openbeepboop_server.app import create_app
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.keys import KeySettings

from tests.support.surface import bearer, chat, completion, make_settings
from tests.support.waiting import eventually, timed

WAIT = 10.0
#: Generous: the machine is shared with other test suites.


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Live:
    http: httpx.AsyncClient
    context: ServerContext
    user: str
    node: str
    other_node: str


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    # A fast reaper, so an expired lease is taken back within a fraction of a second.
    settings = make_settings(tmp_path, queue={"reap_interval_seconds": 0.1})
    upgrade_to_head(settings.database.url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context: ServerContext = app.state.context
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Live(
                http=http,
                context=context,
                user=context.keys.create(Role.USER, "u")[0],
                node=context.keys.create(Role.NODE, "n")[0],
                other_node=context.keys.create(Role.NODE, "intruder")[0],
            )


async def _leased_job(live: Live, prompt: str = "Hi") -> dict[str, Any]:
    """A job submitted by the user and leased by the node: its lease."""
    await live.http.post("/v1/chat/completions", json=chat("m", prompt), headers=bearer(live.user))
    [lease] = (
        await live.http.post(
            "/internal/queue/fetch",
            json={"node_id": "busy-node", "models": ["m"]},
            headers=bearer(live.node),
        )
    ).json()
    return dict(lease)


def _ref(lease: dict[str, Any]) -> dict[str, str]:
    return {"job_id": lease["job_id"], "lease_token": lease["lease_token"]}


def _watch(
    live: Live, leases: list[dict[str, Any]], wait: float = WAIT, key: str | None = None
) -> asyncio.Future[tuple[httpx.Response, float]]:
    body = {"node_id": "busy-node", "leases": [_ref(lease) for lease in leases], "wait": wait}
    return asyncio.ensure_future(
        timed(live.http.post(LEASE_WATCH_PATH, json=body, headers=bearer(key or live.node)))
    )


async def _parked(live: Live, count: int = 1) -> None:
    await eventually(lambda: live.context.wakeups.lease_watch_waiters == count, "the watch to wait")


def _blind_recheck(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """The periodic re-check finds nothing: only the in-process wake-up can end a watch."""
    monkeypatch.setattr(live.context.queue, "finished_among", lambda ids: [])


async def _cancel(live: Live, lease: dict[str, Any]) -> None:
    response = await live.http.post(f"/v1/jobs/{lease['job_id']}/cancel", headers=bearer(live.user))
    assert response.json()["status"] == "CANCELLED"


@pytest.mark.anyio
async def test_a_cancel_answers_the_waiting_watch_at_once(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    _blind_recheck(live, monkeypatch)
    running, cancelled = await _leased_job(live, "keep"), await _leased_job(live, "drop")
    waiting = _watch(live, [running, cancelled])
    await _parked(live)

    await _cancel(live, cancelled)

    response, elapsed = await waiting
    assert response.status_code == 200, response.text
    assert response.json() == {"cancelled": [cancelled["job_id"]], "lost": []}
    assert elapsed < WAIT / 2, f"answered after {elapsed:.2f}s of a {WAIT}s wait"
    assert live.context.wakeups.lease_watch_waiters == 0


@pytest.mark.anyio
async def test_a_lease_cancelled_before_the_watch_is_answered_without_waiting(
    live: Live,
) -> None:
    lease = await _leased_job(live)
    await _cancel(live, lease)

    response, elapsed = await _watch(live, [lease])

    assert response.json() == {"cancelled": [lease["job_id"]], "lost": []}
    assert elapsed < WAIT / 2


@pytest.mark.anyio
async def test_an_expired_lease_answers_the_watch_as_lost(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    _blind_recheck(live, monkeypatch)
    lease = await _leased_job(live)
    waiting = _watch(live, [lease])
    await _parked(live)
    # As if the node had not heartbeaten for a whole lease: the reaper takes it back.
    with live.context.db.write() as conn:
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == lease["job_id"])
            .values(lease_expires_at=time.time() - 1)
        )

    response, elapsed = await waiting

    assert response.json() == {"cancelled": [], "lost": [lease["job_id"]]}
    assert elapsed < WAIT / 2


@pytest.mark.anyio
async def test_a_watch_with_nothing_ended_answers_empty_after_its_wait(live: Live) -> None:
    lease = await _leased_job(live)

    response, elapsed = await _watch(live, [lease], wait=0.3)

    assert response.status_code == 200
    assert response.json() == {"cancelled": [], "lost": []}
    assert elapsed >= 0.3
    # Still held: the watch read, it did not end or extend anything.
    entry = (await live.http.get(f"/v1/jobs/{lease['job_id']}", headers=bearer(live.user))).json()
    assert entry["status"] == "PROCESSING"


@pytest.mark.anyio
async def test_the_nodes_own_delivery_does_not_end_its_watch(live: Live) -> None:
    delivered, running = await _leased_job(live, "done"), await _leased_job(live, "running")
    waiting = _watch(live, [delivered, running], wait=1.0)
    await _parked(live)
    submitted = await live.http.post(
        "/internal/queue/submit",
        json={
            "node_id": "busy-node",
            "outcomes": [{"kind": "result", **_ref(delivered), "result": completion()}],
        },
        headers=bearer(live.node),
    )
    assert submitted.json()["acks"][0]["ack"] == "accepted"

    response, elapsed = await waiting

    # Woken by the delivery, it found nothing to abort and waited on.
    assert response.json() == {"cancelled": [], "lost": []}
    assert elapsed >= 1.0


@pytest.mark.anyio
async def test_another_key_cannot_watch_a_lease_it_does_not_hold(live: Live) -> None:
    lease = await _leased_job(live)
    owner = _watch(live, [lease])
    await _parked(live)

    intruder, elapsed = await _watch(live, [lease], key=live.other_node)

    # Not its lease: "lost" at once, and nothing about the job's fate.
    assert intruder.json() == {"cancelled": [], "lost": [lease["job_id"]]}
    assert elapsed < WAIT / 2
    await _cancel(live, lease)
    late, _ = await _watch(live, [lease], key=live.other_node)
    assert late.json() == {"cancelled": [], "lost": [lease["job_id"]]}
    # The holder's watch was not disturbed, and learns of the cancel.
    response, _ = await owner
    assert response.json() == {"cancelled": [lease["job_id"]], "lost": []}


@pytest.mark.anyio
async def test_a_forged_token_is_lost(live: Live) -> None:
    lease = await _leased_job(live)
    forged = {**lease, "lease_token": lease["lease_token"][:-1] + "x"}

    response, _ = await _watch(live, [forged])

    assert response.json() == {"cancelled": [], "lost": [lease["job_id"]]}


@pytest.mark.anyio
async def test_a_cancel_made_elsewhere_reaches_the_watch_through_the_recheck(
    live: Live,
) -> None:
    lease = await _leased_job(live)
    waiting = _watch(live, [lease])
    await _parked(live)
    user = live.context.keys.authenticate(live.user)
    assert user is not None
    # Straight through the queue, as another replica would: no in-process wake-up.
    live.context.queue.cancel(user, lease["job_id"])

    response, elapsed = await waiting

    assert response.json() == {"cancelled": [lease["job_id"]], "lost": []}
    assert elapsed < WAIT / 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {"node_id": "n", "leases": []},
        {"node_id": "n"},
        {"node_id": "n", "leases": [{"job_id": "j", "lease_token": "t"}], "wait": 9999},
        {"node_id": "n", "leases": [{"job_id": "j"}]},
        {"node_id": "n", "leases": [{"job_id": "j", "lease_token": "t"}], "extend": True},
    ],
)
async def test_a_bad_body_is_a_400_envelope(live: Live, body: dict[str, Any]) -> None:
    response = await live.http.post(LEASE_WATCH_PATH, json=body, headers=bearer(live.node))

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]


@pytest.mark.anyio
async def test_a_user_key_cannot_watch(live: Live) -> None:
    body = {"node_id": "n", "leases": [{"job_id": "j", "lease_token": "t"}]}

    response = await live.http.post(LEASE_WATCH_PATH, json=body, headers=bearer(live.user))

    assert response.status_code == 403
    assert response.json()["error"]["message"]


@pytest.mark.anyio
async def test_watches_have_their_own_cap_per_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server={"max_fetches_per_key": 1})
    upgrade_to_head(settings.database.url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context: ServerContext = app.state.context
        node = context.keys.create(Role.NODE, "n")[0]
        body = {"node_id": "n", "leases": [{"job_id": "j", "lease_token": "t"}]}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            # An unknown lease answers at once ("lost"): park a watch on a held one.
            await http.post(
                "/v1/chat/completions",
                json=chat("m"),
                headers=bearer(context.keys.create(Role.USER, "u")[0]),
            )
            [lease] = (
                await http.post(
                    "/internal/queue/fetch",
                    json={"node_id": "n", "models": ["m"]},
                    headers=bearer(node),
                )
            ).json()
            body = {"node_id": "n", "leases": [_ref(lease)], "wait": 1.0}
            first = asyncio.ensure_future(
                http.post(LEASE_WATCH_PATH, json=body, headers=bearer(node))
            )
            await eventually(lambda: context.wakeups.lease_watch_waiters == 1, "a watch")
            second = await http.post(LEASE_WATCH_PATH, json=body, headers=bearer(node))
            # The watch does not take the slot of the node's fetch.
            fetch = await http.post(
                "/internal/queue/fetch",
                json={"node_id": "n", "models": ["m"], "wait": 0.1},
                headers=bearer(node),
            )
            assert (await first).status_code == 200
    assert second.status_code == 429
    assert "max_fetches_per_key" in second.json()["error"]["message"]
    assert fetch.status_code == 200


@pytest.mark.anyio
async def test_a_watch_the_node_abandons_leaves_no_waiter_and_no_slot(live: Live) -> None:
    # The node renews its watch by ending the request: nothing may stay behind.
    lease = await _leased_job(live)
    waiting = _watch(live, [lease])
    await _parked(live)
    node = live.context.keys.authenticate(live.node)
    assert node is not None
    assert live.context.lease_watch_slots.held(node.key_id) == 1

    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert live.context.wakeups.lease_watch_waiters == 0
    assert live.context.wakeups.watched_ids() == []
    assert live.context.lease_watch_slots.held(node.key_id) == 0


@pytest.mark.anyio
async def test_a_key_scoped_to_a_node_id_watches_only_as_that_node(live: Live) -> None:
    """As for fetch, heartbeat and delivery: node setup's key check is a watch."""
    scoped, _ = live.context.keys.create(Role.NODE, "boxed", KeySettings(node_id="box"))
    refs = [{"job_id": "j", "lease_token": "t"}]

    elsewhere = await live.http.post(
        LEASE_WATCH_PATH, json={"node_id": "elsewhere", "leases": refs}, headers=bearer(scoped)
    )
    assert elsewhere.status_code == 403, elsewhere.text
    assert elsewhere.json()["error"]["code"] == "outside_key_scope"
    assert "'box'" in elsewhere.json()["error"]["message"]

    at_home = await live.http.post(
        LEASE_WATCH_PATH, json={"node_id": "box", "leases": refs}, headers=bearer(scoped)
    )
    assert at_home.status_code == 200, at_home.text
