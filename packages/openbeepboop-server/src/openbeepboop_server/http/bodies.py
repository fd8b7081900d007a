"""Reading request bodies into contract models, and writing models as responses.

Parsing and validation are one pydantic step: malformed JSON,
a wrong type, a missing or unknown field all become one ``400``
``invalid_request_error`` whose ``param`` names the field.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated, Any, TypeVar, cast, get_args, get_origin

from anyio.to_thread import run_sync
from openbeepboop_schemas import (
    MAX_BULK_SUBMIT,
    BulkSubmitRequest,
    BulkSubmitResponse,
    ChatCompletionRequest,
    ErrorEnvelope,
    JobList,
    PollEntry,
)
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import from_json, to_json
from starlette.requests import Request
from starlette.responses import Response

from openbeepboop_server import finite_json
from openbeepboop_server.dispatch.calls import INLINE_MAX_BYTES
from openbeepboop_server.finite_json import NonFiniteNumber
from openbeepboop_server.http.budgets import (
    RequestBudgets,
    check_bulk_request,
    check_chat_request,
    check_depth,
    check_structure,
)
from openbeepboop_server.http.errors import ApiError

ModelT = TypeVar("ModelT", bound=BaseModel)

#: The error code of a body holding ``NaN``, ``Infinity`` or a number like ``1e400``.
NON_FINITE_CODE = "non_finite_number"

JSON = "application/json"


#: Bodies up to this size are parsed on the event loop: at most a few ms even
#: when built to be slow (the budgets bound the rest). Larger ones go to a
#: worker thread, whose steps are short enough to let the loop run between them.
INLINE_BODY_BYTES = INLINE_MAX_BYTES


async def read_model(
    request: Request,
    model: type[ModelT],
    *,
    strict: bool = False,
    budgets: RequestBudgets | None = None,
) -> ModelT:
    """The request body validated as ``model``, or a ``400`` naming what is wrong.

    ``strict`` refuses values of the wrong JSON type instead of converting
    them (``"top_p": true`` would otherwise silently become ``1``, and
    ``"stream": "false"`` become ``False``), as the OpenAI API does.
    ``budgets`` are checked before validation (:mod:`.budgets`).
    """
    body = await request.body()
    # ``isspace`` stops at the first other byte; ``strip`` would copy a 10 MB body.
    if not body or body.isspace():
        raise ApiError(400, "request body is empty: expected a JSON object", code="invalid_body")
    if len(body) <= INLINE_BODY_BYTES:
        return parse_body(body, model, strict=strict, budgets=budgets)
    work = partial(parse_body, body, model, strict=strict, budgets=budgets, share_cpu=True)
    return await run_sync(work)


def parse_body(
    body: bytes,
    model: type[ModelT],
    *,
    strict: bool,
    budgets: RequestBudgets | None,
    share_cpu: bool = False,
) -> ModelT:
    """:func:`read_model`'s work on the bytes: budgets, parse, budgets again, validate.

    ``share_cpu`` (in a worker thread) gives other threads, the event loop's
    among them, a turn at the GIL between long steps.
    """
    try:
        deep = budgets is not None and check_structure(body, budgets, share_cpu=share_cpu)
        chat = budgets is not None and model in _CHAT_BODIES
        if not (strict or deep or chat):
            return model.model_validate_json(body)
        # A request a job is made of (chat bodies are always budgeted) is refused
        # a number JSON cannot carry; a node's delivered result (not budgeted) is
        # kept as it came: refusing it would lose the answer.
        data = read_json(body, finite=budgets is not None)
        if budgets is not None:
            if deep:
                check_depth(data, budgets.max_json_depth)
            if chat:
                _CHAT_BODIES[model](data, budgets)
        data = _integral_numbers(data, model) if strict else data
        if model is BulkSubmitRequest:
            return cast(ModelT, _validate_bulk(data, strict=strict, share_cpu=share_cpu))
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise ApiError.from_envelope(400, ErrorEnvelope.from_validation_error(exc, model)) from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", code="invalid_body") from None


async def read_chat_json(request: Request, budgets: RequestBudgets) -> Any:
    """A chat completion request's parsed JSON, its budgets and caps checked.

    For handlers that must see the raw JSON before validating it (the OpenAI
    surface splits ``stream`` off first); large bodies are read off the loop,
    as :func:`read_model` does.
    """
    body = await request.body()
    if not body or body.isspace():
        raise ApiError(400, "request body is empty: expected a JSON object", code="invalid_body")
    if len(body) <= INLINE_BODY_BYTES:
        return _checked_chat_json(body, budgets)
    return await run_sync(partial(_checked_chat_json, body, budgets, share_cpu=True))


def _checked_chat_json(body: bytes, budgets: RequestBudgets, *, share_cpu: bool = False) -> Any:
    deep = check_structure(body, budgets, share_cpu=share_cpu)
    data = read_json(body)
    if deep:
        check_depth(data, budgets.max_json_depth)
    check_chat_request(data, budgets)
    return data


def read_json(body: bytes, *, finite: bool = True) -> Any:
    """``body`` parsed as JSON, or a ``400`` saying why it is not (or, with ``finite``,
    why it cannot be stored as sent: :mod:`~openbeepboop_server.finite_json`)."""
    try:
        return finite_json.loads(body) if finite else from_json(body)
    except NonFiniteNumber as exc:
        raise ApiError(400, str(exc), param=exc.param or None, code=NON_FINITE_CODE) from None
    except ValueError as exc:
        raise ApiError(400, f"malformed JSON: {exc}", code="invalid_body") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", code="invalid_body") from None


def validate_strict(data: Any, model: type[ModelT]) -> ModelT:
    """Parsed JSON validated as ``model`` in strict mode, or a ``400`` naming the field."""
    try:
        return model.model_validate(_integral_numbers(data, model), strict=True)
    except ValidationError as exc:
        raise ApiError.from_envelope(400, ErrorEnvelope.from_validation_error(exc, model)) from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", code="invalid_body") from None


#: Bulk lines validated per call: one pydantic call holds the GIL throughout, and
#: 5,000 lines in one call held it for over 100 ms; 250 take a few ms.
BULK_VALIDATION_CHUNK = 250


def _validate_bulk(data: Any, *, strict: bool, share_cpu: bool = False) -> BulkSubmitRequest:
    """A bulk body validated a chunk of lines at a time, so a thread lets the loop run between.

    An error names the line by its place in the whole body (``requests.3712.messages``).
    """
    requests = data.get("requests") if isinstance(data, dict) else None
    if not isinstance(requests, list) or len(requests) <= BULK_VALIDATION_CHUNK:
        return BulkSubmitRequest.model_validate(data, strict=strict)
    # The envelope (other keys, the line count) first, with no line in it.
    shell = {**data, "requests": requests[:1]}
    BulkSubmitRequest.model_validate(shell, strict=strict)
    if len(requests) > MAX_BULK_SUBMIT:
        return BulkSubmitRequest.model_validate(data, strict=strict)  # names the limit
    lines: list[ChatCompletionRequest] = []
    for start in range(0, len(requests), BULK_VALIDATION_CHUNK):
        if share_cpu and start:
            time.sleep(0)
        chunk = requests[start : start + BULK_VALIDATION_CHUNK]
        try:
            lines.extend(_LINES.validate_python(chunk, strict=strict))
        except ValidationError as exc:
            raise _bulk_line_error(exc, start) from None
    return BulkSubmitRequest.model_construct(requests=lines)


_LINES: TypeAdapter[list[ChatCompletionRequest]] = TypeAdapter(list[ChatCompletionRequest])


def _bulk_line_error(exc: ValidationError, offset: int) -> ApiError:
    """The 400 of a chunk's validation error, its line numbered within the whole body."""
    first = exc.errors(include_url=False)[0]
    loc = ["requests", offset + int(first["loc"][0]), *first["loc"][1:]]
    param = ".".join(str(part) for part in loc)
    count = exc.error_count()
    more = f" (and {count - 1} more error{'s' if count > 2 else ''})" if count > 1 else ""
    return ApiError(400, f"'{param}': {first['msg']}{more}", param=param, code="invalid_value")


