"""Batch command ``submit-file``: bulk submit an OpenAI Batch input file.

Its answers are collected by ``results`` and ``wait`` (:mod:`openbeepboop.cli.batch_results`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
from openbeepboop_schemas import JobWarning

from openbeepboop._batch_files import (
    IdMapping,
    default_ids_path,
    id_map_text,
    iter_batch_input,
)
from openbeepboop._client import Client
from openbeepboop._exceptions import OpenBeepBoopError
from openbeepboop._files import private_file_writer
from openbeepboop._resources.chat import (
    bulk_chunks,
    chunk_key,
    partial_failure,
    submit_bulk_chunk,
)
from openbeepboop._submit_warnings import distinct
from openbeepboop.cli.errors import SubmitInterrupted
from openbeepboop.cli.options import (
    config_option,
    existing_file,
    json_option,
    make_client,
    output_file,
)
from openbeepboop.cli.output import echo_json, echo_warnings


@click.command("submit-file")
@click.argument("file", type=existing_file)
@click.option(
    "--ids-out",
    type=output_file,
    default=None,
    help="Where to write the custom_id -> job id map (default: FILE.ids.jsonl).",
)
@click.option("--model", "-m", default=None, help="Model for lines whose body names none.")
@click.option("--force", is_flag=True, help="Overwrite an existing id map.")
@config_option
@json_option
def submit_file_command(
    file: Path,
    ids_out: Path | None,
    model: str | None,
    force: bool,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Bulk submit FILE: OpenAI Batch input lines (custom_id, method, url, body).

    Every line is checked before anything is sent: one bad line, and nothing is
    submitted. The custom_id -> job id map is written to --ids-out; collect the
    answers later with `openbeepboop-client results IDS_FILE`. A warning from
    the server (a model no node serves right now) is printed once per model on
    stderr; those jobs are queued all the same.
    """
    ids_path = ids_out or default_ids_path(file)
    if ids_path.exists() and not force:
        raise click.ClickException(
            f"{ids_path} already exists (it maps an earlier submission); "
            "choose another --ids-out or pass --force"
        )
    with make_client(config_path) as client:
        default_model = model or client.default_model
        try:
            total, key = _check_input(file, default_model, ids_path)
        except KeyboardInterrupt:
            raise SubmitInterrupted(f"stopped while checking {file}; nothing was sent") from None
        try:
            submitted = _submit_in_chunks(
                client, file, default_model, None if force else key, ids_path, total
            )
        except KeyboardInterrupt:
            raise SubmitInterrupted(
                f"stopped; some jobs may already be queued and {ids_path} is not written. "
                "Run the same command again to finish: the jobs already created are "
                "answered again, not queued twice"
            ) from None
    echo_warnings(submitted.warnings)
    if as_json:
        echo_json({"submitted": submitted.jobs, "ids_file": str(ids_path)})
    else:
        click.echo(f"Submitted {submitted.jobs} jobs. Job ids written to {ids_path}")
        click.echo(f"Collect the results with: openbeepboop-client results {ids_path} --wait")


def _check_input(file: Path, default_model: str | None, ids_path: Path) -> tuple[int, str]:
    """Every line checked before anything is sent, none kept: how many, and the submission key.

    The file is read again to send it (:func:`_submit_in_chunks`), so the
    memory it takes is one chunk's, whatever the file's size.
    """
    total = 0

    def bodies() -> Iterator[dict[str, object]]:
        nonlocal total
        for request in iter_batch_input(file, default_model):
            total += 1
            yield request.request.to_payload()

    # Without --force the key is the same for the same file and id map, so
    # running the command again after an interruption is answered with the
    # jobs already created (chunk by chunk) instead of queuing them twice.
    key = submission_key(ids_path, bodies())
    return total, key


@dataclass
class _Submitted:
    """What a whole ``submit-file`` made: how many jobs, and the server's distinct warnings."""

    jobs: int = 0
    warnings: list[JobWarning] = field(default_factory=list)


def _submit_in_chunks(
    client: Client,
    file: Path,
    default_model: str | None,
    key: str | None,
    ids_path: Path,
    total: int,
) -> _Submitted:
    """Read, submit and map ``file`` one bulk chunk at a time; the id map is written as it goes.

    It replaces ``ids_path`` only when the submit ends: complete, or stopped by
    a failed chunk after earlier ones made jobs (whose ids it then holds, and
    the error says so). A failure before any job was made, or Ctrl-C, leaves
    no id map.
    """
    submitted = _Submitted()
    failure: OpenBeepBoopError | None = None
    pairs = (
        (request.custom_id, request.request.to_payload())
        for request in iter_batch_input(file, default_model)
    )
    with private_file_writer(ids_path) as ids_out:
        try:
            for index, chunk in enumerate(bulk_chunks(pairs)):
                payloads = [payload for _, payload in chunk]
                jobs = submit_bulk_chunk(client, payloads, chunk_key(key, index))
                for (custom_id, _), job in zip(chunk, jobs, strict=True):
                    ids_out.write(id_map_text(IdMapping(custom_id=custom_id, job_id=job.id)))
                submitted.jobs += len(jobs)
                found = (warning for job in jobs for warning in job.warnings)
                submitted.warnings = distinct([*submitted.warnings, *found])
                # Let go of this chunk before the next one is read: else two are held.
                del chunk, payloads, jobs
        except OpenBeepBoopError as exc:
            if not submitted.jobs:
                raise
            failure = exc
    if failure is not None:
        raise click.ClickException(
            f"{partial_failure(submitted.jobs, total, failure)}; "
            f"the ids of the {submitted.jobs} jobs created are in {ids_path}"
        ) from failure
    return submitted


def submission_key(ids_path: Path, bodies: Iterable[object]) -> str:
    """The Idempotency-Key of one file's submission to one id map (its chunks add ``-N``)."""
    digest = hashlib.sha256(str(ids_path.resolve()).encode())
    for body in bodies:
        digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return f"submit-file-{digest.hexdigest()[:40]}"
