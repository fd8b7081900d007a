"""``openbeepboop-server migrate`` run twice at once: only the one that applied says so.

Both commands are real processes on one PostgreSQL database. The test holds
the migration lock itself until both are waiting for it, so the two always
overlap (without that, the first could finish before the second starts).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from openbeepboop_server.cli import main
from openbeepboop_server.config import sqlite_url
from openbeepboop_server.db.migrate import PG_MIGRATION_LOCK_ID, pending_revisions, upgrade_to_head

from tests.support.surface import server_command

#: A safety net for process start-up on a loaded machine, not a timing.
DEADLINE_SECONDS = 120.0
ALL_REVISIONS = pending_revisions("sqlite://")


@contextmanager
def migration_lock(url: str) -> Iterator[sa.Connection]:
    """Hold the advisory lock ``upgrade_to_head`` takes, on a connection of our own."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": PG_MIGRATION_LOCK_ID})
            conn.commit()
            try:
                yield conn
            finally:
                conn.execute(
                    sa.text("SELECT pg_advisory_unlock(:id)"), {"id": PG_MIGRATION_LOCK_ID}
                )
                conn.commit()
    finally:
        engine.dispose()


def waiting_for_lock(conn: sa.Connection) -> int:
    """How many sessions of this database wait for the migration lock."""
    count = conn.execute(
        sa.text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND objid = :objid AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"objid": PG_MIGRATION_LOCK_ID & 0xFFFFFFFF},
    ).scalar_one()
    conn.commit()
    return int(count)


def test_two_migrates_at_once_report_what_each_applied(pg_url: str, tmp_path: Path) -> None:
    config = tmp_path / "server_config.toml"
    config.write_text(f'[database]\nurl = "{pg_url}"\n')
    command = [*server_command(), "migrate", "--config", str(config)]
    with migration_lock(pg_url) as conn:
        processes = [
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            deadline = time.monotonic() + DEADLINE_SECONDS
            while waiting_for_lock(conn) < 2:
                exited = [process for process in processes if process.poll() is not None]
                assert not exited, [process.communicate() for process in exited]
                assert time.monotonic() < deadline, "the two migrates never both waited"
                time.sleep(0.05)
        except BaseException:
            for process in processes:
                process.kill()
            raise
    outputs = [process.communicate(timeout=DEADLINE_SECONDS) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    said = sorted(stdout.strip() for stdout, _ in outputs)
    applied = [line for line in said if line.startswith("Applied")]
    assert len(applied) == 1, said
    assert applied[0].startswith(f"Applied {len(ALL_REVISIONS)} migration(s) (")
    assert [line for line in said if line.startswith("Database is up to date")], said
    assert pending_revisions(pg_url) == []


def test_migrate_on_a_database_of_a_newer_server_is_one_line(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "q.db")
    upgrade_to_head(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    config = tmp_path / "server_config.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    result = CliRunner().invoke(main, ["migrate", "--config", str(config)])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "newer openbeepboop-server" in line
