"""``GET /v1/status`` and the ``/status`` page over HTTP: roles, contents, headers, cache."""

from __future__ import annotations

import re

import pytest
from openbeepboop_schemas import PoolStatus
from openbeepboop_server.context import ServerContext
from openbeepboop_server.dispatch.status_cache import StatusCache
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat

PROMPT = "PROMPT-MARKER-the-status-must-never-show-this"
ANSWER = "ANSWER-MARKER-nor-this"


@pytest.fixture
def fresh(context: ServerContext) -> ServerContext:
    """Every request builds the status anew (no cache period)."""
    context.status_cache = StatusCache(ttl=0)
    return context


def _status(client: TestClient, key: str) -> PoolStatus:
    response = client.get("/v1/status", headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    return PoolStatus.model_validate_json(response.content)


def test_roles(client: TestClient, api_keys: ApiKeys) -> None:
    assert client.get("/v1/status").status_code == 401
    assert client.get("/v1/status", headers=bearer(api_keys.revoked)).status_code == 401
    for key in (api_keys.user, api_keys.node):
        response = client.get("/v1/status", headers=bearer(key))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "insufficient_role"
        assert "METRICS" in response.json()["error"]["message"]
    for key in (api_keys.metrics, api_keys.admin):
        assert client.get("/v1/status", headers=bearer(key)).status_code == 200


def test_a_metrics_key_reads_and_nothing_else(client: TestClient, api_keys: ApiKeys) -> None:
    key = bearer(api_keys.metrics)
    assert client.get("/metrics", headers=key).status_code == 200
    refused = [
        client.post("/v1/chat/completions", json=chat(), headers=key),
        client.get("/v1/jobs", headers=key),
        client.get("/v1/models", headers=key),
        client.post("/internal/queue/fetch", json={"node_id": "n", "models": ["x"]}, headers=key),
    ]
    assert [response.status_code for response in refused] == [403] * 4


def test_contents_and_never_a_prompt_or_result(
    client: TestClient, api_keys: ApiKeys, fresh: ServerContext
) -> None:
    user, node = bearer(api_keys.user), bearer(api_keys.node)
    failing = client.post("/v1/chat/completions", json=chat("m-bad", PROMPT), headers=user).json()
    for _ in range(3):
        assert client.post("/v1/chat/completions", json=chat("m-ok", PROMPT), headers=user)
    leases = client.post(
        "/internal/queue/fetch",
        json={"node_id": "gpu-1", "models": ["m-ok", "m-bad"], "max_jobs": 3, "version": "9.9"},
        headers=node,
    ).json()
    outcomes: list[dict[str, object]] = []
    for lease in leases:
        ref = {"job_id": lease["job_id"], "lease_token": lease["lease_token"]}
        if lease["job_id"] == failing["id"]:
            error = {"message": "context length exceeded", "type": "bad_input", "retryable": False}
            outcomes.append({"kind": "error", **ref, "error": error})
        else:
            result = {
                "id": "c",
                "object": "chat.completion",
                "created": 1,
                "model": "m-ok",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER},
                        "finish_reason": "stop",
                    }
                ],
            }
            outcomes.append({"kind": "result", **ref, "result": result})
    # The oldest three were claimed (m-bad's and two m-ok); one m-ok stays leased.
    delivered = outcomes[:2]
    answer = client.post(
        "/internal/queue/submit", json={"node_id": "gpu-1", "outcomes": delivered}, headers=node
    )
    assert answer.status_code == 200, answer.text

    response = client.get("/v1/status", headers=bearer(api_keys.metrics))
    assert PROMPT not in response.text and ANSWER not in response.text
    status = PoolStatus.model_validate_json(response.content)
    models = {model.model: model for model in status.models}
    assert (models["m-ok"].queued, models["m-ok"].processing, models["m-ok"].nodes) == (1, 1, 1)
    assert models["m-ok"].window.completed == 1
    assert models["m-bad"].window.failed == 1 and models["m-bad"].window.error_rate == 1.0
    (node_view,) = [view for view in status.nodes if view.node_id == "gpu-1"]
    assert (node_view.key_name, node_view.version, node_view.in_flight) == ("test-node", "9.9", 1)
    (failure,) = status.recent_failures
    assert failure.job_id == failing["id"] and failure.error_type == "bad_input"
    assert failure.error_message == "context length exceeded"
    assert {usage.key_name for usage in status.keys} == {"alice"}


def test_a_status_is_shared_within_the_cache_period(
    client: TestClient, api_keys: ApiKeys, context: ServerContext
) -> None:
    first = _status(client, api_keys.metrics)
    client.post("/v1/chat/completions", json=chat(), headers=bearer(api_keys.user))
    again = _status(client, api_keys.admin)
    assert again.generated_at == first.generated_at and again.queued == first.queued
    context.status_cache = StatusCache(ttl=0)
    assert _status(client, api_keys.metrics).queued == first.queued + 1


def test_the_page_needs_no_key_and_holds_no_data(client: TestClient) -> None:
    response = client.get("/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    page = response.text
    # Only its own files: no inline script or style, nothing from elsewhere.
    assert re.findall(r'<script[^>]*src="([^"]+)"', page) == ["status/status.js"]
    assert re.findall(r'<link[^>]*href="([^"]+)"', page) == ["status/status.css"]
    assert "<style" not in page and not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert "http://" not in page and "https://" not in page


def test_the_script_renders_with_text_only(client: TestClient) -> None:
    response = client.get("/status/status.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    script = response.text
    assert "innerHTML" not in script and "outerHTML" not in script and "eval(" not in script
    assert "sessionStorage" in script and "localStorage" not in script
    assert "textContent" in script
    style = client.get("/status/status.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


def test_the_status_is_in_the_openapi_document(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/status"]["get"]
    assert operation["x-roles"] == ["ADMIN", "METRICS"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/PoolStatus"}
    assert "PoolStatus" in document["components"]["schemas"]
    assert document["paths"]["/status"]["get"]["security"] == []
