"""``openbeepboop-server migrate``: bring the database to this code's schema."""

from __future__ import annotations

from pathlib import Path

import click

from openbeepboop_server.cli.options import config_option, read_settings
from openbeepboop_server.config import display_url
from openbeepboop_server.db.migrate import upgrade_to_head


@click.command()
@config_option
def migrate(config_path: Path | None) -> None:
    """Apply pending database migrations (safe to run on an up-to-date database)."""
    settings = read_settings(config_path)
    url = settings.database.url
    # What was pending is read under the migration lock, by the upgrade
    # itself: of two `migrate` run at once, the one that waited applies and
    # reports nothing.
    applied = upgrade_to_head(url)
    if not applied:
        click.echo(f"Database is up to date: {display_url(url)}")
        return
    click.echo(f"Applied {len(applied)} migration(s) ({', '.join(applied)}) to {display_url(url)}")
