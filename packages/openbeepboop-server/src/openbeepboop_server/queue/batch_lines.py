"""Validating a batch's input file, line by line, in bounded memory, before any job exists.

Every line must be a JSON object with a unique ``custom_id``, ``method``
``POST``, the batch's ``url`` and a ``body`` the native submit would accept
(the same strict validation as ``POST /v1/chat/completions``, and the same
``[limits]`` request budgets and caps, given as a :data:`LineParser`). All
problems are collected with their line numbers (up to
:data:`MAX_REPORTED_ERRORS`), so a user fixes the file in one go.

Validation is one streaming pass that keeps in memory only what it must: the
set of ``custom_id`` seen (for duplicates), the first errors and a count.
Each valid line is handed to a ``keep`` callback as it is checked (the batch
service spools the serialised requests to a temporary file, then queues
them a chunk at a time): a 50,000-line file never sits in memory as 50,000
requests, and no line is parsed twice.

Blank lines (nothing but whitespace) carry no request and are skipped
wherever they are: tools that write JSONL often end a file with one. A UTF-8
byte order mark before the first line (many Windows tools write one) is
skipped too. Line numbers in errors stay the file's own, blank lines counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from openbeepboop_schemas import BatchLineError, ChatCompletionRequest
from pydantic import ValidationError

from openbeepboop_server import finite_json
from openbeepboop_server.finite_json import NonFiniteNumber

#: Errors kept per batch; the rest are counted in the last message.
MAX_REPORTED_ERRORS = 100
#: Longest ``custom_id``: each is stored with its job, kept in memory while the file
#: is checked (for duplicates) and written back in the output file; the same bound
#: as a batch's metadata values.
MAX_CUSTOM_ID_CHARS = 512
#: The UTF-8 byte order mark, skipped at the start of a file.
UTF8_BOM = b"\xef\xbb\xbf"
#: Integer fields of a request body where JSON's ``7.0`` means ``7``.
_INTEGER_FIELDS = ("n", "max_tokens", "max_completion_tokens")

#: Parses one raw line into JSON, refusing (:class:`LineRefusedError`) a line over the
#: server's request budgets and caps; raises :class:`NonFiniteNumber` on a number
#: JSON cannot carry and ``ValueError`` on malformed JSON.
LineParser = Callable[[bytes], Any]


class LineRefusedError(Exception):
    """One line refused by a :data:`LineParser` (over a budget or a cap)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass
class ValidatedLines:
    """What the validating pass keeps: how many requests (blank lines not counted),
    and the errors of an invalid file."""

    count: int = 0
    errors: list[BatchLineError] = field(default_factory=list)
    error_count: int = 0

    def refuse(self, line: int, code: str, message: str, param: str | None = None) -> None:
        """Record one problem."""
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(BatchLineError(code=code, message=message, param=param, line=line))


def split_lines(parts: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a file given as byte parts (without their newline)."""
    pending = b""
    for part in parts:
        pending += part
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def _body(value: Any) -> ChatCompletionRequest:
    if isinstance(value, dict):
        for name in _INTEGER_FIELDS:
            number = value.get(name)
            if isinstance(number, float) and number.is_integer():
                value[name] = int(number)
    return ChatCompletionRequest.model_validate(value, strict=True)


#: How a refused ``custom_id`` of another JSON type is named.
_JSON_TYPES = {
    int: "a number",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}


def parse_line(
    raw: bytes, endpoint: str, parser: LineParser = finite_json.loads
) -> tuple[str, ChatCompletionRequest]:
    """One line's ``custom_id`` and request; :class:`LineRefusedError` names what is wrong.

    Duplicates are not seen here (that needs the whole file): see :func:`validate_lines`.
    """
    if not raw.strip():
        raise LineRefusedError("empty_line", "the line is empty")
    try:
        data = parser(raw)
    except NonFiniteNumber as exc:
        raise LineRefusedError("non_finite_number", str(exc), exc.param or None) from None
    except ValueError as exc:
        raise LineRefusedError("invalid_json_line", f"the line is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LineRefusedError("invalid_json_line", "the line is not a JSON object")
    custom_id = data.get("custom_id")
    if custom_id is not None and not isinstance(custom_id, str):
        kind = _JSON_TYPES.get(type(custom_id), "a value")
        raise LineRefusedError(
            "invalid_value", f"custom_id must be a string; this one is {kind}", "custom_id"
        )
    if not custom_id:
        raise LineRefusedError("missing_required_parameter", "custom_id is required", "custom_id")
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        raise LineRefusedError(
            "invalid_value",
            f"custom_id is at most {MAX_CUSTOM_ID_CHARS} characters; this one has {len(custom_id)}",
            "custom_id",
        )
    if "\x00" in custom_id:
        # Stored as it is (it must come back unchanged in the output file), and
        # PostgreSQL's text cannot hold a NUL.
        raise LineRefusedError(
            "invalid_value", "custom_id must not contain a NUL character (\\u0000)", "custom_id"
        )
    if data.get("method") != "POST":
        raise LineRefusedError("invalid_method", "method must be 'POST'", "method")
    if data.get("url") != endpoint:
        raise LineRefusedError(
            "mismatched_endpoint", f"url must be the batch's endpoint {endpoint}", "url"
        )
    try:
        request = _body(data.get("body"))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        param = f"body.{where}" if where else "body"
        raise LineRefusedError("invalid_request", f"'{param}': {first['msg']}", param) from None
    return custom_id, request


def validate_lines(
    lines: Iterable[bytes],
    endpoint: str,
    parser: LineParser = finite_json.loads,
    keep: Callable[[str, ChatCompletionRequest], None] | None = None,
) -> ValidatedLines:
    """Check every line of an input file against the batch's ``endpoint``, keeping no request.

    ``keep`` is called with each valid line's ``custom_id`` and request, in
    order, as long as no line was refused (after that the file is refused anyway).
    """
    result = ValidatedLines()
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        raw = line.removeprefix(UTF8_BOM) if number == 1 else line
        # ``isspace`` stops at the first other byte; ``strip`` would copy a long line.
        if not raw or raw.isspace():
            continue
        result.count += 1
        try:
            custom_id, request = parse_line(raw, endpoint, parser)
        except LineRefusedError as refused:
            result.refuse(number, refused.code, refused.message, refused.param)
            continue
        if custom_id in seen:
            result.refuse(
                number,
                "duplicate_custom_id",
                f"custom_id {custom_id!r} is used by an earlier line",
                "custom_id",
            )
            continue
        seen.add(custom_id)
        if keep is not None and not result.error_count:
            keep(custom_id, request)
    if result.count == 0:
        result.refuse(
            1, "empty_file", "the input file has no requests (no lines, or only blank ones)"
        )
    if result.error_count > len(result.errors):
        last = result.errors[-1]
        last.message += f" ({result.error_count - len(result.errors)} more error(s) not shown)"
    return result
