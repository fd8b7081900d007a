"""``openbeepboop-server keys create|update|list|revoke``: the API keys.

Fair share (``--weight``, ``--max-priority``), quotas, scopes and expiry
(``--max-queued``, ``--rate-limit``, ``--models``, ``--node-id``,
``--expires``) are set at ``create`` and changed with ``update``; the last
five flags are parsed in :mod:`.key_settings`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from openbeepboop_schemas import MAX_PRIORITY, MIN_PRIORITY, Role

from openbeepboop_server.cli.key_settings import (
    BoundedInt,
    describe_limits,
    given_settings,
    settings_from,
    settings_options,
)
from openbeepboop_server.cli.options import (
    config_option,
    format_table,
    format_time,
    open_database,
    read_settings,
)
from openbeepboop_server.errors import InvalidKeySettings
from openbeepboop_server.keys import (
    DEFAULT_MAX_PRIORITY,
    DEFAULT_WEIGHT,
    MAX_WEIGHT,
    KeyInfo,
    KeyService,
)

MAX_KEY_NAME_LENGTH = 64


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


def _check_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_KEY_NAME_LENGTH or not value.isprintable():
        raise click.BadParameter(f"must be 1 to {MAX_KEY_NAME_LENGTH} printable characters")
    return value


@keys.command("create")
@click.option(
    "--role",
    required=True,
    type=click.Choice([role.value for role in Role], case_sensitive=False),
    help=(
        "ADMIN: everything; NODE: the queue endpoints; USER: submit and poll; "
        "METRICS: read-only /metrics and the pool status."
    ),
)
@click.option("--name", required=True, callback=_check_name, help="A unique name for the key.")
@click.option(
    "--weight",
    type=BoundedInt(1, MAX_WEIGHT),
    default=DEFAULT_WEIGHT,
    show_default=True,
    help="Fair share: claims for this key's jobs relative to other keys' (3 = three to one).",
)
@click.option(
    "--max-priority",
    type=BoundedInt(MIN_PRIORITY, MAX_PRIORITY),
    default=DEFAULT_MAX_PRIORITY,
    show_default=True,
    help="The highest job priority this key may submit with.",
)
@settings_options
@config_option
def create_key(
    role: str,
    name: str,
    weight: int,
    max_priority: int,
    max_queued: str | None,
    rate_limit: str | None,
    models: str | None,
    node_id: str | None,
    expires: str | None,
    config_path: Path | None,
) -> None:
    """Create a key and print it (only this once)."""
    settings = settings_from(given_settings(max_queued, rate_limit, models, node_id, expires))
    with open_database(read_settings(config_path)) as db:
        try:
            key, info = KeyService(db).create(
                Role(role.upper()), name, settings, weight=weight, max_priority=max_priority
            )
        except InvalidKeySettings as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(key)
    # The stored expiry is shown so that a typo in --expires is seen at once.
    click.echo(
        f"Created {info.role.value} key '{info.name}' (expires {_expiry(info)}). "
        "Store it now: it is not shown again.",
        err=True,
    )


@keys.command("update")
@click.argument("name")
@click.option(
    "--weight",
    type=BoundedInt(1, MAX_WEIGHT),
    default=None,
    help="Fair share: claims for this key's jobs relative to other keys'.",
)
@click.option(
    "--max-priority",
    type=BoundedInt(MIN_PRIORITY, MAX_PRIORITY),
    default=None,
    help="The highest job priority this key may submit with.",
)
@settings_options
@config_option
def update_key(
    name: str,
    weight: int | None,
    max_priority: int | None,
    max_queued: str | None,
    rate_limit: str | None,
    models: str | None,
    node_id: str | None,
    expires: str | None,
    config_path: Path | None,
) -> None:
    """Change a key's share, quotas, scopes or expiry (only the flags given; 'none' lifts one).

    The next claim (weight) or request with the key (the rest) obeys them, on
    every replica; jobs already queued keep the priority they were submitted with.
    """
    changes = given_settings(max_queued, rate_limit, models, node_id, expires)
    if not changes and weight is None and max_priority is None:
        raise click.ClickException(
            "nothing to change: give --weight, --max-priority, --max-queued, --rate-limit, "
            "--models, --node-id or --expires"
        )
    with open_database(read_settings(config_path)) as db:
        service = KeyService(db)
        try:
            info = service.update(name, changes) if changes else None
            if weight is not None or max_priority is not None:
                info = service.update_share(name, weight=weight, max_priority=max_priority)
        except InvalidKeySettings as exc:
            raise click.ClickException(str(exc)) from None
    if info is None:
        raise click.ClickException(f"no key named '{name}'")
    click.echo(
        f"Updated key '{name}': weight {info.weight}, max priority {info.max_priority}, "
        f"limits {describe_limits(info.settings)}, expires {_expiry(info)}."
    )


def _expiry(info: KeyInfo) -> str:
    expires_at = info.settings.expires_at
    return "never" if expires_at is None else format_time(expires_at)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@config_option
def list_keys(as_json: bool, config_path: Path | None) -> None:
    """List keys (names and roles; the keys themselves are never stored)."""
    now = time.time()
    with open_database(read_settings(config_path)) as db:
        infos = KeyService(db).list()
    if as_json:
        for info in infos:
            click.echo(
                json.dumps(
                    {
                        "name": info.name,
                        "role": info.role.value,
                        "created_at": info.created_at,
                        "revoked_at": info.revoked_at,
                        "weight": info.weight,
                        "max_priority": info.max_priority,
                        "status": info.status(now),
                        "max_queued": info.settings.max_queued,
                        "rate_limit": info.settings.rate_limit,
                        "models": (
                            None if info.settings.models is None else list(info.settings.models)
                        ),
                        "node_id": info.settings.node_id,
                        "expires_at": info.settings.expires_at,
                    }
                )
            )
        return
    rows = [
        [
            info.name,
            info.role.value,
            format_time(info.created_at),
            _status(info, now),
            str(info.weight),
            str(info.max_priority),
            describe_limits(info.settings),
            _expiry(info),
        ]
        for info in infos
    ]
    headers = ["NAME", "ROLE", "CREATED", "STATUS", "WEIGHT", "MAX PRIORITY", "LIMITS", "EXPIRES"]
    click.echo(format_table(headers, rows))


def _status(info: KeyInfo, now: float) -> str:
    status = info.status(now)
    if status == "revoked" and info.revoked_at is not None:
        return "revoked " + format_time(info.revoked_at)
    return status


@keys.command("revoke")
@click.argument("name")
@config_option
def revoke_key(name: str, config_path: Path | None) -> None:
    """Revoke a key: it stops working on its next request."""
    with open_database(read_settings(config_path)) as db:
        revoked = KeyService(db).revoke(name)
    if not revoked:
        raise click.ClickException(f"no active key named '{name}'")
    click.echo(f"Revoked key '{name}'.")
