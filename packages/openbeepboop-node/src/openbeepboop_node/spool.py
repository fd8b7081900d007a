"""Finished outcomes on disk until the server has acknowledged them.

An LLM call can take minutes and cost money; its result must survive the
server being down and the node being killed. A result or error the server
has not acknowledged in time (``spool_after``), could not take, or still
lacks at shutdown is written here, in one fsync'd SQLite transaction per
batch (:mod:`~openbeepboop_node.delivery` decides when); it is deleted once
the server acknowledged it (whatever the ack), along with the next write. A
node that starts delivers what a previous run left behind; a row it cannot
read is moved aside to a ``quarantine`` table in the same file, logged and
counted, and the rest is delivered.

The file holds model answers, so it is the user's alone: created with mode
0600 (its ``-wal`` and ``-shm`` files get the same from SQLite), and an
existing spool's files are set to 0600 when it is opened. It gives space
back once emptied: it is made with ``auto_vacuum = INCREMENTAL`` (an older
spool is converted when opened), and a deletion of its own (the one that
comes once nothing is left to send) that leaves more than
``SHRINK_FREE_BYTES`` of free pages runs an incremental vacuum and truncates
the WAL. A write never does, so the busy path costs what it did; the WAL is
also cut back to ``WAL_SIZE_LIMIT_BYTES`` whenever it restarts.

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

import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from openbeepboop_schemas import Outcome
from pydantic import TypeAdapter, ValidationError

from openbeepboop_node.exceptions import SpoolError
from openbeepboop_node.private_files import make_private_folder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    job_id TEXT NOT NULL,
    lease_token TEXT NOT NULL,
    body TEXT NOT NULL,
    spooled_at REAL NOT NULL,
    PRIMARY KEY (job_id, lease_token)
)
"""
#: Rows that could not be read back (not JSON, not an outcome), kept for an operator.
_QUARANTINE_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    job_id,
    lease_token,
    body,
    spooled_at,
    quarantined_at REAL NOT NULL,
    reason TEXT NOT NULL
)
"""
_QUARANTINE = (
    "INSERT INTO quarantine (job_id, lease_token, body, spooled_at, quarantined_at, reason) "
    "SELECT job_id, lease_token, body, spooled_at, ?, ? FROM outcomes WHERE rowid = ?"
)

logger = logging.getLogger(__name__)

OutcomeKey = tuple[str, str]
T = TypeVar("T", bound=tuple[object, ...])

#: Mode of the spool and its -wal/-shm files: model answers are the user's (docs/node.md).
SPOOL_FILE_MODE = 0o600
#: Free pages worth more than this after a deletion of its own are given back to the disk.
SHRINK_FREE_BYTES = 1024 * 1024
#: Largest size the WAL file is left at once it restarts (after a checkpoint).
WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024
#: ``PRAGMA auto_vacuum`` value of INCREMENTAL.
_INCREMENTAL = 2
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
        #: Unreadable rows this process moved to the quarantine table.
        self.quarantined = 0
        self._lock = threading.Lock()
        try:
            make_private_folder(path.parent)  # a file in the way is named as such
            _make_private(path)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            # Before any table exists, so a new spool is made with it.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            # WAL, and synchronous=FULL: every commit is fsync'd, so a kill -9
            # (or a power cut) right after "finished" cannot lose the result.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            self._db.execute(_SCHEMA)
            self._db.execute(_QUARANTINE_SCHEMA)
            for suffix in ("-wal", "-shm"):  # made by an older node, or another umask
                _make_private(path.with_name(path.name + suffix), create=False)
            self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
                self._convert()
        except NotADirectoryError as exc:
            raise SpoolError(f"cannot open the result spool {path}: {exc.strerror}") from exc
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
        """Forget outcomes the server acknowledged (when no write is coming to carry them).

        Comes when nothing is left to send, so this is where the file gives
        back what a burst of results (an outage, one huge answer) grew it by.
        """
        self._write([], list(keys))
        self._shrink()

    def _shrink(self) -> None:
        """Give free pages back to the disk when there are many of them (best effort)."""
        with self._lock:
            try:
                (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
                if free * self._page_size <= SHRINK_FREE_BYTES:
                    return
                # execute() would free one page: the pragma frees one per step,
                # yields no row, and Python's execute steps it once.
                self._db.executescript("PRAGMA incremental_vacuum;")
                # The vacuum's pages sit in the WAL: write them back and empty it.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:  # only space not given back; the rows are gone
                logger.debug("could not shrink the result spool %s: %s", self.path, exc)

    def _convert(self) -> None:
        """Make a spool written before incremental auto-vacuum able to shrink (a VACUUM)."""
        try:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:  # a full disk: it still works, it only keeps its size
            logger.warning(
                "the result spool %s cannot be converted to give space back (%s); "
                "it works as before and is converted at a later start",
                self.path,
                exc,
            )

    def pending(self) -> list[Outcome]:
        """Every stored outcome, oldest first; unreadable rows are moved to ``quarantine``.

        A row that is not an outcome (a disk error, a hand edit, a spool
        written by an incompatible version) must not strand the good
        results beside it, nor stop the node from starting: it is moved,
        as it was, into the ``quarantine`` table of the same file, with the
        reason, for an operator to look at. :attr:`quarantined` counts them.
        """
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT rowid, body FROM outcomes ORDER BY spooled_at"
                ).fetchall()
        except sqlite3.Error as exc:  # a damaged file ("database disk image is malformed")
            raise SpoolError(
                f"cannot read the result spool {self.path}: {exc}; its results may be "
                f"recoverable with `sqlite3 {self.path} .recover`, or move the file aside "
                "to start without them"
            ) from exc
        adapter = _outcome()
        good: list[Outcome] = []
        bad: list[tuple[int, str]] = []
        for rowid, body in rows:
            try:
                good.append(adapter.validate_json(body))
            except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
                bad.append((rowid, _reason(exc)))
        if bad:
            self._quarantine(bad)
        return good

    def quarantine_size(self) -> int:
        """How many unreadable rows the quarantine table holds (this run's and earlier)."""
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()
        return int(count)

    def _quarantine(self, bad: Sequence[tuple[int, str]]) -> None:
        now = time.time()
        statements: list[tuple[str, Sequence[object]]] = []
        for rowid, reason in bad:
            statements.append((_QUARANTINE, (now, reason, rowid)))
            statements.append(("DELETE FROM outcomes WHERE rowid = ?", (rowid,)))
        self._transaction(statements)
        self.quarantined += len(bad)
        logger.error(
            "%d unreadable row(s) of the result spool moved aside to its quarantine table "
            "(%s); the first: %s",
            len(bad),
            self.path,
            bad[0][1],
        )

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def _write(self, rows: Sequence[tuple[object, ...]], forget: Sequence[OutcomeKey]) -> None:
        statements: list[tuple[str, Sequence[object]]] = [
            (_INSERT + _placeholders(len(chunk), 4), _flat(chunk))
            for chunk in _chunks(rows, ROWS_PER_STATEMENT)
        ]
        statements.extend(
            (_DELETE + _placeholders(len(chunk), 2) + ")", _flat(chunk))
            for chunk in _chunks(forget, ROWS_PER_STATEMENT)
        )
        self._transaction(statements)

    def _transaction(self, statements: Sequence[tuple[str, Sequence[object]]]) -> None:
        """Run ``statements`` in one transaction (none: nothing to do); SpoolError on failure."""
        if not statements:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for sql, parameters in statements:
                        self._db.execute(sql, parameters)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot write the result spool {self.path}: {exc}") from exc


def _make_private(path: Path, *, create: bool = True) -> None:
    """Create ``path`` with mode 0600 (``create``), or set an existing one to it.

    SQLite creates the -wal and -shm files with the database file's mode,
    so a spool created here keeps them private too. Only on POSIX: Windows
    has no such modes (the user's profile folder is private there).
    """
    if os.name != "posix":
        return
    if create:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, SPOOL_FILE_MODE))
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_mode & 0o777 != SPOOL_FILE_MODE:
            os.chmod(path, SPOOL_FILE_MODE)


def _reason(exc: BaseException) -> str:
    """One line saying why a row could not be read."""
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _chunks(rows: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _placeholders(rows: int, columns: int) -> str:
    """``(?, ?), (?, ?), ...``: ``rows`` groups of ``columns`` parameters."""
    group = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([group] * rows)


def _flat(rows: Sequence[tuple[object, ...]]) -> list[object]:
    return [value for row in rows for value in row]
