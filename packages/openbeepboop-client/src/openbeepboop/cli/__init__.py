"""``openbeepboop-client``: submit jobs and collect their results from a shell.

Expected failures (unreachable server, rejected key, unknown job, bad file,
missing config) end as one ``Error: ...`` line on stderr and a non-zero exit,
never a traceback; ``-v`` shows what happened on the wire (keys never).
"""

from __future__ import annotations

import logging

import click

from openbeepboop.cli._batch import results_command, submit_file_command, wait_command
from openbeepboop.cli._errors import GuardedGroup
from openbeepboop.cli._jobs import (
    cancel_command,
    list_command,
    models_command,
    poll_command,
    submit_command,
)
from openbeepboop.cli._setup import setup_command

__all__ = ["main"]


@click.group(cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv: HTTP detail).")
@click.version_option(package_name="openbeepboop-client", prog_name="openbeepboop-client")
def main(verbose: int) -> None:
    """Submit LLM jobs to an OpenBeepBoop queue server and collect the results later."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        # httpx logs every request line at INFO; -v is about our own decisions.
        logging.getLogger("httpx").setLevel(logging.WARNING)


for _command in (
    setup_command,
    submit_command,
    poll_command,
    cancel_command,
    list_command,
    models_command,
    submit_file_command,
    results_command,
    wait_command,
):
    main.add_command(_command)
