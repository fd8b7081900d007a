"""status: the pool's tables, --json, and a key of the wrong role in one line."""

from __future__ import annotations

import json

import respx
from conftest import API_KEY, Cli, assert_one_line_error, error_body

STATUS = {
    "object": "pool.status",
    "generated_at": 1_700_000_100.0,
    "window_seconds": 300.0,
    "node_seen_seconds": 300.0,
    "queued": 7,
    "processing": 2,
    "oldest_queued_seconds": 95.0,
    "window": {
        "completed": 30,
        "failed": 3,
        "cancelled": 1,
        "completed_per_minute": 6.0,
        "error_rate": 0.0909,
    },
    "models": [
        {
            "model": "llama3",
            "queued": 7,
            "processing": 2,
            "oldest_queued_seconds": 95.0,
            "nodes": 1,
            "window": {"completed": 30, "failed": 3, "cancelled": 1, "completed_per_minute": 6.0},
        }
    ],
    "models_total": 1,
    "nodes": [
        {
            "node_id": "gpu-box-1",
            "key_name": "gpu-key",
            "version": "0.1.0",
            "models": ["llama3"],
            "last_seen": 1_700_000_098.0,
            "seen_seconds_ago": 2.0,
            "in_flight": 2,
        }
    ],
    "nodes_online": 1,
    "recent_failures": [
        {
            "job_id": "job-bad",
            "model": "llama3",
            "error_type": "inference_error",
            "error_message": "context length exceeded",
            "failed_at": 1_700_000_040.0,
            "attempts": 1,
        }
    ],
    "keys": [{"key_name": "alice", "window": {"completed": 30, "failed": 3}}],
    "keys_total": 1,
    "a_field_from_a_newer_server": True,
}


def test_status_prints_the_tables(server: respx.MockRouter, cli: Cli) -> None:
    route = server.get("/v1/status").respond(200, json=STATUS)
    result = cli("status")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Queued: 7 (oldest waiting 95s)" in out
    assert "In flight: 2" in out and "Nodes online: 1" in out
    assert "30 completed (6.0/min), 3 failed, 1 cancelled, error rate 9.1%" in out
    model_line = next(line for line in out.splitlines() if line.startswith("llama3"))
    assert model_line.split()[:5] == ["llama3", "7", "95s", "2", "1"]
    node_line = next(line for line in out.splitlines() if line.startswith("gpu-box-1"))
    assert node_line.split()[:5] == ["gpu-box-1", "gpu-key", "0.1.0", "llama3", "2"]
    assert "job-bad" in out and "context length exceeded" in out and "60s ago" in out
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_status_json_is_the_endpoints_answer(server: respx.MockRouter, cli: Cli) -> None:
    server.get("/v1/status").respond(200, json=STATUS)
    result = cli("status", "--json")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["queued"] == 7
    assert printed["nodes"][0]["node_id"] == "gpu-box-1"
    assert printed["a_field_from_a_newer_server"] is True


def test_status_with_a_user_key_is_one_permission_line(server: respx.MockRouter, cli: Cli) -> None:
    server.get("/v1/status").respond(
        403,
        json=error_body(
            "a USER key may not call this endpoint (allowed roles: ADMIN, METRICS)",
            "permission_error",
            code="insufficient_role",
        ),
    )
    result = cli("status")
    assert_one_line_error(result, "needs an ADMIN or METRICS key")
    assert result.stdout == ""


def test_status_with_a_revoked_key(server: respx.MockRouter, cli: Cli) -> None:
    server.get("/v1/status").respond(
        401, json=error_body("invalid or revoked API key", "authentication_error")
    )
    assert_one_line_error(cli("status"), "rejected the API key")


def test_status_of_an_empty_pool(server: respx.MockRouter, cli: Cli) -> None:
    server.get("/v1/status").respond(
        200, json={"generated_at": 1.0, "window_seconds": 300.0, "node_seen_seconds": 300.0}
    )
    result = cli("status")
    assert result.exit_code == 0, result.stderr
    assert "No models" in result.stdout and "No node seen in the last 5m." in result.stdout
