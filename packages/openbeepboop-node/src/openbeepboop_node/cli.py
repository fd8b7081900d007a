"""``openbeepboop-node``: setup, run (daemon) and batch (cron).

Expected failures (bad config, unreachable server, refused key) end with one
line on stderr and exit status 1, never a traceback. ``run`` stops cleanly on
the first SIGINT/SIGTERM and exits at once on the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from openbeepboop_node import wizard
from openbeepboop_node.config import default_config_path, load_config, write_config
from openbeepboop_node.exceptions import ConfigError, OpenBeepBoopNodeError, ServerUnavailableError
from openbeepboop_node.worker import Node, RunSummary

logger = logging.getLogger("openbeepboop_node")

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status after a second signal cut a graceful shutdown short.
EXIT_INTERRUPTED = 130
#: Libraries whose INFO/DEBUG chatter only ``-vv`` shows.
NOISY_LOGGERS = (
    "httpx",
    "httpcore",
    "openai",
    "aiohttp",
    "LiteLLM",
    "LiteLLM Router",
    "LiteLLM Proxy",
    "asyncio",
)


class CommandError(click.ClickException):
    """An expected failure: printed as one line, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"openbeepboop-node: error: {self.format_message()}", err=True)


def _version() -> str:
    from openbeepboop_node import __version__

    return __version__


def _config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Path of node_config.toml (default: the user config directory).",
    )(func)


def _verbosity_options(func: F) -> F:
    func = click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")(func)
    return click.option(
        "-v", "--verbose", count=True, help="More detail (-vv: also HTTP and LiteLLM)."
    )(func)


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr: INFO by default, DEBUG with -v, WARNING with -q."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="openbeepboop-node", prog_name="openbeepboop-node")
def main() -> None:
    """OpenBeepBoop node: pulls LLM jobs from a queue server and runs them via LiteLLM."""


@main.command()
@_config_option
@click.option("--non-interactive", is_flag=True, help="Never prompt; missing values are errors.")
@click.option("--server-url", help="Queue server URL, e.g. http://127.0.0.1:8000.")
@click.option("--api-key", help="API key with the NODE (or ADMIN) role.")
@click.option("--node-id", help="This node's name (default: the host name).")
@click.option("--concurrency", type=click.IntRange(1, 256), help="Jobs to run at once.")
@click.option(
    "--prefetch",
    type=click.IntRange(0, 256),
    help="Most leases held beyond --concurrency, waiting for a slot (default: as many).",
)
@click.option("--model", help="Model name clients ask for (added or replaced).")
@click.option("--litellm-model", help="What LiteLLM is called with, e.g. ollama_chat/llama3.")
@click.option("--api-base", help="URL of the model server, e.g. http://localhost:11434.")
@click.option("--api-key-env", help="Environment variable holding the provider's API key.")
@click.option("--model-api-key", help="The provider's API key (stored in the config file).")
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds one LLM call may take (default 600).",
)
@click.option("--temperature", type=click.FloatRange(0, 2), help="Default temperature.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Default max_tokens.")
@click.option(
    "--default",
    "defaults",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another default generation parameter (VALUE as JSON), repeatable.",
)
def setup(
    config_path: Path | None,
    non_interactive: bool,
    defaults: tuple[str, ...],
    **values: Any,
) -> None:
    """Create or update node_config.toml (wizard on a terminal, flags otherwise)."""
    path = config_path or default_config_path()
    answers = wizard.SetupAnswers(
        **values, defaults=dict(wizard.parse_default(d) for d in defaults)
    )
    interactive = not non_interactive and wizard.stdin_is_terminal()
    try:
        config = wizard.build_config(path, answers, interactive)
        write_config(config, path)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"Node config written to {path} (mode 0600).")
    click.echo(f"  server: {config.server_url}")
    click.echo(
        f"  node id: {config.node_id}, concurrency {config.concurrency}, "
        f"prefetch up to {config.prefetch_leases()}"
    )
    for model in config.models:
        where = f" @ {model.api_base}" if model.api_base else ""
        click.echo(f"  model {model.name} -> {model.litellm_model}{where}")
    click.echo(
        "Start it with: openbeepboop-node run" + (f" --config {path}" if config_path else "")
    )


@main.command()
@_config_option
@_verbosity_options
def run(config_path: Path | None, verbose: int, quiet: bool) -> None:
    """Work as a daemon: long-poll, run jobs, heartbeat; stop cleanly on SIGINT/SIGTERM."""
    configure_logging(verbose, quiet)
    summary = _run_node(config_path, batch=False)
    logger.info(
        "stopped: %d completed, %d failed, %d released",
        summary.completed,
        summary.failed,
        summary.released,
    )


@main.command()
@_config_option
@_verbosity_options
def batch(config_path: Path | None, verbose: int, quiet: bool) -> None:
    """Process everything queued for this node's models, deliver it, exit (for cron)."""
    configure_logging(verbose, quiet)
    summary = _run_node(config_path, batch=True)
    logger.info(
        "batch done: %d completed, %d failed, %d released",
        summary.completed,
        summary.failed,
        summary.released,
    )


def _run_node(config_path: Path | None, batch: bool) -> RunSummary:
    try:
        config = load_config(config_path)
        config.check_keys()
        node = Node(config, version=_version())
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    try:
        summary = asyncio.run(_serve(node, batch))
    except OpenBeepBoopNodeError as exc:
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:  # only where signal handlers cannot be installed
        click.echo("openbeepboop-node: interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if batch and summary.undelivered:
        raise CommandError(
            str(
                ServerUnavailableError(
                    f"{summary.undelivered} result(s) could not be delivered to "
                    f"{config.server_url}; they are kept and sent by the next run"
                )
            )
        )
    return summary


async def _serve(node: Node, batch: bool) -> RunSummary:
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        if node.stopping:
            click.echo(f"openbeepboop-node: {name} again, exiting now", err=True)
            node.persist_now()
            os._exit(EXIT_INTERRUPTED)
        logger.warning("%s: finishing running jobs, then exiting (again to exit now)", name)
        node.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available on Windows: there the default Ctrl-C handling applies.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signal.Signals(signum).name)
    return await (node.run_batch() if batch else node.run())
