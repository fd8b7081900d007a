"""node_config.toml: validation with field-naming errors, env overrides, atomic 0600 writes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import tomli_w
from openbeepboop_node.config import (
    ModelConfig,
    NodeConfig,
    default_config_path,
    default_node_id,
    default_spool_path,
    load_config,
    parse_config,
    write_config,
)
from openbeepboop_node.exceptions import ConfigError
from openbeepboop_node.private_files import write_private_file
from pydantic import ValidationError

VALID = {
    "server_url": "http://127.0.0.1:8000/",
    "api_key": "sk-" + "a" * 40,
    "node_id": "gpu-box-1",
    "concurrency": 4,
    "models": [
        {
            "name": "llama3",
            "litellm_model": "ollama_chat/llama3",
            "api_base": "http://localhost:11434",
        }
    ],
}


def write(path: Path, data: dict[str, object]) -> Path:
    path.write_text(tomli_w.dumps(data))
    return path


def test_valid_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "node.toml", VALID), environ={})
    assert config.server_url == "http://127.0.0.1:8000"  # trailing slash dropped
    assert config.node_id == "gpu-box-1"
    assert config.fetch_wait == 25.0
    assert config.shutdown_grace == 30.0
    assert config.heartbeat_interval is None
    assert config.model_names() == ["llama3"]
    assert config.timeout_for(config.models[0]) == 600.0


@pytest.mark.parametrize(
    ("concurrency", "prefetch", "held"),
    [(1, None, 2), (4, None, 8), (16, None, 32), (16, 0, 16), (2, 7, 9)],
)
def test_prefetch_limit_defaults_to_as_many_as_the_slots(
    concurrency: int, prefetch: int | None, held: int
) -> None:
    config = parse_config({**VALID, "concurrency": concurrency, "prefetch": prefetch})
    assert config.concurrency + config.prefetch_leases() == held


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "node.toml", VALID)
    config = load_config(
        path,
        environ={"OPENBEEPBOOP_SERVER_URL": "https://q.example", "OPENBEEPBOOP_API_KEY": "sk-env"},
    )
    assert config.server_url == "https://q.example"
    assert config.api_key.get_secret_value() == "sk-env"


def test_default_paths_follow_the_platform_dirs(isolated_home: Path) -> None:
    assert default_config_path() == isolated_home / "config" / "openbeepboop" / "node_config.toml"
    assert default_spool_path("n1").parent == isolated_home / "state" / "openbeepboop"
    assert default_spool_path("n1").name == "node-n1-spool.sqlite3"


def test_node_id_defaults_to_a_valid_host_name() -> None:
    data = {k: v for k, v in VALID.items() if k != "node_id"}
    config = parse_config(data)
    assert config.node_id == default_node_id()
    assert config.node_id


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"concurrency": 0}, "concurrency: Input should be greater than or equal to 1"),
        ({"prefetch": -1}, "prefetch: Input should be greater than or equal to 0"),
        ({"spool_after": -0.1}, "spool_after: Input should be greater than or equal to 0"),
        ({"concurency": 3}, "concurency: unknown setting"),
        ({"server_url": "127.0.0.1:8000"}, "server_url: Value error, must be an http"),
        ({"node_id": "has space"}, "node_id: String should match pattern"),
        ({"models": []}, "models: List should have at least 1 item"),
        (
            {"models": [{"name": "llama3"}]},
            "models[0].litellm_model: required setting is missing",
        ),
        (
            {"models": [{"name": "a", "litellm_model": "x", "api_key": "k", "api_key_env": "E"}]},
            "models[0]: Value error, set api_key or api_key_env, not both",
        ),
        (
            {"models": [{"name": "a", "litellm_model": "x", "defaults": {"api_base": "http://e"}}]},
            "models[0].defaults: Value error, not an OpenAI generation parameter",
        ),
        (
            {"models": [{"name": "*", "litellm_model": "ollama_chat/llama3"}]},
            "needs {model} in litellm_model",
        ),
        (
            {"models": [{"name": "*", "litellm_model": "{model}"}]},
            "needs a fixed provider before {model}",
        ),
        (
            {"models": [{"name": "*", "litellm_model": "{model}/x"}]},
            "needs a fixed provider before {model}",
        ),
        (
            {"models": [{"name": "a", "litellm_model": "x", "fixed": {"api_key": "k"}}]},
            "models[0].fixed: Value error, not an OpenAI generation parameter",
        ),
        (
            {"models": [{"name": "a", "litellm_model": "x", "max_tokens": 0}]},
            "models[0].max_tokens: Input should be greater than or equal to 1",
        ),
        ({"max_content_parts": 0}, "max_content_parts: Input should be greater than or equal"),
        (
            {"models": [{"name": "a", "litellm_model": "x"}, {"name": "a", "litellm_model": "y"}]},
            "model name 'a' appears twice",
        ),
    ],
)
def test_invalid_config_is_one_line_naming_the_field(
    tmp_path: Path, change: dict[str, object], expected: str
) -> None:
    path = write(tmp_path / "node.toml", {**VALID, **change})
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_missing_required_setting_names_it(tmp_path: Path) -> None:
    data = {k: v for k, v in VALID.items() if k != "api_key"}
    with pytest.raises(ConfigError, match="api_key: required setting is missing"):
        load_config(write(tmp_path / "node.toml", data), environ={})


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `openbeepboop-node setup`"):
        load_config(tmp_path / "nope.toml", environ={})


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('server_url = "http://x\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, environ={})


def test_api_key_env_must_be_set_when_the_node_starts() -> None:
    model = ModelConfig(name="gpt", litellm_model="openai/gpt-4o-mini", api_key_env="MY_KEY")
    assert model.resolve_api_key({"MY_KEY": "sk-x"}) == "sk-x"
    with pytest.raises(ConfigError, match="environment variable MY_KEY is not set"):
        model.resolve_api_key({})


def test_wildcard_model_serves_whatever_is_not_listed() -> None:
    config = parse_config(
        {
            **VALID,
            "models": [
                {"name": "llama3", "litellm_model": "ollama_chat/llama3"},
                {"name": "*", "litellm_model": "ollama_chat/{model}"},
            ],
        }
    )
    assert config.model_for("llama3") is config.models[0]
    wildcard = config.model_for("mistral")
    assert wildcard is config.models[1]
    assert wildcard.litellm_model_for("mistral") == "ollama_chat/mistral"
    only_named = parse_config(VALID)
    assert only_named.model_for("mistral") is None


def test_keys_never_show_in_repr() -> None:
    config = parse_config(
        {**VALID, "models": [{"name": "a", "litellm_model": "x", "api_key": "sk-provider-secret"}]}
    )
    assert "a" * 40 not in repr(config)
    assert "sk-provider-secret" not in repr(config)


def test_write_is_atomic_0600_and_round_trips(tmp_path: Path) -> None:
    config = parse_config(
        {
            **VALID,
            "models": [
                {
                    "name": "gpt",
                    "litellm_model": "openai/gpt-4o-mini",
                    "api_key_env": "OPENAI_API_KEY",
                    "timeout": 120,
                    "defaults": {"temperature": 0.2, "max_tokens": 256},
                },
                {"name": "local", "litellm_model": "openai/x", "api_key": "sk-local"},
                {
                    "name": "capped",
                    "litellm_model": "openai/y",
                    "max_tokens": 512,
                    "max_n": 2,
                    "allow_media_urls": True,
                    "fixed": {"temperature": 0},
                },
            ],
            "max_messages": 100,
        }
    )
    path = tmp_path / "deep" / "node_config.toml"
    write_config(config, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    again = load_config(path, environ={})
    assert again == config
    text = path.read_text()
    assert "[[models]]" in text and "[models.defaults]" in text and "[models.fixed]" in text
    assert text.count("allow_media_urls") == 1  # left out where it is the default
    # Overwriting keeps the mode.
    write_config(again, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_where_the_folder_should_be_is_named_as_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    for path in (tmp_path / "afile" / "n.toml", tmp_path / "afile" / "deeper" / "n.toml"):
        with pytest.raises(NotADirectoryError) as raised:
            write_private_file(path, "key = 'sk-x'\n")
        assert raised.value.strerror == f"{tmp_path / 'afile'} is not a directory"


def test_private_file_is_0600_in_a_0700_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "secret.toml"
    write_private_file(path, "key = 'sk-x'\n")
    assert path.read_text() == "key = 'sk-x'\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    write_private_file(path, "key = 'sk-y'\n")
    assert path.read_text() == "key = 'sk-y'\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_private_write_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "secret.toml"
    write_private_file(path, "old\n")

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(f"openbeepboop_node.private_files.os.{failing}", fail)
    with pytest.raises(OSError, match="No space left"):
        write_private_file(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [path]


def test_config_is_immutable() -> None:
    config = NodeConfig.model_validate(VALID)
    with pytest.raises(ValueError, match="frozen"):
        config.concurrency = 9  # type: ignore[misc]


def test_several_server_urls_load_in_order(tmp_path: Path) -> None:
    data = {k: v for k, v in VALID.items() if k != "server_url"}
    data["server_urls"] = ["http://a:8000/", "http://b:8000"]
    config = load_config(write(tmp_path / "n.toml", data), environ={})
    assert config.all_server_urls() == ["http://a:8000", "http://b:8000"]
    assert config.server_url == "http://a:8000"  # the first, for what reads one


def test_one_server_url_is_a_list_of_one() -> None:
    config = parse_config(VALID)
    assert config.all_server_urls() == ["http://127.0.0.1:8000"]


def test_both_url_forms_at_once_are_refused(tmp_path: Path) -> None:
    data = {**VALID, "server_urls": ["http://a:8000", "http://b:8000"]}
    with pytest.raises(ConfigError, match=r"server_url .* or server_urls .* not both"):
        load_config(write(tmp_path / "n.toml", data), environ={})


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        ([], "at least one URL"),
        (["http://a:8000", "ftp://b"], "server_urls: .*http"),
        (["http://a:8000", "http://a:8000/"], "a URL appears twice"),
    ],
)
def test_bad_server_urls_are_named(urls: list[str], problem: str) -> None:
    data = {k: v for k, v in VALID.items() if k != "server_url"}
    with pytest.raises(ConfigError, match=problem):
        parse_config({**data, "server_urls": urls})


#: URLs no HTTP client could send a request to, and what their refusal says.
UNUSABLE_URLS = [
    ("http://a b", "without spaces"),
    ("http://example.com:80/x y", "without spaces"),
    ("http://exa\tmple.com", "control characters"),
    ("http://host:99999", "not a valid URL .*[Pp]ort"),
    ("http://host:abc", "not a valid URL .*[Pp]ort"),
    ("http://[::1", "not a valid URL"),
    ("http://a%20b", "not a valid host name"),
    ("http://a..b:8000", "not a valid host name"),
    ("http://:8000", "not a valid host name"),
]
#: IP addresses and host names of any script.
USABLE_URLS = ["https://[::1]:8000", "http://gpu_box-1.local:8000", "http://bücher.example"]


def with_api_base(url: str) -> dict[str, object]:
    """VALID, its model's api_base set to ``url``."""
    return {**VALID, "models": [{**VALID["models"][0], "api_base": url}]}


