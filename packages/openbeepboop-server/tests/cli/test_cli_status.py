"""``status``: the pool from the database, as tables or as the endpoint's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from openbeepboop_schemas import FetchRequest, PoolStatus, Role
from openbeepboop_server.cli import main
from openbeepboop_server.config import load_settings
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.service import QueueService

from tests.support.core import chat_request


@pytest.fixture
def pool(config: Path) -> Path:
    """A set-up server with 3 jobs queued by alice, 1 of them claimed by gpu-box-1."""
    db = Database.connect(load_settings(config).database.url)
    try:
        keys = KeyService(db)
        user = keys.authenticate(keys.create(Role.USER, "alice")[0])
        node = keys.authenticate(keys.create(Role.NODE, "gpu-key")[0])
        assert user is not None and node is not None
        queue = QueueService(db, load_settings(config).queue.policy())
        for _ in range(3):
            queue.submit(user, chat_request("llama3", "a secret prompt"))
        queue.claim(node, FetchRequest(node_id="gpu-box-1", models=["llama3"], version="1.2"))
    finally:
        db.dispose()
    return config


def test_status_tables(pool: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--config", str(pool)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Queued: 2 (oldest waiting ")
    assert "In flight: 1   Nodes online: 1" in lines[0]
    model = next(line for line in lines if line.startswith("llama3"))
    assert model.split()[:2] == ["llama3", "2"]
    node = next(line for line in lines if line.startswith("gpu-box-1"))
    assert node.split()[:5] == ["gpu-box-1", "gpu-key", "1.2", "llama3", "1"]
    assert "secret" not in result.output


def test_status_json_is_the_endpoints_model(pool: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--json", "--config", str(pool)])
    assert result.exit_code == 0, result.output
    status = PoolStatus.model_validate(json.loads(result.stdout))
    assert (status.queued, status.processing, status.nodes_online) == (2, 1, 1)
    assert status.nodes[0].in_flight == 1


def test_status_without_a_config_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--config", str(tmp_path / "none.toml")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "setup" in result.stderr
