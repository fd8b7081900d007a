"""Fixtures of the queue's tests: services on a migrated SQLite file, a hand-moved
clock, and a caller of each role."""

from __future__ import annotations

import pytest
from openbeepboop_schemas import Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import Caller, KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, make_caller


@pytest.fixture
def clock() -> FakeClock:
    """A hand-moved clock."""
    return FakeClock()


@pytest.fixture
def policy() -> QueuePolicy:
    """Default policy, short and round numbers for arithmetic in tests."""
    return QueuePolicy(
        lease_seconds=60, max_attempts=3, retry_backoff_seconds=2, retry_backoff_max_seconds=30
    )


@pytest.fixture
def keys(db: Database, clock: FakeClock) -> KeyService:
    """Key service on the test database."""
    return KeyService(db, clock=clock)


@pytest.fixture
def queue(db: Database, policy: QueuePolicy, clock: FakeClock) -> QueueService:
    """Queue service on the test database with the fake clock."""
    return QueueService(db, policy, clock=clock)


@pytest.fixture
def alice(keys: KeyService) -> Caller:
    """A USER key."""
    return make_caller(keys, Role.USER, "alice")


@pytest.fixture
def bob(keys: KeyService) -> Caller:
    """Another USER key."""
    return make_caller(keys, Role.USER, "bob")


@pytest.fixture
def admin(keys: KeyService) -> Caller:
    """An ADMIN key."""
    return make_caller(keys, Role.ADMIN, "admin")


@pytest.fixture
def node(keys: KeyService) -> Caller:
    """A NODE key."""
    return make_caller(keys, Role.NODE, "node-key")


@pytest.fixture
def other_node(keys: KeyService) -> Caller:
    """A second NODE key."""
    return make_caller(keys, Role.NODE, "other-node-key")
