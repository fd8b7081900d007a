"""``openbeepboop-server start`` on a database it cannot use: one line naming it, exit 1.

The schema check before the port is bound only reads; the app's start-up
then writes (the restart grace). Either failing is one ``Error:`` line naming
the database and the driver's reason, never uvicorn's traceback and its exit
status 3 (docs/server.md, "Commands"). The read-only case runs a real process
on a file made immutable, as the QA run that found it did.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from openbeepboop_server.cli import main
from openbeepboop_server.config import sqlite_url
from openbeepboop_server.keys import KeyService

from tests.support.cli import one_error_line
from tests.support.surface import free_port, server_command
from tests.test_crash import Server, set_up_server

#: A safety net for a process starting and failing on a loaded machine, not a timing.
DEADLINE_SECONDS = 120.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    def no_keys(_keys: KeyService) -> dict[str, str]:
        return {}

    yield from set_up_server(tmp_path, sqlite_url(tmp_path / "queue.db"), no_keys)


def test_start_on_a_file_it_cannot_write_is_one_line_and_exit_1(
    server: Server, tmp_path: Path
) -> None:
    # QA's run: the file made immutable. The schema check only reads, so the
    # refusal comes from the app's start-up writes (the restart grace).
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("making a file immutable needs root and chattr")
    database = tmp_path / "queue.db"
    if subprocess.run(["chattr", "+i", str(database)], check=False).returncode != 0:
        pytest.skip("this file system has no immutable files")
    try:
        done = subprocess.run(
            [*server_command(), "start", "--config", str(server.config), "--port", "0"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=DEADLINE_SECONDS,
            check=False,
        )
    finally:
        subprocess.run(["chattr", "-i", str(database)], check=True)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    expected = (
        f"Error: cannot start on the database sqlite:///{database}: attempt to write a "
        "readonly database: the file is not writable by this user (Operation not permitted)"
    )
    assert [line for line in lines if line.startswith("Error:")] == [expected], done.stderr
    assert lines[-1] == expected


def test_start_with_postgresql_down_names_the_database(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://openbeepboop@127.0.0.1:{free_port()}/queue"
    config = tmp_path / "server_config.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    result = CliRunner().invoke(main, ["start", "--config", str(config), "--port", "0"])
    line = one_error_line(result)
    assert line.startswith(f"Error: cannot start on the database {url}: connection failed"), line
