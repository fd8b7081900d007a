"""``openbeepboop-server start``: serve the app with uvicorn until SIGINT or SIGTERM.

The database schema is checked before anything listens: a database behind
the code's migrations is refused with one line saying to run
``openbeepboop-server migrate`` (the server never migrates by itself, so an
upgrade is always a deliberate step). A database that cannot serve the
check or the app's start-up writes (unreachable, a full disk, a read-only
file) is one line naming the database and the driver's reason, exit 1, not
uvicorn's traceback and its exit 3. On a stop signal, waiting long-polls
answer at once, in-flight requests get a grace period, and the process exits
with status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import shutil
import signal
import socket
from pathlib import Path
from types import FrameType

import click
import uvicorn
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from uvicorn.lifespan.on import LifespanOn, LifespanSendMessage

from openbeepboop_server.app import begin_shutdown, create_app
from openbeepboop_server.cli.errors import first_line
from openbeepboop_server.cli.options import config_option, read_settings
from openbeepboop_server.config import display_url, sqlite_path
from openbeepboop_server.db.database import (
    Database,
    SqliteLocationError,
    check_sqlite_location,
    sqlite_access_problem,
)
from openbeepboop_server.db.migrate import ensure_current
from openbeepboop_server.heap import GcPauses, freeze_startup_heap
from openbeepboop_server.http.single_write_protocol import ConnectionLimits, OneSendHTTPProtocol

logger = logging.getLogger(__name__)

#: How long in-flight requests may run on after a stop signal.
GRACEFUL_SHUTDOWN_SECONDS = 10
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: File descriptors kept for everything but client connections: the database
#: (files, WAL, pool), log handlers, the listening socket, worker threads' files.
RESERVED_FDS = 128
#: Free space below which a SQLite write failure at start is blamed on the disk.
LOW_DISK_BYTES = 1024 * 1024


def raise_fd_limit(max_connections: int) -> int:
    """Raise the soft open-files limit as far as ``max_connections`` needs (up to the hard one).

    Returns how many connections the limit leaves room for: ``max_connections``,
    or fewer (with a warning) when the hard limit is too low, so the
    connection cap answers ``503`` before ``accept`` starts failing.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    room = max(1, soft - RESERVED_FDS)
    logger.warning(
        "[server] max_connections = %d does not fit the open-files limit (%d); "
        "capping connections at %d (raise `ulimit -n` to allow more)",
        max_connections,
        soft,
        room,
    )
    return room


class _Server(uvicorn.Server):
    """uvicorn, plus: a stop signal also ends the app's waiting long-polls."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        self._loop = asyncio.get_running_loop()
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            # uvicorn exits with its own status when the app's start-up
            # failed; ``start`` says why instead (``server.started`` is False).
            self.should_exit = True
            return
        if self.should_exit:  # a stop signal came during start-up
            return
        # Start-up is done (the lifespan ran first): what is alive now lives
        # as long as the process.
        pauses = GcPauses()
        pauses.install()
        self._app.state.context.metrics.registry.register(pauses)
        frozen = freeze_startup_heap()
        logger.debug("kept %d start-up objects out of garbage collection", frozen)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(begin_shutdown, self._app)
        super().handle_exit(sig, frame)


class _Lifespan(LifespanOn):
    """uvicorn's lifespan, without the traceback of a start-up failure ``start`` reports itself.

    The app keeps a database error of its start-up in ``app.state.startup_error``
    (``app.py``); anything else still shows its traceback.
    """

    async def send(self, message: LifespanSendMessage) -> None:
        state = getattr(self.config.app, "state", None)
        if message["type"] == "lifespan.startup.failed" and getattr(state, "startup_error", None):
            message = {"type": "lifespan.startup.failed", "message": ""}
        await super().send(message)


def startup_failure(url: str, exc: BaseException) -> str:
    """One line naming the database ``start`` could not use and the driver's reason."""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, SqliteLocationError):  # names the file and the reason itself
        return first_line(cause)
    reason = first_line(cause)
    path = sqlite_path(url)
    if path is not None and "readonly" in reason:
        problem = sqlite_access_problem(path)
        if problem is not None:
            reason = f"{reason}: {problem}"
    elif path is not None and ("full" in reason or "I/O" in reason):
        # SQLite says "disk I/O error" when even its -shm file cannot be made.
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(path.parent).free
            if free < LOW_DISK_BYTES:
                reason = f"{reason} (the file system holding it has {free // 1024} KiB free)"
    return f"cannot start on the database {display_url(url)}: {reason}"


