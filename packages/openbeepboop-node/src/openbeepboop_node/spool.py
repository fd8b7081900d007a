"""Finished outcomes on disk until the server has acknowledged them.

An LLM call can take minutes and cost money; its result must survive the
server being down and the node being killed. A result or error the server
has not acknowledged in time (``spool_after``), could not take, or still
lacks at shutdown is written here, in one fsync'd SQLite transaction per
batch (:mod:`~openbeepboop_node.delivery` decides when); it is deleted once
the server acknowledged it (whatever the ack), along with the next write. A
node that starts delivers what a previous run left behind.

The methods block on disk I/O; delivery calls them from one background
thread so the event loop keeps running other jobs meanwhile. Every
statement handed to SQLite lets go of the GIL and takes it back, and on a
node whose event loop is busy with LiteLLM each take-back waits for the
loop's thread: a write is therefore one transaction of as few statements
as possible (all rows in one INSERT, all acknowledged rows in one DELETE,
riding along with the next write), which took a busy node's throughput
from ~87 % to ~95 % of a bare LiteLLM loop (docs/performance.md, "One
spool transaction per write").
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

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
T = TypeVar("T", bound=tuple[object, ...])

#: Rows per statement: 4 parameters each stays far below SQLite's 32,766.
ROWS_PER_STATEMENT = 500
_INSERT = "INSERT OR REPLACE INTO outcomes (job_id, lease_token, body, spooled_at) VALUES "
_DELETE = "DELETE FROM outcomes WHERE (job_id, lease_token) IN (VALUES "


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
            # WAL, and synchronous=FULL: every commit is fsync'd, so a kill -9
            # (or a power cut) right after "finished" cannot lose the result.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the result spool {path}: {exc}") from exc

    def add(self, outcomes: Sequence[Outcome], forget: Iterable[OutcomeKey] = ()) -> None:
        """Store outcomes durably, and drop ``forget``, in one transaction; returns once on disk.

        ``forget`` is what the server has acknowledged since the last write:
        deleting it here costs no transaction of its own. A deletion lost in
        a crash only means the next start resends an outcome, which the
        server acknowledges as a duplicate.
        """
        now = time.time()
        rows = [(o.job_id, o.lease_token, o.model_dump_json(), now) for o in outcomes]
        self._write(rows, list(forget))

    def remove(self, keys: Iterable[OutcomeKey]) -> None:
        """Forget outcomes the server acknowledged (when no write is coming to carry them)."""
        self._write([], list(keys))

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

    def _write(self, rows: Sequence[tuple[object, ...]], forget: Sequence[OutcomeKey]) -> None:
        if not rows and not forget:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for chunk in _chunks(rows, ROWS_PER_STATEMENT):
                        self._db.execute(_INSERT + _placeholders(len(chunk), 4), _flat(chunk))
                    for chunk in _chunks(forget, ROWS_PER_STATEMENT):
                        self._db.execute(_DELETE + _placeholders(len(chunk), 2) + ")", _flat(chunk))
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot write the result spool {self.path}: {exc}") from exc


def _chunks(rows: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _placeholders(rows: int, columns: int) -> str:
    """``(?, ?), (?, ?), ...``: ``rows`` groups of ``columns`` parameters."""
    group = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([group] * rows)


def _flat(rows: Sequence[tuple[object, ...]]) -> list[object]:
    return [value for row in rows for value in row]
