"""``keys create|update|list`` with hostile values: one line naming the flag, nothing stored.

An expiry centuries ahead, a quota past what the database can hold, an
expiry in the past, a node id or model name no node could send, a change to
a revoked key: all refused before they reach the database, and ``keys list``
shows whatever an older version may have stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from openbeepboop_server.cli import main
from openbeepboop_server.cli.options import format_time
from openbeepboop_server.config import load_settings
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import MAX_QUOTA, KeyService

from tests.support.cli import one_error_line


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(config)])


def listed(config: Path) -> dict[str, dict[str, object]]:
    result = run(config, "keys", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in map(json.loads, result.stdout.splitlines())}


@contextmanager
def keys_of(config: Path) -> Iterator[KeyService]:
    """The key service on ``config``'s database, as another process would open it."""
    db = Database.connect(load_settings(config).database.url)
    try:
        yield KeyService(db)
    finally:
        db.dispose()


# --- --expires: bounded, in the future, and shown back ---------------------------


@pytest.mark.parametrize("expires", ["99999999d", "36526d", "9" * 400 + "w", "9999-12-31"])
def test_an_expiry_past_a_century_is_refused(config: Path, expires: str) -> None:
    line = one_error_line(run(config, "keys", "create", "--role", "USER", "--name", "u",
                              "--expires", expires))  # fmt: skip
    assert "--expires" in line and "100 years" in line and "never" in line
    assert "u" not in listed(config)
    assert run(config, "keys", "list").exit_code == 0


def test_an_expiry_just_inside_a_century_is_taken(config: Path) -> None:
    made = run(config, "keys", "create", "--role", "USER", "--name", "u", "--expires", "36524d")
    assert made.exit_code == 0, made.output
    assert run(config, "keys", "list").exit_code == 0


@pytest.mark.parametrize("expires", ["2001-01-01", "0d", "1970-01-01T00:00:00Z"])
@pytest.mark.parametrize("command", ["create", "update"])
def test_an_expiry_in_the_past_is_refused(config: Path, command: str, expires: str) -> None:
    assert run(config, "keys", "create", "--role", "USER", "--name", "old").exit_code == 0
    args = (
        ("keys", "create", "--role", "USER", "--name", "new")
        if command == "create"
        else ("keys", "update", "old")
    )
    line = one_error_line(run(config, *args, "--expires", expires))
    assert "--expires" in line and "in the past" in line
    keys = listed(config)
    assert "new" not in keys and keys["old"]["expires_at"] is None


def test_create_shows_the_expiry_it_stored(config: Path) -> None:
    made = run(config, "keys", "create", "--role", "USER", "--name", "u", "--expires", "2031-01-01")
    assert made.exit_code == 0, made.output
    assert "(expires 2031-01-01 00:00:00Z)" in made.stderr
    assert made.stdout.startswith("sk-") and len(made.stdout.splitlines()) == 1
    plain = run(config, "keys", "create", "--role", "USER", "--name", "v")
    assert "(expires never)" in plain.stderr


def test_keys_list_shows_an_expiry_no_date_can_hold(config: Path) -> None:
    """A database written before --expires was bounded may hold year 275817."""
    assert run(config, "keys", "create", "--role", "USER", "--name", "far").exit_code == 0
    with keys_of(config) as service:
        service.update("far", {"expires_at": 8_640_000_000_000.0})
    table = run(config, "keys", "list")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.startswith("far"))
    assert row.endswith("after 9999-12-31")
    assert listed(config)["far"]["expires_at"] == 8_640_000_000_000.0
    updated = run(config, "keys", "update", "far", "--weight", "2")
    assert updated.exit_code == 0, updated.output
    assert "expires after 9999-12-31" in updated.stdout


@pytest.mark.parametrize(
    ("timestamp", "shown"),
    [
        (None, "-"),
        (0.0, "1970-01-01 00:00:00Z"),
        (253_402_300_799.0, "9999-12-31 23:59:59Z"),
        (253_402_300_800.0, "after 9999-12-31"),
        (float("inf"), "after 9999-12-31"),
        (-1e18, "before 0001-01-01"),
        (float("nan"), "not a time"),
    ],
)
def test_format_time_never_fails(timestamp: float | None, shown: str) -> None:
    assert format_time(timestamp) == shown


# --- quotas and shares: a documented maximum, one line naming the flag -----------

HUGE = "99999999999999999999999"


