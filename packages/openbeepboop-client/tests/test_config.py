"""Settings precedence (arguments > environment > file) and the config file itself."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
import respx
from conftest import BASE_URL, job_body
from openbeepboop import Client, ConfigError, _constants
from openbeepboop._config import (
    default_config_path,
    normalize_base_url,
    read_config_file,
    resolve_settings,
    write_config_file,
)

KEY_FILE = "sk-file-" + "f" * 32
KEY_ENV = "sk-env-" + "e" * 32
KEY_ARG = "sk-arg-" + "a" * 32


def write_default_config(values: dict) -> Path:
    path = default_config_path()
    write_config_file(path, values)
    return path


def test_default_path_is_in_the_user_config_dir(isolated_env: Path) -> None:
    assert default_config_path() == isolated_env / "openbeepboop" / "client_config.toml"


def test_file_alone_is_enough() -> None:
    path = write_default_config(
        {"server_url": "http://file:1", "api_key": KEY_FILE, "default_model": "m-file"}
    )
    settings = resolve_settings()
    assert settings.base_url == "http://file:1"
    assert settings.api_key == KEY_FILE
    assert settings.default_model == "m-file"
    assert settings.config_path == path


def test_environment_beats_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_default_config(
        {"server_url": "http://file:1", "api_key": KEY_FILE, "default_model": "m-file"}
    )
    monkeypatch.setenv(_constants.ENV_SERVER_URL, "http://env:2")
    monkeypatch.setenv(_constants.ENV_API_KEY, KEY_ENV)
    settings = resolve_settings()
    assert (settings.base_url, settings.api_key) == ("http://env:2", KEY_ENV)
    assert settings.default_model == "m-file"  # not overridden, still from the file


def test_arguments_beat_environment_and_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_default_config({"server_url": "http://file:1", "api_key": KEY_FILE})
    monkeypatch.setenv(_constants.ENV_SERVER_URL, "http://env:2")
    monkeypatch.setenv(_constants.ENV_API_KEY, KEY_ENV)
    monkeypatch.setenv(_constants.ENV_DEFAULT_MODEL, "m-env")
    client = Client(base_url="http://arg:3", api_key=KEY_ARG, default_model="m-arg")
    assert client.base_url == "http://arg:3"
    assert client._settings.api_key == KEY_ARG
    assert client.default_model == "m-arg"


def test_each_setting_is_resolved_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    write_default_config({"server_url": "http://file:1", "api_key": KEY_FILE})
    monkeypatch.setenv(_constants.ENV_API_KEY, KEY_ENV)
    settings = resolve_settings()
    assert (settings.base_url, settings.api_key) == ("http://file:1", KEY_ENV)


def test_explicit_config_path(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    write_config_file(path, {"server_url": "http://explicit:4", "api_key": KEY_FILE})
    write_default_config({"server_url": "http://default:1", "api_key": KEY_FILE})
    assert Client(config_path=path).base_url == "http://explicit:4"


def test_missing_explicit_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist .*openbeepboop-client setup"):
        Client(config_path=tmp_path / "nope.toml")


def test_nothing_anywhere_says_where_it_looked(isolated_env: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Client()
    message = str(raised.value)
    assert "no server URL" in message
    assert _constants.ENV_SERVER_URL in message
    assert str(isolated_env) in message


def test_missing_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_constants.ENV_SERVER_URL, "http://env:2")
    with pytest.raises(ConfigError, match=r"no API key.*OPENBEEPBOOP_API_KEY"):
        Client()


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("server_url = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config_file(path)


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('server_url = 8000\napi_key = "sk-x"\n')
    with pytest.raises(ConfigError, match="'server_url' must be a str"):
        read_config_file(path)


def test_unknown_keys_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('server_url = "http://h:1"\napi_key = "sk-x"\nfuture_thing = 1\n')
    assert read_config_file(path).get_str("server_url") == "http://h:1"
    assert "future_thing" in caplog.text


def test_broken_default_file_is_ignored_when_not_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    path = default_config_path()
    path.parent.mkdir(parents=True)
    path.write_text("this is = = not toml")
    with pytest.raises(ConfigError):
        Client()
    monkeypatch.setenv(_constants.ENV_SERVER_URL, "http://env:2")
    monkeypatch.setenv(_constants.ENV_API_KEY, KEY_ENV)
    assert Client().base_url == "http://env:2"


def test_timeout_and_retries_from_file_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    write_config_file(
        path, {"server_url": "http://h:1", "api_key": KEY_FILE, "timeout": 7, "max_retries": 5}
    )
    settings = resolve_settings(config_path=path)
    assert settings.timeout.read == 7.0
    assert settings.max_retries == 5
    defaults = resolve_settings(base_url="http://h:1", api_key=KEY_ARG)
    assert defaults.max_retries == _constants.DEFAULT_MAX_RETRIES
    assert defaults.timeout.read == _constants.DEFAULT_TIMEOUT
    assert defaults.timeout.connect == _constants.DEFAULT_CONNECT_TIMEOUT
    custom = resolve_settings(base_url="http://h:1", api_key=KEY_ARG, timeout=httpx.Timeout(3.0))
    assert custom.timeout.connect == 3.0


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:8000", "http://h:8000"),
        ("http://h:8000/", "http://h:8000"),
        ("http://h:8000/v1", "http://h:8000"),
        ("  https://h/prefix/v1/ ", "https://h/prefix"),
        ("http://h:8000/openai/v1", "http://h:8000"),
        ("https://h/queue/openai/v1/", "https://h/queue"),
        ("http://h:8000/openai", "http://h:8000"),
        ("https://h/queue/openai/", "https://h/queue"),
        ("http://h:8000//v1", "http://h:8000"),
        ("http://openai", "http://openai"),
        ("http://v1", "http://v1"),
        ("http://v1:8000/v1", "http://v1:8000"),
        ("http://openai/openai", "http://openai"),
        ("https://h/openai-proxy", "https://h/openai-proxy"),
    ],
)
def test_base_url_is_normalized(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize("suffix", ["/openai", "/openai/v1/"])
def test_the_openai_surface_url_reaches_the_native_api(
    server: respx.MockRouter, suffix: str
) -> None:
    """The URL given to the OpenAI SDK, or its /openai part, is the same server's root."""
    route = server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    with Client(base_url=BASE_URL + suffix, api_key=KEY_ARG) as client:
        job = client.chat.completions.create(model="m", messages=[{"role": "user"}])
    assert job.id == "job-1"
    assert route.calls.last.request.url == f"{BASE_URL}/v1/chat/completions"


