"""``openbeepboop-server setup`` through click's CliRunner."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from openbeepboop_schemas import ChatCompletionRequest, Role
from openbeepboop_server.cli import main, setup
from openbeepboop_server.config import load_settings, sqlite_url
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import pending_revisions
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.service import QueueService

KEY_LINE = re.compile(r"^Admin API Key: (sk-[A-Za-z0-9_-]{32,})$", re.MULTILINE)


def _setup(runner: CliRunner, *args: str, input: str | None = None) -> Result:
    return runner.invoke(main, ["setup", *args], input=input)


def _admin_key(result: Result) -> str:
    keys = KEY_LINE.findall(result.stdout)
    assert len(keys) == 1, result.output
    return str(keys[0])


def _role_of(url: str, key: str) -> Role | None:
    db = Database.connect(url)
    try:
        caller = KeyService(db).authenticate(key)
        return None if caller is None else caller.role
    finally:
        db.dispose()


def _one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path / "conf" / "server_config.toml", sqlite_url(tmp_path / "data" / "queue.db")


def test_non_interactive_setup_creates_everything(paths: tuple[Path, str]) -> None:
    config, url = paths
    result = _setup(
        CliRunner(), "--config", str(config), "--database-url", url, "--non-interactive"
    )
    assert result.exit_code == 0, result.output
    key = _admin_key(result)
    assert _role_of(url, key) is Role.ADMIN
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    settings = load_settings(config)
    assert settings.database.url == url
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8000)
    assert pending_revisions(url) == []
    database_file = Path(url.removeprefix("sqlite:///"))
    assert stat.S_IMODE(database_file.stat().st_mode) == 0o600


def test_flag_twins_set_every_value(paths: tuple[Path, str]) -> None:
    config, url = paths
    result = _setup(
        CliRunner(),
        "--config", str(config),
        "--database-url", url,
        "--host", "0.0.0.0",
        "--port", "9123",
        "--lease-seconds", "45",
        "--max-attempts", "5",
        "--retention-days", "7",
        "--sqlite-synchronous", "full",
        "--non-interactive",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    settings = load_settings(config)
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 9123)
    assert settings.queue.lease_seconds == 45
    assert settings.queue.max_attempts == 5
    assert settings.queue.retention_days == 7
    assert settings.database.sqlite_synchronous == "FULL"


def test_without_a_terminal_defaults_are_taken_and_nothing_hangs(
    paths: tuple[Path, str],
) -> None:
    config, url = paths
    # No --non-interactive, but CliRunner's stdin is not a terminal.
    result = _setup(CliRunner(), "--config", str(config), "--database-url", url, input="")
    assert result.exit_code == 0, result.output
    assert "Port [" not in result.output
    assert load_settings(config).queue.lease_seconds == 300


def test_interactive_wizard_asks_and_uses_the_answers(
    paths: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, url = paths
    monkeypatch.setattr(setup, "is_interactive", lambda non_interactive: True)
    answers = "\n".join([url, "127.0.0.2", "8111", "120", "4", "14", "FULL"]) + "\n"
    result = _setup(CliRunner(), "--config", str(config), input=answers)
    assert result.exit_code == 0, result.output
    for question in ("Database URL", "Host", "Port", "Lease seconds", "Max attempts"):
        assert question in result.output
    settings = load_settings(config)
    assert (settings.server.host, settings.server.port) == ("127.0.0.2", 8111)
    assert (settings.queue.lease_seconds, settings.queue.max_attempts) == (120, 4)
    assert settings.queue.retention_days == 14
    assert settings.database.sqlite_synchronous == "FULL"
    _admin_key(result)


def test_interactive_wizard_skips_questions_answered_by_flags(
    paths: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, url = paths
    monkeypatch.setattr(setup, "is_interactive", lambda non_interactive: True)
    result = _setup(
        CliRunner(),
        "--config", str(config),
        "--database-url", url,
        "--port", "8222",
        input="\n" * 10,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Port [" not in result.output
    assert "Database URL" not in result.output
    assert load_settings(config).server.port == 8222


def test_refuses_an_existing_config_without_force(paths: tuple[Path, str]) -> None:
    config, url = paths
    runner = CliRunner()
    assert (
        _setup(
            runner, "--config", str(config), "--database-url", url, "--non-interactive"
        ).exit_code
        == 0
    )
    before = config.read_text()
    result = _setup(runner, "--config", str(config), "--database-url", url, "--non-interactive")
    line = _one_error_line(result)
    assert "already exists" in line and "--force" in line
    assert config.read_text() == before
    assert "Admin API Key" not in result.output


def test_refuses_an_existing_database_without_force_and_keeps_jobs_with_it(
    paths: tuple[Path, str], tmp_path: Path
) -> None:
    config, url = paths
    runner = CliRunner()
    assert (
        _setup(
            runner, "--config", str(config), "--database-url", url, "--non-interactive"
        ).exit_code
        == 0
    )
    # Put a job in it.
    db = Database.connect(url)
    keys = KeyService(db)
    user_key, _ = keys.create(Role.USER, "u")
    caller = keys.authenticate(user_key)
    assert caller is not None
    job = QueueService(db, load_settings(config).queue.policy()).submit(
        caller,
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        ),
    )
    db.dispose()

    other = tmp_path / "other.toml"
    refused = _setup(runner, "--config", str(other), "--database-url", url, "--non-interactive")
    line = _one_error_line(refused)
    assert "1 job" in line and "--force" in line
    assert not other.exists()

    forced = _setup(
        runner, "--config", str(other), "--database-url", url, "--non-interactive", "--force"
    )
    assert forced.exit_code == 0, forced.output
    assert "kept" in forced.output
    new_key = _admin_key(forced)
    assert _role_of(url, new_key) is Role.ADMIN
    db = Database.connect(url)
    try:
        names = [info.name for info in KeyService(db).list()]
        assert "admin" in names and "admin-2" in names
        caller = KeyService(db).authenticate(user_key)
        assert caller is not None
        entry = QueueService(db, load_settings(other).queue.policy()).get(caller, job.id)
        assert entry is not None and entry.status == "QUEUED"
    finally:
        db.dispose()


def test_force_over_an_existing_config_keeps_its_settings_as_defaults(
    paths: tuple[Path, str],
) -> None:
    config, url = paths
    runner = CliRunner()
    first = _setup(
        runner,
        "--config",
        str(config),
        "--database-url",
        url,
        "--port",
        "8333",
        "--non-interactive",
    )
    assert first.exit_code == 0, first.output
    again = _setup(runner, "--config", str(config), "--non-interactive", "--force")
    assert again.exit_code == 0, again.output
    settings = load_settings(config)
    assert settings.server.port == 8333
    assert settings.database.url == url


def test_default_locations_follow_the_user_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("OPENBEEPBOOP_SERVER_CONFIG", raising=False)
    result = _setup(CliRunner(), "--non-interactive")
    assert result.exit_code == 0, result.output
    config = tmp_path / "xdg-config" / "openbeepboop" / "server_config.toml"
    settings = load_settings(config)
    expected = (tmp_path / "xdg-data" / "openbeepboop" / "openbeepboop.db").resolve()
    assert settings.database.url == f"sqlite:///{expected}"
    assert expected.exists()


@pytest.mark.parametrize(
    ("flag", "value", "shown"),
    [
        ("--port", "99999", "--port"),
        # The [queue] bounds, shown in --help and refused before anything is written.
        ("--lease-seconds", "0.5", "x>=1"),
        ("--max-attempts", "2147483648", "1<=x<=2147483647"),
    ],
)
def test_bad_flag_value_is_a_usage_error(
    paths: tuple[Path, str], flag: str, value: str, shown: str
) -> None:
    config, _url = paths
    result = _setup(CliRunner(), "--config", str(config), flag, value, "--non-interactive")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert not config.exists()
    assert shown in CliRunner().invoke(main, ["setup", "--help"]).output


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = _setup(
        CliRunner(),
        "--config", str(tmp_path / "c.toml"),
        "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "--non-interactive",
    )  # fmt: skip
    line = _one_error_line(result)
    assert "database" in line.lower()
    assert not (tmp_path / "c.toml").exists()


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("mysql://u:p@127.0.0.1/db", "only SQLite (sqlite:///PATH) and PostgreSQL"),
        ("oracle://u@127.0.0.1/db", "only SQLite (sqlite:///PATH) and PostgreSQL"),
        ("postgresql+asyncpg://u@127.0.0.1/db", "write the URL as postgresql+psycopg://"),
    ],
)
def test_a_database_the_server_cannot_use_is_named_before_any_connection(
    tmp_path: Path, url: str, said: str
) -> None:
    result = _setup(
        CliRunner(),
        "--config",
        str(tmp_path / "c.toml"),
        "--database-url",
        url,
        "--non-interactive",
    )
    line = _one_error_line(result)
    assert said in line and "ModuleNotFoundError" not in line
    assert not (tmp_path / "c.toml").exists()

    # The same URL written into a config by hand: every command says so.
    (tmp_path / "c.toml").write_text(f'[database]\nurl = "{url}"\n')
    for command in (["migrate"], ["start"], ["keys", "list"]):
        line = _one_error_line(
            CliRunner().invoke(main, [*command, "--config", str(tmp_path / "c.toml")])
        )
        assert said in line, command


def test_a_setup_that_loses_the_race_for_an_empty_database_issues_no_key(
    paths: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two setups on one empty database both find it empty; the one that waited for the
    migration lock finds it made by the other, and refuses instead of a second admin key."""
    config, url = paths
    first = _setup(CliRunner(), "--config", str(config), "--database-url", url, "--non-interactive")
    assert first.exit_code == 0, first.output
    # The second looked before the first had migrated: it saw an empty database.
    monkeypatch.setattr(setup, "inspect_database", lambda url: setup.DatabaseState((), None))
    other = tmp_path / "other.toml"
    raced = _setup(CliRunner(), "--config", str(other), "--database-url", url, "--non-interactive")
    line = _one_error_line(raced)
    assert "another setup created this database" in line and "--force" in line
    assert not other.exists()
    db = Database.connect(url)
    try:
        assert [info.name for info in KeyService(db).list()] == ["admin"]
    finally:
        db.dispose()
