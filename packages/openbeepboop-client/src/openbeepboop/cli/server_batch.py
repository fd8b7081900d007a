"""``batch``: run an OpenAI batch on the server (``/openai/v1/batches``) and follow it.

``batch create FILE`` uploads the JSONL input and starts the batch (its
lines become jobs of your key on the server: nothing needs to stay running
here); ``batch status ID --wait`` follows it with a progress bar;
``batch results ID -o OUT`` writes its output (and ``--errors-out``) file;
``batch cancel ID`` stops it. For batches this machine submits and collects
itself, see ``submit-file`` and ``results``.

Following a batch to its end (``--wait``) exits 0 only for ``completed``
when it prints text: a ``failed``, ``expired`` or ``cancelled`` batch is
exit 1 with one ``Error:`` line, so a script cannot take a partial run for
a whole one. ``--json`` exits 0 whatever the end, as ``submit --wait``
does: the status is in the JSON.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path

import click
from openbeepboop_schemas import BATCH_FINAL_STATUSES, Batch

from openbeepboop._client import Client
from openbeepboop._exceptions import APIStatusError, OpenBeepBoopError
from openbeepboop._files import write_private_bytes
from openbeepboop._progress import open_progress
from openbeepboop._resources.batches import DEFAULT_COMPLETION_WINDOW
from openbeepboop._waiting import Outage
from openbeepboop.cli.errors import WaitTimedOut
from openbeepboop.cli.options import (
    config_option,
    json_option,
    make_client,
    stderr_is_terminal,
    timeout_option,
)
from openbeepboop.cli.output import echo_json
from openbeepboop.cli.waiting import Unwatched

#: Seconds between looks at a running batch.
POLL_SECONDS = 1.0

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
_output_file = click.Path(dir_okay=False, writable=True, path_type=Path)


def _summary(batch: Batch) -> str:
    counts = batch.request_counts
    line = (
        f"{batch.id}: {batch.status} "
        f"({counts.completed} completed, {counts.failed} failed of {counts.total})"
    )
    if batch.errors and batch.errors.data:
        line += "".join(f"\n  line {error.line}: {error.message}" for error in batch.errors.data)
    return line


def _show(batch: Batch, as_json: bool) -> None:
    if as_json:
        echo_json(batch.model_dump(mode="json"))
    else:
        click.echo(_summary(batch))


def _ended_unfinished(batch: Batch) -> click.ClickException | None:
    """The one-line failure for a followed batch that did not complete (text output)."""
    if batch.status == "completed":
        return None
    if batch.status == "failed":
        return click.ClickException(f"batch {batch.id} failed: no line ran")
    if batch.request_counts.completed == 0:
        return click.ClickException(f"batch {batch.id} ended {batch.status}: no line completed")
    return click.ClickException(
        f"batch {batch.id} ended {batch.status}; its finished lines are in its output file: "
        f"openbeepboop-client batch results {batch.id} -o FILE"
    )


def _show_followed(batch: Batch, as_json: bool) -> None:
    """Show a batch followed to its end; exit 1 (text) if it did not complete."""
    _show(batch, as_json)
    failure = None if as_json else _ended_unfinished(batch)
    if failure is not None:
        raise failure


def _create_or_clean_up(client: Client, file_id: str, window: str) -> Batch:
    """Create the batch; if the server refuses it, delete the file just uploaded for it.

    Nothing else will ever read that file, and a refusal (a malformed
    ``--window``, a quota) would otherwise leave one behind per attempt.
    """
    try:
        return client.batches.create(file_id, completion_window=window)
    except APIStatusError:
        with contextlib.suppress(OpenBeepBoopError):  # the refusal is what the user needs
            client.batches.delete_file(file_id)
        raise


def _follow(client: Client, batch: Batch, timeout: float | None) -> Batch:
    """Poll until the batch ends, drawing a progress bar on a terminal.

    A server restart meanwhile does not end it: like every wait it keeps
    asking (:class:`~openbeepboop._waiting.Outage`).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    outage = Outage(deadline)
    total = batch.request_counts.total
    progress = open_progress(True, total, desc="batch") if stderr_is_terminal() else Unwatched()
    shown = 0
    try:
        while batch.status not in BATCH_FINAL_STATUSES:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimedOut(f"batch {batch.id} is still {batch.status}")
            time.sleep(POLL_SECONDS)
            try:
                batch = client.batches.retrieve(batch.id)
            except OpenBeepBoopError as exc:
                time.sleep(outage.ride_out(exc, progress.unreachable))
                continue
            outage.over()
            counts = batch.request_counts
            done = counts.completed + counts.failed
            tally = Counter({"COMPLETED": counts.completed, "FAILED": counts.failed})
            progress.advance(max(0, done - shown), +tally)
            shown = max(shown, done)
    finally:
        progress.close()
    return batch


