"""Waiting commands outlast a server restart; the others fail as before."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
from conftest import API_KEY, BASE_URL, Cli, assert_one_line_error, batch_body
from openbeepboop import _constants
from openbeepboop._config import write_config_file
from openbeepboop.cli import server_batch, waiting
from openbeepboop_schemas import OPENAI_BATCH_PATH
from restartable_server import RestartableServer

#: Safety net of every wait here: generous on a slow, shared box.
SAFETY_SECONDS = 60.0


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RestartableServer]:
    monkeypatch.setattr(_constants, "WAIT_OUTAGE_SECONDS", SAFETY_SECONDS)
    made = RestartableServer("QUEUED")
    yield made
    made.stop()


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once the command has said, on stderr, that the server is unreachable."""
    event = threading.Event()
    original = waiting.Unwatched.unreachable

    def tell(progress: waiting.Unwatched, message: str) -> None:
        original(progress, message)
        event.set()

    monkeypatch.setattr(waiting.Unwatched, "unreachable", tell)
    return event


def restart_cli(tmp_path: Path, server: RestartableServer) -> tuple[Cli, Path]:
    config = tmp_path / "restart_config.toml"
    write_config_file(config, {"server_url": server.url, "api_key": API_KEY})
    ids = tmp_path / "prompts.ids.jsonl"
    lines = [{"custom_id": f"q{n}", "job_id": f"job-{n}"} for n in (1, 2)]
    ids.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return Cli(config), ids


@pytest.mark.parametrize("command", [["results", "--wait"], ["wait"]])
def test_results_wait_rides_out_a_server_restart(
    tmp_path: Path, server: RestartableServer, told: threading.Event, command: list[str]
) -> None:
    cli, ids = restart_cli(tmp_path, server)

    def restart() -> None:
        assert server.answered.wait(SAFETY_SECONDS)
        server.stop()
        assert told.wait(SAFETY_SECONDS)
        server.status = "COMPLETED"
        server.start()

    restarter = threading.Thread(target=restart, daemon=True)
    restarter.start()
    out = tmp_path / "answers.jsonl"
    result = cli(*command, str(ids), "-o", str(out), "--no-progress")
    restarter.join(SAFETY_SECONDS)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1, result.stderr
    assert "the server does not answer" in warnings[0]
    assert "Ctrl-C stops waiting" in warnings[0]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["custom_id"] for line in written] == ["q1", "q2"]


def test_results_wait_ends_when_the_server_stays_gone(
    tmp_path: Path, server: RestartableServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_constants, "WAIT_OUTAGE_SECONDS", 0.2)
    cli, ids = restart_cli(tmp_path, server)
    server.stop()
    result = cli("results", "--wait", str(ids), "--no-progress")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("Warning: the server does not answer")
    assert lines[1].startswith("Error: could not connect to the server")


def test_results_without_wait_keeps_the_plain_retry_budget(
    tmp_path: Path, server: RestartableServer
) -> None:
    cli, ids = restart_cli(tmp_path, server)
    server.stop()
    result = cli("results", str(ids))
    assert_one_line_error(result, "could not connect to the server")


def test_batch_status_wait_rides_out_503s(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_batch, "POLL_SECONDS", 0.001)
    with respx.mock(base_url=BASE_URL) as router:
        router.get(OPENAI_BATCH_PATH.format(batch_id="batch_1")).mock(
            side_effect=[
                respx.MockResponse(200, json=batch_body("in_progress")),
                *[respx.MockResponse(503) for _ in range(5)],  # more than max_retries + 1
                respx.MockResponse(200, json=batch_body("completed")),
            ]
        )
        result = cli("batch", "status", "batch_1", "--wait")
    assert result.exit_code == 0, result.stderr
    assert "batch_1: completed (2 completed, 0 failed of 2)" in result.stdout
    assert result.stderr.count("Warning: the server does not answer") == 1
