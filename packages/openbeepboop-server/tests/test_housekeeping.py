"""The housekeeper's pacing (background reads never take more than their share of a
core), and the lease grace after the database was unreachable."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import FetchRequest, Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.dispatch.wakeups import Wakeups
from openbeepboop_server.housekeeping import (
    SERVED_REFRESH_SECONDS,
    Housekeeper,
    next_served_refresh,
)
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request, make_caller


def test_a_slow_read_of_the_served_models_waits_twenty_times_its_duration() -> None:
    # A registry of a thousand nodes declaring 256 names each took ~0.1 s to read:
    # read every second, that was a tenth of a core taken from every request.
    assert next_served_refresh(0.001) == SERVED_REFRESH_SECONDS
    assert next_served_refresh(0.2) == pytest.approx(4.0)


# -- the lease grace after a database outage ------------------------------------


class _RefusedError(Exception):
    """The driver's error for a refused connection (no SQLSTATE)."""


class _StatementTimeoutError(Exception):
    """The driver's error for a statement timeout."""

    sqlstate = "57014"


def _outage_world(any_db: Database) -> tuple[Housekeeper, QueueService, FakeClock, dict[str, Any]]:
    """A housekeeper over a queue whose database fails while ``failure["error"]`` is set."""
    clock = FakeClock()
    queue = QueueService(any_db, QueuePolicy(lease_seconds=60), clock=clock)
    keys = KeyService(any_db, clock=clock)
    alice, node = make_caller(keys, Role.USER, "alice"), make_caller(keys, Role.NODE, "gpu")
    queue.submit(alice, chat_request())
    queue.claim(node, FetchRequest(node_id="gpu-1", models=["*"], max_jobs=1))
    failure: dict[str, Any] = {"error": None}
    real_expire = queue.expire_leases

    def expire_leases() -> list[str]:
        if failure["error"] is not None:
            raise sa.exc.OperationalError("UPDATE jobs", {}, failure["error"])
        return real_expire()

    queue.expire_leases = expire_leases  # type: ignore[method-assign]
    context = SimpleNamespace(queue=queue, metrics=MagicMock(), wakeups=Wakeups())
    return Housekeeper(context), queue, clock, failure  # type: ignore[arg-type]


def _lease_left(db: Database, clock: FakeClock) -> float:
    with db.read() as conn:
        return float(conn.execute(sa.select(jobs.c.lease_expires_at)).scalar_one()) - clock.now


def test_time_the_database_was_unreachable_does_not_expire_leases(any_db: Database) -> None:
    # QA round 11: the database refused connections for longer than a lease; on
    # recovery the expiry sweep took back the leases of nodes that had kept
    # working (they could not heartbeat), and their results were refused.
    housekeeper, _, clock, failure = _outage_world(any_db)
    failure["error"] = _RefusedError("connection failed: Connection refused")
    with pytest.raises(sa.exc.OperationalError):
        asyncio.run(housekeeper.tick())
    assert housekeeper.outage
    clock.advance(100)  # unreachable for longer than the lease
    failure["error"] = None
    asyncio.run(housekeeper.tick())  # the grace first: nothing expires
    assert not housekeeper.outage and _lease_left(any_db, clock) == 60
    clock.advance(61)  # granted once: a node that stays silent loses the lease
    asyncio.run(housekeeper.tick())
    with any_db.read() as conn:
        assert conn.execute(sa.select(jobs.c.status)).scalar_one() == "QUEUED"


def test_a_statement_timeout_is_not_an_outage_and_grants_no_grace(any_db: Database) -> None:
    # Failures that come and go without the database being gone (heartbeats got
    # through) must not keep moving a dead node's leases forward.
    housekeeper, _, clock, failure = _outage_world(any_db)
    failure["error"] = _StatementTimeoutError("canceling statement due to statement timeout")
    with pytest.raises(sa.exc.OperationalError):
        asyncio.run(housekeeper.tick())
    assert not housekeeper.outage
    clock.advance(50)
    failure["error"] = None
    asyncio.run(housekeeper.tick())
    assert _lease_left(any_db, clock) == 10
