"""Long-polls wake at once on a change, give up at the deadline, and never leak a waiter.

These drive the app with httpx's ASGI transport inside one event loop (the
lifespan is entered by hand), so a waiting request and the request that
wakes it really run concurrently. Timing assertions compare against the
requested wait (10 s), never against a tight bound: the machine is shared.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa
from openbeepboop_schemas import Role
from openbeepboop_server.app import create_app
from openbeepboop_server.config import Settings
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.dispatch import calls
from openbeepboop_server.keys import KeyService, KeySettings
from starlette.applications import Starlette

from tests.support.surface import bearer, chat, completion, idle_fetch, make_settings
from tests.support.waiting import CONDITION_TIMEOUT, eventually, timed

T = TypeVar("T")

WAIT = 10.0
#: Seconds until a key made to expire mid-wait expires: past the request's start.
EXPIRES_IN = 2.0
#: Generous: the machine is shared with other test suites.


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Live:
    app: Starlette
    http: httpx.AsyncClient
    context: ServerContext
    user: str
    node: str


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[Live]:
    """The started app on a migrated database (both backends: see tests/http/conftest.py)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context: ServerContext = app.state.context
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Live(
                app=app,
                http=http,
                context=context,
                user=context.keys.create(Role.USER, "u")[0],
                node=context.keys.create(Role.NODE, "n")[0],
            )


def fetch_body(models: list[str], wait: float = WAIT) -> dict[str, Any]:
    return {"node_id": "waiting-node", "models": models, "wait": wait}


def _result(lease: dict[str, Any]) -> dict[str, Any]:
    """A node's result outcome for ``lease``."""
    return {
        "kind": "result",
        "job_id": lease["job_id"],
        "lease_token": lease["lease_token"],
        "result": completion(),
    }


async def _leased_job(live: Live) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job submitted by the user and leased by the node (no long-poll): the job and its lease."""
    job = (
        await live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(live.user))
    ).json()
    [lease] = (
        await live.http.post(
            "/internal/queue/fetch", json=fetch_body(["m"], wait=0), headers=bearer(live.node)
        )
    ).json()
    return job, lease


async def _deliver(live: Live, leases: list[dict[str, Any]]) -> list[str]:
    """Deliver a result for each lease as the node; the acks."""
    response = await live.http.post(
        "/internal/queue/submit",
        json={"node_id": "waiting-node", "outcomes": [_result(lease) for lease in leases]},
        headers=bearer(live.node),
    )
    return [ack["ack"] for ack in response.json()["acks"]]


async def _parked_poll(live: Live, job_id: str) -> asyncio.Future[tuple[httpx.Response, float]]:
    """The user's long-poll for ``job_id``, once the server holds it: its answer and time."""
    waiting = asyncio.ensure_future(
        timed(
            live.http.post(
                "/v1/results/poll", json={"ids": [job_id], "wait": WAIT}, headers=bearer(live.user)
            )
        )
    )
    await eventually(lambda: live.context.wakeups.watch_waiters == 1, "the poll to wait")
    return waiting


async def _parked_fetch(
    live: Live, models: list[str]
) -> asyncio.Future[tuple[httpx.Response, float]]:
    """The node's fetch for ``models``, once it sleeps on the server: its answer and time."""
    waiting = asyncio.ensure_future(
        timed(
            live.http.post(
                "/internal/queue/fetch", json=fetch_body(models), headers=bearer(live.node)
            )
        )
    )
    await eventually(lambda: live.context.wakeups.parked_fetch_waiters == 1, "the fetch to park")
    return waiting


def _count_calls(live: Live, monkeypatch: pytest.MonkeyPatch, method: str) -> list[int]:
    """Count calls to one queue method (one entry per call)."""
    calls: list[int] = []
    original = getattr(live.context.queue, method)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(live.context.queue, method, counting)
    return calls


@pytest.mark.anyio
async def test_waiting_fetch_gets_a_job_submitted_after_it_started(live: Live) -> None:
    waiting = await _parked_fetch(live, ["llama3"])
    submitted = await live.http.post(
        "/v1/chat/completions", json=chat("llama3"), headers=bearer(live.user)
    )
    response, elapsed = await waiting
    assert response.status_code == 200
    assert [lease["job_id"] for lease in response.json()] == [submitted.json()["id"]]
    assert elapsed < WAIT / 2, f"the fetch returned after {elapsed:.2f}s of a {WAIT}s wait"
    assert live.context.wakeups.fetch_waiters == 0