@pytest.mark.parametrize(("url", "problem"), UNUSABLE_URLS)
def test_a_server_url_the_http_client_could_not_use_is_refused(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"server_url: .*{problem}"):
        parse_config({**VALID, "server_url": url})


@pytest.mark.parametrize("url", USABLE_URLS)
def test_ip_addresses_and_host_names_of_any_script_are_accepted(url: str) -> None:
    assert parse_config({**VALID, "server_url": url}).server_url == url


@pytest.mark.parametrize(
    ("url", "problem"), [*UNUSABLE_URLS, ("ftp://host", "must be an http:// or https:// URL")]
)
def test_a_model_api_base_the_http_client_could_not_use_is_refused(url: str, problem: str) -> None:
    # Checked as a server URL is: LiteLLM would fail every job of the model.
    with pytest.raises(ConfigError, match=rf"models\[0\]\.api_base: .*{problem}"):
        parse_config(with_api_base(url))


@pytest.mark.parametrize("url", [*USABLE_URLS, "http://v1/v1?api-version=2"])
def test_a_usable_api_base_is_kept(url: str) -> None:
    assert parse_config(with_api_base(url)).models[0].api_base == url


def test_the_environment_may_give_several_urls_comma_separated(tmp_path: Path) -> None:
    data = {k: v for k, v in VALID.items() if k != "server_url"}
    data["server_urls"] = ["http://a:8000", "http://b:8000"]
    path = write(tmp_path / "n.toml", data)
    env = {"OPENBEEPBOOP_SERVER_URL": "http://c:8000, http://d:8000"}
    assert load_config(path, environ=env).all_server_urls() == ["http://c:8000", "http://d:8000"]
    env = {"OPENBEEPBOOP_SERVER_URL": "http://c:8000"}
    assert load_config(path, environ=env).all_server_urls() == ["http://c:8000"]


