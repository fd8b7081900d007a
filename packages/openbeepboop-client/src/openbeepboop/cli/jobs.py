"""One-job commands: ``submit``, ``poll``, ``cancel``, ``list``, ``models``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import click
from openbeepboop_schemas import NOT_FOUND, JobStatus, PollEntry, escape_control

from openbeepboop._exceptions import APIError
from openbeepboop._resources.chat import new_idempotency_key
from openbeepboop.cli.answers import echo_answer
from openbeepboop.cli.cancel_report import cancel_line
from openbeepboop.cli.errors import WaitTimedOut, lost_submit
from openbeepboop.cli.options import (
    config_option,
    idempotency_key_option,
    json_option,
    make_client,
    progress_option,
    stderr_is_terminal,
    stdout_is_terminal,
    text_option,
    timeout_option,
)
from openbeepboop.cli.output import echo_entries, echo_json, echo_warnings
from openbeepboop.cli.waiting import wait_for


def _answer_as_text(as_json: bool, as_text: bool) -> bool:
    """Whether ``submit --wait`` prints the answer's text (True) or the poll JSON array.

    ``--json`` and ``--text`` decide; otherwise a person at a terminal gets the
    text and a pipe or a file gets the JSON array, as the contract has it.
    """
    if as_json and as_text:
        raise click.UsageError("--json and --text exclude each other")
    if as_json or as_text:
        return as_text
    return stdout_is_terminal()


@click.command("submit")
@click.argument("prompt")
@click.option("--model", "-m", default=None, help="Model to ask for (default: default_model).")
@click.option("--system", default=None, help="A system message to put before the prompt.")
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Longest answer, in tokens (default: the model's own limit).",
)
@click.option("--wait", is_flag=True, help="Wait for the job, then print its answer (see below).")
@click.option(
    "--priority",
    type=int,
    default=None,
    help="Higher is claimed first (default 0); at most your key's max priority.",
)
@idempotency_key_option("queues a second job")
@timeout_option
@progress_option
@config_option
@json_option
@text_option
def submit_command(
    prompt: str,
    model: str | None,
    system: str | None,
    max_tokens: int | None,
    wait: bool,
    priority: int | None,
    idempotency_key: str | None,
    timeout: float | None,
    progress: bool | None,
    config_path: Path | None,
    as_json: bool,
    as_text: bool,
) -> None:
    """Submit PROMPT as one chat completion job.

    Without --wait prints the job id (--json: the job object). With --wait
    it waits until the job has finished, then prints, when stdout is a
    terminal, the answer's text (a truncated answer is marked on stderr; a
    failed or cancelled job is one Error line and exit 1), and when stdout is
    a pipe or a file the poll JSON array, as `poll` prints it, whatever the
    outcome (exit 0). --json forces the array, --text forces the text.

    While it waits, a status line on stderr (a terminal's, or --progress)
    says where the job stands. A warning from the server (no node serves the
    model right now: the job waits until one does) is printed on stderr.
    With --timeout the wait ends after that many seconds: one line saying
    where the job is, exit 124 (the array as it stands on stdout, in JSON
    mode); the job stays on the server.

    If the submit's answer is lost (a timeout, a broken connection), the job
    may be queued all the same: the error line gives the --idempotency-key
    to run the same command again with, which never queues it twice.
    """
    text_answer = _answer_as_text(as_json, as_text) if wait else False
    if as_text and not wait:
        raise click.UsageError("--text prints the answer, so it needs --wait")
    messages = [{"role": "user", "content": prompt}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    with make_client(config_path) as client:
        if not (model or client.default_model):
            raise click.ClickException(
                "no model: pass --model, or set a default "
                "(openbeepboop-client setup --default-model NAME; "
                "openbeepboop-client models lists the served ones)"
            )
        # The key is made here, not in the library, so that a lost answer can name it.
        key = idempotency_key or new_idempotency_key()
        extra = {} if max_tokens is None else {"max_tokens": max_tokens}
        try:
            job = client.chat.completions.create(
                model=model, messages=messages, priority=priority, idempotency_key=key, **extra
            )
        except APIError as exc:
            if not exc.answer_lost:
                raise
            raise click.ClickException(lost_submit(exc, key, config_path)) from None
        echo_warnings(job.warnings)
        if not wait:
            if as_json:
                echo_json(job.to_dict())
            else:
                click.echo(f"Job submitted successfully. ID: {job.id}")
            return
        show = stderr_is_terminal() if progress is None else progress
        if not show and progress is None:
            # No status line for a log file: one line, so the id is there if the wait is cut short.
            limit = "" if timeout is None else f", up to {timeout:g}s"
            click.echo(f"Waiting for job {job.id} (model {job.model}){limit}...", err=True)
        try:
            entries = wait_for(client, [job.id], timeout=timeout, model=job.model, show=show)
        except WaitTimedOut as exc:
            if not text_answer:
                echo_entries(exc.entries)
            raise
    if text_answer:
        echo_answer(entries[0])
    else:
        echo_entries(entries)


@click.command("poll")
@click.argument("ids", nargs=-1, required=True)
@click.option("--wait", is_flag=True, help="Wait until every job has finished.")
@timeout_option
@progress_option
@config_option
def poll_command(
    ids: tuple[str, ...],
    wait: bool,
    timeout: float | None,
    progress: bool | None,
    config_path: Path | None,
) -> None:
    """Print the JSON array of poll entries of one or more job IDS.

    An id the server does not know (or that belongs to another key) comes back
    with status NOT_FOUND; the array is printed and the exit status is 1. With
    --wait and --timeout, a wait that runs out prints the array as it stands,
    one line naming the unfinished jobs, and exits 124. The array is the
    contract scripts read: it is printed whether or not stdout is a terminal;
    the status line of --wait goes to stderr only (a terminal's, or --progress).
    """
    with make_client(config_path) as client:
        if wait:
            try:
                entries = wait_for(client, ids, timeout=timeout, show=progress)
            except WaitTimedOut as exc:
                echo_entries(exc.entries)
                raise
        else:
            entries = client.jobs.poll(ids)
    echo_entries(entries)
    unknown = [entry.id for entry in entries if entry.status == NOT_FOUND]
    if unknown:
        raise click.ClickException(f"no such job: {', '.join(dict.fromkeys(unknown))}")


@click.command("cancel")
@click.argument("ids", nargs=-1, required=True)
@config_option
@json_option
def cancel_command(ids: tuple[str, ...], config_path: Path | None, as_json: bool) -> None:
    """Cancel one or more jobs by ID.

    Says for each job whether this cancel stopped it, or it was already
    cancelled or finished (and is left as it was). --json prints the entries
    after the cancel, as `poll` would.
    """
    with make_client(config_path) as client:
        before = {} if as_json else {entry.id: entry for entry in client.jobs.poll(ids)}
        entries = [client.jobs.cancel(job_id) for job_id in ids]
    if as_json:
        echo_entries(entries)
        return
    for entry in entries:
        click.echo(cancel_line(before.get(entry.id), entry))


def _when(timestamp: int | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


#: The columns of ``list``, as its header row names them.
LIST_HEADER = ("ID", "STATUS", "MODEL", "CREATED")


def job_table(entries: Sequence[PollEntry]) -> list[str]:
    """``list``'s rows under a header row, each column as wide as its widest cell."""
    rows = [LIST_HEADER] + [
        (entry.id, entry.status, escape_control(entry.model or "-"), _when(entry.created_at))
        for entry in entries
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(LIST_HEADER) - 1)]
    last = len(LIST_HEADER) - 1  # the last column is not padded: no trailing blanks
    return ["  ".join([*(row[i].ljust(widths[i]) for i in range(last)), row[last]]) for row in rows]


@click.command("list")
@click.option(
    "--status",
    type=click.Choice([status.value for status in JobStatus], case_sensitive=False),
    default=None,
    help="Only jobs with this status.",
)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--after", default=None, help="Continue after this job id (from the last page).")
@config_option
@json_option
def list_command(
    status: str | None, limit: int, after: str | None, config_path: Path | None, as_json: bool
) -> None:
    """List your jobs, newest first."""
    with make_client(config_path) as client:
        page = client.jobs.list(status=status.upper() if status else None, limit=limit, after=after)
    if as_json:
        echo_json(page.model_dump(mode="json", exclude_unset=True))
        return
    if not page.data:
        click.echo("No jobs.")
    else:
        for row in job_table(page.data):
            click.echo(row)
    if page.has_more and page.next_after:
        click.echo(f"More: openbeepboop-client list --after {page.next_after}", err=True)


@click.command("models")
@config_option
@json_option
def models_command(config_path: Path | None, as_json: bool) -> None:
    """List the models the server's nodes can serve right now."""
    with make_client(config_path) as client:
        models = client.models.list()
    if as_json:
        echo_json(models.model_dump(mode="json"))
        return
    if not models.data:
        click.echo("No models: no node has been seen recently.")
    for card in models.data:
        # A name a node declared to an older server may hold control characters.
        click.echo(escape_control(card.id))


__all__ = [
    "cancel_command",
    "list_command",
    "models_command",
    "poll_command",
    "submit_command",
]
