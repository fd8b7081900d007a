"""Server replicas on one fresh PostgreSQL database, for the replica scenarios.

:func:`fresh_database` creates a database of its own for one scenario and
drops it afterwards (``OPENBEEPBOOP_BENCH_POSTGRES_URL`` names the server to
use: trust auth on loopback by default, as on the development machine).
:func:`start_replicas` sets up the first replica (migrations, keys) and gives
every other one the same config with its own port, as an operator runs
them (docs/deploy.md).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from openbeepboop_testkit.processes import free_port

from harness.cluster import Cluster, Server

#: The PostgreSQL server a scenario's database is created on.
POSTGRES_ENV = "OPENBEEPBOOP_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database (its SQLAlchemy URL); dropped when the block ends."""
    admin_url = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_URL)
    name = f"obb_bench_{uuid.uuid4().hex[:12]}"
    plain = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backend_pids(database_url: str) -> list[int]:
    """PostgreSQL's server processes serving connections to this database now.

    Only these count as the database's CPU: other databases on the same
    PostgreSQL (the machine is shared) have backends of their own.
    """
    plain = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(row[0]) for row in rows]


@dataclass
class PgServer(Server):
    """A bench server (keys made at setup) whose database is on PostgreSQL."""

    pg_url: str = ""

    @property
    def database_url(self) -> str:
        return self.pg_url


def start_replicas(cluster: Cluster, database_url: str, count: int) -> list[PgServer]:
    """``count`` started replicas on ``database_url``, sharing keys and config."""
    first = PgServer(
        cluster, "replica-1", cluster.root / "replica-1", free_port(), pg_url=database_url
    )
    first.setup()
    replicas = [first]
    for index in range(2, count + 1):
        name = f"replica-{index}"
        other = PgServer(cluster, name, cluster.root / name, free_port(), pg_url=database_url)
        other.dir.mkdir(parents=True)
        text = first.config.read_text().replace(f"port = {first.port}", f"port = {other.port}")
        other.config.write_text(text)
        other.config.chmod(0o600)
        other.admin_key, other.node_key, other.user_key = (
            first.admin_key,
            first.node_key,
            first.user_key,
        )
        replicas.append(other)
    for replica in replicas:
        replica.start()
    return replicas
