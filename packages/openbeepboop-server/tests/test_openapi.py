"""The OpenAPI document: 3.1, every endpoint with its bodies, answers, roles and security."""

from __future__ import annotations

from typing import Any

import pytest
from openbeepboop_schemas import BULK_SUBMIT_PATH, CONTRACT_MODELS, OPENAI_CHAT_COMPLETIONS_PATH
from openbeepboop_server.openapi import contract_components
from starlette.testclient import TestClient

#: (method, path) -> (request body model or None, success status, public?)
EXPECTED = {
    ("post", "/v1/chat/completions"): ("ChatCompletionRequest", "202", False),
    ("post", BULK_SUBMIT_PATH): ("BulkSubmitRequest", "202", False),
    ("post", "/v1/results/poll"): ("PollRequest", "200", False),
    ("get", "/v1/jobs/{job_id}"): (None, "200", False),
    ("post", "/v1/jobs/{job_id}/cancel"): (None, "200", False),
    ("get", "/v1/jobs"): (None, "200", False),
    ("get", "/v1/models"): (None, "200", False),
    ("post", "/internal/queue/fetch"): ("FetchRequest", "200", False),
    ("post", "/internal/queue/submit"): ("SubmitRequest", "200", False),
    ("post", "/internal/queue/heartbeat"): ("HeartbeatRequest", "200", False),
    ("post", "/internal/queue/watch"): ("LeaseWatchRequest", "200", False),
    ("get", "/healthz"): (None, "200", True),
    ("get", "/openapi.json"): (None, "200", True),
    ("get", "/metrics"): (None, "200", False),
    ("get", "/v1/status"): (None, "200", False),
    ("get", "/v1/usage"): (None, "200", False),
    ("get", "/status"): (None, "200", True),
    ("get", "/status/status.js"): (None, "200", True),
    ("get", "/status/status.css"): (None, "200", True),
    ("post", "/openai/v1/chat/completions"): ("ChatCompletionRequest", "200", False),
    ("get", "/openai/v1/models"): (None, "200", False),
    ("post", "/openai/v1/files"): ("multipart/form-data", "200", False),
    ("get", "/openai/v1/files"): (None, "200", False),
    ("get", "/openai/v1/files/{file_id}"): (None, "200", False),
    ("delete", "/openai/v1/files/{file_id}"): (None, "200", False),
    ("get", "/openai/v1/files/{file_id}/content"): (None, "200", False),
    ("post", "/openai/v1/batches"): ("BatchCreateRequest", "200", False),
    ("get", "/openai/v1/batches"): (None, "200", False),
    ("get", "/openai/v1/batches/{batch_id}"): (None, "200", False),
    ("post", "/openai/v1/batches/{batch_id}/cancel"): (None, "200", False),
}


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] = response.json()
    return result


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {key for value in node.values() for key in _keys(value)}
    if isinstance(node, list):
        return {key for item in node for key in _keys(item)}
    return set()


def test_is_openapi_3_1_with_bearer_security(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `sk-...`.",
    }


def test_every_endpoint_has_a_path_item(document: dict[str, Any]) -> None:
    operations = {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert set(operations) == set(EXPECTED)
    for key, (body, success, public) in EXPECTED.items():
        operation = operations[key]
        assert operation["operationId"]
        responses = operation["responses"]
        assert success in responses, key
        if body is None:
            assert "requestBody" not in operation, key
        elif "/" in body:  # a media type: a body the handler parses itself
            assert body in operation["requestBody"]["content"], key
        else:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{body}"}
            assert {"400", "413"} <= set(responses), key
        if public:
            assert operation["security"] == []
            assert "401" not in responses
        else:
            assert operation["security"] == [{"bearerAuth": []}]
            assert {"401", "403"} <= set(responses), key
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorEnvelope"
                }


def test_roles_are_documented(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert paths["/v1/chat/completions"]["post"]["x-roles"] == ["ADMIN", "USER"]
    assert paths["/internal/queue/fetch"]["post"]["x-roles"] == ["ADMIN", "NODE"]
    assert paths["/metrics"]["get"]["x-roles"] == ["ADMIN", "METRICS"]
    assert paths["/v1/status"]["get"]["x-roles"] == ["ADMIN", "METRICS"]


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for model in CONTRACT_MODELS:
        assert model.__name__ in schemas
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[-1] in schemas, ref


def test_components_use_standard_json_schema_keywords() -> None:
    schemas = contract_components()
    temperature = schemas["ChatCompletionRequest"]["properties"]["temperature"]
    bounded = temperature["anyOf"][0]
    assert (bounded["minimum"], bounded["maximum"]) == (0, 2)
    assert not _keys(schemas) & {"ge", "le", "gt", "lt"}
    for variant in ("ResultOutcome", "ErrorOutcome", "ReleaseOutcome"):
        assert "kind" in schemas[variant]["required"]
    stream = schemas["ChatCompletionRequest"]["properties"]["stream"]
    assert {"type": "boolean", "const": False} in stream["anyOf"]


def test_list_query_parameters_are_documented(document: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in document["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert set(parameters) == {"status", "limit", "after", "batch_id"}
    assert parameters["limit"]["schema"]["maximum"] == 100
    assert "QUEUED" in parameters["status"]["schema"]["enum"]


def test_submit_documents_idempotency_key(document: dict[str, Any]) -> None:
    for path in ("/v1/chat/completions", BULK_SUBMIT_PATH):
        names = [p["name"] for p in document["paths"][path]["post"]["parameters"]]
        assert "Idempotency-Key" in names


def test_sync_chat_documents_a_backends_refusal(document: dict[str, Any]) -> None:
    """A backend refusing the node's credentials is a 502 (not the caller's 401/403)."""
    responses = document["paths"][OPENAI_CHAT_COMPLETIONS_PATH]["post"]["responses"]
    assert {"400", "401", "403", "502", "504"} <= set(responses)
