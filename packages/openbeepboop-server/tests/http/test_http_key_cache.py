"""Keys cached by a PostgreSQL replica (key_cache.py), seen from outside through HTTP.

A key is read once and then answered from memory; revoking it from another
process, as the ``keys`` CLI does, is refused on the replica's next request
once the change's notice has arrived; an expiring key is refused from its
expiry on. (A lost ``LISTEN`` connection switching the cache off:
tests/dispatch/test_replicas.py.) PostgreSQL only (skipped without one, failed
under ``CI=true``): on SQLite every request reads its key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import Role
from openbeepboop_server import key_cache
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import KeyService, KeySettings
from starlette.testclient import TestClient

from tests.support.waiting import wait_until

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

#: Deadlines for a loaded machine: conditions, never sleeps. Shorter than the
#: entries' age (below), so only a dropped entry can satisfy them.
ARRIVAL_SECONDS = 20.0


@pytest.fixture(autouse=True)
def long_lived_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries that outlive every deadline here: only a notice can end them."""
    monkeypatch.setattr(key_cache, "MAX_AGE_SECONDS", 600.0)


@pytest.fixture
def cli(context: ServerContext) -> Iterator[KeyService]:
    """The key service of another process on the same database (the ``keys`` CLI's)."""
    other = Database.connect(str(context.db.engine.url.render_as_string(hide_password=False)))
    yield KeyService(other)
    other.dispose()


class Lookups:
    """Counts the key lookups the app's database runs."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        statement = args[2]
        if "api_keys" in statement and "key_sha256" in statement:
            self.count += 1


def _status(client: TestClient, key: str) -> int:
    return client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code


def test_a_key_is_read_once_and_refused_once_the_cli_revokes_it(
    client: TestClient, context: ServerContext, cli: KeyService
) -> None:
    wait_until(lambda: context.keys.cache.enabled, ARRIVAL_SECONDS, "the replica to listen")
    key, _ = cli.create(Role.USER, "alice")
    lookups = Lookups(context.db.engine)
    assert [_status(client, key) for _ in range(5)] == [200] * 5
    assert lookups.count == 1

    assert cli.revoke("alice")
    wait_until(lambda: context.keys.cached(key) is None, ARRIVAL_SECONDS, "the revoke's notice")
    assert _status(client, key) == 401
    assert lookups.count == 2


def test_an_expiring_key_is_refused_from_its_expiry_on_cached_or_not(
    client: TestClient, context: ServerContext, cli: KeyService
) -> None:
    wait_until(lambda: context.keys.cache.enabled, ARRIVAL_SECONDS, "the replica to listen")
    expires_at = time.time() + 3.0  # room for a stalled machine before the first request
    key, _ = cli.create(Role.USER, "brief", KeySettings(expires_at=expires_at))
    assert _status(client, key) == 200
    assert context.keys.cached(key) is not None
    wait_until(lambda: time.time() > expires_at, ARRIVAL_SECONDS, "the key's expiry")
    assert _status(client, key) == 401
