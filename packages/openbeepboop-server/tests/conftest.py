"""Fixtures shared by every folder: databases (SQLite, and PostgreSQL when there is one)
and a started app.

Every app runs on a file-backed SQLite database in ``tmp_path``, migrated the
only way production ones are (Alembic), and is driven through
``with TestClient(app)`` so the lifespan (database, reaper, wake-ups) runs.
Fixtures only one folder needs live in that folder's conftest.py; the plain
helpers tests call are in ``tests/support``.

PostgreSQL: tests that want it ask for ``postgres_url_factory`` (or
``backend_url``, or a started app on it: ``backend``, parametrized by the
folders where the backend matters). It starts the local cluster if it is
installed but down, and SKIPS (with the reason) when PostgreSQL or the
psycopg driver is absent, so the suite passes on a laptop; under ``CI=true``
a missing PostgreSQL FAILS instead, so CI never passes by skipping them.
Every database it hands out is fresh and uniquely named, and all of them
are dropped at the end of the session.
``OPENBEEPBOOP_TEST_POSTGRES_URL`` points it at another server (any database
on it; the default is ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy as sa
from openbeepboop_server.app import create_app
from openbeepboop_server.config import Settings
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import upgrade_to_head
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.support.core import migrated_database, sqlite_url_for
from tests.support.surface import make_settings

POSTGRES_ENV = "OPENBEEPBOOP_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)
POSTGRES_START_TIMEOUT = 60.0


# -- PostgreSQL --------------------------------------------------------------------


def _try_connect(url: str) -> str | None:
    """None if ``url`` answers, else why not."""
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3}, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except Exception as exc:  # any driver error means "not usable here"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    finally:
        engine.dispose()


def _start_local_cluster() -> None:
    """Start the Debian-packaged cluster(s) if the tools exist (no-op otherwise)."""
    ctl = shutil.which("pg_ctlcluster")
    versions_dir = Path("/etc/postgresql")
    if ctl is None or not versions_dir.is_dir():
        return
    for version in sorted(p.name for p in versions_dir.iterdir()):
        subprocess.run(
            [ctl, "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            timeout=60,
            check=False,
        )


def _missing_postgres(reason: str) -> NoReturn:
    """Skip with ``reason``; under ``CI=true`` fail instead: CI must run the PostgreSQL tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and PostgreSQL is required: {reason}", pytrace=False)
    pytest.skip(reason)


def _find_postgres() -> str:
    """The admin URL of a reachable PostgreSQL, or skip (fail under ``CI=true``) saying why."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing_postgres(
            "PostgreSQL tests need the psycopg driver (pip install 'psycopg[binary]')"
        )
    override = os.environ.get(POSTGRES_ENV)
    candidates = (override,) if override else DEFAULT_POSTGRES_URLS
    reasons: list[str] = []
    for url in candidates:
        if (why := _try_connect(url)) is None:
            return url
        reasons.append(why)
    # Only the local default cluster is ours to start; an explicit server is not.
    if not override and shutil.which("pg_ctlcluster") is not None:
        _start_local_cluster()
        deadline = time.monotonic() + POSTGRES_START_TIMEOUT
        while time.monotonic() < deadline:
            for url in candidates:
                if _try_connect(url) is None:
                    return url
            time.sleep(0.5)
    _missing_postgres(f"PostgreSQL is not reachable at {candidates[0]} ({reasons[0]})")


@pytest.fixture(scope="session")
def postgres_url_factory() -> Iterator[Callable[[], str]]:
    """Makes fresh, empty PostgreSQL databases for tests; all dropped at session end.

    One uniquely named database per session; each call hands out a new schema
    in it, selected through the connection's ``search_path``, so every test
    starts empty. (``DROP DATABASE`` forces a checkpoint, too slow to do per
    test on a busy machine; one at the end is fine.)
    """
    admin_url = sa.make_url(_find_postgres())
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"obb_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    session_url = admin_url.set(database=name)
    session = sa.create_engine(
        session_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    made = 0

    def make() -> str:
        nonlocal made
        made += 1
        schema = f"t{made}"
        with session.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = session_url.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    try:
        yield make
    finally:
        session.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- databases -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL, once per backend (PostgreSQL skips if absent)."""
    if request.param == "sqlite":
        return sqlite_url_for(tmp_path / "queue.db")
    factory: Callable[[], str] = request.getfixturevalue("postgres_url_factory")
    return factory()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite file database."""
    return sqlite_url_for(tmp_path / "queue.db")


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    """A migrated, file-backed SQLite database."""
    database = migrated_database(sqlite_url)
    yield database
    database.dispose()


@pytest.fixture
def any_db(backend_url: str) -> Iterator[Database]:
    """A migrated database, once per backend (SQLite and PostgreSQL)."""
    database = migrated_database(backend_url)
    yield database
    database.dispose()


@pytest.fixture
def pg_url(postgres_url_factory: Callable[[], str]) -> str:
    """An empty PostgreSQL schema's URL (skips without PostgreSQL, fails under ``CI=true``)."""
    return postgres_url_factory()


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    """A migrated PostgreSQL database."""
    database = migrated_database(pg_url)
    yield database
    database.dispose()


# -- a started app -----------------------------------------------------------------


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database the app fixtures run on: SQLite, unless a test is parametrized.

    The HTTP modules where the backend matters (claims, leases, deliveries,
    long-polls) parametrize it with both (tests/http/conftest.py).
    """
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def settings(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Settings:
    """Settings of a migrated database: a SQLite file in ``tmp_path``, or a fresh
    PostgreSQL schema when ``backend`` is ``"postgresql"``."""
    result = make_settings(tmp_path)
    if backend == "postgresql":
        factory: Callable[[], str] = request.getfixturevalue("postgres_url_factory")
        result.database.url = factory()
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
