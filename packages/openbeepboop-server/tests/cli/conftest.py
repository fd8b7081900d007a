"""Fixtures of the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from openbeepboop_server.cli import main
from openbeepboop_server.config import sqlite_url


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A server set up by `setup --non-interactive` on a SQLite file; its config path."""
    path = tmp_path / "server_config.toml"
    result = CliRunner().invoke(
        main,
        [
            "setup",
            "--config",
            str(path),
            "--database-url",
            sqlite_url(tmp_path / "q.db"),
            "--non-interactive",
        ],
    )
    assert result.exit_code == 0, result.output
    return path
