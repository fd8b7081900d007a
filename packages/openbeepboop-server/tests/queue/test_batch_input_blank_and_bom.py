"""Blank lines and a leading UTF-8 byte order mark carry no request: they are skipped,
and the line numbers of errors stay the file's own."""

from __future__ import annotations

import json
from typing import Any

from openbeepboop_server.queue.batch_lines import split_lines, validate_lines

URL = "/v1/chat/completions"
#: What Notepad and many Windows tools write first in a UTF-8 file.
UTF8_BOM = b"\xef\xbb\xbf"


def _line(custom_id: str, **changes: Any) -> str:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": URL,
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        **changes,
    }
    return json.dumps(line)


def _check(content: bytes, part_bytes: int = 7) -> tuple[list[str], list[tuple[int, str]]]:
    """The custom_ids kept and the (line, code) errors of a file read in small parts."""
    parts = [content[start : start + part_bytes] for start in range(0, len(content), part_bytes)]
    kept: list[str] = []
    checked = validate_lines(split_lines(parts), URL, keep=lambda c, r: kept.append(c))
    assert checked.count == len(kept) or checked.errors
    return kept, [(error.line or 0, error.code) for error in checked.errors]


def test_a_leading_byte_order_mark_is_skipped() -> None:
    content = UTF8_BOM + f"{_line('a')}\n{_line('b')}\n".encode()
    assert _check(content) == (["a", "b"], [])
    assert _check(content, part_bytes=1) == (["a", "b"], [])  # the mark split across parts


def test_a_byte_order_mark_after_the_first_line_is_still_an_error() -> None:
    content = f"{_line('a')}\n".encode() + UTF8_BOM + f"{_line('b')}\n".encode()
    assert _check(content)[1] == [(2, "invalid_json_line")]


def test_trailing_and_inner_blank_lines_are_skipped() -> None:
    content = f"{_line('a')}\r\n\r\n  \t\n{_line('b')}\n\n\n".encode()
    assert _check(content) == (["a", "b"], [])


def test_errors_after_blank_lines_keep_the_files_line_numbers() -> None:
    content = f"\n{_line('a')}\n\n{_line('b', method='GET')}\n\n{{broken\n".encode()
    assert _check(content)[1] == [(4, "invalid_method"), (6, "invalid_json_line")]


def test_a_file_of_only_blank_lines_or_a_mark_is_empty() -> None:
    for content in (b"\n\n  \n", UTF8_BOM, UTF8_BOM + b"\r\n"):
        assert _check(content) == ([], [(1, "empty_file")])
