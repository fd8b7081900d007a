"""Statements on the driver's cursor behave as the same statements through SQLAlchemy:
same rows, same transaction, same errors, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.driver_sql import DriverStatement
from openbeepboop_server.db.tables import api_keys

_COLUMNS = (api_keys.c.name, api_keys.c.role, api_keys.c.created_at, api_keys.c.max_priority)
#: A value bound in the statement itself (``role = 'user'``), a list expanded when run,
#: and a REAL column given an int (SQLAlchemy's conversion to float on SQLite).
_BY_NAMES = sa.select(*_COLUMNS).where(
    api_keys.c.role == Role.USER.value, api_keys.c.name.in_(sa.bindparam("names", expanding=True))
)
_INSERT = DriverStatement(api_keys.insert())
_SELECT = DriverStatement(_BY_NAMES.order_by(api_keys.c.name))
_RAISE = DriverStatement(
    api_keys.update()
    .where(api_keys.c.name == sa.bindparam("b_name"))
    .values(max_priority=sa.bindparam("b_priority"))
)


def _key(name: str, created_at: float = 1, role: Role = Role.USER) -> dict[str, Any]:
    return {
        "name": name,
        "role": role.value,
        "key_sha256": name.ljust(64, "0"),
        "created_at": created_at,
    }


def test_rows_and_counts_are_sqlalchemys(any_db: Database) -> None:
    with any_db.write() as conn:
        _INSERT.execute(conn, [_key("a", 1), _key("b", 2), _key("admin", 3, Role.ADMIN)])
        _INSERT.execute(conn, _key("c", 4))
        assert _RAISE.execute(conn, [{"b_name": "a", "b_priority": 5}]) == 1
        assert _RAISE.execute(conn, {"b_name": "nobody", "b_priority": 5}) == 0
    with any_db.read() as conn:
        names = {"names": ["a", "c", "admin", "nobody"]}
        rows = _SELECT.all(conn, names)
        expected = conn.execute(_BY_NAMES.order_by(api_keys.c.name), names).all()
        assert [row.name for row in rows] == ["a", "c"]
        assert [tuple(row) for row in rows] == [tuple(row) for row in expected]
        assert rows[0].max_priority == 5
        assert rows[0].created_at == 1.0 and isinstance(rows[0].created_at, float)
        assert [row.name for row in _SELECT.all(conn, {"names": ["b"]})] == ["b"]


def _insert_then_fail(db: Database) -> None:
    with db.write() as conn:
        _INSERT.execute(conn, _key("gone"))
        raise RuntimeError


def test_the_transaction_is_sqlalchemys(any_db: Database) -> None:
    with pytest.raises(RuntimeError):
        _insert_then_fail(any_db)
    with any_db.read() as conn:
        assert _SELECT.all(conn, {"names": ["gone"]}) == []


def test_driver_errors_are_sqlalchemys(any_db: Database) -> None:
    seen: list[BaseException] = []
    sa.event.listen(any_db.engine, "handle_error", lambda context: seen.append(context))
    with any_db.write() as conn:
        _INSERT.execute(conn, _key("twin"))
    with pytest.raises(sa.exc.IntegrityError), any_db.write() as conn:
        _INSERT.execute(conn, _key("twin"))
    assert len(seen) == 1
    with any_db.write() as conn:  # the next write goes on as after any failed one
        _INSERT.execute(conn, _key("next"))


def _insert_after_losing_the_connection(db: Database) -> None:
    with db.write() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with db.read() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        _INSERT.execute(conn, _key("lost"))


def test_a_lost_postgresql_connection_is_invalidated(pg_db: Database) -> None:
    with pytest.raises(sa.exc.OperationalError) as raised:
        _insert_after_losing_the_connection(pg_db)
    assert raised.value.connection_invalidated
    with pg_db.write() as conn:
        _INSERT.execute(conn, _key("after"))
    with pg_db.read() as conn:
        assert [row.name for row in _SELECT.all(conn, {"names": ["lost", "after"]})] == ["after"]


def test_statements_needing_more_than_the_driver_are_refused(db: Database) -> None:
    with_default = sa.Table(
        "with_default", sa.MetaData(), sa.Column("at", sa.Float(), default=lambda: 1.0)
    )
    returning = api_keys.insert().returning(api_keys.c.id)
    with db.write() as conn:
        for statement in (with_default.insert(), returning):
            with pytest.raises(TypeError, match="not a statement for the driver's cursor"):
                DriverStatement(statement).execute(conn, {"name": "x"})


def test_statement_listeners_see_the_statement(any_db: Database) -> None:
    seen: list[tuple[str, str]] = []
    for name in ("before_cursor_execute", "after_cursor_execute"):
        sa.event.listen(any_db.engine, name, lambda *args, name=name: seen.append((name, args[2])))
    with any_db.write() as conn:
        _INSERT.execute(conn, _key("seen"))
    inserts = [(name, sql.split(" (")[0]) for name, sql in seen if sql.startswith("INSERT")]
    assert inserts == [
        ("before_cursor_execute", "INSERT INTO api_keys"),
        ("after_cursor_execute", "INSERT INTO api_keys"),
    ]
