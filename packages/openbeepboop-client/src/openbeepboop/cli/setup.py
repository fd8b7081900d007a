"""``openbeepboop-client setup``: write client_config.toml.

It prompts only when ``--non-interactive`` is not given and stdin is a
terminal, asking for what the flags did not give (offering the current file's
values, and for the default model the models the server serves now: see
:mod:`openbeepboop.cli.setup_models`). Otherwise it never prompts: a required
value that neither a flag nor the existing file gives ends the command with
exit status 2 and one line naming the missing flags, never a hang.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from openbeepboop._config import (
    ConfigFile,
    check_api_key,
    default_config_path,
    normalize_base_url,
    read_config_file,
    write_config_file,
)
from openbeepboop._exceptions import ConfigError
from openbeepboop._servers import split_urls
from openbeepboop.cli.errors import MissingWithoutTerminal
from openbeepboop.cli.setup_models import ServedModels, ask_served_models, try_it_line

DEFAULT_SERVER_URL = "http://127.0.0.1:8000"


def stdin_is_terminal() -> bool:
    """True when a person can answer prompts (tests replace this)."""
    return sys.stdin.isatty()


def mask_key(key: str) -> str:
    """``sk-abcd…wxyz``: enough to recognise a key, not enough to use it."""
    if len(key) <= 12:
        return "***"
    return f"{key[:7]}…{key[-4:]}"


def _prompt_connection(
    current: ConfigFile | None, server_url: str | None, api_key: str | None
) -> tuple[str, str]:
    """Ask on the terminal for the server URL and key, if no flag gave them."""
    if server_url is None:
        server_url = click.prompt(
            "Queue server URL",
            default=(",".join(current.server_urls()) if current else None) or DEFAULT_SERVER_URL,
        )
    if api_key is None:
        existing = current.get_str("api_key") if current else None
        hint = f" [keep {mask_key(existing)}]" if existing else ""
        entered: str = click.prompt(
            f"API key (USER role){hint}",
            hide_input=True,
            default=existing or None,
            show_default=False,
        )
        api_key = entered
    return str(server_url), str(api_key)


def _say_what_is_served(served: ServedModels) -> None:
    if served.problem:
        click.echo(f"Warning: could not list the server's models: {served.problem}", err=True)
    elif served.names:
        click.echo(f"Models the server's nodes serve now: {', '.join(served.names)}")
    else:
        click.echo("No node serves a model right now (jobs wait until one does).")


def _prompt_default_model(current: ConfigFile | None, served: ServedModels) -> str | None:
    """Ask for the default model, offering the current one or the first model served."""
    _say_what_is_served(served)
    offered = (current.get_str("default_model") if current else None) or (
        served.names[0] if served.names else ""
    )
    chosen: str = click.prompt("Default model (empty for none)", default=offered)
    chosen = chosen.strip()
    if chosen and served.names and chosen not in served.names:
        click.echo(
            f"Note: no node serves {chosen!r} right now; its jobs wait until one does.", err=True
        )
    return chosen or None


@click.command("setup")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write client_config.toml (default: the user config directory).",
)
@click.option("--non-interactive", is_flag=True, help="Never prompt; take everything from flags.")
@click.option(
    "--server-url",
    "server_urls",
    multiple=True,
    help="The queue server, e.g. http://127.0.0.1:8000; repeat it (or separate with commas) "
    "to give several replicas, in order of preference.",
)
@click.option("--api-key", default=None, help="Your API key (sk-...); USER or ADMIN role.")
@click.option("--default-model", default=None, help="Model used when a request names none.")
@click.option(
    "--force",
    is_flag=True,
    help="Without a terminal: update an existing config (unset flags keep their values).",
)
def setup_command(
    config_path: Path | None,
    non_interactive: bool,
    server_urls: tuple[str, ...],
    api_key: str | None,
    default_model: str | None,
    force: bool,
) -> None:
    """Write client_config.toml (mode 0600): server URL, API key, default model."""
    server_url = ",".join(server_urls) or None
    path = config_path or default_config_path()
    current = read_config_file(path) if path.exists() else None
    interactive = not non_interactive and stdin_is_terminal()
    if interactive:
        if current is not None:
            click.echo(f"Updating {path} (Enter keeps the value shown).")
        server_url, api_key = _prompt_connection(current, server_url, api_key)
    else:
        if current is not None and not force:
            raise click.ClickException(
                f"{path} already exists; pass --force to update it "
                "(settings you do not pass keep their current values)"
            )
        if current is not None:
            server_url = server_url or ",".join(current.server_urls()) or None
            api_key = api_key or current.get_str("api_key")
            default_model = default_model or current.get_str("default_model")
        missing = [
            flag
            for flag, value in (("--server-url", server_url), ("--api-key", api_key))
            if not value
        ]
        if missing:
            raise MissingWithoutTerminal(missing)
    assert server_url is not None and api_key is not None  # checked or prompted above
    urls = [normalize_base_url(url) for url in split_urls(server_url)]
    if not urls:
        raise ConfigError("give a server URL (e.g. http://127.0.0.1:8000)")
    # One URL keeps the contract's `server_url`; several are `server_urls`, in order.
    values: dict[str, str | float | int | list[str]] = {
        **({"server_url": urls[0]} if len(urls) == 1 else {"server_urls": urls}),
        "api_key": check_api_key(api_key),
    }
    served = ServedModels()
    if interactive and default_model is None:
        served = ask_served_models(",".join(urls), str(values["api_key"]))
        default_model = _prompt_default_model(current, served)
    elif not default_model:
        # Only for a "Try it" line that works: the flags did not name a model.
        served = ask_served_models(",".join(urls), str(values["api_key"]))
        if served.problem:
            click.echo(f"Warning: could not list the server's models: {served.problem}", err=True)
    if default_model:
        values["default_model"] = default_model
    if current is not None:
        # Keep settings the wizard does not ask about (timeout, max_retries).
        for key in ("timeout", "max_retries"):
            value = current.values.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[key] = value
    write_config_file(path, values)
    click.echo(f"Wrote {path} (readable by you only).")
    click.echo(f"  server_url    = {', '.join(urls)}")
    click.echo(f"  api_key       = {mask_key(str(values['api_key']))}")
    click.echo(f"  default_model = {values.get('default_model', '(none)')}")
    click.echo(try_it_line(config_path, default_model or None, served.names))
