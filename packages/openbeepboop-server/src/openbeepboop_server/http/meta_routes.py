"""Endpoints about the server itself: health, the OpenAPI document, metrics.

``/healthz`` answers 503 while the database does not answer, and also, on
SQLite, once any statement found the file damaged (until the server
restarts: no integrity check runs per probe) or while the path no longer
names the file the server has open (:class:`~openbeepboop_server.db.database.Database`).
"""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread
from openbeepboop_schemas import HEALTHZ_PATH, METRICS_PATH, OPENAPI_PATH, ErrorEnvelope
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openbeepboop_server.db.database import DatabaseFileChanged
from openbeepboop_server.db.faults import describe
from openbeepboop_server.http.endpoints import OBSERVERS, Call, Endpoint
from openbeepboop_server.http.errors import envelope_response
from openbeepboop_server.metrics import CONTENT_TYPE

logger = logging.getLogger(__name__)

HEALTH_SCHEMA = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "const": "ok"},
        "database": {"type": "string", "const": "ok"},
    },
    "required": ["status", "database"],
}


#: Seconds ``/healthz`` waits for the database (a worker thread, a pooled
#: connection, ``SELECT 1``) before it answers 503: a load balancer's probe
#: must hear "unhealthy" while the pool is exhausted or the database hangs.
HEALTH_CHECK_TIMEOUT_SECONDS = 5.0


def _unhealthy(message: str) -> Response:
    return envelope_response(
        503,
        ErrorEnvelope.build(
            message=message, type="service_unavailable", code="database_unavailable"
        ),
    )


def _damaged(damage: str) -> Response:
    return _unhealthy(
        f"the database file is damaged ({damage}); it must be restored from a backup "
        "and the server restarted (see the server's log)"
    )


async def healthz(call: Call) -> Response:
    """``200`` when the database answers within the bound, ``503`` envelope when it does not."""
    db = call.context.db
    if db.damage is not None:  # logged once, when a statement first met it
        return _damaged(db.damage)
    try:
        # Abandoned, not awaited, when the bound passes: a ping stuck on the
        # pool or the network ends by itself within the pool's and libpq's bounds.
        with anyio.fail_after(HEALTH_CHECK_TIMEOUT_SECONDS):
            await anyio.to_thread.run_sync(call.context.db.ping, abandon_on_cancel=True)
    except TimeoutError:
        logger.warning(
            "health check: the database did not answer within %ss", HEALTH_CHECK_TIMEOUT_SECONDS
        )
        return _unhealthy(
            f"the database did not answer within {HEALTH_CHECK_TIMEOUT_SECONDS:g} seconds"
        )
    except DatabaseFileChanged as exc:  # logged once, when first seen
        return _unhealthy(f"{exc}; see the server's log")
    except Exception as exc:
        if db.damage is not None:
            return _damaged(db.damage)
        logger.warning("health check: the database is unreachable: %s", describe(exc))
        return _unhealthy("the database is unreachable")
    return Response(b'{"status":"ok","database":"ok"}', media_type="application/json")


async def openapi(call: Call) -> Response:
    """The OpenAPI document (built once, with the app)."""
    document: bytes = call.request.app.state.openapi_json
    return Response(document, media_type="application/json")


async def metrics(call: Call) -> Response:
    """Prometheus text exposition; queue depth is read from the database now."""
    body = await run_in_threadpool(call.context.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)


ENDPOINTS = (
    Endpoint(
        "GET",
        HEALTHZ_PATH,
        "healthz",
        "Liveness and database reachability",
        healthz,
        None,
        response=HEALTH_SCHEMA,
        errors=(503,),
        tag="server",
    ),
    Endpoint(
        "GET",
        OPENAPI_PATH,
        "openapi",
        "This document",
        openapi,
        None,
        response={"type": "object"},
        tag="server",
    ),
    Endpoint(
        "GET",
        METRICS_PATH,
        "metrics",
        "Prometheus metrics",
        metrics,
        OBSERVERS,
        response={"type": "string"},
        media_type=CONTENT_TYPE.split(";")[0],
        tag="server",
    ),
)
