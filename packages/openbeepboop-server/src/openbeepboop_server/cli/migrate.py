"""``openbeepboop-server migrate``: bring the database to this code's schema."""

from __future__ import annotations

from pathlib import Path

import click

from openbeepboop_server.cli.options import config_option, read_settings
from openbeepboop_server.config import display_url
from openbeepboop_server.db.migrate import pending_revisions, upgrade_to_head


@click.command()
@config_option
def migrate(config_path: Path | None) -> None:
    """Apply pending database migrations (safe to run on an up-to-date database)."""
    settings = read_settings(config_path)
    url = settings.database.url
    pending = pending_revisions(url)
    if not pending:
        click.echo(f"Database is up to date: {display_url(url)}")
        return
    upgrade_to_head(url)
    click.echo(f"Applied {len(pending)} migration(s) ({', '.join(pending)}) to {display_url(url)}")
