"""A database that cannot serve a request now answers 503, never 500 or a hang.

PostgreSQL only (skipped without one, failed under ``CI=true``): a row lock
held by another session, a connection killed mid-request, a pool with no free
connection, and a real ``openbeepboop-server start`` process behind a held
lock. Bounds are "answered at all", many times the configured timeouts: they
tell a hang from an answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from openbeepboop_schemas import Role
from openbeepboop_server.app import create_app
from openbeepboop_server.config import Settings
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db import postgres
from openbeepboop_server.db.database import POOL_TIMEOUT_SECONDS
from openbeepboop_server.keys import KeyService, KeySettings
from starlette.testclient import TestClient

from tests.support.surface import bearer, chat
from tests.support.waiting import wait_until
from tests.test_crash import Server, set_up_server

#: Long enough to tell "waits for ever" from "gave up after its bound" on a busy host;
#: shorter than the pool's 30 s default wait the server had before its own bound.
ANSWERED_SECONDS = 2.5 * POOL_TIMEOUT_SECONDS

#: The in-process tests start the app on a migrated PostgreSQL schema.
on_postgresql = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def _plain(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _in_thread(call: Callable[[], httpx.Response]) -> httpx.Response:
    """``call()``'s answer, failing the test if there is none within :data:`ANSWERED_SECONDS`."""
    answers: list[httpx.Response | BaseException] = []

    def run() -> None:
        try:
            answers.append(call())
        except BaseException as exc:  # handed to the test thread
            answers.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(ANSWERED_SECONDS)
    assert not worker.is_alive(), f"no answer within {ANSWERED_SECONDS}s"
    [answer] = answers
    if isinstance(answer, BaseException):
        raise answer
    return answer


def _assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert int(response.headers["Retry-After"]) >= 1


@pytest.fixture
def small_pool(settings: Settings) -> Iterator[tuple[TestClient, ServerContext]]:
    """A started app on PostgreSQL whose pool holds one connection."""
    settings.database.pool_size = 1
    settings.database.max_overflow = 0
    with TestClient(create_app(settings)) as client:
        yield client, client.app.state.context  # type: ignore[attr-defined]


@on_postgresql
def test_an_exhausted_pool_answers_503_on_healthz_and_on_a_submit(
    small_pool: tuple[TestClient, ServerContext],
) -> None:
    client, context = small_pool
    key, _ = context.keys.create(Role.USER, "user")
    assert client.get("/healthz").status_code == 200
    with context.db.engine.connect():  # the pool's only connection, held
        health = _in_thread(lambda: client.get("/healthz"))
        assert health.status_code == 503, health.text
        assert health.json()["error"]["code"] == "database_unavailable"
        submit = _in_thread(
            lambda: client.post("/v1/chat/completions", json=chat(), headers=bearer(key))
        )
        _assert_database_unavailable(submit)
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/chat/completions", json=chat(), headers=bearer(key)).status_code == 202


@on_postgresql
def test_a_connection_killed_mid_submit_answers_503(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The submit must be killed while it waits, not time out on its own.
    monkeypatch.setattr(postgres, "LOCK_TIMEOUT_SECONDS", 600)
    with TestClient(create_app(settings)) as client:
        context: ServerContext = client.app.state.context  # type: ignore[attr-defined]
        key, _ = context.keys.create(Role.USER, "capped", KeySettings(max_queued=1000))
        url = settings.database.url
        with (
            psycopg.connect(_plain(url)) as holder,
            psycopg.connect(_plain(url), autocommit=True) as admin,
        ):
            holder.execute("SELECT * FROM api_keys WHERE name = 'capped' FOR UPDATE")
            holder_pid = holder.info.backend_pid

            def waiting() -> int | None:
                row = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database() AND pid <> %s",
                    [holder_pid],
                ).fetchone()
                return None if row is None else int(row[0])

            def kill_the_waiting_submit() -> None:
                pid = wait_until(waiting, ANSWERED_SECONDS, "the submit to wait on the row")
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])

            killer = threading.Thread(target=kill_the_waiting_submit, daemon=True)
            killer.start()
            submit = _in_thread(
                lambda: client.post("/v1/chat/completions", json=chat(), headers=bearer(key))
            )
            killer.join(ANSWERED_SECONDS)
            holder.rollback()
        _assert_database_unavailable(submit)
        jobs = client.get("/v1/jobs", headers=bearer(key)).json()
        assert jobs["data"] == []  # nothing half-written
        ok = client.post("/v1/chat/completions", json=chat(), headers=bearer(key))
        assert ok.status_code == 202


@pytest.fixture
def pg_server(tmp_path: Path, pg_url: str) -> Iterator[Server]:
    """A configured (not started) ``openbeepboop-server start`` on a PostgreSQL schema."""

    def capped_and_free(keys: KeyService) -> dict[str, str]:
        return {
            "capped": keys.create(Role.USER, "capped", KeySettings(max_queued=1000))[0],
            "free": keys.create(Role.USER, "free")[0],
        }

    yield from set_up_server(tmp_path, pg_url, capped_and_free)


def test_a_real_server_answers_503_behind_a_held_key_row_and_serves_the_rest(
    pg_server: Server, pg_url: str
) -> None:
    pg_server.start()
    http = httpx.Client(base_url=pg_server.url, timeout=ANSWERED_SECONDS)
    with psycopg.connect(_plain(pg_url)) as holder:
        # As a replica frozen mid-submit holds it.
        holder.execute("SELECT * FROM api_keys WHERE name = 'capped' FOR UPDATE")
        blocked = http.post(
            "/v1/chat/completions", json=chat(), headers=bearer(pg_server.keys["capped"])
        )
        _assert_database_unavailable(blocked)
        # Other keys, and the health check, are served meanwhile.
        free = http.post(
            "/v1/chat/completions", json=chat(), headers=bearer(pg_server.keys["free"])
        )
        assert free.status_code == 202, free.text
        assert http.get("/healthz").status_code == 200
        holder.rollback()
    after = http.post("/v1/chat/completions", json=chat(), headers=bearer(pg_server.keys["capped"]))
    assert after.status_code == 202, after.text
    log = pg_server.output()
    assert "database unavailable on POST /v1/chat/completions" in log
    assert "LockNotAvailable" in log
    assert "Traceback" not in log and "Exception in ASGI application" not in log
