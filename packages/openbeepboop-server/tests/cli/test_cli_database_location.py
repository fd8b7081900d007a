"""A SQLite location the server cannot use is one line naming the absolute path and why.

SQLite's own message is "unable to open database file", with no path and no
reason. ``setup`` creates the folder of the database it was asked to make;
``migrate``, ``start``, ``keys`` and the other commands never create one and
say what is missing or not writable instead (docs/server.md, ``database.url``).

The permission cases run the real command as an unprivileged user (``setpriv``
when the tests run as root, where every folder is writable), in a folder that
user can reach.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from openbeepboop_server.cli import main
from openbeepboop_server.config import sqlite_url
from openbeepboop_server.db.migrate import upgrade_to_head

from tests.support.cli import one_error_line
from tests.support.surface import server_command

#: A safety net for process start-up on a loaded machine, not a timing.
DEADLINE_SECONDS = 120.0
#: The user the permission cases run as when the tests run as root ("nobody").
UNPRIVILEGED_ID = 65534

COMMANDS = (["migrate"], ["start"], ["keys", "list"], ["nodes"])


def write_config(folder: Path, url: str) -> Path:
    path = folder / "server_config.toml"
    path.write_text(f'[database]\nurl = "{url}"\n')
    path.chmod(0o644)
    return path


def test_a_missing_folder_is_named_by_every_command_and_migrate_does_not_create_it(
    tmp_path: Path,
) -> None:
    # Relative: taken from the config file's folder, shown as the absolute path.
    config = write_config(tmp_path, "sqlite:///rel/missing.db")
    for command in COMMANDS:
        line = one_error_line(CliRunner().invoke(main, [*command, "--config", str(config)]))
        assert line == (
            f"Error: cannot open the SQLite database {tmp_path}/rel/missing.db: folder "
            f"{tmp_path}/rel does not exist (create it, or fix [database] url)"
        ), command
    assert not (tmp_path / "rel").exists()


def test_a_folder_where_the_file_should_be_is_named(tmp_path: Path) -> None:
    (tmp_path / "q.db").mkdir()
    config = write_config(tmp_path, sqlite_url(tmp_path / "q.db"))
    line = one_error_line(CliRunner().invoke(main, ["migrate", "--config", str(config)]))
    assert line == (
        f"Error: cannot open the SQLite database {tmp_path}/q.db: that is a folder, "
        "not a database file (fix [database] url)"
    )


def test_setup_creates_the_folder_of_the_database_it_makes(tmp_path: Path) -> None:
    database = tmp_path / "new" / "sub" / "q.db"
    result = CliRunner().invoke(
        main,
        [
            "setup",
            "--non-interactive",
            "--config",
            str(tmp_path / "server_config.toml"),
            "--database-url",
            sqlite_url(database),
        ],
    )
    assert result.exit_code == 0, result.output
    assert database.is_file()


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A folder the unprivileged user can reach (pytest's own tmp dirs are root's, 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="obb-location-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in (folder, *folder.rglob("*")):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(folder)


@functools.cache
def _can_run_as(drop: tuple[str, ...]) -> bool:
    """Whether the server command starts at all under ``drop`` (setpriv to another user)."""
    done = subprocess.run(
        [*drop, *server_command(), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": tempfile.gettempdir()},
        timeout=DEADLINE_SECONDS,
        check=False,
    )
    return done.returncode == 0


def unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    """``openbeepboop-server ARGS`` as a user without rights on root's files."""
    argv = [*server_command(), *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: every folder is writable")
        ids = str(UNPRIVILEGED_ID)
        drop = [setpriv, f"--reuid={ids}", f"--regid={ids}", "--clear-groups"]
        if not _can_run_as(tuple(drop)):
            pytest.skip(
                "the unprivileged user cannot reach this checkout's installed code "
                "(a parent folder is private, e.g. one made by mktemp -d)"
            )
        argv = [*drop, *argv]
    env = {**os.environ, "HOME": tempfile.gettempdir()}
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=DEADLINE_SECONDS, check=False
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_a_folder_that_is_not_writable_is_named_with_the_reason(reachable: Path) -> None:
    folder = reachable / "data"
    folder.mkdir(mode=0o555)
    folder.chmod(0o555)
    config = write_config(reachable, sqlite_url(folder / "q.db"))
    line = error_line(unprivileged("migrate", "--config", str(config)))
    assert line == (
        f"Error: cannot open the SQLite database {folder}/q.db: folder {folder} is not "
        "writable by this user (Permission denied); SQLite keeps the database and its "
        "-wal and -shm files there"
    )


def test_a_database_file_that_is_not_writable_is_named_with_the_reason(
    reachable: Path,
) -> None:
    database = reachable / "q.db"
    upgrade_to_head(sqlite_url(database))  # made by another user (here: root), mode 0644
    database.chmod(0o644)
    config = write_config(reachable, sqlite_url(database))
    line = error_line(unprivileged("keys", "list", "--config", str(config)))
    assert line == (
        f"Error: cannot open the SQLite database {database}: the file is not writable "
        "by this user (Permission denied)"
    )


def test_setup_says_which_folder_it_could_not_create(reachable: Path) -> None:
    locked = reachable / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    database = locked / "sub" / "q.db"
    line = error_line(
        unprivileged(
            "setup",
            "--non-interactive",
            "--config",
            str(reachable / "conf" / "server_config.toml"),
            "--database-url",
            sqlite_url(database),
        )
    )
    assert line == (
        f"Error: cannot create folder {locked}/sub for the SQLite database {database}: "
        "Permission denied"
    )
