"""``openbeepboop-server nodes``: the nodes the registry has seen."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from openbeepboop_schemas import escape_control

from openbeepboop_server.cli.options import (
    config_option,
    format_table,
    format_time,
    open_database,
    read_settings,
)
from openbeepboop_server.queue.service import QueueService


@click.command()
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@config_option
def nodes(as_json: bool, config_path: Path | None) -> None:
    """Nodes seen: id, key name, version, models, last seen."""
    settings = read_settings(config_path)
    with open_database(settings) as db:
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
    # A version or model name stored by an older server may hold control
    # characters: escaped, they cannot act on the terminal or split a row.
    rows = [
        [
            escape_control(cell)
            for cell in (
                node.node_id,
                node.key_name,
                node.version or "-",
                ",".join(node.models),
                f"{format_time(node.last_seen)} ({_ago(now - node.last_seen)})",
            )
        ]
        for node in seen
    ]
    click.echo(format_table(["NODE", "KEY", "VERSION", "MODELS", "LAST SEEN"], rows))


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    if seconds < 172800:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"
