"""submit, poll, cancel, list, models — output and one-line failures."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import respx
from conftest import (
    API_KEY,
    Cli,
    assert_one_line_error,
    completion_body,
    entry_body,
    error_body,
    job_body,
)
from openbeepboop import _constants


def test_submit_prints_exactly_the_job_line(server: respx.MockRouter, cli: Cli) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body("job-abc"))
    result = cli("submit", "Write a poem about rust.")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Job submitted successfully. ID: job-abc\n"
    body = json.loads(route.calls.last.request.content)
    assert body == {
        "model": "llama3",  # default_model from the config file
        "messages": [{"role": "user", "content": "Write a poem about rust."}],
    }
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_submit_model_and_system_flags(server: respx.MockRouter, cli: Cli) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body("job-abc"))
    cli("submit", "Hi", "--model", "qwen", "--system", "Be brief.")
    body = json.loads(route.calls.last.request.content)
    assert body["model"] == "qwen"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}


def test_submit_json(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-abc"))
    result = cli("submit", "Hi", "--json")
    assert json.loads(result.stdout) == {**job_body("job-abc"), "warnings": []}


def test_submit_wait_prints_the_poll_array(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-abc"))
    done = entry_body("job-abc", "COMPLETED")
    poll = server.post("/v1/results/poll").mock(
        side_effect=[
            httpx.Response(200, json=[entry_body("job-abc", "PROCESSING")]),
            httpx.Response(200, json=[done]),
        ]
    )
    result = cli("submit", "Hi", "--wait")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [done]
    assert all(json.loads(call.request.content)["wait"] > 0 for call in poll.calls)


def test_submit_wait_timeout(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-abc"))
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-abc", "QUEUED")])
    result = cli("submit", "Hi", "--wait", "--timeout", "0.05")
    assert result.exit_code == 124
    # stdout keeps the contract: the poll array, as it stands.
    assert [entry["status"] for entry in json.loads(result.stdout)] == ["QUEUED"]
    # Without a terminal: one line when the wait starts (the id, in case it is cut
    # short), one when it ends, saying the truth about a queued job.
    started, ended = result.stderr.splitlines()
    assert started == "Waiting for job job-abc (model llama3), up to 0.05s..."
    assert ended.startswith("Error: job job-abc is still QUEUED after waiting 0.05s")
    assert "stays queued on the server" in ended and "keep" not in ended
    assert ended.endswith("Collect it later with: openbeepboop-client poll job-abc")


def test_poll_prints_indented_json_array(server: respx.MockRouter, cli: Cli) -> None:
    entries = [entry_body("job-1", "COMPLETED"), entry_body("job-2", "QUEUED")]
    route = server.post("/v1/results/poll").respond(200, json=entries)
    result = cli("poll", "job-1", "job-2")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == entries
    assert result.stdout.startswith('[\n  {\n    "id": "job-1"')
    assert json.loads(route.calls.last.request.content) == {"ids": ["job-1", "job-2"]}


def test_poll_wait(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/results/poll").mock(
        side_effect=[
            httpx.Response(200, json=[entry_body("job-1", "QUEUED")]),
            httpx.Response(200, json=[entry_body("job-1", "FAILED")]),
        ]
    )
    result = cli("poll", "job-1", "--wait")
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["status"] == "FAILED"


def test_poll_unknown_id_prints_and_fails(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-nope", "NOT_FOUND")])
    result = cli("poll", "job-nope")
    assert json.loads(result.stdout)[0]["status"] == "NOT_FOUND"
    assert_one_line_error(result, "no such job: job-nope")


def test_unreachable_server(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/chat/completions").mock(side_effect=httpx.ConnectError("Connection refused"))
    result = cli("submit", "Hi")
    assert_one_line_error(result, "could not connect", "http://obb.test", "Connection refused")


def test_really_unreachable_server(tmp_path: Path) -> None:
    # No mock at all: a real connection attempt to a closed loopback port.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "c.toml"
    config.write_text(
        f'server_url = "http://127.0.0.1:{port}"\napi_key = "sk-x"\nmax_retries = 0\n'
    )
    result = Cli(config)("poll", "job-1")
    assert_one_line_error(result, f"127.0.0.1:{port}")


def test_bad_key(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/results/poll").respond(401, json=error_body("invalid API key", "auth"))
    result = cli("poll", "job-1")
    assert_one_line_error(result, "rejected the API key", "invalid API key")
    assert API_KEY not in result.stderr


def test_wrong_role(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/chat/completions").respond(403, json=error_body("NODE keys may not"))
    assert_one_line_error(cli("submit", "Hi"), "may not", "403")


def test_missing_config(tmp_path: Path) -> None:
    result = Cli(tmp_path / "missing.toml")("submit", "Hi")
    assert_one_line_error(result, "missing.toml", "does not exist", "setup")


def test_no_config_anywhere(monkeypatch: object, tmp_path: Path) -> None:
    result = Cli(tmp_path / "unused.toml")("poll", "job-1", config=False)
    assert_one_line_error(result, "no server URL", _constants.ENV_SERVER_URL)


def test_environment_overrides_the_config_file(
    server: respx.MockRouter, cli: Cli, monkeypatch: object
) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    other = respx.mock(base_url="http://other.test", assert_all_called=False)
    with other:
        route = other.post("/v1/results/poll").respond(200, json=[entry_body("job-1")])
        monkeypatch.setenv(_constants.ENV_SERVER_URL, "http://other.test")
        assert cli("poll", "job-1").exit_code == 0
        assert route.called


def test_cancel_says_what_each_cancel_did(server: respx.MockRouter, cli: Cli) -> None:
    before = {
        "job-1": "QUEUED",
        "job-2": "COMPLETED",
        "job-3": "CANCELLED",
        "job-4": "PROCESSING",
        "job-5": "FAILED",
    }
    after = {**before, "job-1": "CANCELLED", "job-3": "CANCELLED", "job-4": "COMPLETED"}
    server.post("/v1/results/poll").mock(
        side_effect=lambda request: httpx.Response(
            200, json=[entry_body(i, before[i]) for i in json.loads(request.content)["ids"]]
        )
    )
    for job_id, status in after.items():
        server.post(f"/v1/jobs/{job_id}/cancel").respond(200, json=entry_body(job_id, status))
    result = cli("cancel", *before)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "job-1: CANCELLED (was QUEUED)",
        "job-2: already COMPLETED; not cancelled (its result stays)",
        "job-3: already CANCELLED (nothing to do)",
        "job-4: COMPLETED before the cancel reached it; not cancelled",
        "job-5: already FAILED; not cancelled (nothing to cancel)",
    ]
    as_json = cli("cancel", "job-1", "--json")
    assert json.loads(as_json.stdout) == [entry_body("job-1", "CANCELLED")]


def test_cancel_unknown(server: respx.MockRouter, cli: Cli) -> None:
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-9", "NOT_FOUND")])
    server.post("/v1/jobs/job-9/cancel").respond(404, json=error_body("no such job: job-9"))
    assert_one_line_error(cli("cancel", "job-9"), "no such job: job-9")


def test_list(server: respx.MockRouter, cli: Cli) -> None:
    route = server.get("/v1/jobs").respond(
        200,
        json={
            "object": "list",
            "data": [entry_body("job-2", "FAILED")],
            "has_more": True,
            "next_after": "job-2",
        },
    )
    result = cli("list", "--status", "failed", "--limit", "1")
    assert result.exit_code == 0
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "MODEL", "CREATED"]
    assert row.split() == ["job-2", "FAILED", "llama3", "2023-11-14", "22:13:20Z"]
    # Columns line up under their names.
    assert [header.index(name) for name in ("STATUS", "MODEL", "CREATED")] == [
        row.index(cell) for cell in ("FAILED", "llama3", "2023-11-14")
    ]
    assert "--after job-2" in result.stderr
    assert dict(route.calls.last.request.url.params) == {"status": "FAILED", "limit": "1"}
    as_json = cli("list", "--json")
    assert json.loads(as_json.stdout)["data"][0]["id"] == "job-2"


def test_models(server: respx.MockRouter, cli: Cli) -> None:
    server.get("/v1/models").respond(
        200, json={"object": "list", "data": [{"id": "llama3"}, {"id": "qwen"}]}
    )
    assert cli("models").stdout.split() == ["llama3", "qwen"]


def test_usage_errors_are_not_tracebacks(cli: Cli) -> None:
    result = cli("poll")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr


def test_submit_without_any_model(server: respx.MockRouter, tmp_path: Path) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body())
    config = tmp_path / "c.toml"
    config.write_text(f'server_url = "http://obb.test"\napi_key = "{API_KEY}"\n')
    assert_one_line_error(Cli(config)("submit", "Hi"), "no model", "--model")
    assert not route.called


def test_a_refusal_within_the_role_gets_no_advice_to_change_role(
    server: respx.MockRouter, cli: Cli
) -> None:
    """A priority over the key's ceiling is a 403 of a USER key: "use a USER key" would mislead."""
    message = "priority 5 is above this API key's max_priority of 0"
    server.post("/v1/chat/completions").respond(
        403, json=error_body(message, "permission_error", code="priority_above_ceiling")
    )
    result = cli("submit", "Hi", "--priority", "5")
    assert_one_line_error(result, message)
    assert "USER or ADMIN" not in result.stderr


def test_a_key_of_the_wrong_role_is_told_which_roles_may(
    server: respx.MockRouter, cli: Cli
) -> None:
    message = "a node key may not call this endpoint (allowed roles: admin, user)"
    server.post("/v1/chat/completions").respond(
        403, json=error_body(message, "permission_error", code="insufficient_role")
    )
    result = cli("submit", "Hi")
    assert_one_line_error(result, message, "use a USER or ADMIN key")


def test_a_server_that_is_not_openbeepboop_is_named_as_the_likely_cause(
    server: respx.MockRouter, cli: Cli
) -> None:
    """An LLM backend answers a submit with a chat.completion, not a job."""
    server.post("/v1/chat/completions").respond(200, json=completion_body())
    result = cli("submit", "Hi")
    assert_one_line_error(result, "wire contract", "is server_url the address of an OpenBeepBoop")
