"""``openbeepboop-client usage``: what keys' jobs used, from ``GET /v1/usage``.

A USER key sees its own key; an ADMIN key every submitting key (or
``--key``). The table is the server's ``usage`` table
(:func:`openbeepboop_schemas.format_usage`). ``--since``/``--until`` take an
ISO 8601 date or date-time (UTC unless zoned) or a duration meaning that long
ago (``24h``, ``7d``).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path

import click
from openbeepboop_schemas import format_usage

from openbeepboop._exceptions import PermissionDeniedError
from openbeepboop.cli.options import config_option, json_option, make_client
from openbeepboop.cli.output import echo_json

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _when(name: str, raw: str | None) -> datetime | None:
    if raw is None:
        return None
    duration = _DURATION.match(raw)
    if duration is not None:
        ago = float(duration.group(1)) * _UNIT_SECONDS[duration.group(2).lower()]
        return datetime.fromtimestamp(time.time() - ago, timezone.utc)
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise click.BadParameter(
            "expected an ISO 8601 date or date-time, or a duration like 24h or 7d (ago)",
            param_hint=name,
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


@click.command("usage")
@click.option("--key", help="Only this key (ADMIN keys; a USER key may name only itself).")
@click.option("--since", help="From: ISO date/time (UTC unless zoned) or a duration ago (24h).")
@click.option("--until", help="To (exclusive), as --since; default now.")
@config_option
@json_option
def usage_command(
    key: str | None, since: str | None, until: str | None, config_path: Path | None, as_json: bool
) -> None:
    """Jobs by final status, tokens and LLM seconds per key, in whole hours."""
    start, end = _when("--since", since), _when("--until", until)
    with make_client(config_path) as client:
        try:
            report = client.usage.retrieve(key=key, since=start, until=end)
        except PermissionDeniedError as exc:
            raise click.ClickException(
                f"{exc.message} (a USER key sees only its own usage; an ADMIN key sees all)"
            ) from None
    if as_json:
        echo_json(report.model_dump(mode="json"))
    else:
        click.echo(format_usage(report))


__all__ = ["usage_command"]
