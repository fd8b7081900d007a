"""Operator commands on the database: ``migrate``, ``keys create|list|revoke``, ``nodes``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import click
from openbeepboop_schemas import Role

from openbeepboop_server.cli.options import config_option, configure_logging, read_settings
from openbeepboop_server.config import Settings, display_url
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import ensure_current, pending_revisions, upgrade_to_head
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.service import QueueService

MAX_KEY_NAME_LENGTH = 64


@contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    db = Database.connect(
        settings.database.url, sqlite_synchronous=settings.database.sqlite_synchronous
    )
    try:
        ensure_current(db)
        yield db
    finally:
        db.dispose()


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(header), *(len(row[i]) for row in rows)) if rows else len(header)
        for i, header in enumerate(headers)
    ]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)


@click.command()
@config_option
def migrate(config_path: Path | None) -> None:
    """Apply pending database migrations (safe to run on an up-to-date database)."""
    configure_logging()
    settings = read_settings(config_path)
    url = settings.database.url
    pending = pending_revisions(url)
    if not pending:
        click.echo(f"Database is up to date: {display_url(url)}")
        return
    upgrade_to_head(url)
    click.echo(f"Applied {len(pending)} migration(s) ({', '.join(pending)}) to {display_url(url)}")


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
    help="ADMIN: everything; NODE: the queue endpoints; USER: submit and poll.",
)
@click.option("--name", required=True, callback=_check_name, help="A unique name for the key.")
@config_option
def create_key(role: str, name: str, config_path: Path | None) -> None:
    """Create a key and print it (only this once)."""
    configure_logging()
    with _database(read_settings(config_path)) as db:
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
    configure_logging()
    with _database(read_settings(config_path)) as db:
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
            _when(info.created_at),
            "revoked " + _when(info.revoked_at) if info.revoked_at else "active",
        ]
        for info in infos
    ]
    click.echo(_table(["NAME", "ROLE", "CREATED", "STATUS"], rows))


@keys.command("revoke")
@click.argument("name")
@config_option
def revoke_key(name: str, config_path: Path | None) -> None:
    """Revoke a key: it stops working on its next request."""
    configure_logging()
    with _database(read_settings(config_path)) as db:
        revoked = KeyService(db).revoke(name)
    if not revoked:
        raise click.ClickException(f"no active key named '{name}'")
    click.echo(f"Revoked key '{name}'.")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@config_option
def nodes(as_json: bool, config_path: Path | None) -> None:
    """Nodes seen: id, key name, version, models, last seen."""
    configure_logging()
    settings = read_settings(config_path)
    with _database(settings) as db:
        seen = QueueService(db, settings.queue.policy()).list_nodes()
    if as_json:
        for node in seen:
            click.echo(
                json.dumps(
                    {
                        "node_id": node.node_id,
                        "key_name": node.key_name,
                        "version": node.version,
                        "models": list(node.models),
                        "last_seen": node.last_seen,
                    }
                )
            )
        return
    if not seen:
        click.echo("No node has connected yet.")
        return
    now = time.time()
    rows = [
        [
            node.node_id,
            node.key_name,
            node.version or "-",
            ",".join(node.models),
            f"{_when(node.last_seen)} ({_ago(now - node.last_seen)})",
        ]
        for node in seen
    ]
    click.echo(_table(["NODE", "KEY", "VERSION", "MODELS", "LAST SEEN"], rows))


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    if seconds < 172800:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"
