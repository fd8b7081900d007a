"""The installed ``openbeepboop-server`` command in real processes, as an operator runs it.

Every process start costs seconds on a loaded machine, so this is the one
real-process run of the CLI chain; every branch (refusals, errors, output
formats) is covered in-process with CliRunner.
"""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

from openbeepboop_server.config import sqlite_url
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import KeyService

from tests.support.surface import server_command

TIMEOUT = 120


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*server_command(), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_setup_then_keys_create_list_revoke(tmp_path: Path) -> None:
    config = tmp_path / "server_config.toml"
    url = sqlite_url(tmp_path / "queue.db")

    setup = run("setup", "--config", str(config), "--database-url", url, "--non-interactive")
    assert setup.returncode == 0, setup.stderr
    assert re.search(r"^Admin API Key: sk-[A-Za-z0-9_-]{32,}$", setup.stdout, re.MULTILINE)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    created = run("keys", "create", "--role", "NODE", "--name", "gpu-box", "--config", str(config))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"sk-[A-Za-z0-9_-]{32,}", key)

    listed = run("keys", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert "gpu-box" in listed.stdout and "NODE" in listed.stdout
    assert "sk-" not in listed.stdout

    revoked = run("keys", "revoke", "gpu-box", "--config", str(config))
    assert revoked.returncode == 0, revoked.stderr
    assert "gpu-box" in revoked.stdout
    db = Database.connect(url)
    try:
        assert KeyService(db).authenticate(key) is None
    finally:
        db.dispose()