@pytest.mark.anyio
async def test_fetch_for_another_model_keeps_waiting(live: Live) -> None:
    waiting = asyncio.ensure_future(
        live.http.post(
            "/internal/queue/fetch", json=fetch_body(["qwen"], wait=1.0), headers=bearer(live.node)
        )
    )
    await eventually(lambda: live.context.wakeups.fetch_waiters == 1, "the fetch to wait")
    await live.http.post("/v1/chat/completions", json=chat("llama3"), headers=bearer(live.user))
    response = await waiting
    assert response.json() == []
    assert live.context.wakeups.fetch_waiters == 0


@pytest.mark.anyio
async def test_fetch_with_nothing_returns_empty_after_the_wait(live: Live) -> None:
    response, elapsed = await timed(
        live.http.post(
            "/internal/queue/fetch", json=fetch_body(["m"], wait=0.3), headers=bearer(live.node)
        )
    )
    assert response.json() == []
    assert elapsed >= 0.3


@pytest.mark.anyio
async def test_poll_wait_returns_when_the_job_completes(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, lease = await _leased_job(live)
    reads = _count_calls(live, monkeypatch, "poll")
    waiting = await _parked_poll(live, job["id"])
    assert await _deliver(live, [lease]) == ["accepted"]
    response, elapsed = await waiting
    [entry] = response.json()
    assert entry["status"] == "COMPLETED"
    assert entry["result"]["choices"][0]["message"]["content"] == "Hello!"
    assert elapsed < WAIT / 2
    assert live.context.wakeups.watch_waiters == 0
    # Answered with the entry the delivery read: no second read of its own.
    assert reads == [1]


@pytest.mark.anyio
async def test_a_waiting_poll_is_answered_before_the_delivery_that_finished_its_job(
    live: Live,
) -> None:
    # The user is waiting on the poll; the node's ack can wait a turn (the
    # result is committed before either answer is written).
    job, lease = await _leased_job(live)
    answered: list[str] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def send_recorded(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.append(scope["path"])
            await send(message)

        await live.app(scope, receive, send_recorded)

    transport = httpx.ASGITransport(app=recording)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        waiting = asyncio.ensure_future(
            http.post(
                "/v1/results/poll",
                json={"ids": [job["id"]], "wait": WAIT},
                headers=bearer(live.user),
            )
        )
        await eventually(lambda: live.context.wakeups.watch_waiters == 1, "the poll to wait")
        delivered = await http.post(
            "/internal/queue/submit",
            json={"node_id": "waiting-node", "outcomes": [_result(lease)]},
            headers=bearer(live.node),
        )
        assert [ack["ack"] for ack in delivered.json()["acks"]] == ["accepted"]
        assert (await waiting).json()[0]["status"] == "COMPLETED"
    assert answered == ["/v1/results/poll", "/internal/queue/submit"]


@pytest.mark.anyio
async def test_poll_wait_returns_when_the_job_is_cancelled(live: Live) -> None:
    job = (
        await live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(live.user))
    ).json()
    waiting = await _parked_poll(live, job["id"])
    await live.http.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(live.user))
    response, elapsed = await waiting
    assert response.json()[0]["status"] == "CANCELLED"
    assert elapsed < WAIT / 2


@pytest.mark.anyio
async def test_poll_of_finished_or_unknown_ids_does_not_wait(live: Live) -> None:
    job = (
        await live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(live.user))
    ).json()
    await live.http.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(live.user))
    response, elapsed = await timed(
        live.http.post(
            "/v1/results/poll",
            json={"ids": [job["id"], "job-unknown"], "wait": WAIT},
            headers=bearer(live.user),
        )
    )
    assert [entry["status"] for entry in response.json()] == ["CANCELLED", "NOT_FOUND"]
    assert elapsed < WAIT / 2


@pytest.mark.anyio
async def test_cancelled_request_leaves_no_waiter(live: Live) -> None:
    waiting = asyncio.ensure_future(
        live.http.post("/internal/queue/fetch", json=fetch_body(["m"]), headers=bearer(live.node))
    )
    await eventually(lambda: live.context.wakeups.fetch_waiters == 1, "the fetch to wait")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert live.context.wakeups.fetch_waiters == 0


