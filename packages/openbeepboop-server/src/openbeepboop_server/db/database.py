"""The engine and the two ways to use it: read, or write through the one writer.

SQLite allows one writer at a time. Left alone, concurrent writers in one
process race for the file lock and some lose with "database is locked" even
with a busy timeout, because a deferred transaction that reads first and then
writes cannot wait its turn. So every write here:

* starts with ``BEGIN IMMEDIATE`` (takes the write lock up front, waiting on
  the busy timeout while another *process* holds it), and
* goes through one ``threading.Lock`` per :class:`Database`, so threads of the
  same process queue in Python instead of spinning on the file lock.

Reads use plain ``BEGIN`` and never take the lock: in WAL mode they see a
consistent snapshot while a write is in progress.

PostgreSQL needs neither trick: writes run concurrently and the claim path
uses ``FOR UPDATE SKIP LOCKED``. There every statement is a network round
trip on some request's critical path, so reads run without a transaction
(``AUTOCOMMIT``: under PostgreSQL's READ COMMITTED each statement reads its
own snapshot either way, and ``BEGIN`` and ``ROLLBACK`` would cost two round
trips around it), and connections are checked without one
(:mod:`.postgres`), and every wait on another session is bounded there.

A request waits at most :data:`POOL_TIMEOUT_SECONDS` for a pooled connection:
when every connection is held (by requests stuck behind a lock, say) the
pool's ``TimeoutError`` fails it, and the HTTP layer answers 503, instead of
queueing requests behind each other for ever.

A SQLite file can go wrong under a running server in two ways SQLite itself
does not report on every statement (docs/deploy.md, "Backups"): its content
damaged (the first SQLITE_CORRUPT or SQLITE_NOTADB any statement meets is
remembered in :attr:`Database.damage` until the process ends), or its path no
longer naming the file the server has open (moved, deleted, replaced, or its
``-wal`` file deleted: :meth:`Database.file_problem`). ``/healthz`` reports
both through :meth:`Database.ping`; neither costs more than two ``stat``
calls per probe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from openbeepboop_server.db import notify, postgres
from openbeepboop_server.db.driver_sql import execute_plain
from openbeepboop_server.db.faults import describe, is_damaged
from openbeepboop_server.errors import InvalidSetting, ServerError

logger = logging.getLogger(__name__)

#: ``PRAGMA synchronous`` values we accept. NORMAL (the default) loses nothing
#: when the process dies; FULL also survives a power cut or OS crash.
SQLITE_SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_SQLITE_SYNCHRONOUS: Final = "NORMAL"
#: Modes whose commit waits for an fsync: too slow to run on the event loop.
SYNCING_MODES = frozenset({"FULL", "EXTRA"})
#: How long a SQLite writer waits for another process's write to finish.
DEFAULT_BUSY_TIMEOUT_SECONDS = 30.0
#: Connections kept open; the HTTP layer runs the service in a thread pool.
DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 30
#: Seconds a checkout waits for a pooled connection when all are in use.
POOL_TIMEOUT_SECONDS = 10.0

#: Values per ``IN (...)`` list: SQLite's historical limit on bound parameters
#: is 999, so long lists are queried in chunks of this size.
IN_CHUNK = 500

#: The (backend, driver) pairs the server runs on: its SQLite and PostgreSQL code paths.
SUPPORTED_DRIVERS = frozenset({("sqlite", "pysqlite"), ("postgresql", "psycopg")})

_BEGIN_OPTION = "openbeepboop_sqlite_begin"
#: The dialect attribute a :class:`Database` sets to check each new SQLite
#: connection's file before it is opened (:meth:`Database._before_open`).
_BEFORE_OPEN = "openbeepboop_before_open"
#: Pause between attempts to switch a new SQLite file to WAL while another
#: connection is switching it (see :func:`_enable_wal`).
WAL_RETRY_SECONDS = 0.01

#: What to do about a damaged SQLite file, for the log line that reports it.
DAMAGED_ADVICE = (
    "stop the server, check the file with `sqlite3 FILE 'PRAGMA integrity_check'` and "
    "restore it from a backup (docs/deploy.md, 'Backups'); /healthz answers 503 until "
    "the server is restarted"
)
#: What to do when the path no longer names the server's file, for the log line.
MOVED_ADVICE = (
    "jobs acknowledged from now on go into the file the server still has open, not into "
    "the one at the path; stop the server and put its own file back "
    "(docs/deploy.md, 'Backups'); /healthz answers 503 until then"
)


class DatabaseFileChanged(ServerError):  # noqa: N818
    """The SQLite path no longer names the file the server opened (for ``/healthz``).

    The message says what happened without the path (it is shown to anyone
    who asks ``/healthz``); the log line names the path.
    """


class Database:
    """An engine plus the discipline for using it (see the module docstring)."""

    engine: sa.Engine

    def __init__(self, engine: sa.Engine, *, syncing_commits: bool = False) -> None:
        self.engine = engine
        #: Each commit waits for an fsync (SQLite ``synchronous`` FULL or EXTRA).
        self.syncing_commits = syncing_commits
        self.dialect: str = engine.dialect.name
        self._writer_lock = threading.Lock()
        self._write_engine = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        # SQLite has one writer at a time anyway, so the writer keeps one
        # connection instead of checking one out of the pool per transaction
        # (a shared in-memory database keeps the pool's single connection).
        self._keep_writer = self.is_sqlite and not isinstance(engine.pool, StaticPool)
        self._writer: sa.Connection | None = None
        # SQLite reads need their transaction (one snapshot across statements in
        # WAL mode); PostgreSQL's need none (see the module docstring).
        self._read_engine = (
            engine if self.is_sqlite else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        #: Names this process's notices, so its own listener can skip them (PostgreSQL).
        self.replica_id = uuid.uuid4().hex[:12]
        #: The driver's error (one line) of the first statement that found the
        #: SQLite file damaged; kept until the process ends, see :meth:`ping`.
        self.damage: str | None = None
        event.listen(
            engine, "handle_error", lambda context: self.note_damage(context.original_exception)
        )
        #: The SQLite file, and its (device, inode) when the first connection opened it.
        self.path = _sqlite_file(engine.url) if self.is_sqlite else None
        self._opened: tuple[int, int] | None = None
        self._file_reported: str | None = None
        if self.path is not None:
            event.listen(engine, "connect", self._on_connect)
            # Run by the engine's own ``do_connect`` (:func:`_configure_sqlite`) before it
            # opens anything: a listener of our own would come after the one that opens.
            setattr(engine.dialect, _BEFORE_OPEN, self._before_open)

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS,
        busy_timeout_seconds: float = DEFAULT_BUSY_TIMEOUT_SECONDS,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
    ) -> Database:
        """An engine for ``url`` (``sqlite:///...`` or ``postgresql+psycopg://...``).

        Connecting is lazy: nothing touches the database until it is used.
        """
        engine = create_engine(
            url,
            sqlite_synchronous=sqlite_synchronous,
            busy_timeout_seconds=busy_timeout_seconds,
            pool_size=pool_size,
            max_overflow=max_overflow,
            bound_waits=True,
        )
        syncing = engine.dialect.name == "sqlite" and sqlite_synchronous.upper() in SYNCING_MODES
        return cls(engine, syncing_commits=syncing)

    @property
    def is_sqlite(self) -> bool:
        """True on SQLite, where writes are serialised in-process."""
        return self.dialect == "sqlite"

    @property
    def writer_idle(self) -> bool:
        """True on a SQLite file whose writer lock nobody in this process holds right now.

        Then a short write may run on the calling thread (the event loop)
        without waiting; see :mod:`openbeepboop_server.dispatch.calls`. Never
        with ``synchronous`` FULL or EXTRA: each commit there waits for the
        disk (milliseconds), which the event loop must not.
        """
        return self._keep_writer and not self.syncing_commits and not self._writer_lock.locked()

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction: committed on success, rolled back on error."""
        if self._keep_writer:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = self._write_engine.connect()
                conn = self._writer
                try:
                    with conn.begin():
                        yield conn
                except BaseException:
                    # Whatever went wrong, the next write starts on a fresh connection.
                    self._writer = None
                    with contextlib.suppress(Exception):
                        conn.close()
                    raise
        elif self.is_sqlite:
            with self._writer_lock, self._write_engine.begin() as conn:
                yield conn
        else:
            # PostgreSQL: what the transaction changed is NOTIFYed to the other
            # replicas as its last statement, and delivered when it commits (db/notify.py).
            with self.engine.begin() as conn:
                try:
                    yield conn
                except BaseException:
                    # A lost connection's record forgets its notice when it
                    # reconnects; asking it now would raise over the real error.
                    if not conn.invalidated:
                        notify.forget_pending(conn)
                    raise
                notify.send_pending(conn, self.replica_id)

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only connection; never waits for writers.

        On SQLite its statements share one snapshot; on PostgreSQL each
        statement reads the latest committed state (as a READ COMMITTED
        transaction would), so a read that needs two statements to agree
        must say so in one statement.
        """
        with self._read_engine.connect() as conn:
            yield conn
            conn.rollback()

    def ping(self) -> None:
        """Raise if the database cannot be reached (for ``/healthz``).

        On a SQLite file also :class:`DatabaseFileChanged` if
        :meth:`file_problem` finds one, looked at while this connection holds
        the file open (so its ``-wal`` file must exist).
        """
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            problem = self.file_problem()
        self._report_file(problem)
        if problem is not None:
            raise DatabaseFileChanged(problem)

    def file_problem(self) -> str | None:
        """Why the SQLite path no longer names the file this process opened, or None.

        Compares the path's device and inode with those the first connection
        opened: a file moved away, deleted or replaced (a copy or a restore
        renamed over it) is another file to every connection opened from
        then on, while the open ones keep writing into the old one. And the
        ``-wal`` file beside it must exist: SQLite deletes it only when the
        last connection closes, so while one is open (call this with one
        held) a missing ``-wal`` was deleted by someone else, with the
        commits not yet checkpointed in it. A ``-wal`` replaced by another
        file is not seen (its inode may change legitimately when every
        connection closed). Two ``stat`` calls; None on PostgreSQL and in memory.
        """
        if self.path is None or self._opened is None:
            return None
        try:
            moved = self._moved()
        except OSError as exc:
            return f"the database file cannot be looked up ({exc.strerror or exc})"
        if moved is not None:
            return moved
        if not os.path.exists(f"{self.path}-wal"):
            return "the database's -wal file was deleted while the server had it open"
        return None

    def _moved(self) -> str | None:
        """Why the path no longer names the file the first connection opened, or None.

        One ``stat``; an ``OSError`` other than a missing file is raised.
        """
        assert self.path is not None
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return "the database file was moved away or deleted while the server had it open"
        if (found.st_dev, found.st_ino) != self._opened:
            return (
                "the database path names another file than the one the server opened "
                "(it was replaced, or moved away and a new one created)"
            )
        return None

    def _report_file(self, problem: str | None) -> None:
        """Log a file problem once when first seen, and once when it is gone again."""
        if problem == self._file_reported:
            return
        self._file_reported = problem
        if problem is not None:
            logger.warning("%s: %s; %s", problem, self.path, MOVED_ADVICE)
        else:
            logger.info("the database path %s names the server's file again", self.path)

    def _before_open(self) -> None:
        """Open no new connection once the path names another file than the first one opened.

        A connection opened on a path whose file was moved away creates a new,
        empty database there, and its first look at the ``-wal`` beside it
        (still the open file's, holding commits not yet copied back) can
        reset it: acknowledged jobs were lost that way. The new connection is
        refused instead (requests answer ``503``) until the file is back.
        """
        if self._opened is None or self.path is None:
            return
        try:
            problem = self._moved()
        except OSError:
            return  # cannot tell: the open itself says what is wrong
        if problem is None:
            return
        self._report_file(problem)
        raise sqlite3.OperationalError(f"{problem}; no new connection is opened to it")

    def _on_connect(self, _dbapi_connection: Any, _record: Any) -> None:
        """Remember which file the first connection opened (runs after the pragmas)."""
        if self._opened is None and self.path is not None:
            with contextlib.suppress(OSError):
                found = os.stat(self.path)
                self._opened = (found.st_dev, found.st_ino)

    def note_damage(self, exc: BaseException) -> None:
        """Remember (and log once) the first error that says the SQLite file is damaged.

        Every statement's error through SQLAlchemy comes here by itself; the
        HTTP layer also passes the driver's own (the inline key lookup's).
        """
        if self.damage is None and is_damaged(exc):
            self.damage = describe(exc)
            logger.error(
                "the SQLite database file %s is damaged (%s): %s",
                self.path,
                self.damage,
                DAMAGED_ADVICE,
            )

    def incremental_vacuum(self) -> None:
        """On SQLite, give the file's free pages back to the file system (after purges).

        Works on files created with ``auto_vacuum = INCREMENTAL`` (every file
        this server creates, and any file ``openbeepboop-server vacuum`` has
        rewritten); elsewhere SQLite makes it a no-op. A short write: it
        moves only free pages to the end of the file and truncates them.
        """
        if not self.is_sqlite:
            return
        # Each step of the statement frees one page, and a driver's execute
        # steps once: run it as a script, which SQLite steps to the end.
        self._sqlite_script("PRAGMA incremental_vacuum")

    def vacuum(self, *, full: bool = False) -> None:
        """Rewrite the database compactly: ``VACUUM`` (the ``vacuum`` command).

        SQLite: ``VACUUM`` rebuilds the file (and switches an older file to
        ``auto_vacuum = INCREMENTAL``, which every connection asks for); it
        needs the write lock for its whole run and as much free disk as the
        file's size. PostgreSQL: ``VACUUM (ANALYZE)`` of the server's tables
        (space becomes reusable, statistics fresh, no exclusive lock), or with
        ``full`` ``VACUUM (FULL, ANALYZE)``, which returns the space to the
        operating system but locks each table while it rewrites it.
        """
        if self.is_sqlite:
            self._sqlite_script("PRAGMA auto_vacuum = INCREMENTAL; VACUUM")
            return
        options = "FULL, ANALYZE" if full else "ANALYZE"
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in sa.inspect(conn).get_table_names():
                conn.exec_driver_sql(f'VACUUM ({options}) "{table}"')

    def _sqlite_script(self, sql: str) -> None:
        """Run ``sql`` on SQLite outside any transaction, as this process's one writer."""
        with self._writer_lock:
            raw = self.engine.raw_connection()
            try:
                raw.driver_connection.executescript(sql)  # type: ignore[union-attr]
            finally:
                raw.close()

    def dispose(self) -> None:
        """Close every pooled connection (and the writer's own)."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.close()
        self.engine.dispose()


def create_engine(
    url: str,
    *,
    sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS,
    busy_timeout_seconds: float = DEFAULT_BUSY_TIMEOUT_SECONDS,
    foreign_keys: bool = True,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    bound_waits: bool = False,
) -> sa.Engine:
    """An engine with our connection settings; also used by migrations.

    Migrations pass ``foreign_keys=False``: Alembic's batch mode rebuilds a
    SQLite table by dropping and renaming it, and a ``DROP`` with foreign keys
    on would cascade into child tables. ``bound_waits`` (the server's own
    :class:`Database`) gives PostgreSQL connections their lock and
    idle-in-transaction timeouts (:mod:`.postgres`); migrations wait for
    their lock on purpose and go without.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidSetting(f"invalid database URL: {exc}") from None
    check_supported(parsed)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        mode = sqlite_synchronous.upper()
        if mode not in SQLITE_SYNCHRONOUS_MODES:
            raise InvalidSetting(
                f"sqlite synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS_MODES)}, "
                f"not {sqlite_synchronous!r}"
            )
        kwargs: dict[str, Any] = {}
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every checkout would see a new empty database.
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            kwargs.update(
                pool_size=pool_size, max_overflow=max_overflow, pool_timeout=POOL_TIMEOUT_SECONDS
            )
        engine = sa.create_engine(parsed, **kwargs)
        _configure_sqlite(
            engine,
            synchronous=mode,
            busy_ms=int(busy_timeout_seconds * 1000),
            fks=foreign_keys,
            path=_sqlite_file(parsed),
        )
        return engine
    if backend == "postgresql":
        # No pool_pre_ping: a dead pooled connection is found without a round trip.
        engine = sa.create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=POOL_TIMEOUT_SECONDS,
        )
        postgres.configure(engine, bound_waits=bound_waits)
        return engine
    raise AssertionError(f"check_supported let {backend!r} through")  # pragma: no cover


