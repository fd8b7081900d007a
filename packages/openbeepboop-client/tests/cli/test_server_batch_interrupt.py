"""Ctrl-C while ``batch create --wait`` or ``batch status --wait`` follows a batch.

A real command line in a process of its own gets a real SIGINT, from a
stand-in of the server's Batch API on loopback: exit 130, one line naming
the batch and how to follow it again, the batch not cancelled, no traceback.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import API_KEY, FILE, batch_body
from openbeepboop._config import write_config_file
from openbeepboop_schemas import (
    OPENAI_BATCH_CANCEL_PATH,
    OPENAI_BATCH_PATH,
    OPENAI_BATCHES_PATH,
    OPENAI_FILES_PATH,
)
from restartable_server import JsonHandler

#: Safety net of every wait here: generous on a slow, shared box.
SAFETY_SECONDS = 60.0

RUN_CLI = "from openbeepboop.cli import main; main(prog_name='openbeepboop-client')"

FOLLOW_AGAIN = "openbeepboop-client batch status batch_1 --wait"


class BatchServer:
    """Answers an upload and a create, then ``in_progress`` for ever; records cancels."""

    def __init__(self) -> None:
        self.looks = 0
        self.looked = threading.Event()
        self.cancels = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == OPENAI_FILES_PATH:
                    self.answer(200, FILE)
                elif self.path == OPENAI_BATCHES_PATH:
                    self.answer(200, batch_body("validating"))
                elif self.path == OPENAI_BATCH_CANCEL_PATH.format(batch_id="batch_1"):
                    owner.cancels += 1
                    self.answer(200, batch_body("cancelling"))
                else:
                    self.answer(404, {"error": {"message": "no", "type": "not_found"}})

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path != OPENAI_BATCH_PATH.format(batch_id="batch_1"):
                    self.answer(404, {"error": {"message": "no", "type": "not_found"}})
                    return
                self.answer(200, batch_body("in_progress", completed=1))
                owner.looks += 1
                owner.looked.set()

        return Handler


@pytest.fixture
def batch_server() -> Iterator[BatchServer]:
    made = BatchServer()
    yield made
    made.stop()


def start_cli(tmp_path: Path, server: BatchServer, *args: str) -> subprocess.Popen[str]:
    config = tmp_path / "client_config.toml"
    write_config_file(config, {"server_url": server.url, "api_key": API_KEY})
    return subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, *args, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupt_while_following(
    proc: subprocess.Popen[str], server: BatchServer, *, repeat: bool
) -> tuple[str, str]:
    """SIGINT once the command follows the batch (again and again until it exits, if
    ``repeat``); its stdout and stderr."""
    try:
        assert server.looked.wait(SAFETY_SECONDS), "the command never looked at the batch"
        proc.send_signal(signal.SIGINT)
        while repeat and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.01)
        return proc.communicate(timeout=SAFETY_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def assert_stopped_waiting(proc: subprocess.Popen[str], stderr: str, server: BatchServer) -> str:
    """Exit 130 with one ``Error:`` line naming the batch; the batch was not cancelled."""
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr
    assert "stopped waiting for batch batch_1" in errors[0]
    assert "nothing was cancelled" in errors[0]
    assert FOLLOW_AGAIN in errors[0]
    assert server.cancels == 0
    return errors[0]


@pytest.mark.parametrize("repeat", [False, True], ids=["one Ctrl-C", "Ctrl-C again and again"])
def test_ctrl_c_in_batch_create_wait_names_the_batch_and_leaves_it_running(
    tmp_path: Path, batch_server: BatchServer, repeat: bool
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("{}\n")
    proc = start_cli(tmp_path, batch_server, "batch", "create", str(source), "--wait")
    stdout, stderr = interrupt_while_following(proc, batch_server, repeat=repeat)
    error = assert_stopped_waiting(proc, stderr, batch_server)
    lines = stderr.splitlines()
    assert len(lines) == 2, stderr
    # The id was said before the wait began: a log holds it even if the process is killed.
    assert lines[0].startswith("Batch created: batch_1 (input file file-1)"), stderr
    assert lines[1] == error
    assert stdout == ""


def test_ctrl_c_in_batch_create_wait_json_prints_the_batch_as_it_stood(
    tmp_path: Path, batch_server: BatchServer
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("{}\n")
    proc = start_cli(tmp_path, batch_server, "batch", "create", str(source), "--wait", "--json")
    stdout, stderr = interrupt_while_following(proc, batch_server, repeat=False)
    assert_stopped_waiting(proc, stderr, batch_server)
    shown = json.loads(stdout)
    assert shown["id"] == "batch_1" and shown["status"] in {"validating", "in_progress"}


@pytest.mark.parametrize("repeat", [False, True], ids=["one Ctrl-C", "Ctrl-C again and again"])
def test_ctrl_c_in_batch_status_wait_leaves_the_batch_running(
    tmp_path: Path, batch_server: BatchServer, repeat: bool
) -> None:
    proc = start_cli(tmp_path, batch_server, "batch", "status", "batch_1", "--wait")
    stdout, stderr = interrupt_while_following(proc, batch_server, repeat=repeat)
    error = assert_stopped_waiting(proc, stderr, batch_server)
    assert stderr.splitlines() == [error]
    assert stdout == ""