@click.group("batch")
def batch_group() -> None:
    """Run an OpenAI batch on the server and follow it (the server does the work)."""


@batch_group.command("create")
@click.argument("file", type=_existing_file)
@click.option(
    "--window",
    default=DEFAULT_COMPLETION_WINDOW,
    show_default=True,
    help="completion_window: lines not finished by then end as batch_expired.",
)
@click.option("--wait", is_flag=True, help="Follow the batch until it ends.")
@timeout_option
@config_option
@json_option
def create_command(
    file: Path,
    window: str,
    wait: bool,
    timeout: float | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Upload FILE (OpenAI Batch input JSONL) and start a batch on the server."""
    with make_client(config_path) as client:
        uploaded = client.batches.upload(file)
        batch = _create_or_clean_up(client, uploaded.id, window)
        if wait:
            batch = _follow(client, batch, timeout)
    if wait:
        _show_followed(batch, as_json)
    elif as_json:
        _show(batch, as_json)
    else:
        click.echo(f"Batch created: {batch.id} (input file {uploaded.id})")
        click.echo(f"Follow it with: openbeepboop-client batch status {batch.id} --wait")


@batch_group.command("status")
@click.argument("batch_id")
@click.option("--wait", is_flag=True, help="Follow the batch until it ends.")
@timeout_option
@config_option
@json_option
def status_command(
    batch_id: str, wait: bool, timeout: float | None, config_path: Path | None, as_json: bool
) -> None:
    """Show a batch: status and request counts (with --wait, once it has ended)."""
    with make_client(config_path) as client:
        batch = client.batches.retrieve(batch_id)
        if wait:
            batch = _follow(client, batch, timeout)
    if wait:
        _show_followed(batch, as_json)
    else:
        _show(batch, as_json)


@batch_group.command("results")
@click.argument("batch_id")
@click.option(
    "-o", "--output", type=_output_file, required=True, help="Where to write output lines."
)
@click.option("--errors-out", type=_output_file, default=None, help="Where to write error lines.")
@config_option
def results_command(
    batch_id: str, output: Path, errors_out: Path | None, config_path: Path | None
) -> None:
    """Write a finished batch's output file (and error file) in OpenAI's line format."""
    with make_client(config_path) as client:
        batch = client.batches.retrieve(batch_id)
        if batch.status not in BATCH_FINAL_STATUSES:
            raise click.ClickException(
                f"batch {batch_id} is still {batch.status}; wait with "
                f"`openbeepboop-client batch status {batch_id} --wait`"
            )
        # Private and atomic, as every file the client writes: these are the answers.
        write_private_bytes(
            output, client.batches.content(batch.output_file_id) if batch.output_file_id else b""
        )
        if errors_out is not None:
            write_private_bytes(
                errors_out,
                client.batches.content(batch.error_file_id) if batch.error_file_id else b"",
            )
    counts = batch.request_counts
    click.echo(
        f"{batch.status}: {counts.completed} output line(s) in {output}"
        + (f", error lines in {errors_out}" if errors_out is not None else "")
    )


@batch_group.command("cancel")
@click.argument("batch_id")
@config_option
@json_option
def cancel_command(batch_id: str, config_path: Path | None, as_json: bool) -> None:
    """Cancel a batch: queued lines stop now, running ones finish."""
    with make_client(config_path) as client:
        batch = client.batches.cancel(batch_id)
    _show(batch, as_json)
