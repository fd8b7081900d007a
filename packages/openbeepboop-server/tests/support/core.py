"""What the server core's tests build by hand: a fake clock, requests, results, callers,
migrated databases. The fixtures built from them live in the conftest.py files."""

from __future__ import annotations

from pathlib import Path

from openbeepboop_schemas import ChatCompletion, ChatCompletionRequest, Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.keys import Caller, KeyService


class FakeClock:
    """A clock tests move by hand, so lease and backoff tests never sleep."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat_request(
    model: str = "llama3", content: str = "Hi", **extra: object
) -> ChatCompletionRequest:
    """A minimal valid chat completion request."""
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    )


def completion(content: str = "Hello!", model: str = "llama3", **extra: object) -> ChatCompletion:
    """A chat.completion as a node would deliver it."""
    return ChatCompletion.model_validate(
        {
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
            **extra,
        }
    )


def sqlite_url_for(path: Path) -> str:
    """A SQLAlchemy URL for a SQLite file."""
    return f"sqlite:///{path}"


def migrated_database(url: str) -> Database:
    """Migrate ``url`` to head and connect to it."""
    upgrade_to_head(url)
    return Database.connect(url)


def make_caller(keys: KeyService, role: Role, name: str) -> Caller:
    """Create a key and authenticate with it."""
    key, _ = keys.create(role, name)
    caller = keys.authenticate(key)
    assert caller is not None
    return caller
