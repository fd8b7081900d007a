"""submit and submit-file print the server's warnings; --wait talks and can end (--timeout)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx
from conftest import Cli, entry_body, job_body
from openbeepboop.cli import jobs as jobs_command
from openbeepboop.cli import waiting

WARNING = {
    "code": "model_not_served",
    "model": "nobody",
    "message": 'no node serving model "nobody" has been seen in the last 150 s; the job is queued',
}


def test_submit_prints_the_warning_on_stderr_once(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/chat/completions").respond(
        202, json={**job_body("job-abc", model="nobody"), "warnings": [WARNING]}
    )
    result = cli("submit", "Hi", "--model", "nobody")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Job submitted successfully. ID: job-abc\n"  # unchanged
    # One line: the library's own log of it is not printed a second time.
    assert result.stderr == f"Warning: {WARNING['message']}\n"


def test_submit_file_prints_one_warning_per_model(
    tmp_path: Path, cli: Cli, server: respx.MockRouter
) -> None:
    lines = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "nobody", "messages": [{"role": "user", "content": str(i)}]},
        }
        for i in range(3)
    ]
    source = tmp_path / "p.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    server.post("/v1/chat/completions/bulk").respond(
        202,
        json={"data": [job_body(model="nobody") for _ in lines], "warnings": [WARNING]},
    )
    result = cli("submit-file", str(source))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Submitted 3 jobs.")
    assert result.stderr == f"Warning: {WARNING['message']}\n"


def test_poll_wait_timeout_names_every_unfinished_job(server: respx.MockRouter, cli: Cli) -> None:
    status = {"job-1": "COMPLETED", "job-2": "QUEUED", "job-3": "PROCESSING"}

    def answer(request: httpx.Request) -> httpx.Response:
        ids = json.loads(request.content)["ids"]
        return httpx.Response(200, json=[entry_body(i, status[i], attempts=1) for i in ids])

    server.post("/v1/results/poll").mock(side_effect=answer)
    result = cli("poll", "job-1", "job-2", "job-3", "--wait", "--timeout", "0.05")
    assert result.exit_code == 124
    assert [entry["status"] for entry in json.loads(result.stdout)] == [
        "COMPLETED",
        "QUEUED",
        "PROCESSING",
    ]
    (line,) = result.stderr.splitlines()  # quiet without a terminal, then one line
    assert line.startswith("Error: 2 jobs are not finished (1 PROCESSING, 1 QUEUED)")
    assert "queued ones until a node takes them" in line
    assert line.endswith("Collect them later with: openbeepboop-client poll job-2 job-3")


def test_many_unfinished_ids_are_not_all_spelled_out(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/results/poll").mock(
        side_effect=lambda request: httpx.Response(
            200, json=[entry_body(i, "QUEUED") for i in json.loads(request.content)["ids"]]
        )
    )
    ids = [f"job-{n}" for n in range(8)]
    result = cli("poll", *ids, "--wait", "--timeout", "0")
    assert result.exit_code == 124
    assert "poll job-0 job-1 job-2 job-3 job-4 ... (3 more;" in result.stderr
    assert len(json.loads(result.stdout)) == 8


def test_ctrl_c_says_nothing_was_cancelled(server: respx.MockRouter, cli: Cli) -> None:
    def interrupt(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt

    server.post("/v1/results/poll").mock(side_effect=interrupt)
    result = cli("poll", "job-1", "--wait")
    assert result.exit_code == 130
    assert result.stderr.strip() == (
        "Error: stopped waiting; nothing was cancelled. "
        "Collect it later with: openbeepboop-client poll job-1"
    )


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands believe stderr is a terminal (CliRunner's is not)."""
    monkeypatch.setattr(jobs_command, "stderr_is_terminal", lambda: True)
    monkeypatch.setattr(waiting, "stderr_is_terminal", lambda: True)


@pytest.mark.usefixtures("terminal")
def test_submit_wait_on_a_terminal_shows_what_it_waits_for(
    server: respx.MockRouter, cli: Cli
) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-abc"))
    done = entry_body("job-abc", "COMPLETED", attempts=1)
    server.post("/v1/results/poll").mock(
        side_effect=[
            httpx.Response(200, json=[entry_body("job-abc", "QUEUED")]),
            httpx.Response(200, json=[entry_body("job-abc", "PROCESSING", attempts=1)]),
            httpx.Response(200, json=[done]),
        ]
    )
    result = cli("submit", "Hi", "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [done]
    assert "Waiting for job-abc (llama3): QUEUED, no node has taken it yet" in result.stderr
    assert "Waiting for job-abc (llama3): PROCESSING, attempt 1" in result.stderr
    assert " of 60s" in result.stderr
    # The line is erased at the end, and there is no separate start line.
    assert result.stderr.endswith("\r\x1b[K")
    assert "..." not in result.stderr


@pytest.mark.usefixtures("terminal")
def test_poll_wait_on_a_terminal_counts_queued_and_running(
    server: respx.MockRouter, cli: Cli
) -> None:
    rounds = iter(
        [
            {"job-1": "QUEUED", "job-2": "QUEUED", "job-3": "COMPLETED"},
            {"job-1": "PROCESSING", "job-2": "QUEUED"},
            {"job-1": "COMPLETED", "job-2": "COMPLETED"},
        ]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        status = next(rounds)
        ids = json.loads(request.content)["ids"]
        return httpx.Response(200, json=[entry_body(i, status[i]) for i in ids])

    server.post("/v1/results/poll").mock(side_effect=answer)
    result = cli("poll", "job-1", "job-2", "job-3", "--wait")
    assert result.exit_code == 0, result.stderr
    assert "Waiting for 3 jobs (llama3): 2 queued, 0 running, 1 finished" in result.stderr
    assert "Waiting for 3 jobs (llama3): 1 queued, 1 running, 1 finished" in result.stderr


def test_a_queued_job_waiting_for_a_retry_is_not_called_untaken(
    server: respx.MockRouter, cli: Cli
) -> None:
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "QUEUED", attempts=2)])
    result = cli("poll", "job-1", "--wait", "--timeout", "0.05")
    assert result.exit_code == 124
    (line,) = result.stderr.splitlines()
    assert "attempt 2 did not succeed, and it stays queued on the server to be retried" in line
    assert "no node has taken it" not in line
