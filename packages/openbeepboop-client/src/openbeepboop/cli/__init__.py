"""``openbeepboop-client``: submit jobs and collect their results from a shell.

One module per command group: ``setup`` (the wizard), ``jobs`` (one job at a
time), ``batch`` and ``batch_results`` (OpenAI Batch files: submit them, collect
their answers), ``server_batch`` (the ``batch`` group: batches the server
runs), ``status`` (the pool at a glance), ``usage`` (usage per key);
``options`` and ``output`` hold what they share, ``errors`` turns expected
failures into one line, ``no_answer`` says once when a server does not answer. Those failures
(unreachable server, rejected key, unknown job, bad file, missing config) end
as one ``Error: ...`` line on stderr and a non-zero exit, never a traceback;
``-v`` shows what happened on the wire (keys never).
"""

from __future__ import annotations

import logging
import warnings

import click

from openbeepboop._submit_warnings import SubmitWarning
from openbeepboop.cli.batch import submit_file_command
from openbeepboop.cli.batch_results import results_command, wait_command
from openbeepboop.cli.errors import GuardedGroup
from openbeepboop.cli.jobs import (
    cancel_command,
    list_command,
    models_command,
    poll_command,
    submit_command,
)
from openbeepboop.cli.server_batch import batch_group
from openbeepboop.cli.setup import setup_command
from openbeepboop.cli.status import status_command
from openbeepboop.cli.usage import usage_command

__all__ = ["main"]

#: Loggers of this package; ``-v`` opens them, ``-vv`` opens third-party ones too.
_OWN_LOGGER = "openbeepboop"


def configure_logging(verbosity: int) -> None:
    """Log to stderr: -1 quiet, 0 default (warnings), 1 our debug, 2 everyone's debug."""
    # The client's default already shows only warnings and errors, so -q equals it
    # here; it exists so that scripts ask for quiet the same way in all three CLIs.
    logging.basicConfig(
        level=logging.DEBUG if verbosity >= 2 else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger(_OWN_LOGGER).setLevel(logging.DEBUG if verbosity >= 1 else logging.NOTSET)


@click.group(cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv: also third-party libraries).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="openbeepboop-client", prog_name="openbeepboop-client")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Submit LLM jobs to an OpenBeepBoop queue server and collect the results later."""
    verbosity = -1 if quiet else min(verbose, 2)
    ctx.meta["verbosity"] = verbosity
    configure_logging(verbosity)
    # The library warns about a submit's warnings; commands print their own ``Warning:`` line.
    warnings.filterwarnings("ignore", category=SubmitWarning)


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
    status_command,
    usage_command,
    batch_group,
):
    main.add_command(_command)
