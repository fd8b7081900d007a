"""``/v1/models`` with node counts and the window; submit warnings for unserved models.

See docs/server.md, "Which models are served", and docs/api.md, "No silent black hole".
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from openbeepboop_schemas import (
    BULK_SUBMIT_PATH,
    CHAT_COMPLETIONS_PATH,
    FETCH_PATH,
    MODEL_NOT_SERVED,
    MODELS_PATH,
    WARNING_HEADER,
    Role,
)
from openbeepboop_server import housekeeping
from openbeepboop_server.app import create_app
from openbeepboop_server.config import Settings
from openbeepboop_server.context import ServerContext
from openbeepboop_server.nodes import record_node
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat


def _submit(client: TestClient, key: str, model: str) -> httpx.Response:
    return client.post(CHAT_COMPLETIONS_PATH, json=chat(model), headers=bearer(key))


def _fetch(client: TestClient, key: str, node_id: str, *models: str) -> None:
    response = client.post(
        FETCH_PATH, json={"node_id": node_id, "models": list(models)}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text


def test_models_say_how_many_nodes_serve_them(client: TestClient, api_keys: ApiKeys) -> None:
    _fetch(client, api_keys.node, "gpu-1", "llama3", "qwen")
    _fetch(client, api_keys.node, "gpu-2", "llama3")
    _fetch(client, api_keys.node, "proxy", "*")
    body = client.get(MODELS_PATH, headers=bearer(api_keys.user)).json()
    # A `*` node is no model: it counts for every listed model and on its own line.
    assert [(card["id"], card["nodes"]) for card in body["data"]] == [("llama3", 3), ("qwen", 2)]
    assert body["any_model_nodes"] == 1


def test_a_fetch_claiming_for_fewer_models_declares_what_it_serves(
    client: TestClient, api_keys: ApiKeys
) -> None:
    # "big" is at the node's own limit for it: left out of the claim, still served.
    response = client.post(
        FETCH_PATH,
        json={"node_id": "gpu-1", "models": ["small"], "serves": ["big", "small"]},
        headers=bearer(api_keys.node),
    )
    assert response.status_code == 200, response.text
    body = client.get(MODELS_PATH, headers=bearer(api_keys.user)).json()
    assert [(card["id"], card["nodes"]) for card in body["data"]] == [("big", 1), ("small", 1)]
    assert WARNING_HEADER not in _submit(client, api_keys.user, "big").headers


def test_a_node_not_seen_within_the_window_is_not_listed(
    client: TestClient, api_keys: ApiKeys, context: ServerContext
) -> None:
    window = context.settings.queue.node_seen_window()
    with context.db.write() as conn:
        record_node(
            conn,
            node_id="dead",
            key_name="k",
            now=time.time() - window - 1,
            models=["stale", "shared"],
            version=None,
        )
    _fetch(client, api_keys.node, "alive", "shared")
    body = client.get(MODELS_PATH, headers=bearer(api_keys.user)).json()
    assert [(card["id"], card["nodes"]) for card in body["data"]] == [("shared", 1)]


def test_submit_for_an_unserved_model_is_queued_with_a_warning(
    client: TestClient, api_keys: ApiKeys
) -> None:
    response = _submit(client, api_keys.user, "nobody")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "QUEUED"
    (warning,) = body["warnings"]
    assert warning["code"] == MODEL_NOT_SERVED and warning["model"] == "nobody"
    assert '"nobody"' in warning["message"]
    assert response.headers.get_list(WARNING_HEADER) == [warning["message"]]


def test_submit_for_a_served_model_has_no_warning(client: TestClient, api_keys: ApiKeys) -> None:
    _fetch(client, api_keys.node, "gpu-1", "llama3")
    response = _submit(client, api_keys.user, "llama3")
    assert response.status_code == 202
    assert response.json()["warnings"] == []
    assert WARNING_HEADER not in response.headers


def test_a_node_serving_any_model_serves_every_submit(
    client: TestClient, api_keys: ApiKeys
) -> None:
    _fetch(client, api_keys.node, "proxy", "*")
    response = _submit(client, api_keys.user, "whatever")
    assert response.json()["warnings"] == []
    bulk = client.post(
        BULK_SUBMIT_PATH, json={"requests": [chat("x"), chat("y")]}, headers=bearer(api_keys.user)
    )
    assert bulk.json()["warnings"] == []


def test_bulk_submit_warns_once_per_unserved_model(client: TestClient, api_keys: ApiKeys) -> None:
    _fetch(client, api_keys.node, "gpu-1", "served")
    requests = [chat("lonely"), chat("served"), chat("lonely"), chat("orphan"), chat("lonely")]
    response = client.post(
        BULK_SUBMIT_PATH, json={"requests": requests}, headers=bearer(api_keys.user)
    )
    assert response.status_code == 202
    body = response.json()
    assert len(body["data"]) == 5
    assert all("warnings" not in job for job in body["data"])  # per model, not per job
    assert [(w["code"], w["model"]) for w in body["warnings"]] == [
        (MODEL_NOT_SERVED, "lonely"),
        (MODEL_NOT_SERVED, "orphan"),
    ]
    assert response.headers.get_list(WARNING_HEADER) == [w["message"] for w in body["warnings"]]


@pytest.fixture
def quiet_client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A started app whose housekeeper never re-reads the served models by itself."""
    monkeypatch.setattr(housekeeping, "SERVED_REFRESH_SECONDS", 3600.0)
    with TestClient(create_app(settings)) as started:
        yield started


