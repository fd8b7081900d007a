"""The engine's settings and the one-writer discipline on SQLite."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import Role
from openbeepboop_server.db.database import Database, _enable_wal
from openbeepboop_server.db.tables import api_keys
from openbeepboop_server.errors import InvalidSetting, ServerError


def _pragma(db: Database, name: str) -> object:
    with db.read() as conn:
        return conn.execute(sa.text(f"PRAGMA {name}")).scalar()


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(db: Database) -> None:
    assert _pragma(db, "journal_mode") == "wal"
    assert _pragma(db, "foreign_keys") == 1
    assert _pragma(db, "busy_timeout") == 30_000
    assert _pragma(db, "synchronous") == 1  # NORMAL


@pytest.mark.parametrize(("mode", "value"), [("NORMAL", 1), ("FULL", 2), ("full", 2), ("OFF", 0)])
def test_sqlite_synchronous_is_configurable(tmp_path: Path, mode: str, value: int) -> None:
    db = Database.connect(f"sqlite:///{tmp_path / 'x.db'}", sqlite_synchronous=mode)
    try:
        assert _pragma(db, "synchronous") == value
    finally:
        db.dispose()


def test_invalid_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidSetting, match="synchronous"):
        Database.connect(f"sqlite:///{tmp_path / 'x.db'}", sqlite_synchronous="SOMETIMES")
    with pytest.raises(InvalidSetting, match="unsupported database"):
        Database.connect("mysql://localhost/x")
    with pytest.raises(InvalidSetting, match="invalid database URL"):
        Database.connect("not a url")
    assert issubclass(InvalidSetting, ServerError)


def test_writes_begin_immediate_and_reads_deferred(db: Database) -> None:
    seen: list[str] = []

    @sa.event.listens_for(db.engine, "before_cursor_execute")
    def _record(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    with db.write() as conn:
        conn.execute(sa.text("SELECT 1"))
    with db.read() as conn:
        conn.execute(sa.text("SELECT 2"))
    assert seen == ["BEGIN IMMEDIATE", "SELECT 1", "BEGIN DEFERRED", "SELECT 2"]


def test_many_threads_writing_at_once_never_see_database_is_locked(db: Database) -> None:
    """Read-then-write transactions from many threads: the writer lock serialises them."""
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(40):
                with db.write() as conn:
                    count = conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar()
                    conn.execute(
                        api_keys.insert().values(
                            name=f"k-{n}-{i}",
                            role=Role.USER.value,
                            key_sha256=f"{n:02d}{i:04d}{count:058d}",
                            created_at=1.0,
                        )
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar() == 320


def test_reads_do_not_wait_for_an_open_write(db: Database) -> None:
    writing = threading.Event()
    release = threading.Event()

    def hold_the_writer() -> None:
        with db.write() as conn:
            conn.execute(
                api_keys.insert().values(
                    name="pending", role="USER", key_sha256="f" * 64, created_at=1.0
                )
            )
            writing.set()
            release.wait(timeout=60)

    holder = threading.Thread(target=hold_the_writer)
    holder.start()
    try:
        assert writing.wait(timeout=30)
        with db.read() as conn:  # would block (or fail) if reads took the lock
            names = conn.execute(sa.select(api_keys.c.name)).scalars().all()
        assert names == []  # the uncommitted row is invisible to the snapshot
    finally:
        release.set()
        holder.join(timeout=60)
    with db.read() as conn:
        assert conn.execute(sa.select(api_keys.c.name)).scalars().all() == ["pending"]


def test_a_failed_write_rolls_back(db: Database) -> None:
    def failing_write() -> None:
        with db.write() as conn:
            conn.execute(
                api_keys.insert().values(name="x", role="USER", key_sha256="e" * 64, created_at=1.0)
            )
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing_write()
    with db.read() as conn:
        assert conn.execute(sa.select(api_keys.c.name)).scalars().all() == []
    with db.write() as conn:  # and the writer lock was released
        conn.execute(sa.text("SELECT 1"))


def test_ping(db: Database, tmp_path: Path) -> None:
    db.ping()
    unreachable = Database.connect(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(sa.exc.OperationalError):
        unreachable.ping()
    unreachable.dispose()


def test_postgresql_engine(postgres_url_factory) -> None:  # type: ignore[no-untyped-def]
    db = Database.connect(postgres_url_factory())
    try:
        db.ping()
        assert not db.is_sqlite
        with db.write() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        db.dispose()


def test_writes_after_a_failed_write_and_after_dispose_still_work(db: Database) -> None:
    def insert(name: str, fail: bool = False) -> None:
        with db.write() as conn:
            conn.execute(
                api_keys.insert().values(
                    name=name, role="USER", key_sha256=name * 64, created_at=1.0
                )
            )
            if fail:
                raise RuntimeError("boom")

    insert("a")
    with pytest.raises(RuntimeError):
        insert("b", fail=True)
    insert("c")  # the writer's connection was replaced, not left mid-transaction
    db.dispose()  # closes the writer's connection too
    insert("d")
    with db.read() as conn:
        names = conn.execute(sa.select(api_keys.c.name).order_by(api_keys.c.name)).scalars()
        assert list(names) == ["a", "c", "d"]


def test_wal_switch_retries_while_another_connection_holds_a_new_file(tmp_path: Path) -> None:
    # Two servers opening a new file at once: SQLite refuses the journal-mode
    # switch at once ("database is locked", no busy handler), so it is retried.
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    switching = sqlite3.connect(path, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        switching.execute("PRAGMA journal_mode = WAL")  # what a single attempt gets
    release = threading.Timer(0.2, holder.execute, ["COMMIT"])
    release.start()
    try:
        _enable_wal(switching.cursor(), busy_ms=30_000)
    finally:
        release.join()
    assert switching.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    holder.close()
    switching.close()


def test_a_new_sqlite_file_can_shrink_and_full_commits_stay_off_the_event_loop(
    tmp_path: Path,
) -> None:
    normal = Database.connect(f"sqlite:///{tmp_path / 'normal.db'}")
    full = Database.connect(f"sqlite:///{tmp_path / 'full.db'}", sqlite_synchronous="FULL")
    try:
        with normal.read() as conn:
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2  # INCREMENTAL
        with normal.write() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x)")
        assert normal.writer_idle
        # An fsync per commit must not run on the event loop (dispatch/calls.py).
        assert full.syncing_commits and not full.writer_idle
        assert not normal.syncing_commits
    finally:
        normal.dispose()
        full.dispose()
