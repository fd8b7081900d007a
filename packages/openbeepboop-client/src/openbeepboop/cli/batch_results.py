"""Batch commands ``results`` and ``wait``: an id map's finished jobs as OpenAI Batch output.

The answers are collected into a :mod:`~openbeepboop.cli.result_spool` as
they arrive (a chunk of polls, or each job as a wait sees it finish) and the
output file is then written from it in id-map order, so the memory taken is
one poll's answer and a small record per job, whatever the batch's size.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
from openbeepboop_schemas import MAX_POLL_IDS

from openbeepboop._batch_files import IdMapping, default_output_path, read_ids_file, write_jsonl
from openbeepboop._client import Client
from openbeepboop._exceptions import JobTimeoutError, OpenBeepBoopError
from openbeepboop.cli.errors import WaitInterrupted, WaitTimedOut
from openbeepboop.cli.no_answer import paused
from openbeepboop.cli.options import (
    config_option,
    existing_file,
    json_option,
    make_client,
    output_file,
    stderr_is_terminal,
    timeout_option,
)
from openbeepboop.cli.output import echo_json
from openbeepboop.cli.result_spool import ResultSpool, open_spool
from openbeepboop.cli.waiting import Unwatched, where_they_stand


def _keep_earlier_output(path: Path, wanted: set[str], spool: ResultSpool) -> None:
    """Spool the result lines an earlier run wrote to ``path`` for the ``wanted`` job ids.

    Read a line at a time, keeping only those: the file may be large, and only
    jobs the server no longer knows need their earlier line. Unreadable
    lines are skipped; an unreadable file is as good as none.
    """
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
                    spool.keep_earlier(line["id"], line)
    except (OSError, UnicodeDecodeError):
        return


def _write_output(
    path: Path, mappings: Sequence[IdMapping], spool: ResultSpool
) -> tuple[int, Counter[str], int]:
    """Write every finished job's Batch output line, in id-map order.

    A job the server no longer knows (purged after its retention) keeps the
    line an earlier run wrote for it: the output file is then the only copy
    of that answer, and a later run must not turn it into ``not_found``.
    """
    gone = {mapping.job_id for mapping in mappings if spool.is_gone(mapping.job_id)}
    if gone:
        _keep_earlier_output(path, gone, spool)
    counts: Counter[str] = Counter()

    def lines() -> Iterator[dict[str, object]]:
        # Read back one at a time as the file is written: never all held at once.
        for mapping in mappings:
            found = spool.line(mapping.job_id, mapping.custom_id)
            if found is not None:
                status, line = found
                counts[status] += 1
                yield line

    written = write_jsonl(path, lines())
    return written, counts, len(mappings) - written


def _poll_into(client: Client, spool: ResultSpool, job_ids: Sequence[str]) -> None:
    """Poll ``job_ids`` one request's worth at a time, spooling each answer before the next."""
    for start in range(0, len(job_ids), MAX_POLL_IDS):
        spool.add_all(client.jobs.poll(job_ids[start : start + MAX_POLL_IDS]))


_output_option = click.option(
    "-o",
    "--output",
    type=output_file,
    default=None,
    help="Output JSONL (default: IDS_FILE with .results.jsonl).",
)
_progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)


@click.command("results")
@click.argument("ids_file", type=existing_file)
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
    job_ids = list(dict.fromkeys(mapping.job_id for mapping in mappings))
    timed_out: JobTimeoutError | None = None
    interrupted = False
    with make_client(config_path) as client, open_spool(out_path.parent) as spool:
        if wait:
            show = stderr_is_terminal() if progress is None else progress
            try:
                with paused(client):
                    client.jobs.wait(
                        job_ids, timeout=timeout, progress=show or Unwatched(), on_final=spool.add
                    )
            except JobTimeoutError as exc:
                timed_out = exc
                spool.add_all(exc.entries)
            except KeyboardInterrupt:
                interrupted = True
                if not _finished_so_far(client, spool, job_ids):
                    # The output file, if any, is left as it was.
                    raise WaitInterrupted(
                        f"stopped waiting; nothing was cancelled and nothing written; run "
                        f"`openbeepboop-client results {ids_file}` again later"
                    ) from None
        else:
            _poll_into(client, spool, job_ids)
        written, counts, pending = _write_output(out_path, mappings, spool)
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


def _finished_so_far(client: Client, spool: ResultSpool, job_ids: list[str]) -> bool:
    """After Ctrl-C stopped a wait: one more poll of the jobs not yet spooled; False if it fails.

    A second Ctrl-C, or a server that does not answer, leaves the output
    file as it was; the jobs are untouched either way.
    """
    try:
        _poll_into(client, spool, [job_id for job_id in job_ids if not spool.has_line(job_id)])
    except (KeyboardInterrupt, OpenBeepBoopError):
        return False
    return True


@click.command("wait")
@click.argument("ids_file", type=existing_file)
@_output_option
@timeout_option
@_progress_option
@config_option
@json_option
@click.pass_context
def wait_command(ctx: click.Context, /, **options: object) -> None:
    """Wait for every job of IDS_FILE, then write the results (`results --wait`)."""
    ctx.invoke(results_command, wait=True, **options)
