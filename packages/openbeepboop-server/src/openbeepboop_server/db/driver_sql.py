"""Hot statements run on the DBAPI cursor: compiled by SQLAlchemy once, executed without it.

SQLAlchemy Core's execution path (an execution context, the compiled
cache's lookup, parameter processing, result metadata) costs ~30-40 us of
CPU per statement, four times what SQLite takes to run one of the queue's
small statements. The two write transactions on a synchronous chat's path,
the submit that claims for a parked node and the node's delivery, run five
to six statements each plus their ``BEGIN``, so those statements are
:class:`DriverStatement` (docs/performance.md, "Hot statements on the DBAPI
cursor").

What stays SQLAlchemy's: the SQL (the same Core or text statement, compiled
by the dialect once per dialect and set of parameter names, as SQLAlchemy
would, its parameter conversions applied), the transaction (the statement
runs on the connection's own DBAPI connection, inside the ``BEGIN``
SQLAlchemy issued, committed by it), the errors (a driver error goes through
the connection's own handling: wrapped as :mod:`sqlalchemy.exc`,
``handle_error`` listeners called, a lost connection invalidated), and the
``before_cursor_execute``/``after_cursor_execute`` listeners (called when
there are any, without an execution context). A statement needing more
(Python-side defaults, ``RETURNING``, converted results) is refused when it
is first compiled. Rows come back as named tuples (``row.seq``, as
SQLAlchemy's rows read).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

Params = Mapping[str, Any]


class _Compiled:
    """One statement compiled for one dialect and one set of parameter names."""

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect, keys: tuple[str, ...]):
        compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
        assert isinstance(compiled, SQLCompiler)
        problem = _unsupported(compiled)
        if problem is not None:
            raise TypeError(f"not a statement for the driver's cursor ({problem}): {compiled}")
        self.compiled = compiled
        self.sql: str = compiled.string
        #: Parameter names in the order of the placeholders (``?`` on SQLite), or None (named).
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )
        #: Values bound in the statement itself (``status = 'QUEUED'`` built from Core).
        self.fixed = {
            name: bind.value
            for bind, name in compiled.bind_names.items()
            if not bind.required and bind.callable is None
        }
        self.expanding = bool(compiled.post_compile_params)
        #: The dialect's conversions of parameter values (SQLite's ``float()`` of a REAL).
        self.convert: dict[str, Any] = dict(compiled._bind_processors)
        self.row: type[Any] | None = None

    def arguments(self, params: Params) -> tuple[str, Any]:
        """The SQL and the driver's arguments for one set of parameters."""
        merged = params
        if self.fixed or self.convert:
            merged = {**self.fixed, **params}
            for name, convert in self.convert.items():
                value = merged.get(name)
                if value is not None:
                    merged[name] = convert(value)
        if self.expanding:
            state = self.compiled.construct_expanded_state(merged)
            if self.compiled.positional:
                return state.statement, state.positional_parameters
            return state.statement, state.parameters
        if self.order is not None:
            return self.sql, tuple(merged[name] for name in self.order)
        return self.sql, merged

    def row_type(self, cursor: Any) -> type[Any]:
        """A named tuple type for the cursor's columns (made once)."""
        if self.row is None:
            description = cursor.description
            dialect, columns = self.compiled.dialect, self.compiled._result_columns
            for column, (name, type_code, *_) in zip(columns, description, strict=False):
                if column[3]._cached_result_processor(dialect, type_code) is not None:
                    raise TypeError(f"not a statement for the driver's cursor: {name} converted")
            names = [column[0] for column in description]
            self.row = collections.namedtuple("Row", names, rename=True)  # type: ignore[misc]
        return self.row


def _unsupported(compiled: SQLCompiler) -> str | None:
    """Why SQLAlchemy's own execution would do more with this statement than the driver, or None."""
    # SQLAlchemy's own per-type conversions: plain functions of one value are applied.
    convert = compiled._bind_processors
    expanding = {compiled.bind_names[bind] for bind in compiled.post_compile_params}
    if any(not callable(one) or name in expanding for name, one in convert.items()):
        return f"parameters converted in lists or tuples: {sorted(convert)}"
    if compiled.insert_prefetch or compiled.update_prefetch:
        return "Python-side column defaults"
    if compiled.escaped_bind_names:
        return "parameter names the driver cannot take as they are"
    if compiled.effective_returning:
        return "RETURNING"
    return None


class DriverStatement:
    """A statement built once, run on the DBAPI cursor of a SQLAlchemy connection.

    One per statement constant (it keeps its compiled forms for as long as
    it lives): never one per call.
    """

    def __init__(self, statement: sa.ClauseElement) -> None:
        self._statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}
        self._lock = threading.Lock()

    def _for(self, conn: sa.Connection, params: Params) -> _Compiled:
        key = (conn.dialect.name, tuple(params))
        found = self._compiled.get(key)
        if found is None:
            with self._lock:
                found = self._compiled.get(key)
                if found is None:
                    found = self._compiled[key] = _Compiled(self._statement, conn.dialect, key[1])
        return found

    def execute(self, conn: sa.Connection, params: Params | Sequence[Params]) -> int:
        """Run the statement once, or once per mapping of a list (``executemany``); the rows
        it changed (-1 if the driver does not say)."""
        if isinstance(params, Mapping):
            compiled = self._for(conn, params)
            sql, arguments = compiled.arguments(params)
            cursor = _run(conn, sql, arguments, many=False)
        else:
            if not params:
                return 0
            compiled = self._for(conn, params[0])
            if len(params) == 1 or compiled.expanding:
                return sum(self.execute(conn, one) for one in params)
            many = [compiled.arguments(one)[1] for one in params]
            cursor = _run(conn, compiled.sql, many, many=True)
        count: int = cursor.rowcount
        cursor.close()
        return count

    def all(self, conn: sa.Connection, params: Params) -> list[Any]:
        """Run the statement; its rows, as named tuples of the selected columns."""
        compiled = self._for(conn, params)
        sql, arguments = compiled.arguments(params)
        cursor = _run(conn, sql, arguments, many=False)
        make = compiled.row_type(cursor)._make
        try:
            # SQLite reads the rows past the first while they are fetched: its errors too.
            rows = cursor.fetchall()
        except Exception as exc:
            conn._handle_dbapi_exception(exc, sql, arguments, cursor, None)
        cursor.close()
        return [make(row) for row in rows]


def _run(conn: sa.Connection, sql: str, arguments: Any, *, many: bool) -> Any:
    """Execute on the connection's DBAPI cursor; a driver error is handled as SQLAlchemy would."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    dispatch = conn.dispatch
    # Listeners still see the statement (tests count statements; tracing hooks in here).
    if dispatch.before_cursor_execute:
        dispatch.before_cursor_execute(conn, cursor, sql, arguments, None, many)
    try:
        if many:
            cursor.executemany(sql, arguments)
        else:
            cursor.execute(sql, arguments)
    except Exception as exc:
        conn._handle_dbapi_exception(exc, sql, arguments, cursor, None)
    if dispatch.after_cursor_execute:
        dispatch.after_cursor_execute(conn, cursor, sql, arguments, None, many)
    return cursor


def execute_plain(conn: sa.Connection, sql: str) -> None:
    """Run a statement without parameters or rows (SQLite's ``BEGIN IMMEDIATE``) the same way."""
    _run(conn, sql, (), many=False).close()
