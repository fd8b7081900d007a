"""Reading request bodies into contract models, and writing models as responses.

Parsing and validation are one pydantic step on the raw bytes: malformed JSON,
a wrong type, a missing or unknown field all become one ``400``
``invalid_request_error`` whose ``param`` names the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from openbeepboop_schemas import ErrorEnvelope, JobList, PollEntry
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import Response

from openbeepboop_server.http.errors import ApiError

ModelT = TypeVar("ModelT", bound=BaseModel)

JSON = "application/json"


async def read_model(request: Request, model: type[ModelT], *, strict: bool = False) -> ModelT:
    """The request body validated as ``model``, or a ``400`` naming what is wrong.

    ``strict`` refuses values of the wrong JSON type instead of converting
    them (``"top_p": true`` would otherwise silently become ``1``).
    """
    body = await request.body()
    if not body.strip():
        raise ApiError(400, "request body is empty: expected a JSON object", code="invalid_body")
    try:
        return model.model_validate_json(body, strict=strict)
    except ValidationError as exc:
        raise ApiError.from_envelope(400, ErrorEnvelope.from_validation_error(exc, model)) from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", code="invalid_body") from None


def model_response(
    model: BaseModel, status_code: int = 200, *, exclude_unset: bool = False
) -> Response:
    """One model as a JSON response."""
    return Response(
        model.model_dump_json(exclude_unset=exclude_unset),
        status_code=status_code,
        media_type=JSON,
    )


_ADAPTERS: dict[type[BaseModel], TypeAdapter[list[BaseModel]]] = {}


def list_response(
    items: Sequence[ModelT],
    model: type[ModelT],
    status_code: int = 200,
    *,
    exclude_unset: bool = False,
) -> Response:
    """A JSON array of models as a response, serialised in one pass."""
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return Response(
        adapter.dump_json(list(items), exclude_unset=exclude_unset),
        status_code=status_code,
        media_type=JSON,
    )


def poll_entry_data(entry: PollEntry) -> dict[str, Any]:
    """A poll entry as JSON data, its ``result`` exactly as the LLM server returned it.

    The completion is dumped with only the fields it arrived with, so a
    ``chat.completion`` comes back without fields this version merely knows of
    (``tool_calls: null`` and the like).
    """
    data = entry.model_dump(mode="json")
    if entry.result is not None:
        data["result"] = entry.result.model_dump(mode="json", exclude_unset=True)
    return data


def poll_entries_response(entries: Sequence[PollEntry]) -> Response:
    """A JSON array of poll entries."""
    return Response(to_json([poll_entry_data(entry) for entry in entries]), media_type=JSON)


def poll_entry_response(entry: PollEntry) -> Response:
    """One poll entry."""
    return Response(to_json(poll_entry_data(entry)), media_type=JSON)


def job_list_response(page: JobList) -> Response:
    """A page of jobs."""
    data = page.model_dump(mode="json", exclude={"data"})
    data["data"] = [poll_entry_data(entry) for entry in page.data]
    return Response(to_json(data), media_type=JSON)
