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
does: the status is in the JSON. A wait cut short (``--timeout``: 124,
Ctrl-C: 130) leaves the batch running and says how to follow it again;
``--json`` then prints the batch as it last stood, so its id is on stdout.
A BATCH_ID that cannot name a batch (empty, blank, holding a ``/``) is
refused before any request, exit 2.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import click
from openbeepboop_schemas import BATCH_FINAL_STATUSES, Batch

from openbeepboop._client import Client
from openbeepboop._exceptions import APIError, APIStatusError, OpenBeepBoopError
from openbeepboop._files import write_private_bytes
from openbeepboop._progress import open_progress
from openbeepboop._resources.batches import DEFAULT_COMPLETION_WINDOW
from openbeepboop._resources.chat import new_idempotency_key
from openbeepboop._waiting import Outage
from openbeepboop.cli.errors import BadArgument, WaitInterrupted, WaitTimedOut, lost_batch
from openbeepboop.cli.no_answer import paused
from openbeepboop.cli.options import (
    config_option,
    existing_file,
    idempotency_key_option,
    json_option,
    make_client,
    output_file,
    stderr_is_terminal,
    timeout_option,
)
from openbeepboop.cli.output import echo_json
from openbeepboop.cli.waiting import Unwatched

#: Seconds between looks at a running batch.
POLL_SECONDS = 1.0


