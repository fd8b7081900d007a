"""A batch line's ``custom_id`` is bounded: it is stored per job, held in memory while the
file is checked and written back in the output file."""

from __future__ import annotations

import json

from openbeepboop_server.queue.batch_lines import split_lines, validate_lines

URL = "/v1/chat/completions"


def _line(custom_id: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": URL, "body": body})


def test_a_custom_id_over_512_characters_is_refused_without_being_repeated() -> None:
    content = f"{_line('x' * 512)}\n{_line('y' * 200_000)}\n".encode()
    checked = validate_lines(split_lines([content]), URL)
    [error] = checked.errors
    assert (error.line, error.code, error.param) == (2, "invalid_value", "custom_id")
    assert "at most 512 characters" in error.message and len(error.message) < 200
