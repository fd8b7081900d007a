"""``openbeepboop-server keys create|list|update|revoke``: the API keys."""

from __future__ import annotations

import json
from pathlib import Path

import click
from openbeepboop_schemas import MAX_PRIORITY, MIN_PRIORITY, Role

from openbeepboop_server.cli.options import (
    config_option,
    format_table,
    format_time,
    open_database,
    read_settings,
)
from openbeepboop_server.keys import (
    DEFAULT_MAX_PRIORITY,
    DEFAULT_WEIGHT,
    MAX_WEIGHT,
    KeyInfo,
    KeyService,
)

MAX_KEY_NAME_LENGTH = 64


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


def _check_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_KEY_NAME_LENGTH or not value.isprintable():
        raise click.BadParameter(f"must be 1 to {MAX_KEY_NAME_LENGTH} printable characters")
    return value


@keys.command("create")
@click.option(
    "--role",
    required=True,
    type=click.Choice([role.value for role in Role], case_sensitive=False),
    help=(
        "ADMIN: everything; NODE: the queue endpoints; USER: submit and poll; "
        "METRICS: read-only /metrics and the pool status."
    ),
)
@click.option("--name", required=True, callback=_check_name, help="A unique name for the key.")
@click.option(
    "--weight",
    type=click.IntRange(1, MAX_WEIGHT),
    default=DEFAULT_WEIGHT,
    show_default=True,
    help="Fair share: claims for this key's jobs relative to other keys' (3 = three to one).",
)
@click.option(
    "--max-priority",
    type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY),
    default=DEFAULT_MAX_PRIORITY,
    show_default=True,
    help="The highest job priority this key may submit with.",
)
@config_option
def create_key(
    role: str, name: str, weight: int, max_priority: int, config_path: Path | None
) -> None:
    """Create a key and print it (only this once)."""
    with open_database(read_settings(config_path)) as db:
        key, info = KeyService(db).create(
            Role(role.upper()), name, weight=weight, max_priority=max_priority
        )
    click.echo(key)
    click.echo(
        f"Created {info.role.value} key '{info.name}'. Store it now: it is not shown again.",
        err=True,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@config_option
def list_keys(as_json: bool, config_path: Path | None) -> None:
    """List keys (names and roles; the keys themselves are never stored)."""
    with open_database(read_settings(config_path)) as db:
        infos = KeyService(db).list()
    if as_json:
        for info in infos:
            click.echo(
                json.dumps(
                    {
                        "name": info.name,
                        "role": info.role.value,
                        "created_at": info.created_at,
                        "revoked_at": info.revoked_at,
                        "weight": info.weight,
                        "max_priority": info.max_priority,
                    }
                )
            )
        return
    rows = [
        [
            info.name,
            info.role.value,
            format_time(info.created_at),
            "revoked " + format_time(info.revoked_at) if info.revoked_at else "active",
            str(info.weight),
            str(info.max_priority),
        ]
        for info in infos
    ]
    headers = ["NAME", "ROLE", "CREATED", "STATUS", "WEIGHT", "MAX PRIORITY"]
    click.echo(format_table(headers, rows))


@keys.command("update")
@click.argument("name")
@click.option(
    "--weight",
    type=click.IntRange(1, MAX_WEIGHT),
    default=None,
    help="Fair share: claims for this key's jobs relative to other keys'.",
)
@click.option(
    "--max-priority",
    type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY),
    default=None,
    help="The highest job priority this key may submit with.",
)
@config_option
def update_key(
    name: str, weight: int | None, max_priority: int | None, config_path: Path | None
) -> None:
    """Change a key's fair-share weight or priority ceiling (from its next claim or submit)."""
    if weight is None and max_priority is None:
        raise click.UsageError("nothing to change: give --weight and/or --max-priority")
    with open_database(read_settings(config_path)) as db:
        info = KeyService(db).update_share(name, weight=weight, max_priority=max_priority)
    if info is None:
        raise click.ClickException(f"no key named '{name}'")
    click.echo(_share_line(info))


def _share_line(info: KeyInfo) -> str:
    return f"Key '{info.name}': weight {info.weight}, max priority {info.max_priority}."


@keys.command("revoke")
@click.argument("name")
@config_option
def revoke_key(name: str, config_path: Path | None) -> None:
    """Revoke a key: it stops working on its next request."""
    with open_database(read_settings(config_path)) as db:
        revoked = KeyService(db).revoke(name)
    if not revoked:
        raise click.ClickException(f"no active key named '{name}'")
    click.echo(f"Revoked key '{name}'.")
