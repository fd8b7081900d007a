"""Shared fixtures: an isolated home, the stand-in LLM, a fake queue server, configs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_queue import NODE_KEY, FakeQueue, FakeQueueServer
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.worker import Node
from openbeepboop_testkit.standin import StandinLLM

#: The provider key the node's config holds for the stand-in model.
PROVIDER_KEY = "sk-provider-" + "p" * 30


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real user's config or state."""
    home = tmp_path / "home"
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("HOME", str(home))
    for var in ("OPENBEEPBOOP_SERVER_URL", "OPENBEEPBOOP_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def standin_server() -> Iterator[StandinLLM]:
    with StandinLLM() as llm:
        yield llm


@pytest.fixture
def llm(standin_server: StandinLLM) -> StandinLLM:
    """The stand-in LLM, with default knobs and an empty call log."""
    standin_server.configure(
        delay=0.0, fail_status=None, fail_first_n=0, flaky_marker=None, fail_prompts=()
    )
    standin_server.reset()
    return standin_server


@pytest.fixture
def make_config(tmp_path: Path, llm: StandinLLM) -> Callable[..., NodeConfig]:
    """A valid NodeConfig for the stand-in (model ``standin``), with overrides."""

    def build(**overrides: Any) -> NodeConfig:
        data: dict[str, Any] = {
            "server_url": "http://queue.test",
            "api_key": NODE_KEY,
            "node_id": "test-node",
            "concurrency": 4,
            "fetch_wait": 1.0,
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
            "shutdown_grace": 10.0,
            "spool_path": str(tmp_path / "spool.sqlite3"),
            "models": [
                {
                    "name": "standin",
                    "litellm_model": "openai/standin-model",
                    "api_base": llm.base_url,
                    "api_key": PROVIDER_KEY,
                    "timeout": 20,
                }
            ],
        }
        data.update(overrides)
        return NodeConfig.model_validate(data)

    return build


@pytest.fixture
def fake() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def served(fake: FakeQueue) -> Iterator[FakeQueueServer]:
    """The fake queue on a loopback port."""
    with FakeQueueServer(fake) as server:
        yield server


@pytest.fixture
def make_node(
    served: FakeQueueServer, make_config: Callable[..., NodeConfig]
) -> Callable[..., Node]:
    """A Node talking HTTP to the fake queue."""

    def build(**overrides: Any) -> Node:
        return Node(make_config(server_url=served.url, **overrides), version="test")

    return build
