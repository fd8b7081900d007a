"""Batch commands: ``submit-file``, ``results`` and ``wait`` (OpenAI Batch JSONL)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
from openbeepboop_schemas import NOT_FOUND, JobStatus, JobWarning, PollEntry

from openbeepboop._batch_files import (
    IdMapping,
    default_ids_path,
    default_output_path,
    id_map_text,
    iter_batch_input,
    output_line,
    read_ids_file,
    write_jsonl,
)
from openbeepboop._client import Client
from openbeepboop._exceptions import JobTimeoutError, OpenBeepBoopError
from openbeepboop._files import private_file_writer
from openbeepboop._resources.chat import (
    bulk_chunks,
    chunk_key,
    partial_failure,
    submit_bulk_chunk,
)
from openbeepboop._submit_warnings import distinct
from openbeepboop.cli.errors import SubmitInterrupted, WaitInterrupted, WaitTimedOut
from openbeepboop.cli.options import (
    config_option,
    json_option,
    make_client,
    stderr_is_terminal,
    timeout_option,
)
from openbeepboop.cli.output import echo_json, echo_warnings
from openbeepboop.cli.waiting import Unwatched, where_they_stand

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
_output_file = click.Path(dir_okay=False, writable=True, path_type=Path)


@click.command("submit-file")
@click.argument("file", type=_existing_file)
@click.option(
    "--ids-out",
    type=_output_file,
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


def _earlier_output(path: Path, wanted: set[str]) -> dict[str, dict[str, object]]:
    """The result lines an earlier run wrote to ``path`` for the ``wanted`` job ids.

    Read a line at a time, keeping only those: the file may be large, and only
    jobs the server no longer knows need their earlier line. Unreadable
    lines are skipped; an unreadable file is as good as none.
    """
    earlier: dict[str, dict[str, object]] = {}
    try:
        with path.open(encoding="utf-8") as handle:
            for raw in handle:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(line, dict) or line.get("id") not in wanted:
                    continue
                error = line.get("error")
                if not (isinstance(error, dict) and error.get("code") == "not_found"):
                    earlier[line["id"]] = line
    except (OSError, UnicodeDecodeError):
        return earlier
    return earlier


def _status_of(line: dict[str, object]) -> str:
    """The job status an output line was written for."""
    if line.get("response") is not None:
        return JobStatus.COMPLETED.value
    error = line.get("error")
    cancelled = isinstance(error, dict) and error.get("code") == "cancelled"
    return JobStatus.CANCELLED.value if cancelled else JobStatus.FAILED.value


def _write_output(
    path: Path, mappings: Sequence[IdMapping], entries: Sequence[PollEntry]
) -> tuple[int, Counter[str], int]:
    """Write every finished job's Batch output line, in id-map order.

    A job the server no longer knows (purged after its retention) keeps the
    line an earlier run wrote for it: the output file is then the only copy
    of that answer, and a later run must not turn it into ``not_found``.
    """
    by_id = {entry.id: entry for entry in entries}
    gone = {
        mapping.job_id
        for mapping in mappings
        if (entry := by_id.get(mapping.job_id)) is None or entry.status == NOT_FOUND
    }
    earlier = _earlier_output(path, gone) if gone else {}
    counts: Counter[str] = Counter()

    def lines() -> Iterator[dict[str, object]]:
        # Made one at a time as the file is written: never all held at once.
        for mapping in mappings:
            entry = by_id.get(mapping.job_id)
            kept = earlier.get(mapping.job_id)
            if kept is not None and (entry is None or entry.status == NOT_FOUND):
                counts[_status_of(kept)] += 1
                yield kept
                continue
            line = output_line(mapping.custom_id, entry) if entry is not None else None
            if line is not None and entry is not None:
                counts[entry.status] += 1
                yield line

    written = write_jsonl(path, lines())
    return written, counts, len(mappings) - written


_output_option = click.option(
    "-o",
    "--output",
    type=_output_file,
    default=None,
    help="Output JSONL (default: IDS_FILE with .results.jsonl).",
)
_progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)


@click.command("results")
@click.argument("ids_file", type=_existing_file)
@_output_option
@click.option("--wait", is_flag=True, help="Wait until every job has finished.")
@timeout_option
@_progress_option
@config_option
@json_option
def results_command(
    ids_file: Path,
    output: Path | None,
    wait: bool,
    timeout: float | None,
    progress: bool | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Collect the jobs of IDS_FILE as OpenAI Batch output lines.

    Finished jobs are written (completed ones with `response`, failed or
    cancelled ones with `error`), joined back on custom_id; unfinished ones are
    counted and left for a later run, unless --wait.
    """
    mappings = read_ids_file(ids_file)
    out_path = output or default_output_path(ids_file)
    job_ids = [mapping.job_id for mapping in mappings]
    timed_out: JobTimeoutError | None = None
    interrupted = False
    with make_client(config_path) as client:
        if wait:
            show = stderr_is_terminal() if progress is None else progress
            try:
                entries = client.jobs.wait(job_ids, timeout=timeout, progress=show or Unwatched())
            except JobTimeoutError as exc:
                timed_out, entries = exc, exc.entries
            except KeyboardInterrupt:
                interrupted = True
                latest = _finished_so_far(client, job_ids)
        else:
            entries = client.jobs.poll(job_ids)
    if interrupted:
        if latest is None:  # the output file, if any, is left as it was
            raise WaitInterrupted(
                f"stopped waiting; nothing was cancelled and nothing written; run "
                f"`openbeepboop-client results {ids_file}` again later"
            )
        entries = latest
    written, counts, pending = _write_output(out_path, mappings, entries)
    summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    if as_json:
        echo_json(
            {
                "output": str(out_path),
                "written": written,
                "counts": dict(counts),
                "pending": pending,
            }
        )
    else:
        click.echo(f"Wrote {written} results to {out_path}" + (f" ({summary})" if summary else ""))
        if pending and timed_out is None and not interrupted:
            click.echo(
                f"{pending} jobs not finished yet; run again later, or with --wait.", err=True
            )
    again = f"run `openbeepboop-client results {ids_file}` again later for the rest"
    if timed_out is not None:
        raise WaitTimedOut(
            f"{where_they_stand(timed_out)}. Finished ones are in {out_path}; {again}"
        )
    if interrupted:
        raise WaitInterrupted(
            f"stopped waiting; nothing was cancelled. Finished ones are in {out_path}; {again}"
        )


def _finished_so_far(client: Client, job_ids: list[str]) -> list[PollEntry] | None:
    """The jobs' entries after Ctrl-C stopped a wait: one more poll; None if it fails.

    A second Ctrl-C, or a server that does not answer, leaves the output
    file as it was; the jobs are untouched either way.
    """
    try:
        return client.jobs.poll(job_ids)
    except (KeyboardInterrupt, OpenBeepBoopError):
        return None


@click.command("wait")
@click.argument("ids_file", type=_existing_file)
@_output_option
@timeout_option
@_progress_option
@config_option
@json_option
@click.pass_context
def wait_command(ctx: click.Context, /, **options: object) -> None:
    """Wait for every job of IDS_FILE, then write the results (`results --wait`)."""
    ctx.invoke(results_command, wait=True, **options)