async def _raw_call(
    app: Starlette,
    path: str,
    body: dict[str, Any],
    key: str,
    disconnect: asyncio.Event,
    messages: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Call the app as a server would, delivering ``http.disconnect`` when ``disconnect`` is set.

    What the app sends is appended to ``messages`` (a list of its own if None).
    """
    import json

    payload = json.dumps(body).encode()
    sent = False
    messages = [] if messages is None else messages

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append({**message, "path": path})

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return messages


@pytest.mark.anyio
async def test_client_disconnect_ends_the_wait_and_claims_nothing(live: Live) -> None:
    disconnect = asyncio.Event()
    call = asyncio.ensure_future(
        timed(
            _raw_call(live.app, "/internal/queue/fetch", fetch_body(["m"]), live.node, disconnect)
        )  # type: ignore[arg-type]
    )
    await eventually(lambda: live.context.wakeups.fetch_waiters == 1, "the fetch to wait")
    disconnect.set()
    _, elapsed = await call
    assert elapsed < WAIT / 2
    assert live.context.wakeups.fetch_waiters == 0
    # A job submitted now is still there for a node that is listening.
    await live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(live.user))
    leases = await live.http.post(
        "/internal/queue/fetch", json=fetch_body(["m"], wait=0), headers=bearer(live.node)
    )
    assert len(leases.json()) == 1


@pytest.mark.anyio
async def test_poll_disconnect_ends_the_wait(live: Live) -> None:
    job = (
        await live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(live.user))
    ).json()
    disconnect = asyncio.Event()
    call = asyncio.ensure_future(
        timed(
            _raw_call(  # type: ignore[arg-type]
                live.app,
                "/v1/results/poll",
                {"ids": [job["id"]], "wait": WAIT},
                live.user,
                disconnect,
            )
        )
    )
    await eventually(lambda: live.context.wakeups.watch_waiters == 1, "the poll to wait")
    disconnect.set()
    _, elapsed = await call
    assert elapsed < WAIT / 2
    assert live.context.wakeups.watch_waiters == 0


@pytest.mark.anyio
async def test_shutdown_answers_waiting_long_polls(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    upgrade_to_head(settings.database.url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context: ServerContext = app.state.context
        node = context.keys.create(Role.NODE, "n")[0]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            waiting = asyncio.ensure_future(
                timed(
                    http.post("/internal/queue/fetch", json=fetch_body(["m"]), headers=bearer(node))
                )
            )
            await eventually(lambda: context.wakeups.fetch_waiters == 1, "the fetch to wait")
            from openbeepboop_server.app import begin_shutdown

            begin_shutdown(app)
            response, elapsed = await waiting
    assert response.json() == []
    assert elapsed < WAIT / 2


@pytest.mark.anyio
async def test_max_wait_seconds_caps_the_wait(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server={"max_wait_seconds": 0.2})
    upgrade_to_head(settings.database.url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context: ServerContext = app.state.context
        node = context.keys.create(Role.NODE, "n")[0]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response, elapsed = await timed(
                http.post("/internal/queue/fetch", json=fetch_body(["m"]), headers=bearer(node))
            )
    assert response.json() == []
    assert elapsed < WAIT / 2


@pytest.mark.anyio
async def test_waiting_fetch_wakes_when_a_backoff_ends(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, queue={"retry_backoff_seconds": 0.5})
    upgrade_to_head(settings.database.url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context: ServerContext = app.state.context
        # No periodic re-check within the wait: only the backoff timer can wake it.
        context.recheck_seconds = 60
        user = context.keys.create(Role.USER, "u")[0]
        node = context.keys.create(Role.NODE, "n")[0]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await http.post("/v1/chat/completions", json=chat("m"), headers=bearer(user))
            [lease] = (
                await http.post(
                    "/internal/queue/fetch", json=fetch_body(["m"], wait=0), headers=bearer(node)
                )
            ).json()
            await http.post(
                "/internal/queue/submit",
                json={
                    "node_id": "waiting-node",
                    "outcomes": [
                        {
                            "kind": "error",
                            "job_id": lease["job_id"],
                            "lease_token": lease["lease_token"],
                            "error": {"message": "busy", "type": "rate_limit", "retryable": True},
                        }
                    ],
                },
                headers=bearer(node),
            )
            response, elapsed = await timed(
                http.post("/internal/queue/fetch", json=fetch_body(["m"]), headers=bearer(node))
            )
    assert [item["job_id"] for item in response.json()] == [lease["job_id"]]
    assert elapsed < WAIT / 2


# -- hand-off: a submit claims for a parked fetch in its own transaction ------


def _job_row(live: Live, job_id: str) -> Any:
    with live.context.db.read() as conn:
        return conn.execute(
            sa.select(jobs.c.status, jobs.c.attempts, jobs.c.lease_token).where(jobs.c.id == job_id)
        ).one()


async def _hand_off_held(
    live: Live, monkeypatch: pytest.MonkeyPatch, fetch: Awaitable[T]
) -> tuple[asyncio.Future[T], asyncio.Future[httpx.Response], threading.Event]:
    """Park ``fetch``, then start a submit that reserves it and is held in its claim.

    Every submit runs in a worker thread and waits there until the returned
    event is set. Returns the fetch, the submit and that event.
    """
    monkeypatch.setattr(calls, "INLINE_MAX_ITEMS", 0)
    entered, proceed = threading.Event(), threading.Event()
    submit_and_claim = live.context.queue.submit_and_claim

    def blocked(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        if not proceed.wait(CONDITION_TIMEOUT):
            raise AssertionError("the test never let the submit go on")
        return submit_and_claim(*args, **kwargs)

    monkeypatch.setattr(live.context.queue, "submit_and_claim", blocked)
    fetching = asyncio.ensure_future(fetch)
    await eventually(lambda: live.context.wakeups.parked_fetch_waiters == 1, "the fetch to park")
    submitting = asyncio.ensure_future(
        live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(live.user))
    )
    await eventually(entered.is_set, "the submit to reserve the fetch")
    return fetching, submitting, proceed


@pytest.mark.anyio
async def test_submit_hands_its_job_to_a_parked_fetch(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = _count_calls(live, monkeypatch, "claim")  # a hand-off is not one
    waiting = await _parked_fetch(live, ["m"])
    job = (
        await live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(live.user))
    ).json()
    assert job["status"] == "QUEUED"  # what the job was accepted as
    [lease] = (await waiting)[0].json()
    assert lease["job_id"] == job["id"] and lease["attempt"] == 1
    assert claims == [1], "the fetch claimed again instead of taking the hand-off"
    assert _job_row(live, job["id"]).status == "PROCESSING"
    assert await _deliver(live, [lease]) == ["accepted"]
    assert live.context.wakeups.fetch_waiters == 0


@pytest.mark.anyio
async def test_hand_off_to_a_fetch_that_was_cancelled_meanwhile_is_given_back(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting, submitting, proceed = await _hand_off_held(
        live,
        monkeypatch,
        live.http.post("/internal/queue/fetch", json=fetch_body(["m"]), headers=bearer(live.node)),
    )
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    proceed.set()
    job = (await submitting).json()
    row = _job_row(live, job["id"])
    assert (row.status, row.attempts, row.lease_token) == ("QUEUED", 0, None)
    [lease] = (
        await live.http.post(
            "/internal/queue/fetch", json=fetch_body(["m"], wait=0), headers=bearer(live.node)
        )
    ).json()
    assert lease["job_id"] == job["id"] and lease["attempt"] == 1


@pytest.mark.anyio
async def test_hand_off_to_a_fetch_whose_node_hung_up_is_given_back(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    disconnect = asyncio.Event()
    call, submitting, proceed = await _hand_off_held(
        live,
        monkeypatch,
        _raw_call(live.app, "/internal/queue/fetch", fetch_body(["m"]), live.node, disconnect),
    )
    disconnect.set()
    # The hang-up reaches the waiter while the claim for it is held up.
    waiters = list(live.context.wakeups._fetchers)
    await eventually(lambda: all(waiter.disconnected for waiter in waiters), "the hang-up")
    proceed.set()
    job = (await submitting).json()
    messages = await call
    assert b"job_id" not in b"".join(m.get("body", b"") for m in messages)
    row = _job_row(live, job["id"])
    assert (row.status, row.attempts) == ("QUEUED", 0)


@pytest.mark.anyio
async def test_reserved_fetch_whose_wait_ends_still_gets_its_hand_off(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting, submitting, proceed = await _hand_off_held(
        live,
        monkeypatch,
        live.http.post(
            "/internal/queue/fetch", json=fetch_body(["m"], wait=0.5), headers=bearer(live.node)
        ),
    )
    await asyncio.sleep(0.6)  # past the fetch's deadline while its claim is held up
    proceed.set()
    job = (await submitting).json()
    response = await waiting
    assert [lease["job_id"] for lease in response.json()] == [job["id"]]


@pytest.mark.anyio
async def test_fetch_busy_claiming_is_woken_not_handed(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two fetches park; two submits: each gets one job, whichever way it came.
    waiting = [
        asyncio.ensure_future(
            live.http.post(
                "/internal/queue/fetch", json=fetch_body(["m"]), headers=bearer(live.node)
            )
        )
        for _ in range(2)
    ]
    await eventually(lambda: live.context.wakeups.parked_fetch_waiters == 2, "both to park")
    ids = [
        (
            await live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(live.user))
        ).json()["id"]
        for _ in range(2)
    ]
    got = [[lease["job_id"] for lease in (await task).json()] for task in waiting]
    assert sorted(job for leases in got for job in leases) == sorted(ids)
    assert all(len(leases) == 1 for leases in got)


@pytest.mark.anyio
async def test_the_node_is_answered_before_the_user_on_a_hand_off(live: Live) -> None:
    # The lease is on the job's critical path; the user's 202 only starts a wait.
    sent: list[dict[str, Any]] = []
    never = asyncio.Event()
    fetch = asyncio.ensure_future(
        _raw_call(live.app, "/internal/queue/fetch", fetch_body(["m"]), live.node, never, sent)
    )
    await eventually(lambda: live.context.wakeups.parked_fetch_waiters == 1, "the fetch to park")
    await _raw_call(live.app, "/v1/chat/completions", chat("m"), live.user, never, sent)
    await fetch
    order = [(m["path"], m["type"]) for m in sent]
    assert order == [
        ("/internal/queue/fetch", "http.response.start"),
        ("/internal/queue/fetch", "http.response.body"),
        ("/v1/chat/completions", "http.response.start"),
        ("/v1/chat/completions", "http.response.body"),
    ]


# -- a delivery hands the finished jobs' entries to the polls waiting on them --


@pytest.mark.anyio
async def test_a_handed_entry_never_reaches_a_poll_that_may_not_see_the_job(live: Live) -> None:
    other_user = live.context.keys.create(Role.USER, "other")[0]
    theirs = (
        await live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(live.user))
    ).json()
    mine = (
        await live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(other_user))
    ).json()
    leases = (
        await live.http.post(
            "/internal/queue/fetch",
            json={**fetch_body(["m"], wait=0), "max_jobs": 2},
            headers=bearer(live.node),
        )
    ).json()
    waiting = asyncio.ensure_future(
        live.http.post(
            "/v1/results/poll",
            json={"ids": [theirs["id"], mine["id"]], "wait": WAIT},
            headers=bearer(other_user),
        )
    )
    await eventually(lambda: live.context.wakeups.watch_waiters == 1, "the poll to wait")
    assert await _deliver(live, leases) == ["accepted", "accepted"]
    entries = (await waiting).json()
    assert [(e["id"], e["status"]) for e in entries] == [
        (theirs["id"], "NOT_FOUND"),
        (mine["id"], "COMPLETED"),
    ]
    assert "result" not in entries[0] or entries[0]["result"] is None


# -- a key revoked or expired while its long-polls wait ends them (401) --------
#
# Revoked through the app's own key service (as another process's CLI would
# be: nothing in the revoke wakes anyone), the periodic re-check or, on
# PostgreSQL, the key change's notice must end every long-poll of the key.


def _refused(response: httpx.Response) -> None:
    """``response`` is the 401 a request with a revoked or expired key gets."""
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.anyio
async def test_a_parked_poll_ends_with_401_when_its_key_is_revoked(live: Live) -> None:
    job, lease = await _leased_job(live)
    waiting = await _parked_poll(live, job["id"])
    assert live.context.keys.revoke("u")
    response, elapsed = await waiting
    _refused(response)
    assert elapsed < WAIT / 2, f"the poll outlived its key by {elapsed:.2f}s"
    assert live.context.wakeups.watch_waiters == 0
    # The job is the node's to finish still; its result is not handed to anyone.
    assert await _deliver(live, [lease]) == ["accepted"]


@pytest.mark.anyio
async def test_a_parked_fetch_ends_with_401_when_its_key_is_revoked_and_takes_no_job(
    live: Live,
) -> None:
    other_node = live.context.keys.create(Role.NODE, "other-node")[0]
    waiting = await _parked_fetch(live, ["m"])
    assert live.context.keys.revoke("n")
    response, elapsed = await waiting
    _refused(response)
    assert elapsed < WAIT / 2, f"the fetch outlived its key by {elapsed:.2f}s"
    assert live.context.wakeups.fetch_waiters == 0

    # The next job goes to a node that can still deliver it.
    other = asyncio.ensure_future(
        live.http.post(
            "/internal/queue/fetch",
            json={**fetch_body(["m"]), "node_id": "other-node"},
            headers=bearer(other_node),
        )
    )
    await eventually(lambda: live.context.wakeups.parked_fetch_waiters == 1, "the other to park")
    job = (
        await live.http.post("/v1/chat/completions", json=chat("m"), headers=bearer(live.user))
    ).json()
    assert [lease["job_id"] for lease in (await other).json()] == [job["id"]]


@pytest.mark.anyio
async def test_a_hand_off_to_a_fetch_whose_key_is_revoked_meanwhile_is_given_back(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The submit is claiming for the parked fetch when the revoke is seen: the
    # lease written for it goes back to the queue before the fetch answers 401.
    waiting, submitting, proceed = await _hand_off_held(
        live,
        monkeypatch,
        live.http.post("/internal/queue/fetch", json=fetch_body(["m"]), headers=bearer(live.node)),
    )
    waiters = list(live.context.wakeups._fetchers)
    assert live.context.keys.revoke("n")
    await eventually(lambda: all(waiter.refused for waiter in waiters), "the revoke to be seen")
    proceed.set()
    job = (await submitting).json()
    _refused(await waiting)
    row = _job_row(live, job["id"])
    assert (row.status, row.attempts, row.lease_token) == ("QUEUED", 0, None)


@pytest.mark.anyio
async def test_a_sync_chat_whose_key_expires_while_it_waits_ends_with_401(live: Live) -> None:
    # It would wait WAIT seconds; the key expires well before. Its job, which no
    # node took, is cancelled as after a hang-up (docs/openai.md).
    live.context.settings.openai.sync_timeout_seconds = WAIT
    await live.http.post("/internal/queue/fetch", json=idle_fetch("m"), headers=bearer(live.node))
    expiring = live.context.keys.create(
        Role.USER, "expiring", KeySettings(expires_at=time.time() + EXPIRES_IN)
    )[0]
    response, elapsed = await timed(
        live.http.post("/openai/v1/chat/completions", json=chat("m"), headers=bearer(expiring))
    )
    _refused(response)
    assert elapsed < WAIT, f"the wait outlived its key by {elapsed - EXPIRES_IN:.2f}s"
    with live.context.db.read() as conn:
        [status] = conn.execute(sa.select(jobs.c.status)).scalars().all()
    assert status == "CANCELLED"
    assert live.context.wakeups.watch_waiters == 0


@pytest.mark.anyio
async def test_on_postgresql_a_revoke_elsewhere_ends_a_parked_fetch_at_once(
    tmp_path: Path, pg_url: str
) -> None:
    # The periodic re-check is a minute away: only the key change's notice can end it.
    settings = make_settings(tmp_path, server={"recheck_seconds": 60.0})
    settings.database.url = pg_url
    upgrade_to_head(pg_url)
    app = create_app(settings)
    elsewhere = Database.connect(pg_url)  # the CLI's: another process, another replica id
    try:
        async with app.router.lifespan_context(app):
            context: ServerContext = app.state.context
            node = context.keys.create(Role.NODE, "n")[0]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                waiting = asyncio.ensure_future(
                    timed(
                        http.post(
                            "/internal/queue/fetch", json=fetch_body(["m"]), headers=bearer(node)
                        )
                    )
                )
                await eventually(lambda: context.wakeups.parked_fetch_waiters == 1, "the park")
                assert KeyService(elsewhere).revoke("n")
                response, elapsed = await waiting
    finally:
        elsewhere.dispose()
    _refused(response)
    assert elapsed < WAIT / 2, f"the fetch outlived its key by {elapsed:.2f}s"
