"""Request budgets: what one body may make the server do, checked before the heavy work.

A 10 MB body of millions of empty content parts once took seconds of the event
loop to validate (and as long again for every claim of it). Two checks stop
that, each cheaper than what it protects:

1. :func:`check_structure`, on the raw bytes, before any parse: the number
   of JSON values (every ``{``, ``[`` and ``,`` outside a string) and, where
   cheap, the nesting depth. Its cost is bounded by the budget, never by the
   body; most bodies are passed on three ``bytes.count`` calls.
2. :func:`check_chat_request`, on the parsed JSON before pydantic validation:
   messages, content parts per message and per request, and the operator's
   caps on ``max_tokens`` / ``max_completion_tokens`` and ``n``. It reads a
   handful of keys per message.

Both raise :class:`ApiError` naming the ``[limits]`` setting and its value.
"""

from __future__ import annotations

import re
import time
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

_TOKEN = re.compile(rb'[{}\[\]",]')
_QUOTE, _COMMA = 34, 44
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


def check_structure(body: bytes, budgets: RequestBudgets, *, share_cpu: bool = False) -> bool:
    """Refuse ``body`` if it holds more JSON values (or nests deeper) than the budgets allow.

    Returns whether the depth is still to be checked on the parsed data
    (:func:`check_depth`; the parse is bounded by then). Malformed JSON is left
    to the parser, which names the problem: this only counts. ``share_cpu``
    (off the event loop) lets other threads run every few thousand steps:
    without it, four hostile bodies scanned at once starve the loop's own
    turns at the GIL.

    The steps, cheapest first, each deciding when it can:

    1. ``{``, ``[`` and ``,`` anywhere are an upper bound of the values
       (structure inside strings only adds to it): under the budget, done.
    2. Every string is preceded by a quote that is not escaped, so quotes not
       preceded by a backslash bound the strings; a body holds at most two
       per value (a key and a string value): far more, refused.
    3. With few strings, each is found (a regex, C speed) and the structure
       inside it taken off the count of step 1: the exact count.
    4. Otherwise a scan of the structure itself, strings skipped by the same
       regex, that ends at the budget: at most about three steps per allowed
       value, whatever the body holds.
    """
    value_limit = budgets.max_json_values
    openers = _count(body, b"{", share_cpu) + _count(body, b"[", share_cpu)
    upper = openers + _count(body, b",", share_cpu)
    if upper <= value_limit:
        return openers > budgets.max_json_depth
    quotes = _count(body, b'"', share_cpu)
    bare_quotes = quotes - _count(body, b'\\"', share_cpu)
    if bare_quotes // 2 > 2 * value_limit + 1:
        raise _too_many_values(value_limit)
    if quotes <= _FEW_STRINGS_QUOTES:
        inside_openers, inside_commas = _structure_in_strings(body)
        if upper - inside_openers - inside_commas > value_limit:
            raise _too_many_values(value_limit)
        return openers - inside_openers > budgets.max_json_depth
    _scan(body, budgets, share_cpu)
    return False


#: Bytes counted per C call when sharing the CPU: ~1 ms each, however large the body.
_COUNT_SLICE = 1024 * 1024


def _count(body: bytes, sub: bytes, share_cpu: bool) -> int:
    """``body.count(sub)``; when sharing the CPU, a slice at a time with turns for others.

    A 10 MB ``count`` holds the GIL for several ms in one call; sliced, the
    event loop gets a turn between slices. A match starting in a slice is
    counted in that slice (the slice's end reaches past it by the rest of ``sub``).
    """
    if not share_cpu or len(body) <= _COUNT_SLICE:
        return body.count(sub)
    total = 0
    for start in range(0, len(body), _COUNT_SLICE):
        total += body.count(sub, start, start + _COUNT_SLICE + len(sub) - 1)
        time.sleep(0)
    return total


#: Bodies with at most this many quotes get the exact count of step 3.
_FEW_STRINGS_QUOTES = 20_000
#: The rest of a string after its opening quote (escapes included), at C speed.
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: Scan steps between two chances for other threads to run.
_STEPS_PER_TURN = 2_048


def _structure_in_strings(body: bytes) -> tuple[int, int]:
    """``{``/``[`` and ``,`` inside the strings of ``body`` (its strings found one by one)."""
    openers = commas = 0
    find, rest = body.find, _STRING_REST.match
    pos = find(b'"')
    while pos != -1:
        match = rest(body, pos + 1)
        if match is None:
            break
        end = match.end()
        openers += body.count(b"{", pos, end) + body.count(b"[", pos, end)
        commas += body.count(b",", pos, end)
        pos = find(b'"', end)
    return openers, commas


def _scan(body: bytes, budgets: RequestBudgets, share_cpu: bool) -> None:
    depth_limit, value_limit = budgets.max_json_depth, budgets.max_json_values
    string_limit = 2 * value_limit + 1
    search, rest = _TOKEN.search, _STRING_REST.match
    depth = values = strings = steps = pos = 0
    while True:
        match = search(body, pos)
        if match is None:
            return
        steps += 1
        if share_cpu and steps % _STEPS_PER_TURN == 0:
            time.sleep(0)
        at = match.start()
        char = body[at]
        if char == _QUOTE:
            tail = rest(body, at + 1)
            if tail is None:
                return
            pos = tail.end()
            strings += 1
            if strings > string_limit:
                raise _too_many_values(value_limit)
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
            raise _too_many_values(value_limit)


def _too_many_values(limit: int) -> ApiError:
    return _over_budget("max_json_values", limit, "too many JSON values in the body")


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
