"""``GET /v1/usage``: what each key's jobs used (USER: its own key; ADMIN: any or all).

The numbers come from the per-hour usage counters (:mod:`..queue.usage`), so
they hold on every replica and outlive the retention purge of the jobs.
"""

from __future__ import annotations

from datetime import datetime, timezone

from openbeepboop_schemas import USAGE_PATH, Role
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openbeepboop_server.http.endpoints import USERS, Call, Endpoint, QueryParam, component
from openbeepboop_server.http.errors import ApiError
from openbeepboop_server.http.query import parse_query


class _UsageQuery(BaseModel):
    """The query string of ``GET /v1/usage``."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(default=None, min_length=1, max_length=128)
    since: datetime | None = None
    until: datetime | None = None


_TIME_TAKES = (
    "must be an ISO 8601 date or date-time (UTC unless it names a zone, "
    "such as 2027-01-31 or 2027-01-31T18:00:00+01:00) or Unix seconds"
)
#: What ``GET /v1/usage``'s parameters take, said when a value does not fit.
_USAGE_QUERY_TAKES = {
    "key": "must be a key name of 1 to 128 characters",
    "since": _TIME_TAKES,
    "until": _TIME_TAKES,
}


def _seconds(value: datetime | None) -> float | None:
    """Unix seconds; a time without a zone is UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


async def usage(call: Call) -> Response:
    """Usage per key over a window; a USER key sees only its own."""
    query = parse_query(call.request.query_params, _UsageQuery, _USAGE_QUERY_TAKES)
    caller = call.user
    key = query.key
    if caller.role is not Role.ADMIN:
        if key is not None and key != caller.key_name:
            raise ApiError(
                403,
                "a USER key may read only its own usage; leave out 'key' or name this key",
                param="key",
                code="insufficient_role",
            )
        key = caller.key_name
    since, until = _seconds(query.since), _seconds(query.until)
    report = await run_in_threadpool(call.context.queue.usage, key, since, until)
    if query.key is not None and caller.role is Role.ADMIN and not report.data:
        raise ApiError(404, f"no API key named '{query.key}'", param="key", code="key_not_found")
    return Response(report.model_dump_json(), media_type="application/json")


ENDPOINTS = (
    Endpoint(
        "GET",
        USAGE_PATH,
        "getUsage",
        "Usage per key: jobs by final status, tokens, LLM seconds",
        usage,
        USERS,
        response=component("UsageReport"),
        tag="usage",
        errors=(400, 404),
        query=(
            QueryParam(
                "key",
                {"type": "string", "minLength": 1, "maxLength": 128},
                "Only this key (ADMIN). A USER key may name only itself.",
            ),
            QueryParam(
                "since",
                {"type": "string", "format": "date-time"},
                "Start of the window: ISO 8601 (UTC if no zone) or Unix seconds. "
                "Counted in whole hours: the hour it falls in is included.",
            ),
            QueryParam(
                "until",
                {"type": "string", "format": "date-time"},
                "End of the window (exclusive), as `since`; default now. A window that ends "
                "before it starts holds nothing.",
            ),
        ),
        description=(
            "Jobs that ended (COMPLETED, FAILED, CANCELLED), prompt and completion tokens from "
            "the results' `usage`, and LLM seconds (claim of a delivered job's last attempt to "
            "its delivery), per key, counted per hour when the jobs end and kept after the jobs "
            "are purged. A USER key sees its own key; an ADMIN key sees every USER and ADMIN "
            "key, or the one named by `key`."
        ),
    ),
)
