"""The structure pre-scan: counts what a parser would build, cannot be fooled by strings."""

from __future__ import annotations

import json

import pytest
from openbeepboop_server.http.budgets import RequestBudgets, check_depth, check_structure
from openbeepboop_server.http.errors import ApiError

BUDGETS = RequestBudgets(max_json_depth=8, max_json_values=1_000)


def _code_and_message(body: bytes) -> tuple[str | None, str]:
    with pytest.raises(ApiError) as caught:
        check_structure(body, BUDGETS)
    return caught.value.envelope.error.code, caught.value.envelope.error.message


def test_millions_of_empty_parts_are_refused_at_the_budget() -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":[' + b",".join([b"{}"] * 500_000)
    code, message = _code_and_message(body + b"]}]}")
    assert code == "request_budget_exceeded"
    assert "[limits] max_json_values = 1000" in message


def test_many_short_strings_count_as_values() -> None:
    body = json.dumps({"model": "m", "junk": ["a"] * 2_000}).encode()
    assert "max_json_values" in _code_and_message(body)[1]


def test_structure_inside_strings_is_not_counted() -> None:
    text = 'a,b,{"c": [1, 2]},\\"quoted,[' * 5_000
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
    assert check_structure(body, BUDGETS) is False


def test_an_escaped_quote_does_not_end_a_string() -> None:
    # If the scanner took \" for the end of the string, the brackets after it would count.
    text = '\\"' + "[" * 50 + "\\\\"
    body = json.dumps({"model": "m", "x": text, "y": [[[]]]}).encode() + b" " + b"," * 2_000
    with pytest.raises(ApiError):
        check_structure(body, BUDGETS)  # the commas outside strings do count
    body = json.dumps({"model": "m", "x": text + "," * 2_000, "y": [[[]]]}).encode()
    assert check_structure(body, BUDGETS) is False


def test_deep_nesting_is_refused_by_the_scan() -> None:
    # Many strings (the scan, not the per-string count) and many commas in a string.
    budgets = RequestBudgets(max_json_depth=8, max_json_values=30_000)
    data = {"csv": "x," * 40_000, "words": ["a"] * 10_001, "deep": [[[[[[[[[[]]]]]]]]]]}
    with pytest.raises(ApiError, match=r"\[limits\] max_json_depth = 8"):
        check_structure(json.dumps(data).encode(), budgets)
    data["deep"] = [[[[[[[]]]]]]]
    assert check_structure(json.dumps(data).encode(), budgets) is False


def test_many_short_strings_are_refused_on_their_quotes_alone() -> None:
    body = b'{"model":"m","junk":[' + b",".join([b'""'] * 5_000) + b"]}"
    assert "max_json_values" in _code_and_message(body)[1]


def test_a_small_body_with_many_openers_is_left_to_the_depth_walk() -> None:
    data = {"a": [[[[[[[[[]]]]]]]]]}
    assert check_structure(json.dumps(data).encode(), BUDGETS) is True
    with pytest.raises(ApiError, match="max_json_depth = 8"):
        check_depth(data, 8)
    check_depth({"a": [[[[[[[]]]]]]]}, 8)


def test_counting_a_slice_at_a_time_counts_what_one_call_counts() -> None:
    from openbeepboop_server.http import budgets

    unit = b'ab\\"c{[,' * 7 + b"\\"
    body = unit * (3 * budgets._COUNT_SLICE // len(unit) + 5)
    for sub in (b"{", b",", b'\\"'):
        assert budgets._count(body, sub, True) == body.count(sub)