def check_schema(url: str, sqlite_synchronous: str) -> None:
    """Raise ``DatabaseBehind`` (one line: run migrate) before the server binds its port."""
    check_sqlite_location(url)
    db = Database.connect(url, sqlite_synchronous=sqlite_synchronous)
    try:
        ensure_current(db)
    except SQLAlchemyError as exc:
        raise click.ClickException(startup_failure(url, exc)) from None
    finally:
        db.dispose()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is one clear line, not a uvicorn log."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        hint = _BIND_HINTS.get(exc.errno or 0, "")
        if exc.errno == errno.EADDRINUSE and not port:
            hint = ""
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}{hint}") from None
    return sock


#: What to do about the usual reasons a bind fails, by errno.
_BIND_HINTS = {
    errno.EADDRINUSE: " (is another server running? pass --port)",
    errno.EADDRNOTAVAIL: (
        " (this machine has no such address: pass --host with one of its own addresses, "
        "0.0.0.0 for all of them or 127.0.0.1 for this machine only)"
    ),
    errno.EACCES: " (ports below 1024 need privileges: pass --port 1024 or higher)",
}


def bound_port(sock: socket.socket) -> int:
    """The port ``sock`` listens on: the one the system picked when ``--port 0`` asked it to."""
    port: int = sock.getsockname()[1]
    return port


@click.command()
@config_option
@click.option("--host", help="Listen on this address instead of the config's.")
@click.option("--port", type=click.IntRange(0, 65535), help="Listen on this port instead.")
def start(config_path: Path | None, host: str | None, port: int | None) -> None:
    """Run the queue server (stops cleanly on Ctrl-C or SIGTERM)."""
    # uvicorn re-raises the stop signal once it has shut down; these handlers
    # receive it instead of the defaults, so a requested stop exits with 0 —
    # also one that arrives before uvicorn is listening.
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda sig, _: received.append(sig)) for sig in _STOP_SIGNALS
    }
    try:
        _serve(config_path, host, port, received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(
    config_path: Path | None, host: str | None, port: int | None, received: list[int]
) -> None:
    """Check the schema, bind, then hand the socket to uvicorn until a stop signal."""
    settings = read_settings(config_path)
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    check_schema(settings.database.url, settings.database.sqlite_synchronous)
    sock = bind(settings.server.host, settings.server.port)
    if received:
        sock.close()
        logger.info("stopped before serving")
        return

    app = create_app(settings)
    server_settings = settings.server
    limits = ConnectionLimits(
        header_timeout_seconds=server_settings.header_timeout_seconds,
        body_timeout_seconds=server_settings.body_timeout_seconds,
        keep_alive_seconds=server_settings.keep_alive_seconds,
        max_connections=raise_fd_limit(server_settings.max_connections),
        max_header_bytes=server_settings.max_header_bytes,
    )
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=bound_port(sock),
        http=OneSendHTTPProtocol.configured(limits),
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    config.load()
    config.lifespan_class = _Lifespan
    server = _Server(config, app)
    logger.info(
        "serving %s on http://%s:%d",
        display_url(settings.database.url),
        settings.server.host,
        bound_port(sock),
    )
    server.run(sockets=[sock])
    if not server.started:
        error: BaseException | None = getattr(app.state, "startup_error", None)
        if error is not None:
            raise click.ClickException(startup_failure(settings.database.url, error))
        raise click.ClickException("the server did not start (see the log above for the reason)")
    logger.info("stopped")
