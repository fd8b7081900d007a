"""Validating a batch's input file, line by line, before any job exists.

Every line must be a JSON object with a unique ``custom_id``, ``method``
``POST``, the batch's ``url`` and a ``body`` the native submit would accept
(the same strict validation as ``POST /v1/chat/completions``). All problems
are collected with their line numbers (up to :data:`MAX_REPORTED_ERRORS`), so
a user fixes the file in one go.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from openbeepboop_schemas import BatchLineError, ChatCompletionRequest
from pydantic import ValidationError
from pydantic_core import from_json

#: Errors kept per batch; the rest are counted in the last message.
MAX_REPORTED_ERRORS = 100
#: Integer fields of a request body where JSON's ``7.0`` means ``7``.
_INTEGER_FIELDS = ("n", "max_tokens", "max_completion_tokens")


@dataclass
class ValidatedLines:
    """The requests of a valid file, or the errors of an invalid one."""

    requests: list[ChatCompletionRequest] = field(default_factory=list)
    custom_ids: list[str] = field(default_factory=list)
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


def validate_lines(lines: Iterable[bytes], endpoint: str) -> ValidatedLines:
    """Check every line of an input file against the batch's ``endpoint``."""
    result = ValidatedLines()
    seen: set[str] = set()
    number = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            result.refuse(number, "empty_line", "the line is empty")
            continue
        try:
            data = from_json(raw)
        except ValueError as exc:
            result.refuse(number, "invalid_json_line", f"the line is not valid JSON: {exc}")
            continue
        if not isinstance(data, dict):
            result.refuse(number, "invalid_json_line", "the line is not a JSON object")
            continue
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            result.refuse(
                number, "missing_required_parameter", "custom_id is required", "custom_id"
            )
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
        if data.get("method") != "POST":
            result.refuse(number, "invalid_method", "method must be 'POST'", "method")
            continue
        if data.get("url") != endpoint:
            result.refuse(
                number, "mismatched_endpoint", f"url must be the batch's endpoint {endpoint}", "url"
            )
            continue
        try:
            request = _body(data.get("body"))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            param = f"body.{where}" if where else "body"
            result.refuse(number, "invalid_request", f"'{param}': {first['msg']}", param)
            continue
        result.requests.append(request)
        result.custom_ids.append(custom_id)
    if number == 0:
        result.refuse(1, "empty_file", "the input file has no lines")
    if result.error_count > len(result.errors):
        last = result.errors[-1]
        last.message += f" ({result.error_count - len(result.errors)} more error(s) not shown)"
    return result
