"""``create_app(settings)``: the whole server as one Starlette app.

Routes, middleware, exception handlers and the lifespan are assembled in one
call; nothing is opened until the lifespan starts. At start-up the lifespan
connects to the database, refuses to run on a schema older than the code
(``openbeepboop-server migrate`` first: the server never migrates on its
own), gives every in-flight lease a full lease period again (server down time
must not count against nodes), reads which models recently seen nodes serve
(so the first submits are checked against it), and starts the housekeeper. A
database error in those steps is kept in ``app.state.startup_error`` for
``openbeepboop-server start`` to report in one line. At shutdown it
answers every waiting long-poll, stops the housekeeper and closes the
database.

Middleware, outermost first: access log (one line and one latency sample per
request), body size limit. Service calls are synchronous SQLAlchemy: on a
SQLite file a small one runs on the event loop while no thread is writing,
everything else in the thread pool (:mod:`openbeepboop_server.dispatch.calls`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from openbeepboop_schemas import QUEUE_SUBMIT_PATH
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect

from openbeepboop_server import __version__
from openbeepboop_server.config import Settings
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.faults import DATABASE_ERRORS
from openbeepboop_server.db.migrate import ensure_current
from openbeepboop_server.dispatch.batches import BatchDriver
from openbeepboop_server.dispatch.slots import TooManyLongPolls
from openbeepboop_server.dispatch.wakeups import Wakeups
from openbeepboop_server.errors import (
    IdempotencyKeyReused,
    KeyNoLongerValid,
    NodeIdTaken,
    PriorityAboveCeiling,
    QuotaExceeded,
    ScopeRefused,
    TooManyModels,
    TooManyNodes,
)
from openbeepboop_server.housekeeping import Housekeeper
from openbeepboop_server.http.access_log import AccessLog
from openbeepboop_server.http.endpoints import build_routes
from openbeepboop_server.http.errors import (
    ApiError,
    handle_api_error,
    handle_client_gone,
    handle_database_error,
    handle_http_exception,
    handle_idempotency_key_reused,
    handle_key_no_longer_valid,
    handle_node_id_taken,
    handle_priority_above_ceiling,
    handle_quota_exceeded,
    handle_scope_refused,
    handle_too_many_long_polls,
    handle_too_many_models,
    handle_too_many_nodes,
    handle_unexpected,
)
from openbeepboop_server.http.limits import BodySizeLimit
from openbeepboop_server.http.openai.batch_budgets import budgeted_line_parser
from openbeepboop_server.http.openai.files import upload_limits
from openbeepboop_server.http.routes import ENDPOINTS
from openbeepboop_server.keys import KeyService
from openbeepboop_server.metrics import Metrics
from openbeepboop_server.openapi import build_openapi
from openbeepboop_server.queue.service import QueueService

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> Starlette:
    """The queue server's ASGI app for ``settings``; the database opens when the app starts."""
    holder: dict[str, ServerContext] = {}
    metrics = Metrics(lambda: holder["context"].queue if "context" in holder else None)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = await run_in_threadpool(
            Database.connect,
            settings.database.url,
            sqlite_synchronous=settings.database.sqlite_synchronous,
            pool_size=settings.database.pool_size,
            max_overflow=settings.database.max_overflow,
        )
        housekeeper: Housekeeper | None = None
        batch_driver: BatchDriver | None = None
        keys: KeyService | None = None
        wakeups = Wakeups()
        metrics.long_polls.labels(kind="poll").set_function(lambda: wakeups.watch_waiters)
        metrics.long_polls.labels(kind="fetch").set_function(lambda: wakeups.fetch_waiters)
        metrics.long_polls.labels(kind="lease_watch").set_function(
            lambda: wakeups.lease_watch_waiters
        )
        try:
            policy = dataclasses.replace(
                settings.queue.policy(),
                max_models_per_key=settings.limits.max_fetch_models_per_key,
            )
            queue = QueueService(db, policy)
            keys = KeyService(db)
            try:
                await run_in_threadpool(ensure_current, db)
                granted = await run_in_threadpool(queue.grant_restart_grace)
                # Submits check their model against this from the first request on.
                await run_in_threadpool(queue.refresh_served)
            except DATABASE_ERRORS as exc:
                # Expected (a full disk, a read-only file, a database gone
                # since ``start`` checked it): ``start`` says it in one line
                # instead of uvicorn's traceback (cli/start.py).
                app.state.startup_error = exc
                raise
            if granted:
                logger.info("extended %d in-flight lease(s) after the restart", granted)
            seen_warning = settings.queue.node_seen_warning()
            if seen_warning:
                logger.warning("%s", seen_warning)
            context = ServerContext(
                settings=settings,
                db=db,
                queue=queue,
                keys=keys,
                wakeups=wakeups,
                metrics=metrics,
                recheck_seconds=settings.server.recheck_seconds,
            )
            app.state.context = holder["context"] = context
            housekeeper = Housekeeper(context)
            housekeeper.start()
            batch_driver = app.state.batch_driver = BatchDriver(
                context,
                settings.openai.batch_check_seconds,
                line_parser=budgeted_line_parser(app.state.budgets),
            )
            batch_driver.start()
            yield
        finally:
            wakeups.close()
            if housekeeper is not None:
                await housekeeper.stop()
            if batch_driver is not None:
                await batch_driver.stop()
            holder.pop("context", None)
            if keys is not None:
                keys.close_inline()
            await run_in_threadpool(db.dispose)

    app = Starlette(
        routes=build_routes(ENDPOINTS),
        middleware=[
            Middleware(AccessLog, metrics=metrics),
            Middleware(
                BodySizeLimit,
                max_bytes=settings.server.max_body_bytes,
                path_limits=upload_limits(settings),
                result_paths=frozenset({QUEUE_SUBMIT_PATH}),
                max_result_bytes=settings.limits.max_result_bytes,
            ),
        ],
        exception_handlers={
            ApiError: handle_api_error,
            TooManyLongPolls: handle_too_many_long_polls,
            PriorityAboveCeiling: handle_priority_above_ceiling,
            QuotaExceeded: handle_quota_exceeded,
            ScopeRefused: handle_scope_refused,
            NodeIdTaken: handle_node_id_taken,
            TooManyNodes: handle_too_many_nodes,
            TooManyModels: handle_too_many_models,
            IdempotencyKeyReused: handle_idempotency_key_reused,
            KeyNoLongerValid: handle_key_no_longer_valid,
            ClientDisconnect: handle_client_gone,
            HTTPException: handle_http_exception,
            **dict.fromkeys(DATABASE_ERRORS, handle_database_error),
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.budgets = settings.limits.budgets()
    app.state.metrics = metrics
    app.state.openapi_json = json.dumps(
        build_openapi(ENDPOINTS, __version__, app.state.budgets), separators=(",", ":")
    ).encode()
    return app


def begin_shutdown(app: Starlette) -> None:
    """Answer every waiting long-poll now (called when a stop signal arrives)."""
    context: ServerContext | None = getattr(app.state, "context", None)
    if context is not None:
        context.wakeups.close()
