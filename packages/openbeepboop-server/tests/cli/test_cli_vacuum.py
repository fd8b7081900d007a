"""``vacuum``: the space of deleted rows goes back to the file system, and stays going back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from openbeepboop_schemas import Role
from openbeepboop_server.cli import main
from openbeepboop_server.config import load_settings, sqlite_path
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.service import QueueService

from tests.support.core import chat_request


def _database(config: Path) -> Path:
    path = sqlite_path(load_settings(config).database.url)
    assert path is not None
    return path


def _fill_and_delete(config: Path) -> None:
    """Many large jobs, then deleted behind the server's back (no incremental vacuum)."""
    db = Database.connect(load_settings(config).database.url)
    try:
        keys = KeyService(db)
        user = keys.authenticate(keys.create(Role.USER, "alice")[0])
        assert user is not None
        queue = QueueService(db, load_settings(config).queue.policy())
        queue.submit_many(user, [chat_request("m", "x" * 20_000)] * 200)
        with db.write() as conn:
            conn.execute(sa.delete(jobs))
    finally:
        db.dispose()


def _old_style(path: Path) -> None:
    """Make the file what an older version created: no auto-vacuum."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript("PRAGMA auto_vacuum = NONE; VACUUM;")
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    finally:
        conn.close()


def test_vacuum_shrinks_the_file_and_converts_it_to_incremental(config: Path) -> None:
    path = _database(config)
    _old_style(path)
    _fill_and_delete(config)
    before = path.stat().st_size
    assert before > 3_000_000

    result = CliRunner().invoke(main, ["vacuum", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "Vacuumed" in result.output
    after = path.stat().st_size
    assert after < before / 10, (before, after)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    finally:
        conn.close()


def test_a_new_database_gives_space_back_after_a_purge_by_itself(config: Path) -> None:
    path = _database(config)
    _fill_and_delete(config)
    db = Database.connect(load_settings(config).database.url)
    try:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2
            assert conn.exec_driver_sql("PRAGMA freelist_count").scalar() > 500
        db.incremental_vacuum()
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA freelist_count").scalar() == 0
    finally:
        db.dispose()
    assert path.stat().st_size < 1_000_000


def test_vacuum_without_a_config_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["vacuum", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no configuration")
    assert "Traceback" not in result.output


def test_vacuum_without_the_disk_space_it_needs_says_so_in_one_line(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What SQLite raises when VACUUM's copy of the database finds the disk full.
    disk_full = sqlite3.OperationalError("database or disk is full")
    disk_full.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]

    def vacuum(self: Database, *, full: bool = False) -> None:
        raise disk_full

    monkeypatch.setattr(Database, "vacuum", vacuum)
    result = CliRunner().invoke(main, ["vacuum", "--config", str(config)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: not enough free disk space to vacuum "), result.output
    assert "the size of the file" in result.output
    assert "unexpected" not in result.output and "Traceback" not in result.output
