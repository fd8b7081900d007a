"""Shared fixtures: an isolated environment, a mocked server, canned bodies.

Every test runs with the OPENBEEPBOOP_* variables removed and the user config
directory pointed into tmp_path, so nothing reads or writes the real home.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
from click.testing import CliRunner, Result
from openbeepboop import Client, _constants
from openbeepboop._config import write_config_file
from openbeepboop.cli import main

BASE_URL = "http://obb.test"
API_KEY = "sk-test-" + "k" * 40

#: The real pacing of waiting loops, before the fixture below shortens it.
REAL_MIN_WAIT_ROUND_SECONDS = _constants.MIN_WAIT_ROUND_SECONDS

_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No OPENBEEPBOOP_* variables; the user config dir lives in tmp_path."""
    for name in (
        _constants.ENV_SERVER_URL,
        _constants.ENV_API_KEY,
        _constants.ENV_DEFAULT_MODEL,
    ):
        monkeypatch.delenv(name, raising=False)
    config_home = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return config_home


@pytest.fixture(autouse=True)
def sigint_handler_restored() -> Iterator[None]:
    """A command stopped by Ctrl-C ignores a second one; pytest must not inherit that."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.fixture(autouse=True)
def fast_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff and wait pacing in milliseconds, so tests that retry stay quick."""
    monkeypatch.setattr(_constants, "INITIAL_RETRY_DELAY", 0.001)
    monkeypatch.setattr(_constants, "MAX_RETRY_DELAY", 0.005)
    monkeypatch.setattr(_constants, "MIN_WAIT_ROUND_SECONDS", 0.001)


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    """The queue server, mocked at the httpx transport."""
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(base_url=BASE_URL, api_key=API_KEY) as made:
        yield made


def new_job_id() -> str:
    return f"job-{next(_ids):06d}"


def job_body(job_id: str | None = None, status: str = "QUEUED", model: str = "llama3") -> dict:
    return {
        "id": job_id or new_job_id(),
        "object": "job",
        "status": status,
        "model": model,
        "created_at": 1_700_000_000,
    }


def completion_body(content: str = "Hello!", **extra: object) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_001,
        "model": "llama3",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        **extra,
    }


def entry_body(job_id: str, status: str = "QUEUED", **fields: object) -> dict:
    body: dict = {
        "id": job_id,
        "object": "job",
        "status": status,
        "completed": status == "COMPLETED",
        "model": "llama3",
        "result": None,
        "error": None,
        "attempts": 0,
        "created_at": 1_700_000_000,
    }
    if status == "COMPLETED" and "result" not in fields:
        body["result"] = completion_body(f"answer to {job_id}")
    if status == "FAILED" and "error" not in fields:
        body["error"] = {"message": "model exploded", "type": "inference_error"}
    if status == "NOT_FOUND":
        body = {"id": job_id, "object": "job", "status": "NOT_FOUND", "completed": False}
    body.update(fields)
    return body


#: The uploaded input file of a server-side batch, as the server answers it.
FILE = {
    "id": "file-1",
    "object": "file",
    "bytes": 3,
    "created_at": 1_700_000_000,
    "filename": "in.jsonl",
    "purpose": "batch",
}


def batch_body(status: str, completed: int | None = None) -> dict:
    """A server-side batch of two lines (both completed once ``completed``, by default)."""
    done = completed if completed is not None else (2 if status == "completed" else 0)
    return {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-1",
        "completion_window": "24h",
        "status": status,
        "created_at": 1_700_000_000,
        "request_counts": {"total": 2, "completed": done, "failed": 0},
    }


def error_body(message: str, type_: str = "invalid_request_error", **fields: object) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": None, **fields}}


# --- the command line -------------------------------------------------------


def make_runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into output unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "client_config.toml"
    write_config_file(path, {"server_url": BASE_URL, "api_key": API_KEY, "default_model": "llama3"})
    return path


class Cli:
    """Runs ``openbeepboop-client`` in-process with the test's config file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.runner = make_runner()

    def __call__(self, *args: str, config: bool = True, input: str | None = None) -> Result:
        argv = list(args)
        if config:
            argv += ["--config", str(self.config)]
        return self.runner.invoke(main, argv, input=input, catch_exceptions=False)


@pytest.fixture
def cli(config_file: Path) -> Cli:
    return Cli(config_file)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Non-zero exit, one ``Error: ...`` line on stderr, no traceback."""
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
