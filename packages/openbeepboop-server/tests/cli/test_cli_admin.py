"""``keys``, ``nodes``, ``migrate`` and ``start``'s refusals through click's CliRunner."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from openbeepboop_schemas import FetchRequest, Role
from openbeepboop_server.cli import main
from openbeepboop_server.config import load_settings, sqlite_url
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import pending_revisions, upgrade_to
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.service import QueueService

from tests.support.cli import one_error_line

KEY = re.compile(r"sk-[A-Za-z0-9_-]{32,}")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_keys_create_prints_only_the_key_on_stdout(config: Path) -> None:
    result = run("keys", "create", "--role", "USER", "--name", "alice", "--config", str(config))
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert KEY.fullmatch(key)
    assert "not shown again" in result.stderr
    db = Database.connect(load_settings(config).database.url)
    try:
        caller = KeyService(db).authenticate(key)
    finally:
        db.dispose()
    assert caller is not None and caller.role is Role.USER and caller.key_name == "alice"


@pytest.mark.parametrize("role", ["admin", "NODE", "User", "metrics"])
def test_keys_create_takes_any_case_of_role(config: Path, role: str) -> None:
    result = run("keys", "create", "--role", role, "--name", f"k-{role}", "--config", str(config))
    assert result.exit_code == 0, result.output


def test_keys_create_refuses_a_taken_name(config: Path) -> None:
    assert (
        run("keys", "create", "--role", "USER", "--name", "bob", "--config", str(config)).exit_code
        == 0
    )
    result = run("keys", "create", "--role", "NODE", "--name", "bob", "--config", str(config))
    assert "bob" in one_error_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ["--role", "ROOT", "--name", "x"],
        ["--role", "USER"],
        ["--role", "USER", "--name", ""],
        ["--role", "USER", "--name", "x" * 65],
    ],
)
def test_keys_create_usage_errors(config: Path, args: list[str]) -> None:
    result = run("keys", "create", *args, "--config", str(config))
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_keys_list_never_shows_keys(config: Path) -> None:
    run("keys", "create", "--role", "NODE", "--name", "gpu-box", "--config", str(config))
    result = run("keys", "list", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert not KEY.search(result.output)
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "ROLE",
        "CREATED",
        "STATUS",
        "WEIGHT",
        "MAX",
        "PRIORITY",
        "LIMITS",
        "EXPIRES",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["admin"][1] == "ADMIN"
    assert rows["gpu-box"][1] == "NODE"
    assert rows["gpu-box"][-5:] == ["active", "1", "0", "-", "never"]


def test_keys_create_and_update_quotas_scopes_and_expiry(config: Path) -> None:
    created = run(
        "keys", "create", "--role", "USER", "--name", "capped", "--max-queued", "100",
        "--rate-limit", "60", "--expires", "2099-01-01", "--config", str(config),
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    run(
        "keys", "create", "--role", "NODE", "--name", "box", "--models", "a, b",
        "--node-id", "box-1", "--config", str(config),
    )  # fmt: skip
    lines = run("keys", "list", "--json", "--config", str(config)).stdout.splitlines()
    listed = {entry["name"]: entry for entry in map(json.loads, lines)}
    assert (listed["capped"]["max_queued"], listed["capped"]["rate_limit"]) == (100, 60)
    assert listed["capped"]["expires_at"] == 4070908800.0
    assert (listed["box"]["models"], listed["box"]["node_id"]) == (["a", "b"], "box-1")
    table = run("keys", "list", "--config", str(config)).stdout
    assert "max-queued=100 rate=60/min" in table and "models=a,b node-id=box-1" in table

    updated = run("keys", "update", "capped", "--max-queued", "none", "--config", str(config))
    assert updated.exit_code == 0, updated.output
    # The expiry passes (--expires refuses a past instant, so set it under the CLI).
    db = Database.connect(load_settings(config).database.url)
    try:
        KeyService(db).update("capped", {"expires_at": 1_577_836_800.0})
    finally:
        db.dispose()
    capped = next(line for line in run("keys", "list", "--config", str(config)).stdout.splitlines()
                  if line.startswith("capped"))  # fmt: skip
    assert "expired" in capped and "max-queued" not in capped and "rate=60/min" in capped


@pytest.mark.parametrize(
    "args",
    [
        ("create", "--role", "USER", "--name", "x", "--max-queued", "0"),
        ("create", "--role", "USER", "--name", "x", "--max-queued", "lots"),
        ("create", "--role", "USER", "--name", "x", "--expires", "soon"),
        ("create", "--role", "USER", "--name", "x", "--models", "a"),
        ("create", "--role", "NODE", "--name", "x", "--rate-limit", "5"),
        ("create", "--role", "NODE", "--name", "x", "--models", "*"),
        ("update", "admin"),
        ("update", "nobody", "--max-queued", "3"),
    ],
)
def test_bad_key_settings_are_one_line(config: Path, args: tuple[str, ...]) -> None:
    result = run("keys", *args, "--config", str(config))
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output


def test_usage_command(config: Path) -> None:
    result = run("usage", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "admin" in result.stdout and "COMPLETED" in result.stdout
    as_json = json.loads(run("usage", "--json", "--since", "24h", "--config", str(config)).stdout)
    assert as_json["data"][0]["key"] == "admin" and as_json["since"] is not None
    assert run("usage", "--key", "nobody", "--config", str(config)).exit_code == 1


def test_keys_list_json(config: Path) -> None:
    result = run("keys", "list", "--json", "--config", str(config))
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["name"], e["role"], e["revoked_at"]) for e in entries] == [("admin", "ADMIN", None)]


def test_keys_revoke(config: Path) -> None:
    key = run(
        "keys", "create", "--role", "USER", "--name", "carol", "--config", str(config)
    ).stdout.strip()
    result = run("keys", "revoke", "carol", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "carol" in result.stdout
    db = Database.connect(load_settings(config).database.url)
    try:
        assert KeyService(db).authenticate(key) is None
    finally:
        db.dispose()
    listed = run("keys", "list", "--config", str(config)).stdout
    assert "revoked" in next(line for line in listed.splitlines() if line.startswith("carol"))
    assert "carol" in one_error_line(run("keys", "revoke", "carol", "--config", str(config)))
    assert "nobody" in one_error_line(run("keys", "revoke", "nobody", "--config", str(config)))


def test_nodes_lists_what_the_registry_saw(config: Path) -> None:
    assert "No node" in run("nodes", "--config", str(config)).stdout
    settings = load_settings(config)
    db = Database.connect(settings.database.url)
    try:
        keys = KeyService(db)
        key, _ = keys.create(Role.NODE, "gpu-key")
        caller = keys.authenticate(key)
        assert caller is not None
        QueueService(db, settings.queue.policy()).claim(
            caller, FetchRequest(node_id="gpu-box-1", models=["llama3", "qwen"], version="9.9")
        )
    finally:
        db.dispose()
    result = run("nodes", "--config", str(config))
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[:4] == ["NODE", "KEY", "VERSION", "MODELS"]
    assert row.split()[:4] == ["gpu-box-1", "gpu-key", "9.9", "llama3,qwen"]
    assert "ago" in row
    as_json = json.loads(run("nodes", "--json", "--config", str(config)).stdout)
    assert as_json["node_id"] == "gpu-box-1"
    assert as_json["models"] == ["llama3", "qwen"]


def test_migrate_brings_an_old_database_to_head_and_start_refuses_before(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old.db")
    upgrade_to(url, "0001")
    config = tmp_path / "server_config.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')

    refused = run("start", "--config", str(config))
    line = one_error_line(refused)
    assert "openbeepboop-server migrate" in line
    keys = run("keys", "list", "--config", str(config))
    assert "openbeepboop-server migrate" in one_error_line(keys)

    migrated = run("migrate", "--config", str(config))
    assert migrated.exit_code == 0, migrated.output
    assert "Applied" in migrated.stdout
    assert pending_revisions(url) == []
    again = run("migrate", "--config", str(config))
    assert again.exit_code == 0 and "up to date" in again.stdout


def test_missing_or_invalid_config_is_one_line(tmp_path: Path) -> None:
    missing = run("keys", "list", "--config", str(tmp_path / "nope.toml"))
    assert "openbeepboop-server setup" in one_error_line(missing)
    bad = tmp_path / "bad.toml"
    bad.write_text('[database]\nurl = "sqlite:////tmp/x.db"\n[queue]\nlease_seconds = "long"\n')
    for command in (["start"], ["migrate"], ["nodes"], ["keys", "list"]):
        line = one_error_line(run(*command, "--config", str(bad)))
        assert "[queue] lease_seconds" in line


def test_config_env_variable_is_honoured(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBEEPBOOP_SERVER_CONFIG", str(config))
    result = run("keys", "list")
    assert result.exit_code == 0, result.output
    assert "admin" in result.stdout


def test_version_and_help() -> None:
    assert run("--version").exit_code == 0
    help_text = run("--help").stdout
    for command in ("setup", "start", "migrate", "keys", "nodes"):
        assert command in help_text


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the logging set-up a command changed back as it was."""
    loggers = [logging.getLogger(name) for name in ("", "openbeepboop_server", "alembic")]
    saved = [(logger, logger.level, logger.handlers[:]) for logger in loggers]
    yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize(
    ("flags", "root", "own"),
    [
        ([], logging.WARNING, logging.WARNING),
        (["-q"], logging.WARNING, logging.WARNING),
        (["-v"], logging.WARNING, logging.DEBUG),
        (["-vv"], logging.DEBUG, logging.DEBUG),
    ],
)
def test_verbosity_is_an_option_of_the_top_level_group(
    config: Path, flags: list[str], root: int, own: int
) -> None:
    result = run(*flags, "keys", "list", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == root
    assert logging.getLogger("openbeepboop_server.queue").getEffectiveLevel() == own
    third_party = logging.getLogger("alembic").getEffectiveLevel()
    assert third_party == (logging.DEBUG if "-vv" in flags else logging.WARNING)


def test_start_on_a_busy_port_is_one_line(config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("start", "--config", str(config), "--host", "127.0.0.1", "--port", str(port))
    assert result.exit_code == 1
    line = one_error_line(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "pass --port" in line
