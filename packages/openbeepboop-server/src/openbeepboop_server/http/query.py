"""A listing's query string: each parameter known and given once, or a ``400``.

Three routes take query parameters (``GET /v1/jobs``, ``GET /v1/usage`` and
the OpenAI listings); a name they do not know, or one given twice, is a
mistake the caller should hear about rather than have one value silently
win (docs/api.md, code ``unknown_parameter`` for both). A value a parameter
cannot take is one line naming the parameter and what it takes
(:func:`parse_query`), as for the OpenAI listings' ``limit``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TypeVar

from openbeepboop_schemas import ErrorEnvelope
from pydantic import BaseModel, ValidationError
from starlette.datastructures import QueryParams

from openbeepboop_server.http.errors import ApiError

QueryT = TypeVar("QueryT", bound=BaseModel)


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


def parse_query(params: QueryParams, model: type[QueryT], takes: Mapping[str, str]) -> QueryT:
    """The query string as ``model``, or a ``400`` naming the first parameter it cannot take.

    ``takes`` says, per parameter, what it takes, in place of the validator's
    own words where those would puzzle a caller (``?since=1e400`` read as a
    date that is "too short", ``?limit=NaN`` as a string that is no integer).
    """
    check_query_names(params, model.model_fields)
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        location = exc.errors()[0]["loc"]
        name = str(location[0]) if location else ""
        if name in takes:
            raise ApiError(
                400, f"'{name}': {takes[name]}", param=name, code="invalid_value"
            ) from None
        raise ApiError.from_envelope(400, ErrorEnvelope.from_validation_error(exc)) from None
