"""One-job commands: ``submit``, ``poll``, ``cancel``, ``list``, ``models``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from openbeepboop_schemas import NOT_FOUND, JobStatus

from openbeepboop.cli.errors import WaitTimedOut
from openbeepboop.cli.options import (
    config_option,
    json_option,
    make_client,
    stderr_is_terminal,
    timeout_option,
)
from openbeepboop.cli.output import echo_entries, echo_json, echo_warnings
from openbeepboop.cli.waiting import wait_for


@click.command("submit")
@click.argument("prompt")
@click.option("--model", "-m", default=None, help="Model to ask for (default: default_model).")
@click.option("--system", default=None, help="A system message to put before the prompt.")
@click.option("--wait", is_flag=True, help="Wait for the job and print its poll entry.")
@click.option(
    "--priority",
    type=int,
    default=None,
    help="Higher is claimed first (default 0); at most your key's max priority.",
)
@timeout_option
@config_option
@json_option
def submit_command(
    prompt: str,
    model: str | None,
    system: str | None,
    wait: bool,
    priority: int | None,
    timeout: float | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Submit PROMPT as one chat completion job.

    Without --wait prints the job id; with --wait prints the poll JSON array
    once the job has finished (whether it completed, failed or was cancelled).
    A warning from the server (no node serves the model right now: the job
    waits until one does) is printed on stderr. With --timeout the wait ends
    after that many seconds: the array as it stands, one line saying where
    the job is, exit 124; the job stays on the server.
    """
    messages = [{"role": "user", "content": prompt}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    with make_client(config_path) as client:
        if not (model or client.default_model):
            raise click.ClickException(
                "no model: pass --model, or set a default "
                "(openbeepboop-client setup --default-model NAME)"
            )
        job = client.chat.completions.create(model=model, messages=messages, priority=priority)
        echo_warnings(job.warnings)
        if not wait:
            if as_json:
                echo_json(job.to_dict())
            else:
                click.echo(f"Job submitted successfully. ID: {job.id}")
            return
        if not stderr_is_terminal():
            # No status line for a log file: one line, so the id is there if the wait is cut short.
            limit = "" if timeout is None else f", up to {timeout:g}s"
            click.echo(f"Waiting for job {job.id} (model {job.model}){limit}...", err=True)
        try:
            entries = wait_for(client, [job.id], timeout=timeout, model=job.model)
        except WaitTimedOut as exc:
            echo_entries(exc.entries)
            raise
        echo_entries(entries)


@click.command("poll")
@click.argument("ids", nargs=-1, required=True)
@click.option("--wait", is_flag=True, help="Wait until every job has finished.")
@timeout_option
@config_option
def poll_command(
    ids: tuple[str, ...], wait: bool, timeout: float | None, config_path: Path | None
) -> None:
    """Print the JSON array of poll entries of one or more job IDS.

    An id the server does not know (or that belongs to another key) comes back
    with status NOT_FOUND; the array is printed and the exit status is 1. With
    --wait and --timeout, a wait that runs out prints the array as it stands,
    one line naming the unfinished jobs, and exits 124.
    """
    with make_client(config_path) as client:
        if wait:
            try:
                entries = wait_for(client, ids, timeout=timeout)
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
    """Cancel one or more jobs by ID (finished jobs stay as they are)."""
    with make_client(config_path) as client:
        entries = [client.jobs.cancel(job_id) for job_id in ids]
    if as_json:
        echo_entries(entries)
        return
    for entry in entries:
        if entry.status == JobStatus.CANCELLED.value:
            click.echo(f"{entry.id}: CANCELLED")
        else:
            click.echo(f"{entry.id}: {entry.status} (already finished; not cancelled)")


def _when(timestamp: int | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


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
    for entry in page.data:
        click.echo(
            f"{entry.id}  {entry.status:<10}  {entry.model or '-':<24}  {_when(entry.created_at)}"
        )
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
        click.echo(card.id)


__all__ = [
    "cancel_command",
    "list_command",
    "models_command",
    "poll_command",
    "submit_command",
]
