"""The pool status: its JSON (ADMIN or METRICS key) and the page that shows it (no key).

The page, its script and its style sheet are files of the package
(:mod:`openbeepboop_server.status_page`), read once on first use. They hold no
data: the page asks for a key and reads ``GET /v1/status`` with it, so loading
it needs no key. A strict Content-Security-Policy lets the page run only its
own script and style and talk only to this server.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from openbeepboop_schemas import (
    STATUS_PAGE_PATH,
    STATUS_PATH,
    STATUS_SCRIPT_PATH,
    STATUS_STYLE_PATH,
)
from starlette.responses import Response

from openbeepboop_server.http.endpoints import OBSERVERS, Call, Endpoint, component

#: Nothing but this server's own script, style sheet and API; no framing, no forms posted.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The files change only with the installed version: revalidate, never serve stale.
    "Cache-Control": "no-cache",
}
_ASSETS = {
    STATUS_PAGE_PATH: ("status.html", "text/html; charset=utf-8"),
    STATUS_SCRIPT_PATH: ("status.js", "text/javascript; charset=utf-8"),
    STATUS_STYLE_PATH: ("status.css", "text/css; charset=utf-8"),
}


@cache
def _asset(name: str) -> bytes:
    """One file of the status page, read from the installed package (once)."""
    return files("openbeepboop_server.status_page").joinpath(name).read_bytes()


async def status(call: Call) -> Response:
    """The pool status as JSON, shared by every request within the cache period."""
    context = call.context
    body = await context.status_cache.get(context.queue.pool_status)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


async def page_file(call: Call) -> Response:
    """The page, its script or its style sheet, with the page's security headers."""
    name, media_type = _ASSETS[call.request.url.path]
    return Response(_asset(name), media_type=media_type, headers=_PAGE_HEADERS)


def _file_endpoint(path: str, operation_id: str, summary: str) -> Endpoint:
    return Endpoint(
        "GET",
        path,
        operation_id,
        summary,
        page_file,
        None,
        response={"type": "string"},
        media_type=_ASSETS[path][1].split(";")[0],
        tag="status",
    )


ENDPOINTS = (
    Endpoint(
        "GET",
        STATUS_PATH,
        "getPoolStatus",
        "The pool at a glance: queues, nodes, throughput, recent failures",
        status,
        OBSERVERS,
        response=component("PoolStatus"),
        tag="status",
        description=(
            "Read from the database (the same on every replica), at most every couple of "
            "seconds per server process. Queue depth and oldest waiting job per model, nodes "
            "seen within `node_seen_seconds` with their leases, jobs finished within the "
            "window (`window_seconds`) by model and key, and the latest failures. Never a "
            "prompt or a result. Every list is bounded; the `*_total` fields count them all."
        ),
    ),
    _file_endpoint(STATUS_PAGE_PATH, "statusPage", "The status page (asks for a key itself)"),
    _file_endpoint(STATUS_SCRIPT_PATH, "statusPageScript", "The status page's script"),
    _file_endpoint(STATUS_STYLE_PATH, "statusPageStyle", "The status page's style sheet"),
)
