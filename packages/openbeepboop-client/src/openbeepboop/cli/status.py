"""``openbeepboop-client status``: the pool at a glance, from ``GET /v1/status``.

Needs an ADMIN or METRICS key (the configured one, or ``OPENBEEPBOOP_API_KEY``);
a USER or NODE key ends in one line saying so, not the generic "use a USER
key" advice the job commands give.
"""

from __future__ import annotations

from pathlib import Path

import click
from openbeepboop_schemas import format_pool_status

from openbeepboop._exceptions import PermissionDeniedError
from openbeepboop.cli.options import config_option, json_option, make_client
from openbeepboop.cli.output import echo_json


@click.command("status")
@config_option
@json_option
def status_command(config_path: Path | None, as_json: bool) -> None:
    """Queues per model, nodes online, throughput, error rate and recent failures."""
    with make_client(config_path) as client:
        try:
            status = client.pool.status()
        except PermissionDeniedError:
            raise click.ClickException(
                "the pool status needs an ADMIN or METRICS key; this key's role may not read it "
                "(openbeepboop-server keys create --role METRICS --name NAME)"
            ) from None
    if as_json:
        echo_json(status.model_dump(mode="json"))
    else:
        click.echo(format_pool_status(status))


__all__ = ["status_command"]