@pytest.mark.parametrize(
    "args",
    [
        ("create", "--role", "USER", "--name", "x", "--max-queued", HUGE),
        ("create", "--role", "USER", "--name", "x", "--rate-limit", HUGE),
        ("create", "--role", "USER", "--name", "x", "--weight", HUGE),
        ("create", "--role", "USER", "--name", "x", "--max-priority", HUGE),
        ("create", "--role", "USER", "--name", "x", "--max-priority", "-" + HUGE),
        ("create", "--role", "USER", "--name", "x", "--max-queued", str(MAX_QUOTA + 1)),
        ("update", "u", "--max-queued", HUGE),
        ("update", "u", "--rate-limit", HUGE),
        ("update", "u", "--weight", HUGE),
        ("update", "u", "--max-priority", HUGE),
        ("update", "u", "--rate-limit", str(2**63)),
    ],
)
def test_a_number_past_its_maximum_is_one_line_naming_the_flag(
    config: Path, args: tuple[str, ...]
) -> None:
    assert run(config, "keys", "create", "--role", "USER", "--name", "u").exit_code == 0
    flag = next(arg for arg in args if arg.startswith("--") and arg not in ("--role", "--name"))
    line = one_error_line(run(config, "keys", *args))
    assert line.startswith(f"Error: {flag}: "), line
    assert "unexpected" not in line
    keys = listed(config)
    assert "x" not in keys
    assert (keys["u"]["max_queued"], keys["u"]["rate_limit"], keys["u"]["weight"]) == (
        None,
        None,
        1,
    )


def test_the_maximum_quota_is_stored(config: Path) -> None:
    made = run(config, "keys", "create", "--role", "USER", "--name", "x",
               "--max-queued", str(MAX_QUOTA), "--rate-limit", str(MAX_QUOTA))  # fmt: skip
    assert made.exit_code == 0, made.output
    assert (listed(config)["x"]["max_queued"], listed(config)["x"]["rate_limit"]) == (
        MAX_QUOTA,
        MAX_QUOTA,
    )
    assert str(MAX_QUOTA) in run(config, "keys", "create", "--help").stdout


# --- scopes: what a node can actually send ---------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--node-id", "bad id!"),
        ("--node-id", "box/1"),
        ("--node-id", "x" * 129),
        ("--node-id", "n\x1b[31m"),
        ("--models", "m" * 1000),
        ("--models", "ok,m" + "x" * 256),
        ("--models", "bad\x1b[2Jname"),
        ("--models", "tab\tname"),
    ],
)
@pytest.mark.parametrize("command", ["create", "update"])
def test_a_scope_no_node_could_send_is_refused(
    config: Path, command: str, flag: str, value: str
) -> None:
    assert run(config, "keys", "create", "--role", "NODE", "--name", "box").exit_code == 0
    args = (
        ("keys", "create", "--role", "NODE", "--name", "new")
        if command == "create"
        else ("keys", "update", "box")
    )
    line = one_error_line(run(config, *args, flag, value))
    assert line.startswith(f"Error: {flag}: "), line
    assert "\x1b" not in line and len(line) < 300
    keys = listed(config)
    assert "new" not in keys and (keys["box"]["models"], keys["box"]["node_id"]) == (None, None)


def test_scopes_a_node_can_send_are_taken(config: Path) -> None:
    models = "llama3:8b, org/model-v1," + "m" * 256
    made = run(config, "keys", "create", "--role", "NODE", "--name", "box",
               "--node-id", "gpu-1.lab:a@b_c", "--models", models)  # fmt: skip
    assert made.exit_code == 0, made.output
    box = listed(config)["box"]
    assert box["node_id"] == "gpu-1.lab:a@b_c"
    assert box["models"] == ["llama3:8b", "org/model-v1", "m" * 256]


# --- a revoked key stays revoked ----------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [("--max-queued", "5"), ("--expires", "never"), ("--expires", "30d"), ("--weight", "3"),
     ("--max-priority", "2")],
)  # fmt: skip
def test_updating_a_revoked_key_is_refused(config: Path, change: tuple[str, str]) -> None:
    assert run(config, "keys", "create", "--role", "USER", "--name", "gone",
               "--expires", "10d").exit_code == 0  # fmt: skip
    before = listed(config)["gone"]
    assert run(config, "keys", "revoke", "gone").exit_code == 0
    line = one_error_line(run(config, "keys", "update", "gone", *change))
    assert "revoked" in line and "keys create" in line
    after = listed(config)["gone"]
    assert after["status"] == "revoked"
    for field in ("max_queued", "expires_at", "weight", "max_priority"):
        assert after[field] == before[field], field