def test_several_urls_round_trip_as_server_urls(tmp_path: Path) -> None:
    data = {k: v for k, v in VALID.items() if k != "server_url"}
    config = parse_config({**data, "server_urls": ["http://a:8000", "http://b:8000"]})
    path = tmp_path / "n.toml"
    write_config(config, path)
    text = path.read_text()
    assert 'server_urls = [\n    "http://a:8000",\n    "http://b:8000",\n]' in text
    assert "server_url =" not in text
    assert load_config(path, environ={}) == config
    write_config(parse_config(VALID), path)  # one URL keeps the contract's form
    assert 'server_url = "http://127.0.0.1:8000"' in path.read_text()
    assert "server_urls" not in path.read_text()


@pytest.mark.parametrize(
    ("names", "said"),
    [
        (["temperature"], "an OpenAI parameter the node forwards anyway"),
        (["model"], "a field the node sets itself"),
        (["extra_body"], "a field the node sets itself"),
        ([""], "a field name of 1-64 ASCII characters is expected"),
        (["top_k", "top_k"], "a name is listed twice"),
    ],
)
def test_extra_params_refuse_what_is_not_a_servers_own_field(names: list[str], said: str) -> None:
    model = {"name": "m", "litellm_model": "openai/m", "extra_params": names}
    with pytest.raises(ValidationError, match=said):
        NodeConfig.model_validate({"server_url": "http://q", "api_key": "sk-x", "models": [model]})