def test_base_url_needs_a_scheme() -> None:
    with pytest.raises(ConfigError, match="must start with http"):
        Client(base_url="localhost:8000", api_key=KEY_ARG)


@pytest.mark.parametrize("url", ["http://[::1", "http://", "http://host:notaport"])
def test_a_base_url_that_is_no_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="server URL"):
        Client(base_url=url, api_key=KEY_ARG)


@pytest.mark.parametrize("key", ["sk-\u043a\u043b\u044e\u0447", "sk-a\u200bb", "sk-\x07", "sk a"])
def test_a_key_no_header_can_carry_is_a_config_error_that_does_not_repeat_it(key: str) -> None:
    # Sent as it was, it failed every request with an encoding error (a traceback in the CLI).
    with pytest.raises(ConfigError, match="API key") as raised:
        Client(base_url="http://h:1", api_key=key)
    assert key.strip() not in str(raised.value)


def test_written_file_is_private_and_complete(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "client_config.toml"
    write_config_file(path, {"server_url": "http://h:1", "api_key": KEY_FILE})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_config_file(path).get_str("api_key") == KEY_FILE
    # Rewritten atomically: no temporary files left beside it.
    write_config_file(path, {"server_url": "http://h:2", "api_key": KEY_FILE})
    assert sorted(os.listdir(path.parent)) == ["client_config.toml"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_settings_repr_hides_the_key() -> None:
    settings = resolve_settings(base_url="http://h:1", api_key=KEY_ARG)
    assert KEY_ARG not in repr(settings)
    assert KEY_ARG not in repr(Client(base_url="http://h:1", api_key=KEY_ARG))
