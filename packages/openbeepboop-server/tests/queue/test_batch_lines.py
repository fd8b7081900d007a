"""Batch input validation: every problem found, with its line number, before any job."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openbeepboop_server.queue.batch_lines import split_lines, validate_lines
from openbeepboop_server.queue.batch_output import error_line, error_status, output_line

URL = "/v1/chat/completions"


def _line(custom_id: str, **changes: Any) -> bytes:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": URL,
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    line.update(changes)
    return json.dumps(line).encode()


def test_lines_are_split_across_parts_and_a_last_line_needs_no_newline() -> None:
    assert list(split_lines([b"a\nb", b"c\n", b"d"])) == [b"a", b"bc", b"d"]
    assert list(split_lines([b"a\n"])) == [b"a"]


def test_a_valid_file_gives_requests_in_order() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "yo"}], "max_tokens": 7.0}
    kept: list[tuple[str, Any]] = []
    checked = validate_lines(
        [_line("x"), _line("y", body=body)], URL, keep=lambda c, r: kept.append((c, r))
    )
    assert checked.errors == [] and checked.count == 2
    assert [custom_id for custom_id, _ in kept] == ["x", "y"]
    assert kept[1][1].max_tokens == 7


def test_nothing_more_is_kept_once_a_line_is_refused() -> None:
    kept: list[str] = []
    lines = [_line("a"), _line("b", method="GET"), _line("c")]
    checked = validate_lines(lines, URL, keep=lambda c, r: kept.append(c))
    assert checked.count == 3 and [error.line for error in checked.errors] == [2]
    assert kept == ["a"]


def test_every_bad_line_is_reported_with_its_number() -> None:
    lines = [
        _line("a"),
        b"{broken",
        _line("a"),
        _line("c", url="/v1/embeddings"),
        _line("d", method="GET"),
        _line("e", body={"model": "m", "messages": []}),
        _line("f", body={"model": "m", "messages": [{"role": "user"}], "stream": True}),
        b"",  # blank: skipped, and the lines after it keep their numbers
        b"[1]",
        json.dumps({"method": "POST"}).encode(),
        _line("a\u0000b"),  # PostgreSQL's text cannot hold it, and it must come back as it is
    ]
    checked = validate_lines(lines, URL)
    assert [(error.line, error.code) for error in checked.errors] == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "mismatched_endpoint"),
        (5, "invalid_method"),
        (6, "invalid_request"),
        (7, "invalid_request"),
        (9, "invalid_json_line"),
        (10, "missing_required_parameter"),
        (11, "invalid_value"),
    ]
    assert checked.errors[4].param == "body.messages"


@pytest.mark.parametrize(("custom_id", "kind"), [(7, "a number"), (["a"], "an array")])
def test_a_custom_id_of_another_type_is_named_as_such(custom_id: object, kind: str) -> None:
    # Not "custom_id is required": it is there, only not a string.
    line = json.dumps({"custom_id": custom_id, "method": "POST", "url": URL, "body": {}}).encode()
    [error] = validate_lines([line], URL).errors
    assert (error.code, error.param) == ("invalid_value", "custom_id")
    assert error.message == f"custom_id must be a string; this one is {kind}"


def test_an_empty_file_is_refused() -> None:
    assert [error.code for error in validate_lines([], URL).errors] == ["empty_file"]


class _Row:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def test_output_and_error_lines_follow_openai_formats() -> None:
    done = _Row(id="job-1", custom_id="c1", status="COMPLETED", result='{"id":"x"}')
    assert json.loads(output_line(done)) == {
        "id": "batch_req_1",
        "custom_id": "c1",
        "response": {"status_code": 200, "request_id": "job-1", "body": {"id": "x"}},
        "error": None,
    }
    failed = _Row(
        id="job-2",
        custom_id="c2",
        status="FAILED",
        error_message="no",
        error_type="invalid_request_error",
    )
    line = json.loads(error_line(failed, "batch_expired"))
    assert line["response"]["status_code"] == 400 and line["error"] is None
    assert line["response"]["body"]["error"]["message"] == "no"
    cancelled = _Row(id="job-3", custom_id="c3", status="CANCELLED")
    line = json.loads(error_line(cancelled, "batch_expired"))
    assert line["response"] is None and line["error"]["code"] == "batch_expired"
    assert error_status("rate_limit_error") == 429 and error_status("weird") == 500
