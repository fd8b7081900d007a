"""``POST /openai/v1/batches`` refuses free-form fields past OpenAI's bounds, storing nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat

LINE = json.dumps(
    {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": chat()}
).encode()


def _create(client: TestClient, key: str, **fields: Any) -> Any:
    uploaded = client.post(
        "/openai/v1/files",
        files={"file": ("in.jsonl", LINE)},
        data={"purpose": "batch"},
        headers=bearer(key),
    )
    assert uploaded.status_code == 200, uploaded.text
    body = {
        "input_file_id": uploaded.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **fields,
    }
    return client.post("/openai/v1/batches", json=body, headers=bearer(key))


def _no_batches(client: TestClient, key: str) -> bool:
    listed = client.get("/openai/v1/batches", headers=bearer(key))
    return listed.status_code == 200 and listed.json()["data"] == []


def test_metadata_of_150000_keys_is_refused_and_nothing_stored(
    client: TestClient, api_keys: ApiKeys
) -> None:
    metadata = {f"k{index}": "v" * 40 for index in range(150_000)}
    response = _create(client, api_keys.user, metadata=metadata)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["param"] == "metadata" and "at most 16 key-value pairs" in error["message"]
    assert _no_batches(client, api_keys.user)


def test_metadata_within_openai_bounds_comes_back(client: TestClient, api_keys: ApiKeys) -> None:
    metadata = {f"{index:064d}": "v" * 512 for index in range(16)}
    response = _create(client, api_keys.user, metadata=metadata)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["metadata"] == metadata


@pytest.mark.parametrize("window", ["\u0661s", "24h\n", " 24h"])
def test_a_completion_window_of_other_digits_or_with_whitespace_is_400(
    client: TestClient, api_keys: ApiKeys, window: str
) -> None:
    response = _create(client, api_keys.user, completion_window=window)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "completion_window"
    assert _no_batches(client, api_keys.user)


def test_an_unknown_input_file_names_input_file_id(client: TestClient, api_keys: ApiKeys) -> None:
    body = {
        "input_file_id": "file-nope",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    response = client.post("/openai/v1/batches", json=body, headers=bearer(api_keys.user))
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("file_not_found", "input_file_id")
