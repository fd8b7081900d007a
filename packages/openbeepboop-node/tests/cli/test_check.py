"""``check``, the checks ``setup`` runs before writing, and ``batch`` with a dead backend."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import PROVIDER_KEY
from fake_queue import (
    NODE_KEY,
    SUBMIT,
    FakeQueue,
    FakeQueueServer,
    LoopbackServer,
    Reply,
    always,
)
from openbeepboop_node import backends
from openbeepboop_node.cli import main, options
from openbeepboop_node.cli.errors import (
    EXIT_BACKEND_UNREACHABLE,
    EXIT_CONFIG,
    EXIT_KEY_REFUSED,
    EXIT_SERVER_UNREACHABLE,
)
from openbeepboop_node.config import NodeConfig, load_config, write_config
from openbeepboop_node.spool import Spool
from openbeepboop_schemas import LEASE_WATCH_PATH
from openbeepboop_testkit.standin import StandinLLM


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def write(make_config: Callable[..., NodeConfig]) -> Callable[..., Path]:
    """Write a node_config.toml for one model whose backend is at ``api_base``."""

    def write_file(path: Path, server_url: str, api_base: str, **top: Any) -> Path:
        model = {
            "name": "standin",
            "litellm_model": "openai/standin-model",
            "api_base": api_base,
            "api_key": PROVIDER_KEY,
        }
        config = make_config(server_url=server_url, node_id="checked-node", models=[model], **top)
        write_config(config, path)
        return path

    return write_file


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def live_config(
    write: Callable[..., Path], tmp_path: Path, served: FakeQueueServer, llm: StandinLLM
) -> Path:
    """A config for the fake queue and the stand-in: every check passes."""
    return write(tmp_path / "node.toml", served.url, llm.base_url)


def test_check_passes_when_server_key_and_backend_answer(
    live_config: Path, fake: FakeQueue
) -> None:
    config = live_config
    code, out, err = invoke("check", "--config", str(config))
    assert code == 0, out + err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok", "ok"]
    assert "lists 1 model(s): standin-model" in lines[2]
    # A lease watch, which the server only reads: a heartbeat or a fetch
    # would record the node as seen, running or not.
    assert fake.watches == [
        {
            "node_id": "checked-node",
            "leases": [{"job_id": "job-node-check", "lease_token": "node-check"}],
            "wait": 0.0,
        }
    ]
    assert fake.heartbeats == [] and fake.fetches == []
    assert NODE_KEY not in out + err and PROVIDER_KEY not in out + err


def test_check_falls_back_to_a_heartbeat_on_a_server_without_the_lease_watch(
    live_config: Path, fake: FakeQueue
) -> None:
    fake.watch_status = 404  # with the server's envelope: an older OpenBeepBoop server
    code, out, err = invoke("check", "--config", str(live_config))
    assert code == 0, out + err
    assert [hb["leases"] for hb in fake.heartbeats] == [[]]


def test_check_says_when_server_url_is_not_an_openbeepboop_server(
    write: Callable[..., Path], tmp_path: Path, llm: StandinLLM
) -> None:
    with LoopbackServer(always(Reply(404, text="404 page not found"))) as other:
        config = write(tmp_path / "node.toml", other.url, llm.base_url)
        code, out, _ = invoke("check", "--config", str(config))
        assert [r.path for r in other.received] == [LEASE_WATCH_PATH]  # no heartbeat fallback
    assert code == EXIT_CONFIG
    assert out.splitlines()[1].startswith(
        f"FAILED server: server_url {other.url} is not an OpenBeepBoop queue server: "
        f"{LEASE_WATCH_PATH} answered 404 Not Found without its error envelope"
    )


def test_check_names_a_dead_backend_and_exits_with_its_status(
    write: Callable[..., Path], tmp_path: Path, served: FakeQueueServer
) -> None:
    dead = closed_url()
    config = write(tmp_path / "node.toml", served.url, f"{dead}/v1")
    code, out, _ = invoke("check", "--config", str(config))
    assert code == EXIT_BACKEND_UNREACHABLE
    # One human line: the URL and the reason, not aiohttp's "Cannot connect to host ... ssl:default"
    assert out.splitlines()[-1] == (
        f"FAILED model standin: backend unreachable: {dead}/v1/models: connection refused"
    )


def test_check_json_and_the_status_of_each_kind_of_failure(
    live_config: Path, fake: FakeQueue, write: Callable[..., Path], llm: StandinLLM, tmp_path: Path
) -> None:
    fake.key = "sk-another-key"
    config = live_config
    code, out, _ = invoke("check", "--config", str(config), "--json")
    assert code == EXIT_KEY_REFUSED
    report = json.loads(out)
    assert report["ok"] is False
    assert [(c["name"], c["ok"]) for c in report["checks"]] == [
        ("config", True),
        ("server", False),
        ("model standin", True),
    ]
    assert report["checks"][2]["models"] == ["standin-model"]

    config = write(tmp_path / "node.toml", closed_url(), llm.base_url)
    code, out, _ = invoke("check", "--config", str(config))
    assert code == EXIT_SERVER_UNREACHABLE
    refused = r"^FAILED server: cannot connect to http://127.0.0.1:\d+: connection refused$"
    assert re.search(refused, out, re.M)

    code, out, _ = invoke("check", "--config", str(tmp_path / "missing.toml"))
    assert code == EXIT_CONFIG
    assert out.startswith("FAILED config: no node config at")


SETUP = ["setup", "--non-interactive", "--api-key", NODE_KEY, "--node-id", "set-up"]


def test_setup_refuses_to_write_a_config_whose_backend_is_dead(
    tmp_path: Path, fake: FakeQueue, served: FakeQueueServer
) -> None:
    path = tmp_path / "node.toml"
    dead = closed_url()
    args = [*SETUP, "--config", str(path), "--server-url", served.url, "--model", "m"]
    args += ["--litellm-model", "ollama_chat/m", "--api-base", dead]
    code, out, err = invoke(*args)
    assert code == EXIT_BACKEND_UNREACHABLE
    assert not path.exists()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(
        f"openbeepboop-node: error: model m: backend unreachable: {dead}/api/tags: "
        "connection refused (nothing written"
    )
    assert "nothing written" in err
    # The server check took the key without a call that records a node.
    assert len(fake.watches) == 1 and fake.heartbeats == [] and fake.fetches == []

    code, out, err = invoke(*args, "--no-check")
    assert code == 0, err
    assert path.exists() and "not checked (--no-check)" in out


def test_setup_checks_and_writes_with_a_live_backend(
    tmp_path: Path, served: FakeQueueServer, llm: StandinLLM
) -> None:
    path = tmp_path / "node.toml"
    code, out, err = invoke(
        *SETUP,
        "--config",
        str(path),
        "--server-url",
        served.url,
        "--model",
        "m",
        "--litellm-model",
        "openai/standin-model",
        "--api-base",
        llm.base_url,
        "--model-concurrency",
        "2",
        "--concurrency",
        "4",
    )
    assert code == 0, err
    assert "lists 1 model(s): standin-model" in out
    assert load_config(path, environ={}).models[0].concurrency == 2


def test_batch_exits_with_the_backend_status_and_leaves_the_jobs_queued(
    write: Callable[..., Path], tmp_path: Path, fake: FakeQueue, served: FakeQueueServer
) -> None:
    ids = [fake.add_job(f"nobody home {i}") for i in range(3)]
    dead = f"{closed_url()}/v1"
    config = write(tmp_path / "node.toml", served.url, dead, batch_backend_wait=0.3)
    code, _, err = invoke("batch", "--config", str(config))
    assert code == EXIT_BACKEND_UNREACHABLE
    last = err.strip().splitlines()[-1]
    assert last.startswith("openbeepboop-node: error: the backend of model(s) standin stayed")
    assert f"its backend cannot be reached (cannot connect to {dead}: connection refused)" in err
    with fake.lock:
        assert {job[0] for job in fake.queued} == set(ids)
    assert fake.errors() == {} and fake.results() == {}


def test_batch_whose_releases_never_reached_the_server_keeps_them_and_exits_3(
    write: Callable[..., Path], tmp_path: Path, fake: FakeQueue, served: FakeQueueServer
) -> None:
    job_id = fake.add_job("nobody home")
    fake.down_paths = {SUBMIT}  # the job's hand-back (its backend is dead) never arrives
    dead = f"{closed_url()}/v1"
    config = write(
        tmp_path / "node.toml", served.url, dead, batch_backend_wait=0.3, batch_give_up=0.5
    )
    code, _, err = invoke("batch", "--config", str(config))
    assert code == EXIT_SERVER_UNREACHABLE, err
    assert err.strip().splitlines()[-1] == (
        f"openbeepboop-node: error: 1 lease release(s) could not be delivered to {served.url}; "
        "they are kept and sent by the next run"
    )
    spooled = Spool(load_config(config, environ={}).resolved_spool_path()).pending()
    assert [(o.job_id, o.kind) for o in spooled] == [(job_id, "release")]


def test_check_looks_at_every_server_url_on_its_own(
    write: Callable[..., Path], tmp_path: Path, served: FakeQueueServer, llm: StandinLLM
) -> None:
    dead = closed_url()
    config = write(tmp_path / "node.toml", f"{served.url},{dead}", llm.base_url)
    code, out, _ = invoke("check", "--config", str(config))
    assert code == EXIT_SERVER_UNREACHABLE
    lines = out.splitlines()
    assert lines[1].startswith(f"ok     server {served.url}: {served.url} takes the node key")
    assert lines[2] == f"FAILED server {dead}: cannot connect to {dead}: connection refused"


@pytest.fixture
def slow_backend() -> Iterator[Callable[[float], str]]:
    """A backend on loopback that connects at once and lists m1 after ``delay`` seconds."""
    servers: list[ThreadingHTTPServer] = []
    release = threading.Event()

    def start(delay: float) -> str:
        class Slow(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                release.wait(delay)
                body = json.dumps({"object": "list", "data": [{"id": "m1"}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the check gave up and hung up

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    release.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def test_setup_gives_a_slow_backend_time_to_answer_and_names_one_that_never_does(
    tmp_path: Path,
    served: FakeQueueServer,
    slow_backend: Callable[[float], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Shortened: 5 s to connect, 30 s to answer.
    monkeypatch.setattr(backends, "PROBE_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(backends, "CHECK_ANSWER_SECONDS", 4.0, raising=False)
    path = tmp_path / "node.toml"
    args = [*SETUP, "--config", str(path), "--server-url", served.url, "--model", "m1"]
    # Slower than the connect timeout, inside the answer timeout: it passes.
    code, out, err = invoke(*args, "--litellm-model", "openai/m1", "--api-base", slow_backend(1.5))
    assert code == 0, err
    assert "lists 1 model(s): m1" in out and path.exists()

    path.unlink()
    monkeypatch.setattr(backends, "CHECK_ANSWER_SECONDS", 1.0)
    base = slow_backend(60.0)
    code, out, err = invoke(*args, "--litellm-model", "openai/m1", "--api-base", base)
    assert code == EXIT_BACKEND_UNREACHABLE and not path.exists()
    assert err.startswith(
        f"openbeepboop-node: error: model m1: backend did not answer: {base}/models: "
        "connected, but no answer in 1 s (nothing written"
    ), err


def test_the_interactive_wizard_lists_a_slow_backends_models_as_the_checks_would(
    tmp_path: Path,
    served: FakeQueueServer,
    slow_backend: Callable[[float], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Slower than the 5 s a backend probe gets in all, inside the checks' 30 s to answer.
    monkeypatch.setattr(options, "stdin_is_terminal", lambda: True)
    base = slow_backend(6.0)
    path = tmp_path / "node.toml"
    args = ["setup", "--config", str(path), "--server-url", served.url, "--api-key", NODE_KEY]
    args += ["--node-id", "set-up", "--concurrency", "1", "--model", "m1", "--api-base", base]
    # Pick model 1, Enter for everything else, no other model.
    answers = "1\n" + "\n" * 6 + "n\n"
    result = CliRunner().invoke(main, [*args, "--no-check"], input=answers)
    assert result.exit_code == 0, result.output
    assert f"Models at {base}:\n  1. m1" in result.stdout
    assert load_config(path, environ={}).models[0].litellm_model == "ollama_chat/m1"


@pytest.fixture
def breaking() -> Iterator[Callable[[str], str]]:
    """Servers that take the connection, read a request and break it: reset, or close."""
    listeners: list[socket.socket] = []

    def serve(mode: str) -> str:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listeners.append(listener)

        def answer_none() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:  # closed: the test is over
                    return
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                        data += chunk
                    if mode == "reset":  # RST instead of FIN
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )

        threading.Thread(target=answer_none, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield serve
    for listener in listeners:
        listener.close()


@pytest.mark.parametrize(
    ("server_way", "backend_way", "server_says", "backend_says"),
    [
        (
            "reset",
            "close",
            "the connection to {server} broke: connection reset",
            "closed the connection without answering",
        ),
        (
            "close",
            "reset",
            "{server} closed the connection without answering",
            "the connection broke: connection reset",
        ),
    ],
)
def test_a_connection_made_and_broken_is_not_worded_as_no_connection(
    write: Callable[..., Path],
    tmp_path: Path,
    breaking: Callable[[str], str],
    server_way: str,
    backend_way: str,
    server_says: str,
    backend_says: str,
) -> None:
    server, base = breaking(server_way), breaking(backend_way)
    path = write(tmp_path / "node.toml", server, base)
    code, out, _ = invoke("check", "--config", str(path))
    # Still failures of the same kinds (the first one's status): only the words changed.
    assert code == EXIT_SERVER_UNREACHABLE
    lines = out.splitlines()
    assert f"FAILED server: {server_says.format(server=server)}" in lines, out
    assert (
        f"FAILED model standin: backend did not answer: {base}/models: connected, but "
        f"{backend_says}"
    ) in lines, out
    assert "cannot connect" not in out
