"""The query string of OpenAI's list endpoints (``after``, ``limit``), checked strictly."""

from __future__ import annotations

from collections.abc import Collection

from starlette.requests import Request

from openbeepboop_server.http.errors import ApiError
from openbeepboop_server.http.query import check_query_names
from openbeepboop_server.queue.views import CursorError


def page_query(
    request: Request, *, default_limit: int, max_limit: int, extra: Collection[str] = ()
) -> tuple[int, str | None, dict[str, str]]:
    """``(limit, after, {other allowed params})``; unknown or repeated parameters are a 400."""
    params = request.query_params
    allowed = {"limit", "after", *extra}
    check_query_names(params, allowed)
    raw = params.get("limit")
    limit = default_limit
    if raw is not None:
        # ASCII digits only, and few: str.isdigit() also takes '²' and '٣', and
        # int() refuses more than 4,300 digits.
        limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else 0
        if not 1 <= limit <= max_limit:
            raise ApiError(
                400,
                f"'limit': must be an integer from 1 to {max_limit}",
                param="limit",
                code="invalid_value",
            )
    after = params.get("after") or None
    if after is not None and len(after) > 128:
        raise ApiError(400, "'after': too long", param="after", code="invalid_value")
    others = {name: params[name] for name in extra if name in params}
    return limit, after, others


def bad_cursor(error: CursorError) -> ApiError:
    """The 400 or 404 for an ``after`` a listing cannot continue from (not an empty page)."""
    return ApiError(error.status, str(error), param="after", code=error.code)
