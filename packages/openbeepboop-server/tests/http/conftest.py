"""Fixtures of the HTTP tests: the running app's context, and keys of every role."""

from __future__ import annotations

import pytest
from openbeepboop_schemas import Role
from openbeepboop_server.context import ServerContext
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every HTTP test that starts the app runs on both databases (PostgreSQL skips if absent)."""
    return str(request.param)


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
        metrics=service.create(Role.METRICS, "dashboard")[0],
    )
