"""``openbeepboop-server keys create|list|revoke``: the API keys."""

from __future__ import annotations

import json
from pathlib import Path

import click
from openbeepboop_schemas import Role

from openbeepboop_server.cli.options import (
    config_option,
    format_table,
    format_time,
    open_database,
    read_settings,
)
from openbeepboop_server.keys import KeyService

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
@config_option
def create_key(role: str, name: str, config_path: Path | None) -> None:
    """Create a key and print it (only this once)."""
    with open_database(read_settings(config_path)) as db:
        key, info = KeyService(db).create(Role(role.upper()), name)
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
        ]
        for info in infos
    ]
    click.echo(format_table(["NAME", "ROLE", "CREATED", "STATUS"], rows))


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
