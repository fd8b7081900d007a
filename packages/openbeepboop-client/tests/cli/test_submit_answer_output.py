"""``submit --wait``: the answer's text for a person, the poll JSON array for a script.

stdout a terminal → text; a pipe or file (CliRunner's) → JSON; ``--json`` and
``--text`` force one. The terminal is played by replacing the commands' one
detection function; tests-integration/test_seed_workflow.py runs the real
command on a real pseudo-terminal.
"""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from conftest import Cli, completion_body, entry_body, job_body
from openbeepboop import _constants
from openbeepboop.cli import jobs as jobs_command
from openbeepboop.cli import waiting
from openbeepboop_schemas import MAX_WAIT_SECONDS


@pytest.fixture
def stdout_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """``submit`` believes a person reads its stdout."""
    monkeypatch.setattr(jobs_command, "stdout_is_terminal", lambda: True)


def finishes(server: respx.MockRouter, final: dict, job_id: str = "job-abc") -> respx.Route:
    """Submit answers ``job_id``; the wait sees it PROCESSING on a node, then ``final``."""
    server.post("/v1/chat/completions").respond(202, json=job_body(job_id))
    return server.post("/v1/results/poll").mock(
        side_effect=[
            httpx.Response(
                200, json=[entry_body(job_id, "PROCESSING", attempts=1, node_id="gpu-box-1")]
            ),
            httpx.Response(200, json=[final]),
        ]
    )


def truncated_entry(job_id: str = "job-abc") -> dict:
    result = completion_body("Once upon a")
    result["choices"][0]["finish_reason"] = "length"
    result["usage"]["completion_tokens"] = 3
    return entry_body(job_id, "COMPLETED", result=result)


@pytest.mark.usefixtures("stdout_terminal")
def test_on_a_terminal_it_prints_only_the_answer(server: respx.MockRouter, cli: Cli) -> None:
    finishes(server, entry_body("job-abc", "COMPLETED"))
    result = cli("submit", "Hi", "--wait")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "answer to job-abc\n"
    assert "Note:" not in result.stderr


def test_piped_it_prints_the_poll_array(server: respx.MockRouter, cli: Cli) -> None:
    done = entry_body("job-abc", "COMPLETED")
    finishes(server, done)
    result = cli("submit", "Hi", "--wait")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [done]


@pytest.mark.usefixtures("stdout_terminal")
def test_json_forces_the_array_on_a_terminal(server: respx.MockRouter, cli: Cli) -> None:
    done = entry_body("job-abc", "COMPLETED")
    finishes(server, done)
    result = cli("submit", "Hi", "--wait", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [done]


def test_text_forces_the_answer_when_piped(server: respx.MockRouter, cli: Cli) -> None:
    finishes(server, entry_body("job-abc", "COMPLETED"))
    result = cli("submit", "Hi", "--wait", "--text")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "answer to job-abc\n"


def test_a_truncated_answer_is_marked_on_stderr(server: respx.MockRouter, cli: Cli) -> None:
    route = finishes(server, truncated_entry())
    result = cli("submit", "Tell a story", "--wait", "--text", "--max-tokens", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Once upon a\n"  # only the answer, for scripts
    note = result.stderr.splitlines()[-1]
    assert note.startswith("Note: the answer is truncated: it stopped at the token limit")
    assert "after 3 tokens" in note and "finish_reason: length" in note
    assert "--max-tokens" in note
    submitted = json.loads(server.calls[0].request.content)
    assert submitted["max_tokens"] == 3
    assert route.called


def test_a_truncated_answer_in_json_is_left_as_the_server_said(
    server: respx.MockRouter, cli: Cli
) -> None:
    finishes(server, truncated_entry())
    result = cli("submit", "Tell a story", "--wait")
    (entry,) = json.loads(result.stdout)
    assert entry["result"]["choices"][0]["finish_reason"] == "length"
    assert "Note:" not in result.stderr


@pytest.mark.parametrize(
    ("final", "line"),
    [
        (
            entry_body("job-abc", "FAILED", attempts=3),
            "Error: job job-abc FAILED after 3 attempts: model exploded",
        ),
        (
            entry_body("job-abc", "CANCELLED"),
            "Error: job job-abc was CANCELLED before it finished; it has no answer",
        ),
    ],
)
def test_no_answer_is_one_error_line_and_exit_1_in_text(
    server: respx.MockRouter, cli: Cli, final: dict, line: str
) -> None:
    finishes(server, final)
    result = cli("submit", "Hi", "--wait", "--text")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == line
    assert "Traceback" not in result.stderr


def test_no_answer_in_json_keeps_exit_0(server: respx.MockRouter, cli: Cli) -> None:
    finishes(server, entry_body("job-abc", "FAILED", attempts=3))
    result = cli("submit", "Hi", "--wait")
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["status"] == "FAILED"


def test_a_timeout_in_text_prints_no_answer_and_exits_124(
    server: respx.MockRouter, cli: Cli
) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-abc"))
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-abc", "QUEUED")])
    result = cli("submit", "Hi", "--wait", "--text", "--timeout", "0.05")
    assert result.exit_code == 124
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith("Error: job job-abc is still QUEUED")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("--wait", "--json", "--text"), "--json and --text exclude each other"),
        (("--text",), "--text prints the answer, so it needs --wait"),
    ],
)
def test_usage_errors(server: respx.MockRouter, cli: Cli, argv: tuple, fragment: str) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body("job-abc"))
    result = cli("submit", "Hi", *argv)
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert not route.called  # nothing was submitted


