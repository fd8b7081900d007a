"""Which database errors mean "the database is unavailable right now", not "a bug".

A request that meets one of these answers ``503`` (retry here or at another
replica) instead of ``500``: the database refused or dropped the connection,
a lock or the pool was not free within its bound (:mod:`.postgres`,
:data:`.database.POOL_TIMEOUT_SECONDS`), PostgreSQL cancelled the statement or
is shutting down, SQLite's file is locked, or SQLite found its file damaged
(:func:`is_damaged`: no retry helps there, but it is the operator's to
repair, not a bug of the request). The transaction the request was in is
rolled back whole, so nothing is half-written. Constraint violations and SQL
errors stay bugs.
"""

from __future__ import annotations

import logging
import sqlite3

import sqlalchemy as sa

#: The exception classes among which :func:`is_unavailable` picks: SQLAlchemy's,
#: and the driver's own from the inline key lookup's raw SQLite connection.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sa.exc.DBAPIError,
    sa.exc.TimeoutError,
    sqlite3.Error,
)


def driver_error(exc: BaseException) -> BaseException | None:
    """The driver's own error behind ``exc`` (SQLAlchemy wraps it), or ``exc`` itself."""
    return exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc


def is_unavailable(exc: BaseException) -> bool:
    """True if ``exc`` says the database could not serve the request now.

    The DB-API's ``OperationalError`` is its class for "not the program's
    fault": lost connections, lock and statement timeouts, an administrator's
    shutdown (psycopg maps SQLSTATE classes 08, 53, 55, 57 and 58 to it).
    """
    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection free in time
        return True
    if isinstance(exc, sqlite3.Error):  # raised by the driver, not through SQLAlchemy
        return isinstance(exc, (sqlite3.OperationalError, sqlite3.InterfaceError)) or is_damaged(
            exc
        )
    if isinstance(exc, sa.exc.DBAPIError):
        return (
            exc.connection_invalidated
            or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))
            or is_damaged(exc)
        )
    return False


#: SQLite's result codes for a file that is not, or no longer, a sound
#: database (extended codes such as SQLITE_CORRUPT_INDEX start the same).
_DAMAGED_SQLITE = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
#: Their messages, for Python before 3.11 (no ``sqlite_errorname``).
_DAMAGED_TEXTS = ("database disk image is malformed", "file is not a database")


def is_damaged(exc: BaseException) -> bool:
    """True if ``exc`` says SQLite found its database file damaged.

    SQLITE_CORRUPT ("database disk image is malformed") or SQLITE_NOTADB
    ("file is not a database"): the file was overwritten, truncated or torn
    under the server. Driver errors of SQLite only; ``exc`` may be the
    driver's own error or SQLAlchemy's wrapper around it.
    """
    cause = driver_error(exc)
    if not isinstance(cause, sqlite3.DatabaseError):
        return False
    name = getattr(cause, "sqlite_errorname", None)
    if name:
        return str(name).startswith(_DAMAGED_SQLITE)
    text = str(cause)
    return any(damaged in text for damaged in _DAMAGED_TEXTS)


#: PostgreSQL's SQLSTATE for "disk full" (class 53, insufficient resources).
_DISK_FULL_SQLSTATE = "53100"


def is_disk_full(exc: BaseException) -> bool:
    """True if ``exc`` says the database could not write for want of disk space.

    SQLite's SQLITE_FULL ("database or disk is full") or PostgreSQL's
    ``disk_full``: retrying helps only once an operator has freed space.
    """
    cause = driver_error(exc)
    if isinstance(cause, sqlite3.Error):
        name = getattr(cause, "sqlite_errorname", None)
        return name == "SQLITE_FULL" if name else "database or disk is full" in str(cause)
    return str(getattr(cause, "sqlstate", "") or "") == _DISK_FULL_SQLSTATE


def describe(exc: BaseException) -> str:
    """One line naming the driver's error, for a log line without a traceback."""
    cause = driver_error(exc)
    first = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {first[0] if first else '(no message)'}"


class RoundFailures:
    """What a background loop logs when its rounds fail: an outage once, a bug every time.

    The database being down, locked or out of connections fails every round
    of every loop (the reaper's every second): a traceback per round buried
    the one line that said what was wrong. While the rounds keep failing
    with :func:`is_unavailable` errors, the first failure is one warning line
    naming the driver's error, the rest are silent, and the first round that
    succeeds again says so. Any other exception is a bug and is logged with
    its traceback each time.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        #: What the loop does, as the subject of its lines ("expiring leases").
        self._what = what
        self._down = False

    def failed(self, exc: BaseException) -> None:
        """A round raised ``exc`` (call from its ``except`` block)."""
        if not is_unavailable(exc):
            self._logger.error("%s failed; retrying next time", self._what, exc_info=exc)
            return
        if not self._down:
            self._down = True
            self._logger.warning(
                "%s: the database is unavailable (%s); retrying until it answers",
                self._what,
                describe(exc),
            )

    def succeeded(self) -> None:
        """A round went through."""
        if self._down:
            self._down = False
            self._logger.info("%s: the database answers again", self._what)
