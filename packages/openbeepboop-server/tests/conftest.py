"""Fixtures for the HTTP surface, CLI and config tests.

Every app runs on a file-backed SQLite database in ``tmp_path``, migrated the
only way production ones are (Alembic), and is driven through
``with TestClient(app)`` so the lifespan (database, reaper, wake-ups) runs.
The core's fixtures (``_core_fixtures.py``: databases on SQLite and
PostgreSQL, services, callers) are registered here too, for every folder.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openbeepboop_schemas import Role
from openbeepboop_server.app import create_app
from openbeepboop_server.config import Settings
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.migrate import upgrade_to_head
from starlette.applications import Starlette
from starlette.testclient import TestClient

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

# The core's fixtures (database, services, callers, PostgreSQL), for every folder.
from _core_fixtures import (  # noqa: E402, F401
    admin,
    alice,
    backend_url,
    bob,
    clock,
    db,
    keys,
    node,
    other_node,
    policy,
    postgres_url_factory,
    queue,
    sqlite_url,
)
from _surface_support import ApiKeys, make_settings  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of a migrated SQLite database in ``tmp_path``."""
    result = make_settings(tmp_path)
    upgrade_to_head(result.database.url)
    return result


@pytest.fixture
def app(settings: Settings) -> Starlette:
    """The app for :func:`settings` (not started)."""
    return create_app(settings)


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    """A started app (lifespan running) and a client for it."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def context(client: TestClient) -> ServerContext:
    """The running app's context (database, services, wake-ups)."""
    result: ServerContext = client.app.state.context  # type: ignore[attr-defined]
    return result


@pytest.fixture
def api_keys(context: ServerContext) -> ApiKeys:
    """Keys of every role, created through the running app's key service."""
    service = context.keys
    revoked, _ = service.create(Role.USER, "revoked-user")
    assert service.revoke("revoked-user")
    return ApiKeys(
        admin=service.create(Role.ADMIN, "test-admin")[0],
        node=service.create(Role.NODE, "test-node")[0],
        user=service.create(Role.USER, "alice")[0],
        other_user=service.create(Role.USER, "bob")[0],
        revoked=revoked,
    )
