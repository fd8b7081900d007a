"""``openbeepboop-server``: setup, start, migrate, keys, nodes, status, usage, vacuum.

One module per command group (``setup.py``, ``start.py``, ``migrate.py``,
``keys.py``, ``nodes.py``, ``status.py``, ``usage.py``, ``vacuum.py``); what
they share is in ``options.py``, and ``errors.py`` turns expected failures
into one line on stderr. Only this package's command line configures
logging, once, here.
"""

from __future__ import annotations

import logging

import click

from openbeepboop_server import __version__
from openbeepboop_server.cli import keys, migrate, nodes, setup, start, status, usage, vacuum
from openbeepboop_server.cli.errors import OneLineErrors
from openbeepboop_server.cli.options import configure_logging

#: The level a command logs at without -v/-q; WARNING for those not named here.
_DEFAULT_LEVELS = {"start": logging.INFO}


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv: also third-party libraries).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(__version__, prog_name="openbeepboop-server")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """OpenBeepBoop queue server: a durable queue of LLM jobs over HTTP."""
    verbosity = -1 if quiet else min(verbose, 2)
    ctx.meta["verbosity"] = verbosity
    default = _DEFAULT_LEVELS.get(ctx.invoked_subcommand or "", logging.WARNING)
    configure_logging(verbosity, default=default)


for _command in (
    setup.setup,
    start.start,
    migrate.migrate,
    keys.keys,
    nodes.nodes,
    status.status,
    usage.usage,
    vacuum.vacuum,
):
    main.add_command(_command)

__all__ = ["main"]
