"""Control characters in model names and node versions: refused on the wire, escaped when shown.

A USER key could name a model with terminal escapes and a newline, and a NODE
key declare one or report such a version: ``status`` and ``nodes`` then
recoloured, cleared or retitled the operator's terminal and printed forged
rows. The wire refuses them now (the same 400 as any invalid model name, a
NUL included, never stored as U+FFFD); what an older version stored is
printed escaped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from openbeepboop_schemas import ChatCompletionRequest, ChatMessage, FetchRequest, Role
from openbeepboop_server.cli import main
from openbeepboop_server.config import load_settings, sqlite_url
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.service import QueueService
from starlette.testclient import TestClient

from tests.support.surface import bearer, chat

#: The QA reproduction's name: clear screen, home, terminal title, colour, a forged line.
HOSTILE = "\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b[31mALL NODES DOWN\x1b[0m\nfake line"

NAMES = [HOSTILE, "evil\x00", "evil\r", "evil\x7f", "evil\x9b31m", "evil\n2026 WARNING forged"]


def _keys(client: TestClient) -> tuple[str, str]:
    context: ServerContext = client.app.state.context  # type: ignore[attr-defined]
    return context.keys.create(Role.USER, "alice")[0], context.keys.create(Role.NODE, "node")[0]


def _assert_invalid_model(response: object) -> None:
    assert response.status_code == 400, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["type"] == "invalid_request_error"
    assert "control characters" in error["message"]


@pytest.mark.parametrize("name", NAMES)
def test_a_submit_naming_a_control_character_model_is_a_400_and_stores_nothing(
    client: TestClient, name: str
) -> None:
    user, _ = _keys(client)
    headers = bearer(user)
    _assert_invalid_model(client.post("/v1/chat/completions", json=chat(name), headers=headers))
    _assert_invalid_model(
        client.post("/openai/v1/chat/completions", json=chat(name), headers=headers)
    )
    _assert_invalid_model(
        client.post(
            "/v1/chat/completions/bulk",
            json={"requests": [chat("llama3"), chat(name)]},
            headers=headers,
        )
    )
    assert client.get("/v1/jobs", headers=headers).json()["data"] == []


@pytest.mark.parametrize("name", NAMES)
def test_a_node_declaring_a_control_character_model_or_version_is_a_400(
    client: TestClient, name: str
) -> None:
    user, node = _keys(client)
    headers = bearer(node)
    for body in (
        {"node_id": "n1", "models": [name]},
        {"node_id": "n1", "models": ["llama3"], "serves": ["llama3", name]},
        {"node_id": "n1", "models": ["llama3"], "version": name[:64]},
    ):
        _assert_invalid_model(client.post("/internal/queue/fetch", json=body, headers=headers))
    for body in (
        {"node_id": "n1", "models": [name]},
        {"node_id": "n1", "version": name[:64]},
    ):
        _assert_invalid_model(client.post("/internal/queue/heartbeat", json=body, headers=headers))
    assert client.get("/v1/models", headers=bearer(user)).json()["data"] == []


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A server set up by ``setup --non-interactive`` on a SQLite file; its config path."""
    path = tmp_path / "server_config.toml"
    database = sqlite_url(tmp_path / "q.db")
    result = CliRunner().invoke(
        main,
        ["setup", "--config", str(path), "--database-url", database, "--non-interactive"],
    )
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def stored_by_an_older_version(config: Path) -> Path:
    """A set-up server whose database holds a job and a node named as an older version let them."""
    settings = load_settings(config)
    db = Database.connect(settings.database.url)
    try:
        keys = KeyService(db)
        user = keys.authenticate(keys.create(Role.USER, "alice")[0])
        node = keys.authenticate(keys.create(Role.NODE, "gpu-key")[0])
        assert user is not None and node is not None
        queue = QueueService(db, settings.queue.policy())
        # model_construct skips the validation older versions did not have.
        request = ChatCompletionRequest.model_construct(
            model=HOSTILE, messages=[ChatMessage(role="user", content="x")]
        )
        queue.submit(user, request)
        queue.claim(
            node,
            FetchRequest.model_construct(
                node_id="gpu-box-1",
                models=[HOSTILE],
                version="1.0\x1b]0;pwned\x07",
                max_jobs=1,
                wait=0.0,
                serves=None,
            ),
        )
    finally:
        db.dispose()
    return config


@pytest.mark.parametrize("command", ["status", "nodes"])
def test_status_and_nodes_print_what_an_older_version_stored_escaped(
    stored_by_an_older_version: Path, command: str
) -> None:
    result = CliRunner().invoke(main, [command, "--config", str(stored_by_an_older_version)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(line.isprintable() for line in lines), lines
    assert not any(line.startswith("fake line") for line in lines)
    assert "\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07\\x1b[31mALL NODES DOWN" in result.stdout
    node = next(line for line in lines if line.startswith("gpu-box-1"))
    assert "1.0\\x1b]0;pwned\\x07" in node
