"""``openbeepboop-node check``: the checks of ``setup``, run on an existing config.

One line per check (``ok`` or ``FAILED`` and what was seen), or ``--json``;
the exit status is that of the first failed check
(:data:`~openbeepboop_node.cli.errors.EXIT_BY_KIND`), 0 when all passed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from openbeepboop_node.checks import CheckResult, run_checks
from openbeepboop_node.cli.errors import EXIT_BY_KIND
from openbeepboop_node.cli.options import config_option
from openbeepboop_node.config import default_config_path, load_config
from openbeepboop_node.exceptions import ConfigError


def _version() -> str:
    from openbeepboop_node import __version__

    return __version__


def failed_status(results: list[CheckResult]) -> int:
    """The exit status of the first failed check; 0 when every check passed."""
    for result in results:
        if not result.ok:
            return EXIT_BY_KIND[result.kind or "config"]
    return 0


@click.command("check")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def check_command(config_path: Path | None, as_json: bool) -> None:
    """Check the config: the server takes the key, each model's backend answers."""
    path = config_path or default_config_path()
    try:
        config = load_config(path)
    except ConfigError as exc:
        results = [CheckResult("config", False, str(exc), "config")]
    else:
        results = [CheckResult("config", True, str(path))]
        results += asyncio.run(run_checks(config, version=_version()))
    if as_json:
        data = {
            "ok": all(r.ok for r in results),
            "checks": [
                {"name": r.name, "ok": r.ok, "detail": r.detail, "models": r.models}
                for r in results
            ],
        }
        click.echo(json.dumps(data, indent=2))
    else:
        for result in results:
            click.echo(result.line())
    status = failed_status(results)
    if status:
        raise SystemExit(status)
