"""Request budgets, operator caps, poll answers and result sizes, through the app.

The app runs with small ``[limits]`` so each budget is crossed with a small
body; every refusal must name the setting and its value, and store nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openbeepboop_schemas import (
    CHAT_COMPLETIONS_PATH,
    OPENAI_CHAT_COMPLETIONS_PATH,
    RESULT_TOO_LARGE,
    Lease,
    Role,
    SubmitResponse,
)
from openbeepboop_server.config import Settings
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.http.bodies import BULK_VALIDATION_CHUNK
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat, completion, fresh_app, make_settings

LIMITS: dict[str, Any] = {
    "max_json_depth": 10,
    "max_json_values": 1_000,
    "max_messages": 4,
    "max_content_parts": 3,
    "max_total_content_parts": 5,
    "max_poll_ids": 10,
    "max_poll_answer_bytes": 4_096,
    "max_result_bytes": 2_048,
    "max_tokens": 1_000,
    "max_n": 2,
}
MAX_BODY = 16 * 1024


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Small budgets, and a request limit below the results limit."""
    result = make_settings(tmp_path, limits=LIMITS, server={"max_body_bytes": MAX_BODY})
    upgrade_to_head(result.database.url)
    return result


def _submit(client: TestClient, key: str, body: Any) -> Any:
    return client.post("/v1/chat/completions", json=body, headers=bearer(key))


def _nothing_stored(client: TestClient, key: str) -> None:
    assert client.get("/v1/jobs", headers=bearer(key)).json()["data"] == []


def _refused(response: Any, status: int, setting: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    value = LIMITS[setting]
    assert f"[limits] {setting} = {value}" in error["message"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def _parts(count: int) -> list[dict[str, str]]:
    return [{"type": "text", "text": "hi"}] * count


@pytest.mark.parametrize(
    ("body", "setting", "param"),
    [
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}] * 5},
            "max_messages",
            "messages",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": _parts(4)}]},
            "max_content_parts",
            "messages.0.content",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": _parts(3)}] * 2},
            "max_total_content_parts",
            "messages.1.content",
        ),
        (chat(max_tokens=1_001), "max_tokens", "max_tokens"),
        (chat(max_completion_tokens=5_000), "max_tokens", "max_completion_tokens"),
        (chat(n=3), "max_n", "n"),
        (chat(metadata={"a": [[[[[[[[[[[]]]]]]]]]]]}), "max_json_depth", None),
        (chat(metadata=[[]] * 1_000), "max_json_values", None),
    ],
)
@pytest.mark.parametrize("path", [CHAT_COMPLETIONS_PATH, OPENAI_CHAT_COMPLETIONS_PATH])
def test_a_request_past_a_budget_or_cap_is_refused_naming_it(
    client: TestClient, api_keys: ApiKeys, body: Any, setting: str, param: str | None, path: str
) -> None:
    response = client.post(path, json=body, headers=bearer(api_keys.user))
    _refused(response, 400, setting, param)
    _nothing_stored(client, api_keys.user)


def test_requests_at_the_budgets_and_caps_are_accepted(
    client: TestClient, api_keys: ApiKeys
) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": _parts(3)},
            {"role": "user", "content": _parts(2)},
            {"role": "user", "content": "x"},
            {"role": "user", "content": "y"},
        ],
        "max_tokens": 1_000,
        "max_completion_tokens": 1_000,
        "n": 2,
        # Structure inside strings is text, not structure: never counted.
        "metadata": {"csv": "a,b,c,{[" * 2_000},
    }
    response = _submit(client, api_keys.user, body)
    assert response.status_code == 202, response.text


def test_a_bulk_line_past_a_cap_refuses_the_whole_bulk_naming_the_line(
    client: TestClient, api_keys: ApiKeys
) -> None:
    bulk = {"requests": [chat(), chat(n=2), chat(n=9)]}
    response = client.post("/v1/chat/completions/bulk", json=bulk, headers=bearer(api_keys.user))
    _refused(response, 400, "max_n", "requests.2.n")
    _nothing_stored(client, api_keys.user)


