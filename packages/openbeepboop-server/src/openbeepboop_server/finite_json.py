"""Parsing request JSON that can be stored and sent on exactly as it came.

A job's request is stored as JSON and handed to a node as JSON. A number JSON
cannot write back — ``NaN``, ``Infinity``, ``-Infinity``, or a literal such as
``1e400`` that overflows a double — would be written as ``null``, so the job
would run with a different request than the user sent. Such a body is
refused instead (:class:`NonFiniteNumber`, naming where the number is), on
every route that takes a request and on every line of a batch input file.

The parser is pydantic-core's, which reads ``NaN`` and ``Infinity`` and turns
an overflowing literal into ``inf`` (``allow_inf_nan=False`` still does the
latter). So the parsed values are walked: a cost per value, bounded by the
``[limits]`` budgets, about a tenth of what validating them costs (5 us for
a small submit, 17 ms for a bulk of 5,000), whatever the length of the
strings. A regex search of the bytes for what could spell one cost more
than the walk (18 ms a megabyte).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic_core import from_json

from openbeepboop_server.errors import ServerError


class NonFiniteNumber(ServerError, ValueError):  # noqa: N818
    """A number in a body that JSON cannot carry (``NaN``, ``Infinity``, an overflow)."""

    def __init__(self, param: str) -> None:
        where = f"'{param}'" if param else "the body"
        super().__init__(
            f"{where} is a number JSON cannot carry (NaN, Infinity, or too large for a "
            "double, such as 1e400): it would be stored as null; send a finite number, "
            "or the value as a string"
        )
        self.param = param


def loads(raw: bytes) -> Any:
    """``raw`` parsed as JSON; :class:`NonFiniteNumber` for a non-finite number.

    Malformed JSON raises ``ValueError`` as pydantic-core's ``from_json`` does.
    """
    data = from_json(raw)
    check_finite(data)
    return data


#: Where a value sits: its container's place and its key or index (None: the root).
_Place = tuple[Any, str | int] | None


def check_finite(data: Any) -> None:
    """Raise :class:`NonFiniteNumber` naming a non-finite number in ``data``, if any.

    Places are kept as links to the parent's, and spelled out only for the
    number refused: a walk of 200,000 values builds no strings.
    """
    stack: list[tuple[Any, _Place]] = [(data, None)]
    while stack:
        value, place = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                raise NonFiniteNumber(_spell(place))
        elif isinstance(value, dict):
            stack.extend((item, (place, key)) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, (place, index)) for index, item in enumerate(value))


def _spell(place: _Place) -> str:
    """``messages.0.content``-style path of a place."""
    parts: list[str] = []
    while place is not None:
        place, key = place
        parts.append(str(key))
    return ".".join(reversed(parts))