def check_supported(url: sa.URL) -> None:
    """Raise :class:`InvalidSetting` unless ``url`` is SQLite or PostgreSQL through psycopg 3.

    Checked before anything is imported or connected: SQLAlchemy would load
    the URL's driver first, and a ``mysql://`` URL ended in a
    ``ModuleNotFoundError`` for a driver this server could not use anyway.
    """
    backend = url.get_backend_name()
    try:
        driver = url.get_driver_name()  # the dialect's default when the URL names none
    except ArgumentError:  # no SQLAlchemy dialect of that name at all
        driver = None
    if (backend, driver) in SUPPORTED_DRIVERS:
        return
    if backend == "postgresql":
        raise InvalidSetting(
            f"PostgreSQL is used through psycopg 3: write the URL as postgresql+psycopg://... "
            f"(not {url.drivername}://...)"
        )
    raise InvalidSetting(
        f"unsupported database {url.drivername!r}: only SQLite (sqlite:///PATH) and "
        "PostgreSQL (postgresql+psycopg://USER@HOST/DATABASE) are supported"
    )


def _sqlite_file(url: sa.URL) -> Path | None:
    """The absolute path of a SQLite URL's file; None for in-memory databases."""
    name = url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name).expanduser().absolute()


class SqliteLocationError(sqlite3.OperationalError):
    """SQLite cannot open or write its file; the message names the absolute path and why.

    A driver error still (SQLAlchemy wraps it as any other, ``/healthz``
    answers 503 for it), raised in place of SQLite's "unable to open database
    file", which names neither.
    """


