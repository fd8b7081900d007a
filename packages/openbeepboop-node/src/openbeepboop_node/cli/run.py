"""``openbeepboop-node run`` (daemon) and ``batch`` (cron).

Expected failures (bad config, unreachable server, refused key, a backend
that stayed unreachable) end with one line on stderr and the exit status
that names them (:mod:`~openbeepboop_node.cli.errors`), never a traceback. Both stop cleanly on the
first SIGINT/SIGTERM and exit at once on the second
(:func:`~openbeepboop_node.worker.serve_with_signals`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from openbeepboop_node.cli.errors import (
    EXIT_BACKEND_UNREACHABLE,
    EXIT_SERVER_UNREACHABLE,
    CommandError,
)
from openbeepboop_node.cli.options import config_option
from openbeepboop_node.config import load_config
from openbeepboop_node.exceptions import ConfigError, OpenBeepBoopNodeError
from openbeepboop_node.worker import EXIT_INTERRUPTED, Node, serve_with_signals

logger = logging.getLogger(__name__)


def _version() -> str:
    from openbeepboop_node import __version__

    return __version__


@click.command("run")
@config_option
def run_command(config_path: Path | None) -> None:
    """Work as a daemon: long-poll, run jobs, heartbeat; stop cleanly on SIGINT/SIGTERM."""
    _run_node(config_path, batch=False)


@click.command("batch")
@config_option
def batch_command(config_path: Path | None) -> None:
    """Process everything queued for this node's models, deliver it, exit (for cron)."""
    _run_node(config_path, batch=True)


def _run_node(config_path: Path | None, batch: bool) -> None:
    """Run the node until it stops (``batch``: until the queue is drained); log what it did."""
    try:
        config = load_config(config_path)
        node = Node(config, version=_version())
    except ConfigError as exc:
        raise CommandError.from_error(exc) from None
    try:
        summary = asyncio.run(serve_with_signals(node, batch=batch))
    except OpenBeepBoopNodeError as exc:
        raise CommandError.from_error(exc) from None
    except KeyboardInterrupt:  # only where signal handlers cannot be installed
        click.echo("openbeepboop-node: interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if batch and (summary.undelivered or summary.undelivered_releases):
        what = [f"{summary.undelivered} result(s)"] if summary.undelivered else []
        if summary.undelivered_releases:
            what.append(f"{summary.undelivered_releases} lease release(s)")
        raise CommandError(
            f"{' and '.join(what)} could not be delivered to "
            f"{', '.join(config.all_server_urls())}; they are kept and sent by the next run",
            EXIT_SERVER_UNREACHABLE,
        )
    if batch and summary.backends_down:
        raise CommandError(
            f"the backend of model(s) {', '.join(summary.backends_down)} stayed unreachable "
            f"for {config.batch_backend_wait:g} s; {summary.backend_released} job(s) handed "
            "back to the queue with no attempt counted",
            EXIT_BACKEND_UNREACHABLE,
        )
    logger.info(
        "%s: %d completed, %d failed, %d released%s",
        "batch done" if batch else "stopped",
        summary.completed,
        summary.failed,
        summary.released,
        # Only when it happened: most runs never have one.
        f", {summary.not_kept} not kept by the server" if summary.not_kept else "",
    )
