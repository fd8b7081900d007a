"""A listing's query string: each parameter known and given once, or a ``400``.

Three routes take query parameters (``GET /v1/jobs``, ``GET /v1/usage`` and
the OpenAI listings); a name they do not know, or one given twice, is a
mistake the caller should hear about rather than have one value silently
win (docs/api.md, code ``unknown_parameter`` for both).
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import QueryParams

from openbeepboop_server.http.errors import ApiError


def check_query_names(params: QueryParams, allowed: Collection[str]) -> None:
    """Raise a ``400 unknown_parameter`` for a name not in ``allowed`` or given more than once."""
    for name in params:
        if name not in allowed:
            raise ApiError(
                400, f"unknown query parameter '{name}'", param=name, code="unknown_parameter"
            )
        if len(params.getlist(name)) > 1:
            raise ApiError(
                400,
                f"query parameter '{name}' given more than once",
                param=name,
                code="unknown_parameter",
            )
