"""server_config.toml: defaults, validation one clear line at a time, paths, safe writing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from openbeepboop_server.config import (
    CONFIG_ENV,
    DEFAULT_MAX_BODY_BYTES,
    MIN_INTERVAL_SECONDS,
    ConfigError,
    Settings,
    default_config_path,
    default_database_url,
    display_url,
    load_settings,
    parse_settings,
    write_private_file,
)
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import ensure_current
from openbeepboop_server.errors import DatabaseBehind, ServerError

MINIMAL = '[database]\nurl = "sqlite:////tmp/x.db"\n'


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server_config.toml"
    path.write_text(text)
    return path


def test_defaults_fill_everything_but_the_database(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, MINIMAL))
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8000)
    assert settings.server.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 10 * 1024 * 1024
    assert settings.server.max_wait_seconds == 30
    assert settings.database.sqlite_synchronous == "NORMAL"
    queue = settings.queue
    assert (queue.lease_seconds, queue.max_attempts, queue.retention_days) == (300, 3, 30)
    policy = queue.policy()
    assert (policy.lease_seconds, policy.max_attempts, policy.retention_days) == (300, 3, 30)


def test_defaults_for_hostile_conditions(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, MINIMAL))
    server, queue = settings.server, settings.queue
    assert (server.max_polls_per_key, server.max_fetches_per_key) == (100, 1000)
    assert (server.header_timeout_seconds, server.body_timeout_seconds) == (10, 60)
    assert (server.keep_alive_seconds, server.max_connections) == (5, 4096)
    assert server.max_header_bytes == 64 * 1024
    assert queue.max_queued_days is None and queue.policy().max_queued_days is None
    assert queue.node_retention_days == queue.policy().node_retention_days == 30
    # An unset maximum age stays out of the file `setup` writes.
    assert "max_queued_days" not in settings.to_toml()


def test_max_queued_days_may_be_a_fraction(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, MINIMAL + "[queue]\nmax_queued_days = 0.25\n"))
    assert settings.queue.policy().max_queued_days == 0.25


def test_spec_example_loads(tmp_path: Path) -> None:
    text = """
[server]
host = "127.0.0.1"
port = 8000

[database]
url = "sqlite:////srv/openbeepboop.db"

