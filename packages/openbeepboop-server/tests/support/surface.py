"""Plain helpers shared by the surface tests (bodies, headers, settings, ports)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openbeepboop_server.config import Settings, parse_settings, sqlite_url
from openbeepboop_server.context import ServerContext
from starlette.testclient import TestClient


def make_settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """Settings on a fresh SQLite file in ``tmp_path``; ``sections`` override defaults."""
    data: dict[str, Any] = {"database": {"url": sqlite_url(tmp_path / "queue.db")}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_settings(data, source="test", base=tmp_path)


@contextmanager
def fresh_app(directory: Path) -> Iterator[tuple[TestClient, ServerContext]]:
    """A second, started app on its own new database in ``directory`` (default settings)."""
    from openbeepboop_server.app import create_app
    from openbeepboop_server.db.migrate import upgrade_to_head

    directory.mkdir()
    settings = make_settings(directory)
    upgrade_to_head(settings.database.url)
    with TestClient(create_app(settings)) as client:
        context: ServerContext = client.app.state.context  # type: ignore[attr-defined]
        yield client, context


def chat(model: str = "llama3", content: str = "Hi", **extra: Any) -> dict[str, Any]:
    """A minimal chat completion request body."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def idle_fetch(*models: str) -> dict[str, Any]:
    """A node's fetch that returns at once: the node is seen serving ``models``, nothing parks.

    The synchronous chat refuses a model no node seen recently serves; tests
    of its wait post this first, so its job is queued and no node takes it.
    """
    return {"node_id": "idle-node", "models": list(models), "wait": 0}


def completion(content: str = "Hello!", model: str = "llama3") -> dict[str, Any]:
    """A chat.completion as a node delivers it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def bearer(key: str) -> dict[str, str]:
    """The Authorization header for ``key``."""
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ApiKeys:
    """One key per role, a second user, and a revoked key."""

    admin: str
    node: str
    user: str
    other_user: str
    revoked: str
    metrics: str = ""

    def by_name(self, name: str) -> str | None:
        """A key by fixture name; ``"none"`` is no key at all."""
        return None if name == "none" else str(getattr(self, name))


def server_command() -> list[str]:
    """How to run ``openbeepboop-server`` in this environment (the installed script if any)."""
    import shutil
    import sys

    script = Path(sys.executable).parent / "openbeepboop-server"
    if script.exists():
        return [str(script)]
    found = shutil.which("openbeepboop-server")
    return [found] if found else [sys.executable, "-m", "openbeepboop_server"]