#: The per-request budgets and caps of the bodies that carry chat completion requests.
_CHAT_BODIES: dict[type[BaseModel], Callable[[Any, RequestBudgets], None]] = {
    ChatCompletionRequest: check_chat_request,
    BulkSubmitRequest: check_bulk_request,
}


@functools.cache
def _integer_fields(model: type[BaseModel]) -> frozenset[str]:
    """Fields of ``model`` typed ``int`` (or ``int | None``), not ``int | float``."""
    names = set()
    for name, field in model.model_fields.items():
        kinds = set(get_args(field.annotation)) or {field.annotation}
        # ``Annotated[int, ...] | None`` (``priority``) is an integer field too.
        kinds = {get_args(kind)[0] if get_origin(kind) is Annotated else kind for kind in kinds}
        if int in kinds and float not in kinds:
            names.add(name)
    return frozenset(names)


def _integral_numbers(data: Any, model: type[BaseModel]) -> Any:
    """Turn ``7.0`` into ``7`` for the integer fields of chat completion requests.

    JSON has one number type and JSON Schema calls ``7.0`` an integer, but
    pydantic's strict mode would refuse it. Only the declared fields change;
    the fields a request passes through to the node keep their exact value.
    """
    if model is BulkSubmitRequest and isinstance(data, dict):
        requests = data.get("requests")
        if isinstance(requests, list):
            for item in requests:
                _integral_numbers(item, ChatCompletionRequest)
    elif model is ChatCompletionRequest and isinstance(data, dict):
        for name in _integer_fields(ChatCompletionRequest):
            value = data.get(name)
            if isinstance(value, float) and value.is_integer():
                data[name] = int(value)
    return data


