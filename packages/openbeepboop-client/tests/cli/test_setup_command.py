"""``setup``: flags without a terminal, a wizard on one, a private file either way."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from conftest import Cli, assert_one_line_error
from openbeepboop._config import default_config_path, read_config_file
from openbeepboop.cli import setup as cli_setup

KEY = "sk-" + "s" * 40
OTHER_KEY = "sk-" + "o" * 40


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_non_interactive_writes_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "client_config.toml"
    result = Cli(path)(
        "setup",
        "--non-interactive",
        "--server-url",
        "http://127.0.0.1:8000/",
        "--api-key",
        KEY,
        "--default-model",
        "llama3",
    )
    assert result.exit_code == 0, result.stderr
    assert mode(path) == 0o600
    values = read_config_file(path).values
    assert values == {
        "server_url": "http://127.0.0.1:8000",
        "api_key": KEY,
        "default_model": "llama3",
    }
    assert KEY not in result.stdout  # shown masked only
    assert "sk-ssss…ssss" in result.stdout


def test_default_location(isolated_env: Path) -> None:
    result = Cli(Path("unused"))(
        "setup", "--server-url", "http://h:1", "--api-key", KEY, config=False
    )
    assert result.exit_code == 0, result.stderr
    path = default_config_path()
    assert path == isolated_env / "openbeepboop" / "client_config.toml"
    assert mode(path) == 0o600


def test_without_a_terminal_missing_values_are_an_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    result = Cli(path)("setup", "--server-url", "http://h:1")  # no --non-interactive either
    assert_one_line_error(result, "--api-key", "required")
    assert not path.exists()


def test_refuses_to_replace_without_force_then_updates(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    cli = Cli(path)
    first = cli(
        "setup",
        "--non-interactive",
        "--server-url",
        "http://h:1",
        "--api-key",
        KEY,
        "--default-model",
        "m1",
    )
    assert first.exit_code == 0
    again = cli("setup", "--non-interactive", "--server-url", "http://h:2", "--api-key", OTHER_KEY)
    assert_one_line_error(again, "already exists", "--force")
    assert read_config_file(path).get_str("api_key") == KEY
    forced = cli("setup", "--non-interactive", "--force", "--server-url", "http://h:2")
    assert forced.exit_code == 0, forced.stderr
    values = read_config_file(path).values
    assert values == {"server_url": "http://h:2", "api_key": KEY, "default_model": "m1"}
    assert mode(path) == 0o600


def test_bad_url_is_one_line(tmp_path: Path) -> None:
    result = Cli(tmp_path / "c.toml")("setup", "--server-url", "localhost:8000", "--api-key", KEY)
    assert_one_line_error(result, "http://")


def test_bad_key_is_one_line(tmp_path: Path) -> None:
    result = Cli(tmp_path / "c.toml")("setup", "--server-url", "http://h:1", "--api-key", "sk x")
    assert_one_line_error(result, "API key")


def test_wizard_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_setup, "stdin_is_terminal", lambda: True)
    path = tmp_path / "c.toml"
    result = Cli(path)("setup", input=f"http://queue:9000\n{KEY}\nqwen\n")
    assert result.exit_code == 0, result.stderr
    assert read_config_file(path).values == {
        "server_url": "http://queue:9000",
        "api_key": KEY,
        "default_model": "qwen",
    }
    assert KEY not in result.stdout  # hidden input is not echoed
    # Run again: Enter keeps every current value, the key included.
    again = Cli(path)("setup", input="\n\n\n")
    assert again.exit_code == 0, again.stderr
    assert read_config_file(path).get_str("api_key") == KEY
    assert "keep sk-ssss…ssss" in again.stdout


def test_flags_skip_their_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_setup, "stdin_is_terminal", lambda: True)
    path = tmp_path / "c.toml"
    result = Cli(path)("setup", "--server-url", "http://h:1", "--api-key", KEY, input="\n")
    assert result.exit_code == 0, result.stderr
    assert "Queue server URL" not in result.stdout
    assert read_config_file(path).values == {"server_url": "http://h:1", "api_key": KEY}


NO_TERMINAL = (
    "Error: --server-url and --api-key are required without a terminal "
    "(pass them as flags, or run setup in a terminal)"
)


def test_without_a_terminal_missing_flags_exit_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    result = Cli(path)("setup")  # stdin is not a terminal under the test runner
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [NO_TERMINAL]
    assert result.stdout == ""  # no prompt
    assert not path.exists()
    one = Cli(path)("setup", "--non-interactive", "--server-url", "http://h:1")
    assert one.exit_code == 2
    assert one.stderr.splitlines() == [
        "Error: --api-key is required without a terminal "
        "(pass it as a flag, or run setup in a terminal)"
    ]


def test_non_interactive_never_prompts_even_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_setup, "stdin_is_terminal", lambda: True)
    result = Cli(tmp_path / "c.toml")("setup", "--non-interactive", input=f"http://h:1\n{KEY}\n\n")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [NO_TERMINAL]
    assert "Queue server URL" not in result.stdout
