"""``openbeepboop-server start``: the port it reports, and why it cannot listen.

``--port 0`` asks the system for a free port; the log must name the one it
got, or nobody can reach the server. Refusals to bind are one line whose hint
fits the reason.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
from click.testing import CliRunner
from openbeepboop_server.cli import main

from tests.support.cli import one_error_line
from tests.support.surface import free_port, server_command

#: Safety nets for a process starting and stopping on a loaded machine, not timings.
START_DEADLINE_SECONDS = 60.0
STOP_DEADLINE_SECONDS = 30.0
SERVING = re.compile(r"serving .* on http://127\.0\.0\.1:(\d+)")
#: An address from TEST-NET-1 (RFC 5737): never one of this machine's.
FOREIGN_ADDRESS = "192.0.2.1"


def wait_for_serving_port(process: subprocess.Popen[str], log: Path) -> int:
    """The port the server's start-up log line names, once it is there."""
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        found = SERVING.search(log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        assert process.poll() is None, log.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError(f"no 'serving' line within the deadline:\n{log.read_text()}")


def test_port_0_logs_the_port_actually_bound(config: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*server_command(), "start", "--config", str(config), "--host", "127.0.0.1",
             "--port", "0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
    try:
        port = wait_for_serving_port(process, log)
        assert port != 0
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_DEADLINE_SECONDS) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_an_address_this_machine_does_not_have_is_named_as_such(config: Path) -> None:
    port = free_port()
    result = CliRunner().invoke(
        main, ["start", "--config", str(config), "--host", FOREIGN_ADDRESS, "--port", str(port)]
    )
    line = one_error_line(result)
    assert f"cannot listen on {FOREIGN_ADDRESS}:{port}" in line
    assert "no such address" in line and "--host" in line
    assert "another server" not in line and "pass --port" not in line
