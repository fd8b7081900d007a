"""``openbeepboop-node``: setup (the wizard), check, run (daemon) and batch (cron).

``-v/-q`` belong to the group (``openbeepboop-node -v run``), which sets up
logging once for whichever command runs.
"""

from __future__ import annotations

import click

from openbeepboop_node.cli.check import check_command
from openbeepboop_node.cli.options import configure_logging, verbosity
from openbeepboop_node.cli.run import batch_command, run_command
from openbeepboop_node.cli.setup import setup_command

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="openbeepboop-node", prog_name="openbeepboop-node")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: also third-party libraries).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """OpenBeepBoop node: pulls LLM jobs from a queue server and runs them via LiteLLM."""
    ctx.meta["verbosity"] = verbosity(verbose, quiet)
    configure_logging(ctx.meta["verbosity"])


main.add_command(setup_command)
main.add_command(check_command)
main.add_command(run_command)
main.add_command(batch_command)
