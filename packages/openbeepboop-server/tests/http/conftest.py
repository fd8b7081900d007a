"""Fixtures of the HTTP tests: the running app's context, and keys of every role."""

from __future__ import annotations

import pytest
from openbeepboop_schemas import Role
from openbeepboop_server.context import ServerContext
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys

#: The modules whose tests run on both databases: where the backend changes
#: what happens (claims, hand-offs, leases, deliveries, long-polls, cancels,
#: the node registry). The rest (input errors, budgets, roles, status page,
#: OpenAPI conformance) run on SQLite only: the database is not what they test,
#: and each PostgreSQL app costs a migrated schema (CI time, docs/testing.md).
BOTH_BACKENDS = frozenset(
    {"test_http_jobs", "test_http_queue", "test_http_longpoll", "test_http_served_models"}
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests of :data:`BOTH_BACKENDS` that start the app on SQLite and PostgreSQL."""
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module in BOTH_BACKENDS and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


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