def test_a_large_bulk_is_validated_in_chunks_and_names_the_bad_line(tmp_path: Path) -> None:
    lines: list[Any] = [chat(content=str(n)) for n in range(2 * BULK_VALIDATION_CHUNK + 100)]
    bad = 2 * BULK_VALIDATION_CHUNK + 17
    lines[bad] = {"model": "m", "messages": [{"role": "robot", "content": "x"}]}
    # Larger than this module's small limits allow: an app with the defaults.
    with fresh_app(tmp_path / "defaults") as (other, context):
        user = context.keys.create(Role.USER, "u")[0]
        response = other.post(
            "/v1/chat/completions/bulk", json={"requests": lines}, headers=bearer(user)
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == f"requests.{bad}.messages.0.role"
        lines[bad] = chat()
        response = other.post(
            "/v1/chat/completions/bulk", json={"requests": lines}, headers=bearer(user)
        )
        assert response.status_code == 202, response.text
        assert len(response.json()["data"]) == len(lines)


def test_a_poll_answers_each_distinct_id_once_in_first_order(
    client: TestClient, api_keys: ApiKeys
) -> None:
    first = _submit(client, api_keys.user, chat()).json()["id"]
    second = _submit(client, api_keys.user, chat()).json()["id"]
    ids = [second, first, second, "job-nope", first, second, second, first, second, first]
    polled = client.post("/v1/results/poll", json={"ids": ids}, headers=bearer(api_keys.user))
    assert [entry["id"] for entry in polled.json()] == [second, first, "job-nope"]


def test_a_poll_of_more_ids_than_allowed_is_refused(client: TestClient, api_keys: ApiKeys) -> None:
    response = client.post(
        "/v1/results/poll", json={"ids": ["job-x"] * 11}, headers=bearer(api_keys.user)
    )
    _refused(response, 400, "max_poll_ids", "ids")


def _claim(client: TestClient, key: str) -> Lease:
    response = client.post(
        "/internal/queue/fetch",
        json={"node_id": "node-1", "models": ["*"]},
        headers=bearer(key),
    )
    [lease] = response.json()
    return Lease.model_validate(lease)


def _deliver(client: TestClient, key: str, lease: Lease, outcome: dict[str, Any]) -> Any:
    body = {
        "node_id": "node-1",
        "outcomes": [{"job_id": lease.job_id, "lease_token": lease.lease_token, **outcome}],
    }
    return client.post("/internal/queue/submit", json=body, headers=bearer(key))


def _run(client: TestClient, keys: ApiKeys, text: str) -> str:
    job = _submit(client, keys.user, chat()).json()["id"]
    lease = _claim(client, keys.node)
    response = _deliver(client, keys.node, lease, {"kind": "result", "result": completion(text)})
    assert response.status_code == 200, response.text
    return str(job)


def test_a_poll_past_its_answer_size_leaves_later_results_out(
    client: TestClient, api_keys: ApiKeys
) -> None:
    text = "r" * 1_500
    ids = [_run(client, api_keys, text) for _ in range(4)]
    polled = client.post("/v1/results/poll", json={"ids": ids}, headers=bearer(api_keys.user))
    entries = polled.json()
    assert len(polled.content) < LIMITS["max_poll_answer_bytes"] + 2_000
    assert [entry["status"] for entry in entries] == ["COMPLETED"] * 4
    with_result = [entry for entry in entries if entry["result"] is not None]
    left_out = [entry for entry in entries if entry.get("result_omitted")]
    assert with_result and left_out and len(with_result) + len(left_out) == 4
    assert all("result_omitted" not in entry for entry in with_result)
    assert all(entry["result"] is None for entry in left_out)
    # Each one alone always comes back whole.
    alone = client.post(
        "/v1/results/poll", json={"ids": [left_out[0]["id"]]}, headers=bearer(api_keys.user)
    ).json()
    assert alone[0]["result"]["choices"][0]["message"]["content"] == text


def test_a_result_larger_than_a_request_is_accepted(client: TestClient, api_keys: ApiKeys) -> None:
    text = "big " * (MAX_BODY // 2)
    job = _run(client, api_keys, text)
    entry = client.get(f"/v1/jobs/{job}", headers=bearer(api_keys.user)).json()
    assert entry["status"] == "COMPLETED"
    assert entry["result"]["choices"][0]["message"]["content"] == text


def test_a_delivery_over_the_results_limit_is_413_result_too_large(
    client: TestClient, api_keys: ApiKeys
) -> None:
    job = _submit(client, api_keys.user, chat()).json()["id"]
    lease = _claim(client, api_keys.node)
    huge = completion("x" * (LIMITS["max_result_bytes"] + 70 * 1024))
    response = _deliver(client, api_keys.node, lease, {"kind": "result", "result": huge})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == RESULT_TOO_LARGE
    assert "max_result_bytes" in error["message"]
    # The node then delivers the permanent error the 413 asks for: the job fails visibly.
    error_outcome = {
        "kind": "error",
        "error": {"message": "result too large", "type": RESULT_TOO_LARGE, "retryable": False},
    }
    answer = SubmitResponse.model_validate(
        _deliver(client, api_keys.node, lease, error_outcome).json()
    )
    assert answer.acks[0].ack == "accepted"
    entry = client.get(f"/v1/jobs/{job}", headers=bearer(api_keys.user)).json()
    assert entry["status"] == "FAILED"
    assert entry["error"]["type"] == RESULT_TOO_LARGE


def test_a_user_body_over_the_request_limit_is_still_413_request_too_large(
    client: TestClient, api_keys: ApiKeys
) -> None:
    response = _submit(client, api_keys.user, chat(content="x" * MAX_BODY))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_the_openapi_document_states_the_caps(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    request = schemas["ChatCompletionRequest"]["properties"]
    assert {"maximum": 2, "minimum": 1, "type": "integer"} in request["n"]["anyOf"]
    assert any(option.get("maximum") == 1_000 for option in request["max_tokens"]["anyOf"])
    assert request["messages"]["maxItems"] == 4


def test_a_result_is_not_held_to_the_request_budgets(client: TestClient, api_keys: ApiKeys) -> None:
    # A completion with logprobs holds many values: a paid result is never refused for its shape.
    job = _submit(client, api_keys.user, chat()).json()["id"]
    lease = _claim(client, api_keys.node)
    result = {**completion("ok"), "logprobs": {"content": [{"token": "a", "logprob": 0}] * 600}}
    response = _deliver(client, api_keys.node, lease, {"kind": "result", "result": result})
    assert response.status_code == 200, response.text
    entry = client.get(f"/v1/jobs/{job}", headers=bearer(api_keys.user)).json()
    assert entry["status"] == "COMPLETED"