def model_response(
    model: BaseModel, status_code: int = 200, *, exclude_unset: bool = False
) -> Response:
    """One model as a JSON response."""
    return Response(
        model.model_dump_json(exclude_unset=exclude_unset),
        status_code=status_code,
        media_type=JSON,
    )


#: A bulk answer's warnings are per model, on the response: each job's own stay out.
_BULK_EXCLUDE: dict[str, Any] = {"data": {"__all__": {"warnings"}}}


def bulk_submit_response(answer: BulkSubmitResponse) -> Response:
    """The ``202`` of a bulk submit, without an empty ``warnings`` on every job."""
    return Response(answer.model_dump_json(exclude=_BULK_EXCLUDE), status_code=202, media_type=JSON)


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
    (``tool_calls: null`` and the like). ``result_omitted`` appears only when true,
    ``node_id`` only while a node holds the job.
    """
    data = entry.model_dump(mode="json")
    if entry.result is not None:
        data["result"] = entry.result.model_dump(mode="json", exclude_unset=True)
    if not entry.result_omitted:
        del data["result_omitted"]
    if entry.node_id is None:
        del data["node_id"]
    return data


def poll_entries_response(
    entries: Sequence[PollEntry], max_answer_bytes: int | None = None
) -> Response:
    """A JSON array of poll entries, at most about ``max_answer_bytes`` long.

    Past the budget, entries keep their status but leave their ``result`` out
    (``result_omitted: true``); the first entry with a result always has it,
    so every result can be read by polling it alone.
    """
    data = [poll_entry_data(entry) for entry in entries]
    whole = to_json(data)
    if max_answer_bytes is None or len(whole) <= max_answer_bytes:
        return Response(whole, media_type=JSON)
    parts: list[bytes] = []
    used = 0
    for item in data:
        encoded = to_json(item)
        if item.get("result") is not None and used and used + len(encoded) > max_answer_bytes:
            item["result"] = None
            item["result_omitted"] = True
            encoded = to_json(item)
        used += len(encoded) + 1
        parts.append(encoded)
    return Response(b"[" + b",".join(parts) + b"]", media_type=JSON)


def poll_entry_response(entry: PollEntry) -> Response:
    """One poll entry."""
    return Response(to_json(poll_entry_data(entry)), media_type=JSON)


def job_list_response(page: JobList) -> Response:
    """A page of jobs."""
    data = page.model_dump(mode="json", exclude={"data"})
    data["data"] = [poll_entry_data(entry) for entry in page.data]
    return Response(to_json(data), media_type=JSON)