def check_sqlite_location(url: str) -> None:
    """Raise :class:`InvalidSetting` if a SQLite URL's file could never be there.

    For the commands that look for an existing database before connecting
    (``start``, ``keys``, ...): a missing folder is named as such, not as a
    missing file to be created by ``migrate``, which would fail on it too.
    Nothing is created: only ``setup`` makes a folder for its database.
    """
    path = _sqlite_file(make_url(url))
    if path is None or path.exists():
        return
    problem = sqlite_layout_problem(path)
    if problem is not None:
        raise InvalidSetting(f"cannot open the SQLite database {path}: {problem}")


def sqlite_layout_problem(path: Path) -> str | None:
    """What in the file system keeps SQLite from ever opening ``path``, or None."""
    folder = path.parent
    if not folder.exists():
        return f"folder {folder} does not exist (create it, or fix [database] url)"
    if not folder.is_dir():
        return f"{folder} is not a folder (fix [database] url)"
    if path.is_dir():
        return "that is a folder, not a database file (fix [database] url)"
    return None


def sqlite_access_problem(path: Path) -> str | None:
    """Why this process cannot open or write ``path`` (tried, not guessed), or None."""
    layout = sqlite_layout_problem(path)
    if layout is not None:
        return layout
    if path.exists():
        try:
            with path.open("r+b"):
                pass
        except OSError as exc:
            return f"the file is not writable by this user ({exc.strerror or exc})"
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        return (
            f"folder {path.parent} is not writable by this user ({exc.strerror or exc}); "
            "SQLite keeps the database and its -wal and -shm files there"
        )
    return None


