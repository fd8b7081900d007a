"""The shared cluster pieces: an isolated environment and the keys commands print."""

from __future__ import annotations

from pathlib import Path

import pytest
from openbeepboop_testkit.cluster import (
    CLIENT,
    MissingOutputError,
    find_admin_key,
    find_key,
    isolated_env,
    setup_argv,
)

KEY = "sk-" + "a1B2_c3-" * 5


def test_isolated_env_keeps_everything_inside_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENBEEPBOOP_SERVER_URL", "http://elsewhere")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere/v1")
    monkeypatch.setenv("SOMETHING_ELSE", "kept")
    env = isolated_env(tmp_path, drop=["OPENAI_BASE_URL"])
    assert not [key for key in env if key.startswith("OPENBEEPBOOP_")]
    assert "OPENAI_BASE_URL" not in env
    assert env["SOMETHING_ELSE"] == "kept"
    for name in ("CONFIG", "STATE", "DATA", "CACHE"):
        path = Path(env[f"XDG_{name}_HOME"])
        assert path.is_dir() and path.is_relative_to(tmp_path)
    assert Path(env["HOME"]) == tmp_path / "home" and (tmp_path / "home").is_dir()
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert env["NO_COLOR"] == "1"


def test_isolated_env_can_keep_home_and_colour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/the/real/home")
    monkeypatch.delenv("NO_COLOR", raising=False)
    env = isolated_env(tmp_path, home=False, no_color=False)
    assert env["HOME"] == "/the/real/home"
    assert "NO_COLOR" not in env
    assert not (tmp_path / "home").exists()


def test_keys_are_found_in_command_output() -> None:
    assert find_key(f"Created USER key 'x':\n  {KEY}\nStore it now.") == KEY
    assert find_admin_key(f"Wrote config\nAdmin API Key: {KEY}\n") == KEY
    with pytest.raises(MissingOutputError, match="no key"):
        find_key("sk-too-short")
    with pytest.raises(MissingOutputError, match="Admin API Key"):
        find_admin_key(f"a key without its label: {KEY}")


def test_setup_argv_is_non_interactive_and_points_at_the_server(tmp_path: Path) -> None:
    argv = setup_argv(CLIENT, tmp_path / "c.toml", "http://127.0.0.1:1", KEY, "--x", "1")
    assert argv == [
        CLIENT,
        "setup",
        "--non-interactive",
        "--config",
        str(tmp_path / "c.toml"),
        "--server-url",
        "http://127.0.0.1:1",
        "--api-key",
        KEY,
        "--x",
        "1",
    ]
