"""OpenAI SDK code pointed at the native ``/v1`` instead of ``/openai/v1`` is told so.

The native submit would queue a job and answer ``202`` with it, which the SDK
reads as a completion with no ``choices`` while a GPU runs the prompt for
nobody. The official SDKs send ``X-Stainless-Lang``; plain callers do not.
"""

from __future__ import annotations

from openbeepboop_schemas import CHAT_COMPLETIONS_PATH, JOBS_PATH
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat

#: What the official Python SDK sends besides the key.
SDK_HEADERS = {"X-Stainless-Lang": "python", "User-Agent": "OpenAI/Python 3.63.0"}


def test_the_sdk_on_the_native_submit_is_a_400_and_nothing_is_queued(
    client: TestClient, api_keys: ApiKeys
) -> None:
    headers = {**bearer(api_keys.user), **SDK_HEADERS}
    response = client.post(CHAT_COMPLETIONS_PATH, json=chat(), headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "openai_sdk_on_native_api"
    assert "base_url http://HOST:PORT/openai/v1" in error["message"]
    assert "nothing was queued" in error["message"]
    assert client.get(JOBS_PATH, headers=bearer(api_keys.user)).json()["data"] == []
    # Plain HTTP callers (and this project's own client) are queued as ever.
    plain = client.post(CHAT_COMPLETIONS_PATH, json=chat(), headers=bearer(api_keys.user))
    assert plain.status_code == 202, plain.text


def test_a_404_for_a_path_of_the_openai_surface_says_where_it_is(
    client: TestClient, api_keys: ApiKeys
) -> None:
    headers = {**bearer(api_keys.user), **SDK_HEADERS}
    for path in ("/v1/batches", "/v1/files"):
        response = client.get(path, headers=headers)
        assert response.status_code == 404, response.text
        assert f"under /openai/v1 (/openai{path})" in response.json()["error"]["message"]
    for prefix in ("/v1", "/openai/v1"):  # models.retrieve(name)
        one = client.get(f"{prefix}/models/llama3", headers=headers).json()["error"]["message"]
        assert one.endswith(f"; {prefix}/models lists the models served now")
    other = client.get("/v1/embeddings", headers=headers).json()["error"]["message"]
    assert "openai" not in other