def test_progress_forces_the_status_line_with_the_node(server: respx.MockRouter, cli: Cli) -> None:
    polls = finishes(server, entry_body("job-abc", "COMPLETED"))
    result = cli("submit", "Hi", "--wait", "--progress")
    assert result.exit_code == 0, result.stderr
    assert "Waiting for job-abc (llama3): PROCESSING on gpu-box-1, attempt 1" in result.stderr
    assert "..." not in result.stderr  # the status line replaces the one start line
    # A watched wait long-polls briefly, so a job a node took shows within seconds.
    waits = [json.loads(call.request.content)["wait"] for call in polls.calls]
    assert waits and all(0 < wait <= _constants.WATCHED_WAIT_ROUND_SECONDS for wait in waits)


def test_an_unwatched_wait_long_polls_long(server: respx.MockRouter, cli: Cli) -> None:
    polls = finishes(server, entry_body("job-abc", "COMPLETED"))
    assert cli("submit", "Hi", "--wait").exit_code == 0
    waits = [json.loads(call.request.content)["wait"] for call in polls.calls]
    assert waits and all(wait == MAX_WAIT_SECONDS for wait in waits)


def test_no_progress_keeps_stderr_silent(
    server: respx.MockRouter, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_command, "stderr_is_terminal", lambda: True)
    monkeypatch.setattr(waiting, "stderr_is_terminal", lambda: True)
    finishes(server, entry_body("job-abc", "COMPLETED"))
    result = cli("submit", "Hi", "--wait", "--no-progress")
    assert result.exit_code == 0
    assert result.stderr == ""


def test_poll_prints_json_even_on_a_terminal(
    server: respx.MockRouter, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_command, "stdout_is_terminal", lambda: True)
    done = entry_body("job-abc", "COMPLETED")
    server.post("/v1/results/poll").respond(200, json=[done])
    result = cli("poll", "job-abc")
    assert json.loads(result.stdout) == [done]


def test_several_choices_are_each_headed(server: respx.MockRouter, cli: Cli) -> None:
    result_body = completion_body("first")
    result_body["choices"].append(
        {"index": 1, "message": {"role": "assistant", "content": "second"}, "finish_reason": "stop"}
    )
    finishes(server, entry_body("job-abc", "COMPLETED", result=result_body))
    result = cli("submit", "Hi", "--wait", "--text")
    assert result.stdout.splitlines() == [
        "--- choice 0 ---",
        "first",
        "--- choice 1 ---",
        "second",
    ]
