"""The three JSONL files of a batch: OpenAI Batch input, our id map, Batch output.

Input lines are the OpenAI Batch API's (``custom_id``, ``method`` ``POST``,
``url`` ``/v1/chat/completions``, ``body``), so a file made for OpenAI
submits here unchanged. The id map pairs each ``custom_id`` with the job made
for it. Output lines are the OpenAI Batch output shape (``id``,
``custom_id``, ``response`` {status_code, request_id, body}, ``error``
{code, message}) joined back on ``custom_id``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from openbeepboop_schemas import NOT_FOUND, ChatCompletionRequest, JobStatus, PollEntry

from openbeepboop._chat_request import build_chat_request
from openbeepboop._exceptions import InvalidRequestError
from openbeepboop._files import private_file_writer

#: What every input line must say in ``method`` and ``url``. These are fields of
#: OpenAI's Batch file format, naming OpenAI's endpoint, not a route of ours.
BATCH_METHOD = "POST"
BATCH_URL = "/v1/chat/completions"


class BatchFileError(InvalidRequestError):
    """A batch input or id file that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class BatchRequest:
    """One validated input line."""

    line: int
    custom_id: str
    request: ChatCompletionRequest


@dataclass(frozen=True)
class IdMapping:
    """One line of the id map: which job answers which ``custom_id``."""

    custom_id: str
    job_id: str


def default_ids_path(input_path: Path) -> Path:
    """``prompts.jsonl`` → ``prompts.ids.jsonl``, beside the input."""
    stem = input_path.name.removesuffix(".jsonl")
    return input_path.with_name(f"{stem}.ids.jsonl")


def default_output_path(ids_path: Path) -> Path:
    """``prompts.ids.jsonl`` → ``prompts.results.jsonl``, beside the id map."""
    stem = ids_path.name.removesuffix(".jsonl").removesuffix(".ids")
    return ids_path.with_name(f"{stem}.results.jsonl")


def _json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, decoded JSON) for every non-blank line; errors name the line."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    yield number, json.loads(text)
                except json.JSONDecodeError as exc:
                    raise BatchFileError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise BatchFileError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise BatchFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def iter_batch_input(path: Path, default_model: str | None) -> Iterator[BatchRequest]:
    """Every line of an OpenAI Batch input file, validated, read as it is asked for.

    The first bad line raises BatchFileError naming it, and so does a file
    without any request. Of the lines read, only their custom ids are kept (to
    refuse a repeated one): a file of any size is read in little memory.
    """
    seen: dict[str, int] = {}
    for number, data in _json_lines(path):
        where = f"{path}:{number}"
        if not isinstance(data, dict):
            raise BatchFileError(f"{where}: each line must be a JSON object")
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise BatchFileError(f"{where}: 'custom_id' must be a non-empty string")
        if custom_id in seen:
            raise BatchFileError(
                f"{where}: custom_id {custom_id!r} already used on line {seen[custom_id]}"
            )
        if data.get("method", BATCH_METHOD) != BATCH_METHOD:
            raise BatchFileError(f"{where}: 'method' must be {BATCH_METHOD!r}")
        if data.get("url") != BATCH_URL:
            raise BatchFileError(f"{where}: 'url' must be {BATCH_URL!r} (got {data.get('url')!r})")
        body = data.get("body")
        if not isinstance(body, dict):
            raise BatchFileError(f"{where}: 'body' must be a JSON object")
        try:
            request = build_chat_request(body, default_model)
        except InvalidRequestError as exc:
            raise BatchFileError(f"{where}: body {exc}") from None
        seen[custom_id] = number
        yield BatchRequest(line=number, custom_id=custom_id, request=request)
    if not seen:
        raise BatchFileError(f"{path}: no requests in the file")


def read_ids_file(path: Path) -> list[IdMapping]:
    """The id map written by ``submit-file``."""
    mappings: list[IdMapping] = []
    for number, data in _json_lines(path):
        custom_id = data.get("custom_id") if isinstance(data, dict) else None
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if not isinstance(custom_id, str) or not isinstance(job_id, str) or not job_id:
            raise BatchFileError(f'{path}:{number}: expected {{"custom_id": ..., "job_id": ...}}')
        mappings.append(IdMapping(custom_id=custom_id, job_id=job_id))
    if not mappings:
        raise BatchFileError(f"{path}: no job ids in the file")
    return mappings


def id_map_text(mapping: IdMapping) -> str:
    """One line of an id map file, newline included."""
    return jsonl_text({"custom_id": mapping.custom_id, "job_id": mapping.job_id})


def output_line(custom_id: str, entry: PollEntry) -> dict[str, object] | None:
    """The OpenAI Batch output line for a finished job; None while it is unfinished."""
    response: dict[str, object] | None = None
    error: dict[str, object] | None = None
    if entry.status == JobStatus.COMPLETED.value and entry.result is not None:
        response = {
            "status_code": 200,
            "request_id": entry.id,
            "body": entry.result.model_dump(mode="json", exclude_unset=True),
        }
    elif entry.status == JobStatus.FAILED.value:
        error = {
            "code": entry.error.type if entry.error else "job_failed",
            "message": entry.error.message if entry.error else "the job failed",
        }
    elif entry.status == JobStatus.CANCELLED.value:
        error = {"code": "cancelled", "message": "the job was cancelled"}
    elif entry.status == NOT_FOUND:
        error = {
            "code": "not_found",
            "message": "no such job for this API key (unknown, purged, or another key's)",
        }
    else:
        return None
    return {"id": entry.id, "custom_id": custom_id, "response": response, "error": error}


def jsonl_text(line: dict[str, object]) -> str:
    """One line of a JSONL file the client writes, newline included."""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_jsonl(path: Path, lines: Iterable[dict[str, object]]) -> int:
    """Write JSON lines atomically, each as ``lines`` yields it; returns how many.

    Through :func:`private_file_writer`, so a results file is never held in
    memory as text: only the line being written is.
    """
    written = 0
    with private_file_writer(path) as handle:
        for line in lines:
            handle.write(jsonl_text(line))
            written += 1
    return written