def _opening_failed(path: Path, exc: sqlite3.OperationalError) -> sqlite3.OperationalError:
    """The error to raise for SQLite's pathless "unable to open database file" and kin."""
    text = str(exc)
    if "unable to open" not in text and "readonly" not in text:
        return exc
    problem = sqlite_access_problem(path)
    if problem is None:
        return exc
    return SqliteLocationError(f"cannot open the SQLite database {path}: {problem}")


def _configure_sqlite(
    engine: sa.Engine, *, synchronous: str, busy_ms: int, fks: bool, path: Path | None
) -> None:
    """Pragmas on every new connection, and our own BEGIN (SQLAlchemy's documented recipe).

    A file SQLite cannot open or write fails with a message that names
    neither the file nor why ("unable to open database file"); for a file
    database it becomes one naming both (:func:`sqlite_access_problem`).
    """

    if path is not None:

        @event.listens_for(engine, "do_connect")
        def _on_do_connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            before_open = getattr(dialect, _BEFORE_OPEN, None)  # Database._before_open
            if before_open is not None:
                before_open()
            try:
                return dialect.connect(*cargs, **cparams)
            except sqlite3.OperationalError as exc:
                raise _opening_failed(path, exc) from exc

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        try:
            _set_pragmas(dbapi_connection, synchronous=synchronous, busy_ms=busy_ms, fks=fks)
        except sqlite3.OperationalError as exc:
            if path is None:
                raise
            raise _opening_failed(path, exc) from exc

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        # On the driver's cursor: through SQLAlchemy, a BEGIN cost as much as a write's statement.
        execute_plain(conn, f"BEGIN {mode}")


def _set_pragmas(dbapi_connection: Any, *, synchronous: str, busy_ms: int, fks: bool) -> None:
    # Stop pysqlite from issuing its own BEGIN/COMMIT so ours are the only ones.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
            # A new, empty file: only now (or by a VACUUM) can the mode
            # be chosen, and with it the file can shrink after purges.
            cursor.execute("PRAGMA auto_vacuum = INCREMENTAL")
        _enable_wal(cursor, busy_ms)
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if fks else 'OFF'}")
    finally:
        cursor.close()


def _enable_wal(cursor: Any, busy_ms: int) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the file.

    Switching a file's journal mode needs it to itself, and SQLite answers
    "database is locked" at once instead of calling the busy handler. That
    happens when two servers (or a server and ``migrate``) open a new file at
    the same moment; once one of them has switched it, the mode is stored in
    the file and the others' switch is a no-op. So: retry for as long as the
    busy timeout allows any other wait.
    """
    deadline = time.monotonic() + busy_ms / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_RETRY_SECONDS)
