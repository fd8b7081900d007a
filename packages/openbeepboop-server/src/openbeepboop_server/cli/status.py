"""``openbeepboop-server status``: the pool at a glance, read from the database.

The same builder as ``GET /v1/status`` and the status page
(:meth:`QueueService.pool_status`), the same text as ``openbeepboop-client
status`` (:func:`openbeepboop_schemas.format_pool_status`); works while the
server is stopped, since it needs only the database.
"""

from __future__ import annotations

from pathlib import Path

import click
from openbeepboop_schemas import format_pool_status

from openbeepboop_server.cli.options import config_option, open_database, read_settings
from openbeepboop_server.queue.service import QueueService


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The GET /v1/status JSON instead of tables.")
@config_option
def status(as_json: bool, config_path: Path | None) -> None:
    """Queues per model, nodes online, throughput, error rate and recent failures."""
    settings = read_settings(config_path)
    with open_database(settings) as db:
        pool = QueueService(db, settings.queue.policy()).pool_status()
    click.echo(pool.model_dump_json(indent=2) if as_json else format_pool_status(pool))