def test_submits_never_read_the_node_registry(quiet_client: TestClient) -> None:
    context: ServerContext = quiet_client.app.state.context  # type: ignore[attr-defined]
    user = context.keys.create(Role.USER, "alice")[0]
    node = context.keys.create(Role.NODE, "node")[0]
    _fetch(quiet_client, node, "gpu-1", "served")
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    sa.event.listen(context.db.engine, "before_cursor_execute", record)
    try:
        for model in ("served", "unserved") * 20:
            quiet_client.post(CHAT_COMPLETIONS_PATH, json=chat(model), headers=bearer(user))
        quiet_client.post(
            BULK_SUBMIT_PATH,
            json={"requests": [chat("served"), chat("unserved")]},
            headers=bearer(user),
        )
    finally:
        sa.event.remove(context.db.engine, "before_cursor_execute", record)
    assert any("jobs" in statement for statement in statements)
    assert not [s for s in statements if "nodes" in s], "a submit read the node registry"


def test_models_are_listed_from_memory_until_a_node_declares_something_new(
    quiet_client: TestClient,
) -> None:
    # Every /v1/models call read and parsed every node's declared models: with
    # 2,000 node ids of 256 long names each, 169 MB and 5.8 s a call.
    context: ServerContext = quiet_client.app.state.context  # type: ignore[attr-defined]
    user = context.keys.create(Role.USER, "alice")[0]
    node = context.keys.create(Role.NODE, "node")[0]

    def listed() -> list[tuple[str, int]]:
        body = quiet_client.get(MODELS_PATH, headers=bearer(user)).json()
        return [(card["id"], card["nodes"]) for card in body["data"]]

    _fetch(quiet_client, node, "gpu-1", "llama3")
    assert listed() == [("llama3", 1)]
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    sa.event.listen(context.db.engine, "before_cursor_execute", record)
    try:
        _fetch(quiet_client, node, "gpu-1", "llama3")  # the same declaration again
        for _ in range(3):
            assert listed() == [("llama3", 1)]
    finally:
        sa.event.remove(context.db.engine, "before_cursor_execute", record)
    assert not [s for s in statements if "models" in s and "nodes" in s], statements
    # A new declaration is listed at once.
    _fetch(quiet_client, node, "gpu-2", "llama3", "qwen")
    assert listed() == [("llama3", 2), ("qwen", 1)]
