"""A delivered result with ``choices: []`` is refused (400); the job stays the node's to settle."""

from __future__ import annotations

from openbeepboop_schemas import Role
from openbeepboop_server.context import ServerContext
from starlette.testclient import TestClient

from tests.support.surface import bearer, chat, completion


def test_a_result_without_choices_is_refused_with_a_400(client: TestClient) -> None:
    context: ServerContext = client.app.state.context  # type: ignore[attr-defined]
    user = context.keys.create(Role.USER, "alice")[0]
    node = context.keys.create(Role.NODE, "node")[0]
    job = client.post("/v1/chat/completions", json=chat(), headers=bearer(user)).json()
    [lease] = client.post(
        "/internal/queue/fetch",
        json={"node_id": "node-1", "models": ["llama3"]},
        headers=bearer(node),
    ).json()
    empty = {**completion(), "choices": []}
    response = client.post(
        "/internal/queue/submit",
        json={
            "node_id": "node-1",
            "outcomes": [
                {
                    "kind": "result",
                    "job_id": lease["job_id"],
                    "lease_token": lease["lease_token"],
                    "result": empty,
                }
            ],
        },
        headers=bearer(node),
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "choices" in (error["param"] or "") + error["message"]
    [entry] = client.post(
        "/v1/results/poll", json={"ids": [job["id"]]}, headers=bearer(user)
    ).json()
    assert entry["status"] == "PROCESSING" and entry["result"] is None
