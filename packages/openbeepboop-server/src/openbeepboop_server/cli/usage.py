"""``openbeepboop-server usage``: usage per key, read from the database.

The same report as ``GET /v1/usage`` (:meth:`QueueService.usage`) and the
same table as ``openbeepboop-client usage``
(:func:`openbeepboop_schemas.format_usage`); works while the server is
stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from openbeepboop_schemas import format_usage

from openbeepboop_server.cli.key_settings import parse_instant
from openbeepboop_server.cli.options import config_option, open_database, read_settings
from openbeepboop_server.queue.service import QueueService


def _instant(name: str, raw: str | None, now: float) -> float | None:
    """A window bound: an ISO date/time, or a duration meaning that long ago."""
    if raw is None:
        return None
    try:
        when = parse_instant(raw, now=now, ago=True)
    except ValueError as exc:
        raise click.ClickException(f"{name}: {exc} (that long ago)") from None
    if when is None:
        raise click.ClickException(f"{name}: expected a date/time or a duration")
    return when


@click.command()
@click.option("--key", "key_name", help="Only this key.")
@click.option("--since", help="From: ISO date/time (UTC unless zoned) or a duration ago (24h).")
@click.option("--until", help="To (exclusive), as --since; default now.")
@click.option("--json", "as_json", is_flag=True, help="The GET /v1/usage JSON instead of a table.")
@config_option
def usage(
    key_name: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
    config_path: Path | None,
) -> None:
    """Jobs by final status, tokens and LLM seconds per key, in whole hours."""
    now = time.time()
    start, end = _instant("--since", since, now), _instant("--until", until, now)
    if start is not None and end is not None and end <= start:
        raise click.ClickException("--until: must be later than --since")
    settings = read_settings(config_path)
    with open_database(settings) as db:
        report = QueueService(db, settings.queue.policy()).usage(key_name, start, end)
    if key_name is not None and not report.data:
        raise click.ClickException(f"no key named '{key_name}'")
    click.echo(report.model_dump_json(indent=2) if as_json else format_usage(report))
