"""Two server replicas on one PostgreSQL database; one is SIGKILLed while jobs run.

A node and a client are each given both URLs (docs/node.md and
docs/client.md, "Several server URLs"). The first replica dies with
``kill -9`` mid-run: the node moves to the survivor, every job ends
``COMPLETED`` with its own answer, each result is recorded once, and the
client's ``poll`` and ``get`` answer through the survivor.

The two-replica harness here (:func:`replica_pair`) is the minimum this test
needs: a fresh database per test, created and dropped here, and a second
server that shares the first one's config but its port, as an operator
would run it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cluster import Cluster, Server, parse_json_output
from openbeepboop import Client
from openbeepboop_testkit.processes import free_port, wait_until
from openbeepboop_testkit.standin import StandinLLM

#: Where the test's database is created (trust auth on loopback, as in CI).
POSTGRES_ENV = "OPENBEEPBOOP_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Short leases, so that a lease lost with the killed replica comes back quickly.
LEASE_SECONDS = 6
JOBS = 24


@dataclass
class PgServer(Server):
    """A server whose database is the test's PostgreSQL database."""

    pg_url: str = ""

    @property
    def database_url(self) -> str:
        return self.pg_url


def _unavailable(why: str) -> None:
    """A failure under CI (where PostgreSQL must run: SPEC 13), a skip on a laptop."""
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    try:
        import psycopg  # the server's [postgresql] extra
    except ImportError:
        _unavailable("the PostgreSQL replica test needs openbeepboop-server[postgresql]")
    admin_url = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_URL)
    try:
        admin = psycopg.connect(
            admin_url.replace("postgresql+psycopg://", "postgresql://", 1),
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL is not reachable at {admin_url}: {exc}")
    name = f"obb_failover_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def replica_pair(cluster: Cluster, database_url: str) -> tuple[PgServer, PgServer]:
    """Two started ``openbeepboop-server`` processes on one database.

    The first is set up (migrations applied once, admin key printed); the
    second gets the same config with its own port, then both are started.
    """
    first = PgServer(
        cluster, "replica-a", cluster.root / "replica-a", free_port(), pg_url=database_url
    )
    first.setup(lease_seconds=LEASE_SECONDS)
    second = PgServer(
        cluster, "replica-b", cluster.root / "replica-b", free_port(), pg_url=database_url
    )
    second.dir.mkdir(parents=True)
    second.config.write_text(first.config.read_text())
    second.config.chmod(0o600)
    second.edit_config("server", port=second.port)
    second.admin_key = first.admin_key
    first.start()
    second.start()
    return first, second


def test_node_and_client_move_to_the_survivor_when_a_replica_is_killed(
    cluster: Cluster, llm: StandinLLM, pg_database: str
) -> None:
    first, second = replica_pair(cluster, pg_database)
    user_key = first.create_key("USER", "user")
    node_key = first.create_key("NODE", "node")
    both = ["--server-url", f"{first.url},{second.url}"]

    node = cluster.node(
        first,
        node_key,
        "node-1",
        "m",
        "openai/m",
        llm.base_url,
        4,
        more=["--server-url", second.url],
    )
    node.run()  # it starts (imports LiteLLM) while the client is set up
    client_config = cluster.root / "clients" / "both" / "client_config.toml"
    client_config.parent.mkdir(parents=True)
    cluster.client(
        "setup", "--non-interactive", "--config", str(client_config), "--api-key", user_key, *both
    )

    llm.configure(delay=0.3)  # slow enough that jobs are running when the replica dies
    prompts = [f"failover prompt #{i}" for i in range(JOBS)]
    api = cluster.api(first, user_key)
    ids = api.submit_many(prompts, "m")
    survivor = cluster.api(second, user_key)

    def some_completed() -> bool:
        return sum(e["status"] == "COMPLETED" for e in survivor.poll(ids)) >= 4

    wait_until(some_completed, 120, "the first jobs to complete")
    first.kill()

    # The client, given both URLs, answers through the survivor.
    polled = cluster.client("poll", *ids, "--wait", "--config", str(client_config), timeout=180)
    entries = parse_json_output(polled.stdout)
    assert [entry["id"] for entry in entries] == ids
    done = survivor.wait_terminal(ids)
    assert {entry["status"] for entry in done.values()} == {"COMPLETED"}
    for job_id, prompt in zip(ids, prompts, strict=True):
        entry = done[job_id]
        assert entry["result"]["choices"][0]["message"]["content"] == f"Echo: {prompt}"
    counts = llm.prompt_counts()
    for job_id, prompt in zip(ids, prompts, strict=True):
        # Each prompt reached the LLM once, unless its lease died with the
        # replica that handed it out (the fetch's answer never arrived): then
        # it ran again after the lease expired, as a new attempt.
        assert 1 <= counts[prompt] <= done[job_id]["attempts"], (prompt, counts[prompt])
    # The library, given both URLs (the dead one first), too.
    with Client(base_url=[first.url, second.url], api_key=user_key) as library:
        assert library.jobs.get(ids[0]).status == "COMPLETED"
        assert library.base_url == second.url
    assert node.proc is not None and node.proc.running  # the node is still working
