"""PostgreSQL for integration tests: one fresh, uniquely named database per call.

Several server replicas share one database, so a test that runs them needs a
PostgreSQL server. :func:`find_admin_url` looks for one (the local Debian
cluster, started if it is installed but down, or
``OPENBEEPBOOP_TEST_POSTGRES_URL``); when there is none the test is skipped
with the reason, except under ``CI=true``, where a missing PostgreSQL is a
failure: CI must never pass by skipping the scale-out tests.

:class:`PostgresDatabases` hands out databases named ``obb_it_<random>``, so
two runs on one PostgreSQL (two checkouts, two CI jobs) never collide, and
drops every one it made when closed. It talks to PostgreSQL with psycopg
directly: the tests drive the product from outside and import none of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

POSTGRES_ENV = "OPENBEEPBOOP_TEST_POSTGRES_URL"
#: The local cluster CI and the dev machines have: 127.0.0.1:5432, trust auth.
DEFAULT_ADMIN_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)
START_TIMEOUT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 3


def missing_postgres(reason: str) -> None:
    """Skip with ``reason``; under ``CI=true`` fail instead (CI must run these tests)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and PostgreSQL is required: {reason}", pytrace=False)
    pytest.skip(reason)


def _libpq_url(url: str) -> str:
    """A SQLAlchemy-style ``postgresql+psycopg://`` URL as libpq wants it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _try_connect(url: str) -> str | None:
    """None if ``url`` answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(_libpq_url(url), connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first}"


def _start_local_cluster() -> None:
    """Start the Debian-packaged cluster(s) if the tools are installed (no-op otherwise)."""
    ctl = shutil.which("pg_ctlcluster")
    versions = Path("/etc/postgresql")
    if ctl is None or not versions.is_dir():
        return
    for version in sorted(path.name for path in versions.iterdir()):
        subprocess.run(
            [ctl, "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            timeout=60,
            check=False,
        )


def find_admin_url() -> str:
    """A libpq URL of a reachable PostgreSQL (any database on it), or skip/fail saying why."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing_postgres("PostgreSQL tests need the psycopg driver (pip install 'psycopg[binary]')")
    override = os.environ.get(POSTGRES_ENV)
    candidates = (_libpq_url(override),) if override else DEFAULT_ADMIN_URLS
    reasons: list[str] = []
    for url in candidates:
        if (why := _try_connect(url)) is None:
            return url
        reasons.append(why)
    # Only the local default cluster is ours to start; an explicit server is not.
    if not override:
        _start_local_cluster()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            for url in candidates:
                if _try_connect(url) is None:
                    return url
            time.sleep(0.5)  # a condition poll while the cluster starts, not a test wait
    missing_postgres(f"PostgreSQL is not reachable at {candidates[0]} ({reasons[0]})")
    raise AssertionError("unreachable")  # pragma: no cover - skip/fail raised


class PostgresDatabases:
    """Makes fresh, empty PostgreSQL databases; :meth:`close` drops every one it made."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.made: list[str] = []

    def create(self) -> str:
        """A new empty database; its URL as the server's config takes it (psycopg 3 driver)."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        name = f"obb_it_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        params = conninfo_to_dict(make_conninfo(self.admin_url, dbname=name))
        user = params.get("user", "")
        host = params.get("host", "127.0.0.1")
        port = params.get("port", "5432")
        password = params.get("password")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        return f"postgresql+psycopg://{auth}{host}:{port}/{name}"

    def close(self) -> None:
        """Drop every database made here (``WITH (FORCE)``: a killed server's sessions too)."""
        import psycopg

        if not self.made:
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()
