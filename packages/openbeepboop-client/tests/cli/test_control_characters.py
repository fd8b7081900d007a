"""Names and messages from the server reach the terminal with their control characters escaped.

The server refuses control characters in model names now, but a name stored
by an older version, or a backend's error message, may still hold them: an
ANSI sequence would act on the user's terminal and a newline forge a line.
"""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from click.testing import Result
from conftest import Cli, completion_body, entry_body, job_body
from openbeepboop.cli import jobs as jobs_command

#: Clear screen, home, terminal title, colour, and a forged line.
HOSTILE = "\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b[31mALL NODES DOWN\x1b[0m\nfake line"
SHOWN = "\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07\\x1b[31mALL NODES DOWN\\x1b[0m\\x0afake line"


def _inert(text: str) -> list[str]:
    lines = text.splitlines()
    assert all(line.isprintable() for line in lines), lines
    assert not any(line.startswith("fake line") for line in lines)
    return lines


def test_models_prints_a_hostile_name_escaped(server: respx.MockRouter, cli: Cli) -> None:
    server.get("/v1/models").respond(
        200, json={"object": "list", "data": [{"id": HOSTILE}, {"id": "llama3"}]}
    )
    result = cli("models")
    assert result.exit_code == 0, result.stderr
    assert _inert(result.stdout) == [SHOWN, "llama3"]


def test_list_prints_a_hostile_model_escaped(server: respx.MockRouter, cli: Cli) -> None:
    server.get("/v1/jobs").respond(
        200, json={"object": "list", "data": [entry_body("job-2", "QUEUED", model=HOSTILE)]}
    )
    result = cli("list")
    assert result.exit_code == 0, result.stderr
    _header, row = _inert(result.stdout)
    assert row.startswith("job-2  QUEUED  " + SHOWN + "  ")


def test_status_prints_hostile_names_and_messages_escaped(
    server: respx.MockRouter, cli: Cli
) -> None:
    server.get("/v1/status").respond(
        200,
        json={
            "generated_at": 1_000.0,
            "window_seconds": 300.0,
            "node_seen_seconds": 300.0,
            "models": [{"model": HOSTILE, "queued": 200}],
            "recent_failures": [
                {
                    "job_id": "job-bad",
                    "model": HOSTILE,
                    "error_message": "\x1b[31mboom\x1b[0m",
                    "failed_at": 900.0,
                }
            ],
        },
    )
    result = cli("status")
    assert result.exit_code == 0, result.stderr
    lines = _inert(result.stdout)
    assert any(line.startswith(SHOWN + "  200") for line in lines)
    assert any("\\x1b[31mboom\\x1b[0m" in line for line in lines)


@pytest.fixture
def stdout_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """``submit --wait`` believes a person reads its stdout: it prints the answer's text."""
    monkeypatch.setattr(jobs_command, "stdout_is_terminal", lambda: True)


def _error_line(result: Result) -> str:
    """The one line ``submit --wait`` ends with when there is no answer (exit 1, stdout empty)."""
    assert result.exit_code == 1, result.stderr
    assert result.stdout == ""
    _waiting, error = _inert(result.stderr)
    assert error.startswith("Error: ")
    return error


def _finishes(server: respx.MockRouter, final: dict) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-abc"))
    server.post("/v1/results/poll").mock(side_effect=[httpx.Response(200, json=[final])])


@pytest.mark.usefixtures("stdout_terminal")
def test_a_failed_jobs_hostile_error_message_is_one_escaped_line(
    server: respx.MockRouter, cli: Cli
) -> None:
    error = {"message": "\x1b[31mbackend down\x1b[0m\nError: forged", "type": "inference_error"}
    _finishes(server, entry_body("job-abc", "FAILED", attempts=1, error=error))
    result = cli("submit", "Hi", "--wait")
    assert _error_line(result).endswith(": \\x1b[31mbackend down\\x1b[0m\\x0aError: forged")


@pytest.mark.usefixtures("stdout_terminal")
def test_an_old_result_without_choices_is_no_answer_not_an_empty_one(
    server: respx.MockRouter, cli: Cli
) -> None:
    _finishes(server, entry_body("job-abc", "COMPLETED", result=completion_body(choices=[])))
    result = cli("submit", "Hi", "--wait")
    assert "job-abc is COMPLETED but its result holds no choice" in _error_line(result)


def test_json_output_escapes_what_a_terminal_would_act_on(
    server: respx.MockRouter, cli: Cli
) -> None:
    """``poll`` prints JSON: C1 controls, DEL, separators and bidi overrides as JSON escapes.

    C0 controls json.dumps escapes anyway; the others it would write raw with
    ``ensure_ascii=False``, and U+009B is a CSI to a UTF-8 terminal. The JSON
    still parses to exactly the text the server sent, and other non-ASCII
    text stays as it is.
    """
    content = "\x9b2J\x7f\u2028\u202eevil\u2066 naïve 日本"
    entries = [entry_body("job-1", "COMPLETED", result=completion_body(content))]
    server.post("/v1/results/poll").respond(200, json=entries)
    result = cli("poll", "job-1")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == entries
    assert "\\u009b2J\\u007f\\u2028\\u202eevil\\u2066 naïve 日本" in result.stdout
    assert _inert(result.stdout)
