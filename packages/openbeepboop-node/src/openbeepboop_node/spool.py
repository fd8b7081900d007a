"""Finished outcomes on disk until the server has acknowledged them.

An LLM call can take minutes and cost money; its result must survive the
server being down and the node being killed. Every result and error is
written here, in one fsync'd SQLite transaction per batch, *before* it is
sent; it is deleted once the server acknowledged it (whatever the ack). A
node that starts delivers what a previous run left behind.

The methods block on disk I/O; the worker calls them from one background
thread so the event loop keeps running other jobs meanwhile.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from openbeepboop_schemas import Outcome
from pydantic import TypeAdapter

from openbeepboop_node.exceptions import SpoolError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    job_id TEXT NOT NULL,
    lease_token TEXT NOT NULL,
    body TEXT NOT NULL,
    spooled_at REAL NOT NULL,
    PRIMARY KEY (job_id, lease_token)
)
"""

OutcomeKey = tuple[str, str]


@functools.cache
def _outcome() -> TypeAdapter[Outcome]:
    return TypeAdapter(Outcome)


def outcome_key(outcome: Outcome) -> OutcomeKey:
    """What identifies an outcome: the lease it answers."""
    return (outcome.job_id, outcome.lease_token)


class Spool:
    """A small SQLite file of outcomes not yet acknowledged by the server."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            # WAL, and synchronous=FULL for every write that adds outcomes: that
            # commit is fsync'd, so a kill -9 (or a power cut) right after
            # "finished" cannot lose the result.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the result spool {path}: {exc}") from exc

    def add(self, outcomes: Sequence[Outcome]) -> None:
        """Store outcomes durably (one transaction); returns once they are on disk."""
        if not outcomes:
            return
        now = time.time()
        rows = [(o.job_id, o.lease_token, o.model_dump_json(), now) for o in outcomes]
        with self._lock:
            self._write(
                "INSERT OR REPLACE INTO outcomes (job_id, lease_token, body, spooled_at) "
                "VALUES (?, ?, ?, ?)",
                rows,
                durable=True,
            )

    def remove(self, keys: Iterable[OutcomeKey]) -> None:
        """Forget outcomes the server acknowledged."""
        rows = list(keys)
        if not rows:
            return
        with self._lock:
            # Not fsync'd on its own: a delete lost in a crash only means the
            # next start resends an outcome, which the server acks "duplicate".
            self._write(
                "DELETE FROM outcomes WHERE job_id = ? AND lease_token = ?", rows, durable=False
            )

    def pending(self) -> list[Outcome]:
        """Every stored outcome, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT body FROM outcomes ORDER BY spooled_at").fetchall()
        adapter = _outcome()
        return [adapter.validate_json(body) for (body,) in rows]

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]], durable: bool) -> None:
        try:
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot write the result spool {self.path}: {exc}") from exc
