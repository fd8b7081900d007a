"""PostgreSQL connections: found dead without a round trip, committed with their notice.

Every database round trip is on a request's critical path (a pickup is a
submit's transaction plus a claim's), so the pool does not spend one per
checkout on a ping (``pool_pre_ping``). A pooled connection sits idle with
nothing to read: the server only speaks when asked. So if its socket is
readable at checkout, the server has spoken unasked, which it does only to
say goodbye (a restart or ``pg_terminate_backend`` sends a FATAL error, then
closes), or the socket is closed. :func:`check_alive` then tells the pool to
replace the connection before it is handed out (a documented pool hook:
raising ``DisconnectionError`` in the ``checkout`` event), so a restarted
PostgreSQL costs no request an error. The look is one ``poll()`` system call.
A connection that dies after it was handed out fails that request, as it did
with a ping (the ping only ever ran before the first statement).

A write transaction ends with what it changed ``NOTIFY``ed to the other
replicas (:mod:`.notify`); :func:`notify_and_commit` sends that notice and
the ``COMMIT`` as one simple-protocol query string (two statements, one
round trip), which PostgreSQL runs in order and stops at the first error, so
a failed notice is never followed by the commit. psycopg sends a query
without parameters that way (its documented "multiple statements in the
same query"); the payloads are quoted by psycopg's own ``sql.Literal``.

Several replicas share one database, so one replica that stops answering
(paused, swapping, cut off by the network) must not stall the others by the
row locks its open transaction holds. Every server connection therefore
carries, in its startup packet (no extra round trip), session settings that
bound each wait (:func:`session_options`): ``lock_timeout`` (a statement
that waits longer for a lock fails, and its request answers 503),
``idle_in_transaction_session_timeout`` (PostgreSQL ends a session that
sits in a transaction without sending anything: our transactions never
wait on anything but the database, so such a session belongs to a replica
that froze or was cut off, and ending it releases its locks) and TCP
keepalives on both ends (a peer that vanished without closing its socket is
found in tens of seconds instead of the kernel's two hours). Migrations do
without the lock and idle bounds: they wait on purpose for the migration lock.
"""

from __future__ import annotations

import importlib
import select
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

#: Events that mean "the server wrote or hung up" on an idle connection.
_UNASKED = select.POLLIN | select.POLLERR | select.POLLHUP | select.POLLNVAL
#: The statement that sends a transaction's payloads on the schema's channel.
_NOTIFY = "SELECT pg_notify(left('obb:' || current_schema(), 63), p) FROM unnest({}::text[]) AS p"


#: Seconds a statement waits for a row or table lock before it fails (``lock_timeout``).
#: The longest legitimate wait is a submit queued behind a bulk submit by the
#: same key (that transaction holds the key's row while it inserts its jobs);
#: claims skip locked rows instead of waiting.
LOCK_TIMEOUT_SECONDS = 5
#: Seconds a session may sit inside a transaction sending nothing before
#: PostgreSQL ends it (``idle_in_transaction_session_timeout``).
IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 10
#: TCP keepalives, on the client's and on PostgreSQL's end of each connection: first
#: probe after this many idle seconds, then one every interval, given up after count.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_COUNT = 3
#: Seconds to wait for PostgreSQL to accept a new connection (libpq waits for ever).
CONNECT_TIMEOUT_SECONDS = 10


def session_options(*, bound_waits: bool) -> list[str]:
    """The ``-c name=value`` settings every connection asks for (see the module docstring)."""
    settings = {
        "tcp_keepalives_idle": KEEPALIVE_IDLE_SECONDS,
        "tcp_keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
        "tcp_keepalives_count": KEEPALIVE_COUNT,
    }
    if bound_waits:
        settings["lock_timeout"] = LOCK_TIMEOUT_SECONDS * 1000
        settings["idle_in_transaction_session_timeout"] = IDLE_IN_TRANSACTION_TIMEOUT_SECONDS * 1000
    return [f"-c {name}={value}" for name, value in settings.items()]


def connect_parameters(cparams: dict[str, Any], *, bound_waits: bool) -> None:
    """Add our keepalives, connect timeout and session settings to libpq's parameters.

    What the database URL already says wins, except ``options``, which is
    extended (a URL's ``options=-csearch_path=...`` stays).
    """
    cparams.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    cparams.setdefault("keepalives", 1)
    cparams.setdefault("keepalives_idle", KEEPALIVE_IDLE_SECONDS)
    cparams.setdefault("keepalives_interval", KEEPALIVE_INTERVAL_SECONDS)
    cparams.setdefault("keepalives_count", KEEPALIVE_COUNT)
    given = str(cparams.get("options") or "").strip()
    cparams["options"] = " ".join([*session_options(bound_waits=bound_waits), given]).strip()


def has_input(fd: int) -> bool:
    """True if the socket ``fd`` has something to read, or is closed or broken (no wait)."""
    poller = select.poll()  # not select(): file descriptors past 1,024 are common here
    poller.register(fd, _UNASKED)
    return bool(poller.poll(0))


def idle_connection_alive(dbapi_connection: Any) -> bool:
    """False if an idle psycopg connection is known closed or its server spoke unasked."""
    if dbapi_connection.closed or dbapi_connection.broken:
        return False
    return not has_input(dbapi_connection.fileno())


def check_alive(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool ``checkout`` hook: have a dead connection replaced before it is used."""
    if not idle_connection_alive(dbapi_connection):
        raise sa.exc.DisconnectionError("the PostgreSQL server closed this pooled connection")


def configure(engine: sa.Engine, *, bound_waits: bool = True) -> None:
    """Install the checkout check and the connection settings on a PostgreSQL engine.

    ``bound_waits`` False (migrations) leaves out the lock and idle timeouts.
    """
    event.listen(engine, "checkout", check_alive)

    def _on_do_connect(_dialect: Any, _record: Any, _cargs: Any, cparams: Any) -> None:
        connect_parameters(cparams, bound_waits=bound_waits)

    event.listen(engine, "do_connect", _on_do_connect)


def notify_and_commit(conn: sa.Connection, payloads: list[str]) -> None:
    """Send ``payloads`` as notices and commit the transaction, in one round trip.

    The connection's transaction is then over at the driver; the ``COMMIT``
    SQLAlchemy sends when the block ends finds nothing to commit and costs
    nothing (psycopg skips it on an idle connection). Run through SQLAlchemy
    with no parameter list at all (``no_parameters``: the driver's simple
    protocol, a ``%`` in a payload left alone), so its errors arrive wrapped
    and a lost connection is invalidated as usual.
    """
    sql = importlib.import_module("psycopg.sql")
    driver = conn.connection.driver_connection
    quoted = ", ".join(sql.Literal(p).as_string(driver) for p in payloads)
    statement = _NOTIFY.format(f"ARRAY[{quoted}]") + "; COMMIT"
    conn.exec_driver_sql(statement, execution_options={"no_parameters": True}).close()
