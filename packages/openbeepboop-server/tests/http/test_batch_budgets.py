"""Batch input lines are held to the ``[limits]`` budgets and caps, as native requests are."""

from __future__ import annotations

import json
from typing import Any

from openbeepboop_server.http.budgets import RequestBudgets
from openbeepboop_server.http.openai.batch_budgets import budgeted_line_parser
from openbeepboop_server.queue.batch_lines import validate_lines

URL = "/v1/chat/completions"


def _line(custom_id: str, **changes: Any) -> bytes:
    line: dict[str, Any] = {"custom_id": custom_id, "method": "POST", "url": URL}
    line.update(changes)
    return json.dumps(line).encode()


def test_lines_over_the_limits_caps_are_line_numbered_errors() -> None:
    parser = budgeted_line_parser(RequestBudgets(max_tokens=100, max_n=2, max_messages=2))
    hi = [{"role": "user", "content": "hi"}]
    lines = [
        _line("ok", body={"model": "m", "messages": hi, "max_tokens": 100, "n": 2}),
        _line("tokens", body={"model": "m", "messages": hi, "max_tokens": 101}),
        _line("n", body={"model": "m", "messages": hi, "n": 3}),
        _line("messages", body={"model": "m", "messages": hi * 3}),
    ]
    checked = validate_lines(lines, URL, parser)
    assert [(error.line, error.code, error.param) for error in checked.errors] == [
        (2, "cap_exceeded", "body.max_tokens"),
        (3, "cap_exceeded", "body.n"),
        (4, "request_budget_exceeded", "body.messages"),
    ]
    assert "max_tokens = 100" in checked.errors[0].message


def test_a_line_over_the_json_budgets_is_refused_before_it_is_parsed() -> None:
    parser = budgeted_line_parser(RequestBudgets(max_json_values=1000, max_json_depth=8))
    many = _line("many", body={"model": "m", "messages": [{"role": "user", "content": "hi"}] * 600})
    deep: object = "x"
    for _ in range(20):
        deep = [deep]
    nested = _line("deep", body={"model": "m", "messages": [], "metadata": deep})
    checked = validate_lines([many, nested], URL, parser)
    assert [(error.line, error.code) for error in checked.errors] == [
        (1, "request_budget_exceeded"),
        (2, "request_budget_exceeded"),
    ]
