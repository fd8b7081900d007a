"""Alembic migrations: the only way the schema is made, shipped inside the package."""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import (
    alembic_config,
    current_revision,
    ensure_current,
    head_revision,
    pending_revisions,
    upgrade_engine,
    upgrade_to,
    upgrade_to_head,
)
from openbeepboop_server.db.tables import metadata
from openbeepboop_server.errors import DatabaseAhead, DatabaseBehind

ALL_REVISIONS = ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008"]


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_revisions_ship_inside_the_package() -> None:
    folder = resources.files("openbeepboop_server.db") / "migrations"
    assert (folder / "env.py").is_file()
    assert (folder / "script.py.mako").is_file()
    assert any(p.name.endswith(".py") for p in (folder / "versions").iterdir())


def test_exactly_one_head_and_a_linear_history() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [head_revision()]
    chain = [rev.revision for rev in scripts.walk_revisions()]
    assert list(reversed(chain)) == ALL_REVISIONS


def test_upgrade_head_from_empty_creates_the_schema_at_head(backend_url: str) -> None:
    assert pending_revisions(backend_url) == ALL_REVISIONS
    upgrade_to_head(backend_url)
    assert pending_revisions(backend_url) == []
    assert {"jobs", "api_keys", "leases", "nodes", "idempotency_keys"} <= _tables(backend_url)
    db = Database.connect(backend_url)
    try:
        ensure_current(db)
        with db.read() as conn:
            assert current_revision(conn) == head_revision()
    finally:
        db.dispose()


def test_migrations_and_tables_py_agree(backend_url: str) -> None:
    """tables.py (what the code queries) describes exactly what the migrations build."""
    upgrade_to_head(backend_url)
    engine = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_upgrading_twice_is_a_no_op(sqlite_url: str) -> None:
    upgrade_to_head(sqlite_url)
    upgrade_to_head(sqlite_url)
    assert pending_revisions(sqlite_url) == []


def test_a_database_at_0001_with_data_upgrades_keeping_its_rows(backend_url: str) -> None:
    upgrade_to(backend_url, "0001")
    assert pending_revisions(backend_url) == [
        "0002",
        "0003",
        "0004",
        "0005",
        "0006",
        "0007",
        "0008",
    ]
    engine = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO api_keys (id, name, role, key_sha256, created_at) "
                "VALUES (1, 'old-user', 'USER', :h, 1.0)"
            ),
            {"h": "ab" * 32},
        )
        for seq, status in enumerate(["QUEUED", "COMPLETED", "PROCESSING"], start=1):
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (seq, id, owner_key_id, model, status, request, result, "
                    "attempts, max_attempts, lease_token, lease_expires_at, not_before, "
                    "created_at, updated_at) VALUES (:seq, :id, 1, 'llama3', :status, "
                    '\'{"model": "llama3"}\', :result, :attempts, 3, :token, :expires, 0, 1.0, 1.0)'
                ),
                {
                    "seq": seq,
                    "id": f"job-old{seq}",
                    "status": status,
                    "result": '{"id": "c"}' if status == "COMPLETED" else None,
                    "attempts": 1 if status != "QUEUED" else 0,
                    "token": "lease-old" if status == "PROCESSING" else None,
                    "expires": 99.0 if status == "PROCESSING" else None,
                },
            )
    engine.dispose()

    db = Database.connect(backend_url)
    try:
        with pytest.raises(DatabaseBehind):
            ensure_current(db)
        upgrade_to_head(backend_url)
        ensure_current(db)
        with db.read() as conn:
            keys = conn.execute(sa.text("SELECT name FROM api_keys")).scalars().all()
            jobs = conn.execute(
                sa.text("SELECT id, status, result, attempts, lease_token FROM jobs ORDER BY seq")
            ).all()
    finally:
        db.dispose()
    assert keys == ["old-user"]
    assert [(j.id, j.status) for j in jobs] == [
        ("job-old1", "QUEUED"),
        ("job-old2", "COMPLETED"),
        # Leases from before the lease history existed cannot be verified: requeued,
        # the attempt given back.
        ("job-old3", "QUEUED"),
    ]
    assert jobs[1].result == '{"id": "c"}'
    assert jobs[2].attempts == 0 and jobs[2].lease_token is None


def test_ensure_current_raises_database_behind_on_an_old_or_empty_database(
    sqlite_url: str,
) -> None:
    db = Database.connect(sqlite_url)
    try:
        with pytest.raises(DatabaseBehind, match="openbeepboop-server migrate"):
            ensure_current(db)
        upgrade_to(sqlite_url, "0001")
        with pytest.raises(DatabaseBehind, match="openbeepboop-server migrate"):
            ensure_current(db)
    finally:
        db.dispose()


def test_a_database_from_a_newer_server_is_refused(sqlite_url: str) -> None:
    upgrade_to_head(sqlite_url)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    db = Database.connect(sqlite_url)
    try:
        with pytest.raises(DatabaseAhead, match="newer"):
            ensure_current(db)
    finally:
        db.dispose()


def test_concurrent_upgrades_apply_each_revision_once(backend_url: str) -> None:
    """Two servers starting together: one migrates, the other waits and finds nothing to do."""
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def upgrade() -> None:
        try:
            start.wait(timeout=30)
            upgrade_to_head(backend_url)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert pending_revisions(backend_url) == []


def test_sqlite_foreign_keys_are_back_on_after_migrating(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fk.db'}"
    upgrade_to_head(url)
    db = Database.connect(url)
    try:
        with db.read() as conn:
            assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        db.dispose()


def test_an_in_memory_database_migrates_through_its_own_engine() -> None:
    db = Database.connect("sqlite://")
    try:
        upgrade_engine(db.engine)
        ensure_current(db)
        with db.write() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO api_keys (name, role, key_sha256, created_at) "
                    "VALUES ('k', 'USER', 'h', 1.0)"
                )
            )
        with db.read() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar() == 1
            assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        db.dispose()