[queue]
lease_seconds = 300
max_attempts = 3
retention_days = 30
"""
    settings = load_settings(_write(tmp_path, text))
    assert settings.database.url == "sqlite:////srv/openbeepboop.db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL + "[queue]\nlease_seconds = -5\n",
            "[queue] lease_seconds: Input should be greater than or equal to 1",
        ),
        (
            MINIMAL + "[queue]\nlease_seconds = 1e-9\n",
            "[queue] lease_seconds: Input should be greater than or equal to 1",
        ),
        (
            # Stored with every job in an INTEGER column: past this PostgreSQL refused every submit.
            MINIMAL + "[queue]\nmax_attempts = 100000000000\n",
            "[queue] max_attempts: Input should be less than or equal to 2147483647",
        ),
        (MINIMAL + "[queue]\nlease_secs = 5\n", "[queue] lease_secs: unknown setting"),
        (MINIMAL + '[server]\nport = "eighty"\n', "[server] port: Input should be a valid integer"),
        (
            MINIMAL + "[server]\nport = 70000\n",
            "[server] port: Input should be less than or equal to 65535",
        ),
        (MINIMAL + "[server]\nmax_wait_seconds = 31\n", "[server] max_wait_seconds:"),
        (MINIMAL + "[queue]\nmax_attempts = 0\n", "[queue] max_attempts:"),
        (MINIMAL + "[queue]\nmax_queued_days = 0\n", "[queue] max_queued_days:"),
        (MINIMAL + "[queue]\nnode_retention_days = -1\n", "[queue] node_retention_days:"),
        (MINIMAL + "[server]\nmax_polls_per_key = 0\n", "[server] max_polls_per_key:"),
        (MINIMAL + "[server]\nheader_timeout_seconds = 0\n", "[server] header_timeout_seconds:"),
        (MINIMAL + "[server]\nmax_connections = 0\n", "[server] max_connections:"),
        (MINIMAL + "[server]\nmax_header_bytes = 100\n", "[server] max_header_bytes:"),
        ("[server]\nport = 1\n", "[database]: required setting is missing"),
        (MINIMAL + "[colours]\nred = 1\n", "[colours]: unknown setting"),
        ('[database]\nurl = "not a url"\n', "[database] url: Value error, not a database URL"),
        (
            MINIMAL.replace("\n", '\nsqlite_synchronous = "SOMETIMES"\n', 1),
            "[database] sqlite_synchronous:",
        ),
    ],
)
def test_invalid_values_are_one_line_naming_the_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_config_error_is_a_server_error() -> None:
    assert issubclass(ConfigError, ServerError)


def test_missing_file_says_to_run_setup(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="openbeepboop-server setup"):
        load_settings(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server\nport = ")
    with pytest.raises(ConfigError, match="invalid TOML") as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "server_config.toml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(path)


def test_relative_sqlite_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = _write(tmp_path, '[database]\nurl = "sqlite:///data/queue.db"\n')
    settings = load_settings(path)
    assert settings.database.url == f"sqlite:///{(tmp_path / 'data' / 'queue.db').resolve()}"


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ("server", "port = true"),
        ("server", "max_body_bytes = false"),
        ("server", "max_wait_seconds = true"),
        ("queue", "lease_seconds = true"),
        ("queue", "max_attempts = true"),
        ("database", "pool_size = true"),
        ("limits", "max_tokens = true"),
        ("openai", "batch_check_seconds = true"),
        ("server", 'port = "8000"'),
    ],
)
def test_a_boolean_or_a_string_is_not_a_number(tmp_path: Path, section: str, line: str) -> None:
    # Lax validation took `port = true` for port 1.
    body = MINIMAL + f"[{section}]\n{line}\n"
    if section == "database":
        body = MINIMAL.rstrip("\n") + f"\n{line}\n"
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, body))
    assert f"[{section}] {line.split(' ')[0]}:" in str(caught.value)


@pytest.mark.parametrize(
    ("section", "name"),
    [
        ("server", "recheck_seconds"),
        ("queue", "reap_interval_seconds"),
        ("queue", "purge_interval_seconds"),
        ("openai", "batch_check_seconds"),
    ],
)
def test_periodic_intervals_have_a_floor(tmp_path: Path, section: str, name: str) -> None:
    # batch_check_seconds = 0.000001 kept an idle server at 74 % of a core.
    with pytest.raises(ConfigError, match=rf"\[{section}\] {name}: .*greater than or equal to 0.1"):
        load_settings(_write(tmp_path, MINIMAL + f"[{section}]\n{name} = 0.000001\n"))
    settings = load_settings(
        _write(tmp_path, MINIMAL + f"[{section}]\n{name} = {MIN_INTERVAL_SECONDS}\n")
    )
    assert getattr(getattr(settings, section), name) == MIN_INTERVAL_SECONDS


def test_a_missing_sqlite_file_is_named_and_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir, elsewhere = tmp_path / "config", tmp_path / "elsewhere"
    config_dir.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(_write(config_dir, '[database]\nurl = "sqlite:///rel.db"\n'))
    db = Database.connect(settings.database.url)
    try:
        with pytest.raises(DatabaseBehind) as caught:
            ensure_current(db)
    finally:
        db.dispose()
    message = str(caught.value)
    assert str((config_dir / "rel.db").resolve()) in message
    assert "openbeepboop-server migrate" in message
    assert not (config_dir / "rel.db").exists() and not (elsewhere / "rel.db").exists()


def test_sqlite_synchronous_is_case_insensitive(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, MINIMAL + 'sqlite_synchronous = "full"\n'))
    assert settings.database.sqlite_synchronous == "FULL"


def test_postgresql_url_is_kept_and_its_password_never_shown(tmp_path: Path) -> None:
    url = "postgresql+psycopg://queue:s3cret@db.internal:5432/obb"
    settings = parse_settings({"database": {"url": url}}, base=tmp_path)
    assert settings.database.url == url
    assert "s3cret" not in display_url(url)
    assert "db.internal" in display_url(url)


def test_round_trip_through_toml(tmp_path: Path) -> None:
    settings = parse_settings(
        {
            "server": {"port": 9999, "max_body_bytes": 2048},
            "database": {"url": "sqlite:////tmp/q.db", "sqlite_synchronous": "FULL"},
            "queue": {"lease_seconds": 12.5, "max_attempts": 7},
        },
        base=tmp_path,
    )
    path = tmp_path / "round.toml"
    write_private_file(path, settings.to_toml())
    assert load_settings(path) == settings


def test_private_file_is_0600_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "server_config.toml"
    write_private_file(path, "a = 1\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    write_private_file(path, "a = 2\n")
    assert path.read_text() == "a = 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["server_config.toml"]


def test_private_file_creates_its_directory_0700(tmp_path: Path) -> None:
    path = tmp_path / "new" / "server_config.toml"
    write_private_file(path, "a = 1\n")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text() == "a = 1\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "server_config.toml"
    write_private_file(path, "a = 1\n")

    def refuse(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(OSError, match="No space left"):
        write_private_file(path, "a = 2\n")
    assert path.read_text() == "a = 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server_config.toml"]


def test_default_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    default = default_config_path()
    assert default.name == "server_config.toml"
    assert default.parent.name == "openbeepboop"
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "elsewhere.toml"))
    assert default_config_path() == tmp_path / "elsewhere.toml"
    url = default_database_url()
    assert url.startswith("sqlite:////") or url.startswith("sqlite:///" + os.sep)
    assert url.endswith("openbeepboop.db")


def test_settings_are_plain_data(tmp_path: Path) -> None:
    settings = parse_settings({"database": {"url": "sqlite:////tmp/a.db"}}, base=tmp_path)
    assert isinstance(settings, Settings)
    assert settings.model_dump()["queue"]["reap_interval_seconds"] == 1.0


def test_the_default_window_follows_the_lease(tmp_path: Path) -> None:
    queue = load_settings(_write(tmp_path, MINIMAL)).queue
    assert queue.node_seen_seconds is None
    assert queue.node_seen_window() == 150  # 1.5 heartbeats of a 300 s lease
    queue.lease_seconds = 60
    assert queue.node_seen_window() == 90  # three 30 s long-polls
    queue.lease_seconds, queue.node_seen_seconds = 6, 5
    assert queue.node_seen_window() == 5 and queue.node_seen_warning() is None
    # Shorter than a busy node's heartbeat period (lease / 3): said at start-up.
    queue.lease_seconds = 30
    assert "node_seen_seconds = 5" in (queue.node_seen_warning() or "")


def test_setup_leaves_the_derived_window_out_of_the_file(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, MINIMAL))
    assert "node_seen_seconds" not in settings.to_toml()
    settings.queue.node_seen_seconds = 42
    assert "node_seen_seconds = 42" in settings.to_toml()


def test_limits_have_defaults_a_shared_server_can_live_with(tmp_path: Path) -> None:
    limits = load_settings(_write(tmp_path, MINIMAL)).limits
    assert limits.max_tokens is None  # no cap unless the operator sets one
    assert limits.max_n == 8
    assert limits.max_poll_ids == 1_000
    assert limits.max_result_bytes == 32 * 1024 * 1024
    assert limits.max_result_bytes > DEFAULT_MAX_BODY_BYTES
    budgets = limits.budgets()
    assert (budgets.max_messages, budgets.max_json_values) == (2_048, 200_000)


def test_limits_are_read_and_checked(tmp_path: Path) -> None:
    text = MINIMAL + "[limits]\nmax_tokens = 4096\nmax_n = 2\nmax_messages = 50\n"
    limits = load_settings(_write(tmp_path, text)).limits
    assert (limits.max_tokens, limits.max_n, limits.budgets().max_messages) == (4096, 2, 50)
    for bad, expected in (
        ("max_poll_ids = 5000", "[limits] max_poll_ids"),
        ("max_n = 0", "[limits] max_n"),
        ("max_json_depth = 500", "[limits] max_json_depth"),
        ("max_token = 5", "[limits] max_token: unknown setting"),
    ):
        path = _write(tmp_path, MINIMAL + f"[limits]\n{bad}\n")
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
            load_settings(path)


def test_the_connection_pool_is_sized_from_the_config(tmp_path: Path) -> None:
    from openbeepboop_server.app import create_app
    from openbeepboop_server.db.migrate import upgrade_to_head
    from starlette.testclient import TestClient

    text = MINIMAL.replace("/tmp/x.db", str(tmp_path / "pool.db"))
    settings = load_settings(_write(tmp_path, text + "pool_size = 3\nmax_overflow = 2\n"))
    assert (settings.database.pool_size, settings.database.max_overflow) == (3, 2)
    upgrade_to_head(settings.database.url)
    with TestClient(create_app(settings)) as client:
        pool = client.app.state.context.db.engine.pool  # type: ignore[attr-defined]
        assert pool.size() == 3
        assert pool._max_overflow == 2


def test_the_connection_pool_defaults_fit_the_thread_pool(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, MINIMAL))
    assert (settings.database.pool_size, settings.database.max_overflow) == (10, 30)


@pytest.mark.parametrize(
    "line",
    [
        "[queue]\nlease_seconds = inf",
        "[queue]\nretention_days = inf",
        "[queue]\nmax_queued_days = inf",
        "[queue]\nretry_backoff_max_seconds = inf",
        "[server]\nkeep_alive_seconds = inf",
        "[openai]\nsync_timeout_seconds = -inf",
        "[queue]\npriority_aging_minutes = nan",
    ],
)
def test_toml_infinity_and_nan_are_refused_by_name(tmp_path: Path, line: str) -> None:
    """TOML has ``inf`` and ``nan``; no setting means them (``lease_seconds = inf``
    once wrote an expiry no reaper reaches into every lease in flight)."""
    section, setting = line.split("\n")
    name = setting.split(" = ")[0]
    path = _write(tmp_path, MINIMAL + f"{line}\n")
    with pytest.raises(ConfigError, match=rf"\{section[:-1]}\] {name}: .*finite number"):
        load_settings(path)
