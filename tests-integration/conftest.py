"""Fixtures for tests with real processes: a temp world per test, logs on failure.

Most tests share one queue server (``shared``), started once per session:
setting up and starting a server costs several seconds of a two-core
machine, and the queue keeps tests apart by itself when each test uses its own
model names, node ids and keys (``tag``). Tests that stop, kill or reconfigure
a server start their own through ``cluster.server()``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster import Cluster, Server
from openai_world import OpenAIWorld, start_world
from openbeepboop_testkit.processes import ProcessSet
from openbeepboop_testkit.standin import StandinLLM
from postgres import PostgresDatabases, find_admin_url

#: Where a test's reports are kept for fixture teardowns to see.
REPORT_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
#: The shared server's lease: short enough for expiry and cancel tests
#: (nodes heartbeat every third of it), long enough for a loaded machine.
SHARED_LEASE_SECONDS = 6
SHARED_RETRY_BACKOFF_SECONDS = 0.5


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    item.stash.setdefault(REPORT_KEY, {})[report.when] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(REPORT_KEY, {})
    return any(report.failed for report in reports.values())


@dataclass
class Shared:
    """The session's shared server and the keys every test may use."""

    cluster: Cluster
    server: Server
    node_key: str
    user_key: str


@pytest.fixture(scope="session")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    root = tmp_path_factory.mktemp("shared")
    procs = ProcessSet(root / "logs")
    world = Cluster(root, procs)
    try:
        server = world.server(
            lease_seconds=SHARED_LEASE_SECONDS, retry_backoff_seconds=SHARED_RETRY_BACKOFF_SECONDS
        )
        server.start()
        node_key = server.create_key("NODE", "shared-nodes")
        user_key = server.create_key("USER", "shared-user")
        yield Shared(world, server, node_key, user_key)
    finally:
        procs.stop_all()
        world.close()


@pytest.fixture
def shared(shared_world: Shared, request: pytest.FixtureRequest) -> Iterator[Shared]:
    """The shared server (restarted if an earlier test broke it); its log is shown on failure."""
    if shared_world.server.proc is None or not shared_world.server.proc.running():
        shared_world.server.start()
    yield shared_world
    if _failed(request):
        sys.stdout.write("\n(shared server, whole session so far)")
        shared_world.cluster.procs.dump_logs(sys.stdout)


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    """A short name unique to this test, for its models, node ids and key names."""
    return "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]


@pytest.fixture
def procs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ProcessSet]:
    """The processes a test starts: all stopped afterwards, their logs printed if it failed."""
    processes = ProcessSet(tmp_path / "logs")
    try:
        yield processes
    finally:
        processes.stop_all()
        if _failed(request):
            processes.dump_logs(sys.stdout)


@pytest.fixture
def cluster(tmp_path: Path, procs: ProcessSet) -> Iterator[Cluster]:
    """A fresh world: config dirs, XDG dirs and processes under ``tmp_path``."""
    world = Cluster(tmp_path, procs)
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def llm() -> Iterator[StandinLLM]:
    """A stand-in OpenAI-compatible LLM on loopback (answers "Echo: <prompt>")."""
    with StandinLLM() as standin:
        yield standin


@pytest.fixture(scope="session")
def oa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAIWorld]:
    """The OpenAI-SDK tests' server (short ``[openai]`` windows), node and stand-in LLM."""
    yield from start_world(tmp_path_factory.mktemp("openai"))


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    """Fresh PostgreSQL databases for this session, all dropped at its end.

    Skips when no PostgreSQL is reachable, and fails instead under ``CI=true``
    (see postgres.py).
    """
    databases = PostgresDatabases(find_admin_url())
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def postgres_url(postgres_databases: PostgresDatabases) -> str:
    """The URL of a new, empty, uniquely named PostgreSQL database for this test."""
    return postgres_databases.create()
