"""The flags of ``keys create`` and ``keys update``: quotas, scopes and expiry.

Each flag takes a value or a word that lifts the limit (``none``; ``never``
for ``--expires``), so ``keys update`` can set and clear with the same flags.
``--expires`` takes an ISO 8601 date or date-time (UTC unless it names a
zone) or a duration from now: a number and a unit, ``s``, ``m``, ``h``, ``d``
or ``w`` (``30d``, ``12h``). It is stored as an instant, so ``keys list``
shows when the key stops working; it must be in the future and at most
:data:`MAX_EXPIRES_DAYS` ahead (a typo like ``2001`` for ``2031``, or ``0d``,
is refused instead of making a key that is expired from birth).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, NoReturn, TypeVar

import click

from openbeepboop_server.cli.options import format_time
from openbeepboop_server.errors import InvalidKeySettings
from openbeepboop_server.keys import (
    MAX_QUOTA,
    KeySettings,
    check_model_name,
    check_node_id,
)

F = TypeVar("F", bound=Callable[..., Any])

#: Words that lift a limit or scope.
NONE_WORDS = frozenset({"none", "unlimited", "any"})
#: Words that make a key never expire.
NEVER_WORDS = frozenset({"never", "none"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
#: The furthest ``--expires`` may be: a century is "never" for any real key,
#: and every instant before it can be shown as a date (``never`` is the way
#: to say no expiry).
MAX_EXPIRES_DAYS = 36_525


def _bad(message: str, *, flag: str) -> click.ClickException:
    """A bad flag value, as the one line every expected failure is (not click's usage block)."""
    return click.ClickException(f"{flag}: {message}")


class BoundedInt(click.IntRange):
    """``--weight``, ``--max-priority``: an integer in a range, refused in one line naming
    the flag (not click's usage block), as the other flags' bad values are."""

    name = "integer"

    def fail(
        self,
        message: str,
        param: click.Parameter | None = None,
        ctx: click.Context | None = None,
    ) -> NoReturn:
        flag = param.opts[0] if param is not None and param.opts else "value"
        raise click.ClickException(f"{flag}: {message}")


def _limit(name: str, raw: str) -> int | None:
    if raw.strip().lower() in NONE_WORDS:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"expected a whole number or 'none', got {raw!r}", flag=name) from None
    if not 1 <= value <= MAX_QUOTA:
        raise _bad(f"must be between 1 and {MAX_QUOTA} (or 'none' for no limit)", flag=name)
    return value


def _models(raw: str) -> tuple[str, ...] | None:
    if raw.strip().lower() in NONE_WORDS:
        return None
    models = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not models or "*" in models:
        raise _bad("expected model names separated by commas (not '*'), or 'none'", flag="--models")
    try:
        for model in models:
            check_model_name(model)
    except InvalidKeySettings as exc:
        raise click.ClickException(str(exc)) from None
    return models


def _node_id(raw: str) -> str | None:
    value = raw.strip()
    if value.lower() in NONE_WORDS:
        return None
    try:
        check_node_id(value)
    except InvalidKeySettings as exc:
        raise click.ClickException(str(exc)) from None
    return value


def parse_instant(raw: str, *, now: float, ago: bool = False) -> float | None:
    """An instant (Unix seconds) from an ISO date/time or a duration; None for ``never``.

    A duration counts forward from ``now`` (an expiry), or back with ``ago``
    (the start of a usage window). Raises :class:`ValueError` with a message.
    """
    value = raw.strip()
    if value.lower() in NEVER_WORDS:
        return None
    duration = _DURATION.match(value)
    if duration is not None:
        length = float(duration.group(1)) * _UNIT_SECONDS[duration.group(2).lower()]
        return now - length if ago else now + length
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 date or date-time (2027-01-31, 2027-01-31T18:00Z) or a "
            f"duration (30d, 12h, 90m), got {raw!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def parse_expires(raw: str) -> float | None:
    """``--expires``: an instant from an ISO date/time or a duration from now; None: never.

    Refuses an instant in the past (the key would be expired from birth) or
    more than :data:`MAX_EXPIRES_DAYS` ahead.
    """
    now = time.time()
    try:
        expires_at = parse_instant(raw, now=now)
    except ValueError as exc:
        raise _bad(f"{exc}, or 'never'", flag="--expires") from None
    if expires_at is None:
        return None
    if expires_at > now + MAX_EXPIRES_DAYS * _UNIT_SECONDS["d"]:
        raise _bad(
            f"{raw.strip()!r} is more than {MAX_EXPIRES_DAYS} days (100 years) ahead; "
            "use 'never' for a key that does not expire",
            flag="--expires",
        )
    if expires_at <= now:
        raise _bad(
            f"{raw.strip()!r} is in the past ({format_time(expires_at)}): the key would be "
            "expired at once; give a later date or a duration like 30d",
            flag="--expires",
        )
    return expires_at


def settings_options(function: F) -> F:
    """The five flags, as plain strings: parsed by :func:`given_settings`."""
    options = [
        click.option(
            "--max-queued",
            metavar="N|none",
            help=(
                "USER/ADMIN: the most unfinished (QUEUED or PROCESSING) jobs; past it, 429 "
                f"(at most {MAX_QUOTA})."
            ),
        ),
        click.option(
            "--rate-limit",
            metavar="N|none",
            help=(
                "USER/ADMIN: submit requests per minute (a bulk or batch is one); past it, 429 "
                f"(at most {MAX_QUOTA})."
            ),
        ),
        click.option(
            "--models",
            metavar="A,B|none",
            help=(
                "NODE: the only models this key may serve (a node declaring others gets 403); "
                "names as a node declares them (1-256 characters)."
            ),
        ),
        click.option(
            "--node-id",
            metavar="ID|none",
            help=(
                "NODE: the only node_id this key may act as; no other key may use it (409). "
                "1-128 letters, digits and . _ : @ -"
            ),
        ),
        click.option(
            "--expires",
            metavar="WHEN|never",
            help=(
                "ISO date/time (UTC unless a zone is given) or a duration like 30d, 12h; "
                f"in the future, at most {MAX_EXPIRES_DAYS} days (100 years) ahead."
            ),
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def given_settings(
    max_queued: str | None,
    rate_limit: str | None,
    models: str | None,
    node_id: str | None,
    expires: str | None,
) -> dict[str, Any]:
    """The settings named by the flags that were given, parsed (``None`` lifts a limit)."""
    parsers: dict[str, tuple[str | None, Callable[[str], Any]]] = {
        "max_queued": (max_queued, lambda raw: _limit("--max-queued", raw)),
        "rate_limit": (rate_limit, lambda raw: _limit("--rate-limit", raw)),
        "models": (models, _models),
        "node_id": (node_id, _node_id),
        "expires_at": (expires, parse_expires),
    }
    return {name: parse(raw) for name, (raw, parse) in parsers.items() if raw is not None}


def settings_from(given: dict[str, Any]) -> KeySettings:
    """A new key's settings: the flags given, no limit for the rest."""
    return KeySettings(**given)


def describe_limits(settings: KeySettings) -> str:
    """``keys list``'s LIMITS column: the quotas and scopes set, or ``-``."""
    parts = []
    if settings.max_queued is not None:
        parts.append(f"max-queued={settings.max_queued}")
    if settings.rate_limit is not None:
        parts.append(f"rate={settings.rate_limit}/min")
    if settings.models is not None:
        parts.append(f"models={','.join(settings.models)}")
    if settings.node_id is not None:
        parts.append(f"node-id={settings.node_id}")
    return " ".join(parts) or "-"
