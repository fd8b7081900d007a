"""The ``batch`` group: retry-safe creates, no file left behind a refusal, exit by outcome."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx
from conftest import FILE, Cli, assert_one_line_error, batch_body, error_body
from openbeepboop import Client
from openbeepboop.cli import server_batch
from openbeepboop_schemas import (
    OPENAI_BATCH_PATH,
    OPENAI_BATCHES_PATH,
    OPENAI_FILE_CONTENT_PATH,
    OPENAI_FILE_PATH,
    OPENAI_FILES_PATH,
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("{}\n")
    return path


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_batch, "POLL_SECONDS", 0.001)


def test_a_retried_create_sends_the_same_idempotency_key(
    server: respx.MockRouter, cli: Cli, source: Path
) -> None:
    """The answer to the first create is lost (503 after the server may have made it):
    the retry carries the key of the first try, so the server answers that batch."""
    upload = server.post(OPENAI_FILES_PATH).respond(200, json=FILE)
    create = server.post(OPENAI_BATCHES_PATH).mock(
        side_effect=[
            respx.MockResponse(503, json=error_body("busy", "server_error")),
            respx.MockResponse(200, json=batch_body("validating")),
        ]
    )
    result = cli("batch", "create", str(source))
    assert result.exit_code == 0, result.stderr
    keys = [call.request.headers.get("Idempotency-Key") for call in create.calls]
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]
    assert upload.calls.last.request.headers.get("Idempotency-Key")


def test_a_lost_create_answer_names_the_key_that_makes_a_rerun_start_nothing_twice(
    server: respx.MockRouter, cli: Cli, source: Path
) -> None:
    """The create may have started the batch although its answer never came: the
    line gives the key, and the same command with it sends the same two keys."""
    upload = server.post(OPENAI_FILES_PATH).respond(200, json=FILE)
    create = server.post(OPENAI_BATCHES_PATH).mock(side_effect=httpx.ReadError("reset"))
    delete = server.delete(OPENAI_FILE_PATH.format(file_id="file-1")).respond(200, json={})
    result = cli("batch", "create", str(source))
    assert_one_line_error(result, "the batch may already be started", "--idempotency-key ")
    assert "retry)" not in result.stderr
    key = result.stderr.split("--idempotency-key ")[1].split(":")[0]
    assert upload.calls.last.request.headers["Idempotency-Key"] == f"{key}-file"
    assert {call.request.headers["Idempotency-Key"] for call in create.calls} == {f"{key}-batch"}
    assert not delete.called  # the batch may be reading it

    create.mock(side_effect=None, return_value=httpx.Response(200, json=batch_body("validating")))
    again = cli("batch", "create", str(source), "--idempotency-key", key)
    assert again.exit_code == 0, again.stderr
    assert upload.calls.last.request.headers["Idempotency-Key"] == f"{key}-file"
    assert create.calls.last.request.headers["Idempotency-Key"] == f"{key}-batch"


def test_a_gateway_timeout_on_create_leaves_the_uploaded_file(
    server: respx.MockRouter, cli: Cli, source: Path
) -> None:
    server.post(OPENAI_FILES_PATH).respond(200, json=FILE)
    server.post(OPENAI_BATCHES_PATH).respond(504, json=error_body("gateway timeout"))
    delete = server.delete(OPENAI_FILE_PATH.format(file_id="file-1")).respond(200, json={})
    result = cli("batch", "create", str(source))
    assert_one_line_error(result, "the batch may already be started")
    assert not delete.called


def test_a_batch_key_the_server_would_refuse_is_a_usage_error(
    server: respx.MockRouter, cli: Cli, source: Path
) -> None:
    upload = server.post(OPENAI_FILES_PATH).respond(200, json=FILE)
    result = cli("batch", "create", str(source), "--idempotency-key", "has space")
    assert result.exit_code == 2
    assert "printable ASCII characters without spaces" in result.stderr
    assert not upload.called


def test_the_library_sends_the_callers_idempotency_key(
    server: respx.MockRouter, client: Client, source: Path
) -> None:
    upload = server.post(OPENAI_FILES_PATH).respond(200, json=FILE)
    create = server.post(OPENAI_BATCHES_PATH).respond(200, json=batch_body("validating"))
    client.batches.upload(source, idempotency_key="upload-1")
    client.batches.create("file-1", idempotency_key="create-1")
    assert upload.calls.last.request.headers["Idempotency-Key"] == "upload-1"
    assert create.calls.last.request.headers["Idempotency-Key"] == "create-1"


def test_a_refused_create_deletes_the_file_it_uploaded(
    server: respx.MockRouter, cli: Cli, source: Path
) -> None:
    server.post(OPENAI_FILES_PATH).respond(200, json=FILE)
    server.post(OPENAI_BATCHES_PATH).respond(
        400, json=error_body("'completion_window': must be like 24h", param="completion_window")
    )
    delete = server.delete(OPENAI_FILE_PATH.format(file_id="file-1")).respond(
        200, json={"id": "file-1", "object": "file", "deleted": True}
    )
    result = cli("batch", "create", str(source), "--window", "soon")
    assert_one_line_error(result, "completion_window")
    assert delete.called


@pytest.mark.usefixtures("fast_polls")
@pytest.mark.parametrize(
    ("status", "said"),
    [
        ("expired", "ended expired; its finished lines are in its output file"),
        ("cancelled", "ended cancelled; its finished lines are in its output file"),
        ("failed", "failed: no line ran"),
    ],
)
def test_a_followed_batch_that_did_not_complete_exits_1(
    server: respx.MockRouter, cli: Cli, status: str, said: str
) -> None:
    server.get(OPENAI_BATCH_PATH.format(batch_id="batch_1")).mock(
        side_effect=[
            respx.MockResponse(200, json=batch_body("in_progress", completed=1)),
            respx.MockResponse(200, json=batch_body(status, completed=1)),
        ]
    )
    result = cli("batch", "status", "batch_1", "--wait")
    assert_one_line_error(result, said)
    assert result.stdout.startswith(f"batch_1: {status} (1 completed, 0 failed of 2)")


@pytest.mark.usefixtures("fast_polls")
def test_json_output_of_a_followed_batch_exits_0_whatever_its_end(
    server: respx.MockRouter, cli: Cli, source: Path
) -> None:
    server.post(OPENAI_FILES_PATH).respond(200, json=FILE)
    server.post(OPENAI_BATCHES_PATH).respond(200, json=batch_body("validating"))
    server.get(OPENAI_BATCH_PATH.format(batch_id="batch_1")).respond(
        200, json=batch_body("expired")
    )
    result = cli("batch", "create", str(source), "--wait", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "expired"


def test_status_without_wait_exits_0_for_any_status(server: respx.MockRouter, cli: Cli) -> None:
    server.get(OPENAI_BATCH_PATH.format(batch_id="batch_1")).respond(200, json=batch_body("failed"))
    result = cli("batch", "status", "batch_1")
    assert result.exit_code == 0, result.stderr


@pytest.mark.usefixtures("fast_polls")
def test_a_batch_that_ended_before_any_line_completed_says_so(
    server: respx.MockRouter, cli: Cli
) -> None:
    server.get(OPENAI_BATCH_PATH.format(batch_id="batch_1")).respond(
        200, json=batch_body("cancelled", completed=0)
    )
    result = cli("batch", "status", "batch_1", "--wait")
    assert_one_line_error(result, "batch_1 ended cancelled: no line completed")


def test_batch_results_are_written_byte_for_byte_and_private(
    server: respx.MockRouter, cli: Cli, tmp_path: Path
) -> None:
    """The output and error files hold the answers: 0600 like every file the client writes."""
    finished = {**batch_body("completed"), "output_file_id": "file-out"}
    finished["error_file_id"] = "file-err"
    server.get(OPENAI_BATCH_PATH.format(batch_id="batch_1")).respond(200, json=finished)
    output_lines = '{"custom_id": "a", "response": {"body": "caf\\u00e9 ☕"}}\n'.encode()
    error_lines = b'{"custom_id": "b", "error": {"code": "x"}}\n'
    for file_id, content in (("file-out", output_lines), ("file-err", error_lines)):
        server.get(OPENAI_FILE_CONTENT_PATH.format(file_id=file_id)).respond(200, content=content)
    output, errors = tmp_path / "out" / "answers.jsonl", tmp_path / "errors.jsonl"

    result = cli("batch", "results", "batch_1", "-o", str(output), "--errors-out", str(errors))

    assert result.exit_code == 0, result.stderr
    assert output.read_bytes() == output_lines and errors.read_bytes() == error_lines
    assert (output.stat().st_mode & 0o777, errors.stat().st_mode & 0o777) == (0o600, 0o600)
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


@pytest.mark.parametrize("batch_id", ["", "   ", "batch_1/cancel", "../files"])
@pytest.mark.parametrize(
    "command",
    [["status"], ["status", "--wait"], ["results", "-o", "out.jsonl"], ["cancel"]],
    ids=["status", "status --wait", "results", "cancel"],
)
def test_an_id_that_names_no_batch_is_refused_before_any_request(
    server: respx.MockRouter, cli: Cli, command: list[str], batch_id: str
) -> None:
    """An empty id would ask for ``/openai/v1/batches/`` and show the server's redirect."""
    result = cli("batch", command[0], batch_id, *command[1:])
    assert_one_line_error(result, "BATCH_ID")
    assert result.exit_code == 2  # a usage error
    assert not server.calls


@pytest.mark.usefixtures("fast_polls")
def test_a_timed_out_follow_says_how_to_follow_again_and_shows_the_json(
    server: respx.MockRouter, cli: Cli
) -> None:
    server.get(OPENAI_BATCH_PATH.format(batch_id="batch_1")).respond(
        200, json=batch_body("in_progress", completed=1)
    )
    result = cli("batch", "status", "batch_1", "--wait", "--timeout", "0", "--json")
    assert_one_line_error(
        result, "batch_1 is still in_progress", "openbeepboop-client batch status batch_1 --wait"
    )
    assert result.exit_code == 124
    assert json.loads(result.stdout)["status"] == "in_progress"
