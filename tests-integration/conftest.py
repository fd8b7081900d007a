"""Fixtures for tests with real processes: a temp world per test, logs on failure."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from openbeepboop_testkit.processes import ProcessSet
from openbeepboop_testkit.standin import StandinLLM

#: Where a failed test's report is stored for the fixture teardown to see.
REPORT_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    item.stash.setdefault(REPORT_KEY, {})[report.when] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(REPORT_KEY, {})
    return any(report.failed for report in reports.values())


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
