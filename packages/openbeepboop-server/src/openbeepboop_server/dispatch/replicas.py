"""Wake-ups from other replicas: one PostgreSQL ``LISTEN`` connection per server process.

Every write transaction on any replica ``NOTIFY``s what it changed when it
commits (:mod:`openbeepboop_server.db.notify`). Here a thread of each
replica holds one dedicated connection that ``LISTEN``s on the channel, and
hands each notice to the event loop (``call_soon_threadsafe``), which wakes
the long-polls it concerns exactly as a change made by this process would
(:mod:`.wakeups`): new jobs wake that many fetchers of their model, requeued
jobs wake every fetcher, finished jobs wake the polls watching them. Notices
this replica sent itself are skipped (it woke its own long-polls already).
A notice that a key changed drops the replica's cached keys right here on
the thread, before it reads the next notice (:mod:`openbeepboop_server.key_cache`),
and asks the re-check for a round at once, which ends the long-polls of a
key revoked or expired (whichever replica's notice it is: a revoke made
through this process wakes nothing by itself either).

The connection is not in the pool: it sits in ``LISTEN`` for the life of
the process. If it is lost (PostgreSQL restarted, a network cut, an admin's
``pg_terminate_backend``) the thread reconnects with a growing pause, and
each time it is listening again it asks the periodic re-check
(:mod:`.recheck`) to run at once, since notices sent while it was away are
gone. The key cache is off from the moment the connection fails until it
listens again. The re-check stays the safety net either way: a lost notice costs at
most ``[server] recheck_seconds`` of latency, never a job.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from openbeepboop_server.db import notify, postgres
from openbeepboop_server.db.notify import Notice
from openbeepboop_server.dispatch.wakeups import Wakeups
from openbeepboop_server.key_cache import KeyCache

logger = logging.getLogger(__name__)

#: How often the thread looks up from waiting to see whether it should stop
#: (how long a shutdown may wait for it).
STOP_CHECK_SECONDS = 0.2
#: Pause before the first reconnect attempt, doubled up to :data:`MAX_RETRY_SECONDS`.
FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 5.0
#: TCP keepalives, so a silently cut connection is noticed within about half a minute.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def apply_notice(wakeups: Wakeups, notice: Notice, recheck_now: Callable[[], None]) -> None:
    """Wake what ``notice`` concerns in this process (on the event loop)."""
    if notice.overflow:
        recheck_now()
        return
    if notice.available:
        wakeups.jobs_available(
            model for model, count in notice.available.items() for _ in range(count)
        )
    if notice.requeued:
        wakeups.queue_changed()
    if notice.finished:
        wakeups.jobs_changed(notice.finished)


class ReplicaListener:
    """The ``LISTEN`` thread of one app: :meth:`start` on the event loop, then :meth:`stop`."""

    def __init__(
        self,
        engine: sa.Engine,
        replica_id: str,
        wakeups: Wakeups,
        recheck_now: Callable[[], None],
        key_cache: KeyCache[Any] | None = None,
        keys_changed: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._replica_id = replica_id
        self._wakeups = wakeups
        self._recheck_now = recheck_now
        self._key_cache = key_cache
        self._keys_changed = keys_changed
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Set each time the connection is listening (tests wait on it).
        self.listening = threading.Event()
        #: How many times it has started listening (1 + reconnects).
        self.connections = 0
        #: The listening connection's socket, while there is one.
        self._fd: int | None = None

    def start(self) -> None:
        """Begin listening in a daemon thread."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="replica-listener", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (blocks up to about :data:`STOP_CHECK_SECONDS`; call from a thread)."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    # -- the thread ------------------------------------------------------------

    def _connect(self) -> Any:
        # The PostgreSQL driver (the [postgresql] extra) is there whenever the
        # database is PostgreSQL; imported by name so SQLite-only installs and
        # their type checks never need it.
        psycopg = importlib.import_module("psycopg")
        args, params = self._engine.dialect.create_connect_args(self._engine.url)
        return psycopg.connect(*args, **{**params, **KEEPALIVES}, autocommit=True)

    def _run(self) -> None:
        try:
            self._listen_until_stopped()
        finally:
            self.listening.clear()
            self._fd = None
            if self._key_cache is not None:
                self._key_cache.disable()

    def _listen_until_stopped(self) -> None:
        pause = FIRST_RETRY_SECONDS
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    self._listen(conn)
                    pause = FIRST_RETRY_SECONDS
                    self._receive(conn)
            except Exception as exc:  # any driver error: the connection is gone
                self.listening.clear()
                self._fd = None
                if self._key_cache is not None:
                    self._key_cache.disable()
                if self._stopping.is_set():
                    return
                logger.warning(
                    "lost the LISTEN connection for other replicas' changes (%s: %s); "
                    "reconnecting in %.1f s (the periodic re-check covers the gap)",
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                    pause,
                )
                self._stopping.wait(pause)
                pause = min(pause * 2, MAX_RETRY_SECONDS)

    def _listen(self, conn: Any) -> None:
        sql = importlib.import_module("psycopg.sql")
        channel = conn.execute(notify.CHANNEL_QUERY).fetchone()[0]
        # The connection runs nothing after this: its LISTEN, seen in
        # pg_stat_activity, tells a starting replica that this one is alive
        # (queue/leases.py, other_replicas_alive).
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self.connections += 1
        self._fd = conn.fileno()
        if self._key_cache is not None:
            self._key_cache.enable(self.unread)  # every key change from here on is heard
        if self.connections > 1:
            logger.info("listening for other replicas' changes again")
        self.listening.set()
        # Notices sent before this point were missed (or there were none yet):
        # one re-check now finds whatever they were about.
        self._call(self._recheck_now)

    def unread(self) -> bool:
        """True if a notice may be waiting on the connection, not yet taken in by the thread.

        Any thread may ask (one ``poll()``); with no connection, or one being
        closed or replaced, the answer is True: nothing cached is to be trusted.
        """
        fd = self._fd
        try:
            return fd is None or postgres.has_input(fd)
        except (OSError, ValueError):
            return True

    def _receive(self, conn: Any) -> None:
        while not self._stopping.is_set():
            for message in conn.notifies(timeout=STOP_CHECK_SECONDS):
                notice = notify.decode(message.payload)
                if notice is not None and notice.keys:
                    if self._key_cache is not None:
                        self._key_cache.drop()
                    if self._keys_changed is not None:
                        self._call(self._keys_changed)
                if notice is not None and notice.replica != self._replica_id:
                    self._call(apply_notice, self._wakeups, notice, self._recheck_now)

    def _call(self, function: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop closed meanwhile: the app is gone
            self._stopping.set()
