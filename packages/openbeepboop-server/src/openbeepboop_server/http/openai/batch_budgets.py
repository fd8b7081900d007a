"""The ``[limits]`` request budgets and caps, applied to every line of a batch input file.

A batch line is a request like any other: it may not ask for more than the
synchronous chat or the native bulk submit may (``max_tokens``, ``n``,
messages, content parts, JSON values and depth). The budgets are the HTTP
layer's (:mod:`openbeepboop_server.http.budgets`); the batch driver gets
them as a line parser, so that the queue layer never imports HTTP.
"""

from __future__ import annotations

from typing import Any

from openbeepboop_server import finite_json
from openbeepboop_server.http.budgets import (
    BUDGET_CODE,
    RequestBudgets,
    check_chat_request,
    check_depth,
    check_structure,
)
from openbeepboop_server.http.errors import ApiError
from openbeepboop_server.queue.batch_lines import LineParser, LineRefusedError


def budgeted_line_parser(budgets: RequestBudgets) -> LineParser:
    """A parser of batch lines that refuses a line over ``budgets``, as the native routes do."""

    def parse(raw: bytes) -> Any:
        try:
            deep = check_structure(raw, budgets)
            data = finite_json.loads(raw)
            if deep:
                check_depth(data, budgets.max_json_depth)
            if isinstance(data, dict):
                check_chat_request(data.get("body"), budgets, "body.")
        except ApiError as refused:
            error = refused.envelope.error
            raise LineRefusedError(error.code or BUDGET_CODE, error.message, error.param) from None
        return data

    return parse