def _batch_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse, before any request, an id that cannot name a batch (empty, blank, with a ``/``).

    Sent as is it would make another path (``/openai/v1/batches/``), and the
    server's answer to that would be the error shown instead of this one.
    """
    if not value.strip():
        blank = "empty" if not value else "only spaces"
        raise BadArgument(f"BATCH_ID is {blank}; give the id `batch create` printed (batch_...)")
    if "/" in value:
        raise BadArgument(f"BATCH_ID {value!r} holds a '/', so it is no batch id (batch_...)")
    return value


_batch_id_argument = click.argument("batch_id", callback=_batch_id)


class _Followed:
    """The batch a ``--wait`` follows, as last seen: what a wait cut short reports."""

    def __init__(self, batch_id: str | None = None) -> None:
        self.batch_id = batch_id
        self.batch: Batch | None = None

    def saw(self, batch: Batch) -> None:
        """Keep ``batch`` as the latest view."""
        self.batch_id, self.batch = batch.id, batch


def _follow_again(batch_id: str) -> str:
    return f"follow it again with: openbeepboop-client batch status {batch_id} --wait"


@contextlib.contextmanager
def _cut_short(followed: _Followed, as_json: bool) -> Iterator[None]:
    """End a wait cut short by ``--timeout`` (124) or Ctrl-C (130) with one line naming the batch.

    Ctrl-C anywhere in the block (a second one while the first unwinds too)
    ends the same way; the batch runs on, untouched. ``--json`` prints the
    batch as it last stood. Before the batch exists, Ctrl-C stays click's.
    """
    try:
        yield
    except WaitTimedOut:
        if as_json and followed.batch is not None:
            _show(followed.batch, as_json)
        raise
    except KeyboardInterrupt:
        if followed.batch_id is None:
            raise
        if threading.current_thread() is threading.main_thread():
            # The stop is under way and takes no time: a further Ctrl-C must not cut its line.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if as_json and followed.batch is not None:
            _show(followed.batch, as_json)
        raise WaitInterrupted(
            f"stopped waiting for batch {followed.batch_id}; nothing was cancelled and the "
            f"server goes on running it; {_follow_again(followed.batch_id)}"
        ) from None


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


def _create_or_clean_up(client: Client, file_id: str, window: str, key: str) -> Batch:
    """Create the batch; if the server refuses it, delete the file just uploaded for it.

    Nothing else will ever read that file, and a refusal (a malformed
    ``--window``, a quota) would otherwise leave one behind per attempt. An
    answer that may have been lost (a gateway's 502 or 504) is no refusal:
    the batch may exist, reading that file.
    """
    try:
        return client.batches.create(file_id, completion_window=window, idempotency_key=key)
    except APIStatusError as exc:
        if not exc.answer_lost:
            with contextlib.suppress(OpenBeepBoopError):  # the refusal is what the user needs
                client.batches.delete_file(file_id)
        raise


def _follow(client: Client, followed: _Followed, timeout: float | None) -> Batch:
    """Poll until the batch ends, drawing a progress bar on a terminal.

    Each look is kept in ``followed``, for a wait cut short to show.

    A server restart meanwhile does not end it: like every wait it keeps
    asking (:class:`~openbeepboop._waiting.Outage`).
    """
    assert followed.batch is not None
    batch = followed.batch
    deadline = None if timeout is None else time.monotonic() + timeout
    outage = Outage(deadline)
    total = batch.request_counts.total
    progress = open_progress(True, total, desc="batch") if stderr_is_terminal() else Unwatched()
    shown = 0
    try:
        with paused(client):
            while batch.status not in BATCH_FINAL_STATUSES:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimedOut(
                        f"batch {batch.id} is still {batch.status}; {_follow_again(batch.id)}"
                    )
                time.sleep(POLL_SECONDS)
                try:
                    batch = client.batches.retrieve(batch.id)
                except OpenBeepBoopError as exc:
                    time.sleep(outage.ride_out(exc, progress.unreachable))
                    continue
                outage.over()
                followed.saw(batch)
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
@click.argument("file", type=existing_file)
@click.option(
    "--window",
    default=DEFAULT_COMPLETION_WINDOW,
    show_default=True,
    help="completion_window: lines not finished by then end as batch_expired.",
)
@click.option("--wait", is_flag=True, help="Follow the batch until it ends.")
@idempotency_key_option("uploads the file or starts the batch twice", bulk=True)
@timeout_option
@config_option
@json_option
def create_command(
    file: Path,
    window: str,
    wait: bool,
    idempotency_key: str | None,
    timeout: float | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Upload FILE (OpenAI Batch input JSONL) and start a batch on the server.

    With --wait the batch id is said on stderr before following it. If an
    answer is lost (a timeout, a broken connection), the batch may have
    started all the same: the error line gives the --idempotency-key to run
    the same command again with, which never starts it twice.
    """
    followed = _Followed()
    # Made here, not in the library, so that a lost answer can name it.
    key = idempotency_key or new_idempotency_key()
    with _cut_short(followed, as_json), make_client(config_path) as client:
        try:
            uploaded = client.batches.upload(file, idempotency_key=f"{key}-file")
            batch = _create_or_clean_up(client, uploaded.id, window, f"{key}-batch")
        except APIError as exc:
            if not exc.answer_lost:
                raise
            raise click.ClickException(lost_batch(exc, key)) from None
        followed.saw(batch)
        if wait:
            click.echo(
                f"Batch created: {batch.id} (input file {uploaded.id}); waiting for it to end "
                "(Ctrl-C stops waiting, not the batch)",
                err=True,
            )
            batch = _follow(client, followed, timeout)
    if wait:
        _show_followed(batch, as_json)
    elif as_json:
        _show(batch, as_json)
    else:
        click.echo(f"Batch created: {batch.id} (input file {uploaded.id})")
        click.echo(f"Follow it with: openbeepboop-client batch status {batch.id} --wait")


@batch_group.command("status")
@_batch_id_argument
@click.option("--wait", is_flag=True, help="Follow the batch until it ends.")
@timeout_option
@config_option
@json_option
def status_command(
    batch_id: str, wait: bool, timeout: float | None, config_path: Path | None, as_json: bool
) -> None:
    """Show a batch: status and request counts (with --wait, once it has ended)."""
    if not wait:
        with make_client(config_path) as client:
            _show(client.batches.retrieve(batch_id), as_json)
        return
    followed = _Followed(batch_id)
    with _cut_short(followed, as_json), make_client(config_path) as client:
        followed.saw(client.batches.retrieve(batch_id))
        batch = _follow(client, followed, timeout)
    _show_followed(batch, as_json)


@batch_group.command("results")
@_batch_id_argument
@click.option(
    "-o", "--output", type=output_file, required=True, help="Where to write output lines."
)
@click.option("--errors-out", type=output_file, default=None, help="Where to write error lines.")
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
@_batch_id_argument
@config_option
@json_option
def cancel_command(batch_id: str, config_path: Path | None, as_json: bool) -> None:
    """Cancel a batch: queued lines stop now, running ones finish."""
    with make_client(config_path) as client:
        batch = client.batches.cancel(batch_id)
    _show(batch, as_json)
