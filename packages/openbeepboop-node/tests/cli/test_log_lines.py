"""What the node logs holds no control character: a backend's words cannot forge a line.

A node's log quotes text others chose (a backend's error message, names a
server sent). A real ``openbeepboop-node batch`` runs a job against a backend
on a loopback socket that answers with terminal escapes and a forged log
line in its error message; every line of the log must stay one inert line.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner
from conftest import PROVIDER_KEY
from fake_queue import NODE_KEY, FakeQueue, FakeQueueServer
from openbeepboop_node.cli import main
from openbeepboop_node.cli.options import configure_logging

#: Colour, terminal title, and a line that looks like the node's own.
HOSTILE = "\x1b[31mbackend on fire\x1b]0;pwned\x07\x1b[0m\n2026-01-01 00:00:00 WARNING forged"


class _HostileBackend(BaseHTTPRequestHandler):
    """An OpenAI-style backend refusing every request with a hostile message."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {"error": {"message": HOSTILE, "type": "invalid_request_error", "code": None}}
        ).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def backend() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileBackend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_backends_hostile_error_message_is_logged_escaped(
    tmp_path: Path, fake: FakeQueue, served: FakeQueueServer, backend: str
) -> None:
    job = fake.add_job("hello")
    config = tmp_path / "node.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "server_url": served.url,
                "api_key": NODE_KEY,
                "node_id": "log-node",
                "spool_path": str(tmp_path / "spool.sqlite3"),
                "models": [
                    {
                        "name": "standin",
                        "litellm_model": "openai/standin-model",
                        "api_base": backend,
                        "api_key": PROVIDER_KEY,
                    }
                ],
            }
        )
    )
    result = CliRunner().invoke(main, ["batch", "--config", str(config)])
    assert job in fake.errors(), result.stderr
    lines = result.stderr.splitlines()
    assert all(line.isprintable() for line in lines), lines
    assert not any("forged" in line and not line.startswith("20") for line in lines)
    assert not any(line.startswith("2026-01-01 00:00:00 WARNING forged") for line in lines)
    [failed] = [line for line in lines if f"job {job} model=standin" in line]
    assert "\\x1b[31mbackend on fire\\x1b]0;pwned\\x07\\x1b[0m\\x0a2026-01-01" in failed


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = saved


@pytest.mark.usefixtures("restore_logging")
def test_a_traceback_is_escaped_and_indented_so_no_line_looks_like_a_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(0)
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        logging.getLogger("openbeepboop_node.running").exception("job %s: unexpected", "j\x1b1")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith(" ERROR job j\\x1b1: unexpected")
    assert lines[1] == "  Traceback (most recent call last):"
    assert all(line.isprintable() for line in lines), lines
    assert lines[-2].startswith("  ValueError: \\x1b[31mbackend on fire")
    # The message's own line break stays (a traceback is lines), indented like the rest.
    assert lines[-1] == "  2026-01-01 00:00:00 WARNING forged"
    assert all(line.startswith("  ") for line in lines[1:])
