"""Metrics and the request log: what an operator sees, and that keys never appear in it."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import Role
from openbeepboop_server.context import ServerContext
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat, completion, fresh_app


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    return None


def test_metrics_count_the_queue_and_the_requests(client: TestClient, api_keys: ApiKeys) -> None:
    for model in ("llama3", "llama3", "qwen"):
        client.post("/v1/chat/completions", json=chat(model), headers=bearer(api_keys.user))
    [lease] = client.post(
        "/internal/queue/fetch",
        json={"node_id": "gpu-1", "models": ["qwen"]},
        headers=bearer(api_keys.node),
    ).json()
    client.post(
        "/internal/queue/submit",
        json={
            "node_id": "gpu-1",
            "outcomes": [
                {
                    "kind": "result",
                    "job_id": lease["job_id"],
                    "lease_token": lease["lease_token"],
                    "result": completion(),
                },
                {"kind": "release", "job_id": "job-nope", "lease_token": "nope"},
            ],
        },
        headers=bearer(api_keys.node),
    )
    job = client.get("/v1/jobs", headers=bearer(api_keys.user)).json()["data"][-1]["id"]
    client.get(f"/v1/jobs/{job}", headers=bearer(api_keys.user))

    response = client.get("/metrics", headers=bearer(api_keys.admin))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _sample(text, "openbeepboop_jobs", status="QUEUED", model="llama3") == 2
    # Finished jobs are counted per status only (no model label).
    assert _sample(text, "openbeepboop_jobs", status="COMPLETED", model="") == 1
    assert _sample(text, "openbeepboop_jobs", status="COMPLETED", model="qwen") is None
    assert _sample(text, "openbeepboop_jobs_submitted_total") == 3
    assert _sample(text, "openbeepboop_jobs_claimed_total") == 1
    assert _sample(text, "openbeepboop_outcomes_total", kind="result", ack="accepted") == 1
    assert _sample(text, "openbeepboop_outcomes_total", kind="release", ack="rejected") == 1
    assert _sample(text, "openbeepboop_nodes_seen") == 1
    assert _sample(text, "openbeepboop_database_up") == 1
    # Latency is labelled by route template, not by the raw path (bounded label values).
    assert (
        _sample(
            text,
            "openbeepboop_http_request_duration_seconds_count",
            method="GET",
            route="/v1/jobs/{job_id}",
            status="200",
        )
        == 1
    )
    assert job not in text


def test_a_scrape_counts_nodes_without_reading_their_models(
    client: TestClient, api_keys: ApiKeys, context: ServerContext
) -> None:
    # Every node's declared models (up to 256 names each) were read and parsed
    # on each scrape, for a count.
    for index in range(3):
        client.post(
            "/internal/queue/fetch",
            json={"node_id": f"gpu-{index}", "models": [f"model-{index}", "shared"]},
            headers=bearer(api_keys.node),
        )
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    sa.event.listen(context.db.engine, "before_cursor_execute", record)
    try:
        text = client.get("/metrics", headers=bearer(api_keys.admin)).text
    finally:
        sa.event.remove(context.db.engine, "before_cursor_execute", record)
    assert _sample(text, "openbeepboop_nodes_seen") == 3
    assert any("nodes" in statement for statement in statements)
    assert not [s for s in statements if "models" in s and "nodes" in s], statements


def test_each_app_has_its_own_registry(
    tmp_path: Path, client: TestClient, api_keys: ApiKeys
) -> None:
    client.post("/v1/chat/completions", json=chat(), headers=bearer(api_keys.user))
    with fresh_app(tmp_path / "second") as (other, context):
        admin = context.keys.create(Role.ADMIN, "a")[0]
        text = other.get("/metrics", headers=bearer(admin)).text
    assert _sample(text, "openbeepboop_jobs_submitted_total") == 0
    first = client.get("/metrics", headers=bearer(api_keys.admin)).text
    assert _sample(first, "openbeepboop_jobs_submitted_total") == 1


def test_one_log_line_per_request_and_never_a_key(
    client: TestClient, api_keys: ApiKeys, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/chat/completions", json=chat(), headers=bearer(api_keys.user))
        client.get("/v1/jobs?limit=5", headers=bearer(api_keys.user))
        client.get("/v1/jobs", headers=bearer("sk-" + "w" * 40))
    access = [r.getMessage() for r in caplog.records if r.name == "openbeepboop_server.access"]
    assert len(access) == 3
    assert re.fullmatch(r"POST /v1/chat/completions 202 \d+\.\dms req_[0-9a-f]{16}", access[0])
    assert access[1].startswith("GET /v1/jobs 200 ")  # no query string
    assert access[2].startswith("GET /v1/jobs 401 ")
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (api_keys.user, "sk-" + "w" * 40, "Bearer"):
        assert secret not in everything


def test_healthz_is_503_when_the_database_is_gone(
    client: TestClient, context: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}

    def down() -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(context.db, "ping", down)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "service_unavailable"
