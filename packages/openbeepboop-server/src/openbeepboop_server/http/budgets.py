"""Request budgets: what one body may make the server do, checked before the heavy work.

A 10 MB body of millions of empty content parts once took seconds of the event
loop to validate (and as long again for every claim of it). Two checks stop
that, each cheaper than what it protects:

1. :func:`check_structure`, on the raw bytes, before any parse: nesting depth
   and the number of JSON values (every ``{``, ``[`` and ``,`` outside a
   string). It stops at the first value past the budget, so its cost is
   bounded by the budget, never by the body; a small body is passed on three
   ``bytes.count`` calls (an upper bound: braces inside strings only make it
   larger) without scanning at all.
2. :func:`check_chat_request`, on the parsed JSON before pydantic validation:
   messages, content parts per message and per request, and the operator's
   caps on ``max_tokens`` / ``max_completion_tokens`` and ``n``. It reads a
   handful of keys per message.

Both raise :class:`ApiError` naming the ``[limits]`` setting and its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from openbeepboop_server.http.errors import ApiError

#: Deepest nesting of JSON objects and arrays (tool schemas nest; messages do not need to).
DEFAULT_MAX_JSON_DEPTH = 64
#: Highest ``max_json_depth`` accepted: the JSON parser refuses deeper documents anyway.
MAX_JSON_DEPTH_CEILING = 200
#: JSON values per body: a full bulk submit of 5,000 short requests needs ~60,000.
DEFAULT_MAX_JSON_VALUES = 200_000
#: Messages per chat completion request.
DEFAULT_MAX_MESSAGES = 2_048
#: Content parts per message (text and image parts of one turn).
DEFAULT_MAX_CONTENT_PARTS = 256
#: Content parts in all messages of one request.
DEFAULT_MAX_TOTAL_CONTENT_PARTS = 1_024
#: Bytes of full results one poll answers with before it leaves the rest out.
DEFAULT_MAX_POLL_ANSWER_BYTES = 64 * 1024 * 1024
#: Largest result a node may deliver (the deliver route's body limit follows it).
DEFAULT_MAX_RESULT_BYTES = 32 * 1024 * 1024
#: Most choices one job may ask for (``n``); OpenAI's own limit is 128.
DEFAULT_MAX_N = 8

#: Envelope ``code`` of a body past a request budget.
BUDGET_CODE = "request_budget_exceeded"
#: Envelope ``code`` of a job asking for more than an operator cap allows.
CAP_CODE = "cap_exceeded"

_OPENERS = (b"{", b"[")
_TOKEN = re.compile(rb'[{}\[\]",]')
_QUOTE, _BACKSLASH, _COMMA = 34, 92, 44
_OPEN = frozenset({123, 91})


@dataclass(frozen=True)
class RequestBudgets:
    """The ``[limits]`` settings the HTTP layer enforces on bodies and jobs."""

    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_json_values: int = DEFAULT_MAX_JSON_VALUES
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_content_parts: int = DEFAULT_MAX_CONTENT_PARTS
    max_total_content_parts: int = DEFAULT_MAX_TOTAL_CONTENT_PARTS
    max_tokens: int | None = None
    max_n: int | None = DEFAULT_MAX_N


def _over_budget(name: str, limit: int, what: str, param: str | None = None) -> ApiError:
    return ApiError(
        400,
        f"{what}: the server's limit is {limit} ([limits] {name} = {limit})",
        param=param,
        code=BUDGET_CODE,
    )


def check_structure(body: bytes, budgets: RequestBudgets) -> bool:
    """Refuse ``body`` if it holds more JSON values (or nests deeper) than the budgets allow.

    Returns whether the depth is still to be checked on the parsed data
    (:func:`check_depth`). Malformed JSON is left to the parser (which names
    the problem): this only counts.

    First three ``bytes.count`` calls: ``{``, ``[`` and ``,`` anywhere are an
    upper bound of the values (structure inside strings only adds to it), so
    a body under the budget by that bound is passed at C speed and parsed
    (its parse is bounded by the budget too); its depth is checked after the
    parse, and only when there are more openers than the depth limit. A body
    over the bound (a hostile one, or a prompt full of commas) is scanned
    exactly: strings are skipped with ``bytes.find`` (C speed, however long),
    each value costs one step of a Python loop, and the loop ends at the
    budget, so a hostile body costs at most ``max_json_values`` steps.
    """
    openers = body.count(_OPENERS[0]) + body.count(_OPENERS[1])
    if openers + body.count(b",") <= budgets.max_json_values:
        return openers > budgets.max_json_depth
    depth_limit, value_limit = budgets.max_json_depth, budgets.max_json_values
    search, find = _TOKEN.search, body.find
    depth = values = pos = 0
    while True:
        match = search(body, pos)
        if match is None:
            return False
        at = match.start()
        char = body[at]
        if char == _QUOTE:
            end = find(b'"', at + 1)
            while end != -1 and _escaped(body, end):
                end = find(b'"', end + 1)
            if end == -1:
                return False
            pos = end + 1
            continue
        pos = at + 1
        if char in _OPEN:
            depth += 1
            values += 1
            if depth > depth_limit:
                raise _too_deep(depth_limit)
        elif char == _COMMA:
            values += 1
        else:
            depth -= 1
        if values > value_limit:
            raise _over_budget("max_json_values", value_limit, "too many JSON values in the body")


def check_depth(data: Any, limit: int) -> None:
    """Refuse parsed JSON nested deeper than ``limit`` (objects and arrays only are walked)."""
    level: list[Any] = [data]
    for _ in range(limit):
        deeper: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                deeper.extend(value for value in node.values() if isinstance(value, dict | list))
            elif isinstance(node, list):
                deeper.extend(value for value in node if isinstance(value, dict | list))
        if not deeper:
            return
        level = deeper
    raise _too_deep(limit)


def _too_deep(limit: int) -> ApiError:
    return _over_budget("max_json_depth", limit, "JSON is nested too deeply")


def _escaped(body: bytes, quote: int) -> bool:
    """Whether the quote at ``quote`` is escaped (an odd run of backslashes before it)."""
    start = quote - 1
    while start >= 0 and body[start] == _BACKSLASH:
        start -= 1
    return (quote - 1 - start) % 2 == 1


def check_chat_request(data: Any, budgets: RequestBudgets, prefix: str = "") -> None:
    """Refuse a chat completion request (parsed JSON) past the message budgets or a cap.

    Anything of the wrong shape is left to validation, which names it; only
    the counts and numbers this function can read are checked. ``prefix`` is
    the request's place in a bulk body (``requests.3.``), for ``param``.
    """
    if not isinstance(data, dict):
        return
    _check_caps(data, budgets, prefix)
    messages = data.get("messages")
    if not isinstance(messages, list):
        return
    if len(messages) > budgets.max_messages:
        raise _over_budget(
            "max_messages",
            budgets.max_messages,
            f"the request has {len(messages)} messages",
            f"{prefix}messages",
        )
    total = 0
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        param = f"{prefix}messages.{index}.content"
        if len(content) > budgets.max_content_parts:
            raise _over_budget(
                "max_content_parts",
                budgets.max_content_parts,
                f"message {index} has {len(content)} content parts",
                param,
            )
        total += len(content)
        if total > budgets.max_total_content_parts:
            raise _over_budget(
                "max_total_content_parts",
                budgets.max_total_content_parts,
                "the request's messages hold more content parts in all than allowed",
                param,
            )


def _check_caps(data: dict[str, Any], budgets: RequestBudgets, prefix: str) -> None:
    caps = (
        ("max_tokens", "max_tokens", budgets.max_tokens),
        ("max_completion_tokens", "max_tokens", budgets.max_tokens),
        ("n", "max_n", budgets.max_n),
    )
    for field, setting, cap in caps:
        value = data.get(field)
        if cap is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if value > cap:
            raise ApiError(
                400,
                f"'{field}' is {value:g}, above this server's cap of {cap} "
                f"([limits] {setting} = {cap}); ask for at most {cap}",
                param=f"{prefix}{field}",
                code=CAP_CODE,
            )


def check_bulk_request(data: Any, budgets: RequestBudgets) -> None:
    """:func:`check_chat_request` for every line of a bulk body (the first offender is named)."""
    if not isinstance(data, dict):
        return
    requests = data.get("requests")
    if not isinstance(requests, list):
        return
    for index, item in enumerate(requests):
        check_chat_request(item, budgets, f"requests.{index}.")
