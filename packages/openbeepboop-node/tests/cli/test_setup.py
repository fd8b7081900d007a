"""``openbeepboop-node setup``: flags, prompts, and never a hang without a terminal."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from openbeepboop_node.cli import main, options
from openbeepboop_node.cli.errors import EXIT_CONFIG
from openbeepboop_node.cli.setup import DEFAULT_MAX_TOKENS
from openbeepboop_node.config import load_config

KEY = "sk-" + "n" * 40
BASE = [
    "setup",
    "--non-interactive",
    "--server-url",
    "http://127.0.0.1:8000",
    "--api-key",
    KEY,
    "--node-id",
    "gpu-box-1",
    "--concurrency",
    "2",
    "--model",
    "llama3",
    "--litellm-model",
    "ollama_chat/llama3",
    "--api-base",
    "http://localhost:11434",
    "--no-check",  # nothing listens there: the checks have tests of their own
]


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_non_interactive_setup_writes_a_0600_config(tmp_path: Path) -> None:
    path = tmp_path / "node_config.toml"
    code, out, err = run(*BASE, "--config", str(path), "--request-timeout", "90")
    assert code == 0, err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = load_config(path, environ={})
    assert config.server_url == "http://127.0.0.1:8000"
    assert config.api_key.get_secret_value() == KEY
    assert (config.node_id, config.concurrency) == ("gpu-box-1", 2)
    (model,) = config.models
    assert (model.name, model.litellm_model, model.api_base, model.timeout) == (
        "llama3",
        "ollama_chat/llama3",
        "http://localhost:11434",
        90.0,
    )
    assert str(path) in out
    assert KEY not in out + err


def test_a_model_without_max_tokens_gets_the_proposed_default_and_is_told(
    tmp_path: Path,
) -> None:
    path = tmp_path / "node_config.toml"
    code, out, err = run(*BASE, "--config", str(path))
    assert code == 0, err
    (model,) = load_config(path, environ={}).models
    assert model.defaults == {"max_tokens": DEFAULT_MAX_TOKENS}
    assert f"max_tokens = {DEFAULT_MAX_TOKENS}, the proposed default" in out
    assert "--max-tokens N to change it, 0 for none" in out


def test_max_tokens_flag_overrides_the_default_and_zero_means_none(tmp_path: Path) -> None:
    path = tmp_path / "node_config.toml"
    code, out, err = run(*BASE, "--config", str(path), "--max-tokens", "200")
    assert code == 0, err
    assert load_config(path, environ={}).models[0].defaults == {"max_tokens": 200}
    assert "proposed default" not in out  # nothing proposed: the operator chose
    code, out, err = run(*BASE, "--config", str(path), "--max-tokens", "0")
    assert code == 0, err
    assert not load_config(path, environ={}).models[0].defaults
    assert "proposed default" not in out
    code, _, err = run(*BASE, "--config", str(path), "--max-tokens", "-1")
    assert code == 2 and "--max-tokens" in err


def test_a_models_own_max_tokens_is_kept_on_a_later_setup(tmp_path: Path) -> None:
    path = tmp_path / "node_config.toml"
    assert run(*BASE, "--config", str(path), "--max-tokens", "64")[0] == 0
    code, out, err = run(*BASE, "--config", str(path), "--temperature", "0.3")
    assert code == 0, err
    assert load_config(path, environ={}).models[0].defaults == {
        "max_tokens": 64,
        "temperature": 0.3,
    }
    assert "proposed default" not in out


def test_interactive_wizard_proposes_the_max_tokens_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(options, "stdin_is_terminal", lambda: True)
    path = tmp_path / "node_config.toml"
    # Key env var, provider key, timeout, temperature, max_tokens: Enter; no other model.
    answers = "\n\n\n\n\nn\n"
    code, out, err = run("setup", *BASE[2:], "--config", str(path), input=answers)
    assert code == 0, out + err
    prompt = "Default max_tokens when a job sets none (0 for no default)"
    assert f"{prompt} [{DEFAULT_MAX_TOKENS}]" in out
    assert load_config(path, environ={}).models[0].defaults == {"max_tokens": DEFAULT_MAX_TOKENS}


def test_prefetch_is_a_flag_kept_across_later_setups(tmp_path: Path) -> None:
    path = tmp_path / "node_config.toml"
    code, out, err = run(*BASE, "--config", str(path))
    assert code == 0, err
    assert load_config(path, environ={}).prefetch is None  # the default: not written
    assert "concurrency 2, prefetch up to 2" in out
    code, out, err = run(*BASE, "--config", str(path), "--prefetch", "0")
    assert code == 0, err
    assert "concurrency 2, prefetch up to 0" in out
    code, _, err = run(*BASE, "--config", str(path), "--concurrency", "8")
    assert code == 0, err
    config = load_config(path, environ={})
    assert (config.concurrency, config.prefetch_leases()) == (8, 0)


def test_default_location_is_the_user_config_dir(isolated_home: Path) -> None:
    code, _, err = run(*BASE)
    assert code == 0, err
    path = isolated_home / "config" / "openbeepboop" / "node_config.toml"
    assert load_config(path, environ={}).node_id == "gpu-box-1"


@pytest.mark.parametrize(
    ("drop", "missing"),
    [
        ("--server-url", "--server-url is"),
        ("--api-key", "--api-key is"),
        ("--model", "--model and --litellm-model are"),
    ],
)
def test_missing_required_value_is_an_error_not_a_hang(
    tmp_path: Path, drop: str, missing: str
) -> None:
    args = list(BASE)
    i = args.index(drop)
    del args[i : i + 2]
    if drop == "--model":  # and the model's other flags, so nothing names a model
        for other in ("--litellm-model", "--api-base"):
            j = args.index(other)
            del args[j : j + 2]
    path = tmp_path / "node_config.toml"
    code, _, err = run(*args, "--config", str(path))
    assert code == 2
    assert err.startswith(f"Error: {missing} required without a terminal (")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not path.exists()


def test_without_a_terminal_setup_never_prompts(tmp_path: Path) -> None:
    # No --non-interactive, but stdin is not a terminal (CliRunner): still no prompt.
    args = [a for a in BASE if a != "--non-interactive"][: BASE.index("--api-key") - 1]
    code, out, err = run(*args, "--config", str(tmp_path / "c.toml"), input="")
    assert code == 2
    assert err == (
        "Error: --api-key, --model and --litellm-model are required without a terminal "
        "(pass them as flags, or run setup in a terminal)\n"
    )
    assert "?" not in out and ":" not in out


def test_a_value_the_current_file_holds_is_not_missing(tmp_path: Path) -> None:
    path = tmp_path / "node_config.toml"
    assert run(*BASE, "--config", str(path))[0] == 0
    code, _, err = run("setup", "--config", str(path), "--concurrency", "3", "--no-check", input="")
    assert code == 0, err
    assert load_config(path, environ={}).concurrency == 3


def test_running_setup_again_adds_a_model_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "node_config.toml"
    assert run(*BASE, "--config", str(path))[0] == 0
    code, _, err = run(
        "setup",
        "--non-interactive",
        "--no-check",
        "--config",
        str(path),
        "--model",
        "gpt-4o-mini",
        "--litellm-model",
        "openai/gpt-4o-mini",
        "--api-key-env",
        "OPENAI_API_KEY",
        "--temperature",
        "0.2",
        "--default",
        "max_completion_tokens=300",
    )
    assert code == 0, err
    config = load_config(path, environ={})
    assert config.model_names() == ["llama3", "gpt-4o-mini"]
    gpt = config.models[1]
    assert gpt.api_key_env == "OPENAI_API_KEY" and gpt.api_key is None
    assert gpt.defaults == {"temperature": 0.2, "max_completion_tokens": 300}
    assert config.api_key.get_secret_value() == KEY  # kept from the first run


def test_replacing_a_models_key_source(tmp_path: Path) -> None:
    path = tmp_path / "node_config.toml"
    assert run(*BASE, "--config", str(path), "--api-key-env", "LLAMA_KEY")[0] == 0
    code, _, err = run(
        "setup",
        "--non-interactive",
        "--no-check",
        "--config",
        str(path),
        "--model-api-key",
        "sk-direct",
    )
    assert code == 0, err
    (model,) = load_config(path, environ={}).models
    assert model.api_key is not None and model.api_key.get_secret_value() == "sk-direct"
    assert model.api_key_env is None
    assert model.api_base == "http://localhost:11434"


def test_both_key_sources_is_an_error(tmp_path: Path) -> None:
    code, _, err = run(
        *BASE, "--config", str(tmp_path / "c.toml"), "--api-key-env", "E", "--model-api-key", "k"
    )
    assert code == EXIT_CONFIG
    assert "not both" in err


def test_bad_values_are_refused_with_the_field_named(tmp_path: Path) -> None:
    args = list(BASE)
    args[args.index("http://127.0.0.1:8000")] = "ftp://nope"
    code, _, err = run(*args, "--config", str(tmp_path / "c.toml"))
    assert code == EXIT_CONFIG
    assert "server_url" in err
    code, _, err = run(*BASE, "--config", str(tmp_path / "c.toml"), "--default", "api_base=x")
    assert code == 2  # a usage error from click
    assert "not an OpenAI generation parameter" in err


def test_a_server_url_with_a_space_is_refused_and_nothing_written(tmp_path: Path) -> None:
    args = list(BASE)
    args[args.index("http://127.0.0.1:8000")] = "http://a b"
    code, _, err = run(*args, "--config", str(tmp_path / "c.toml"))
    assert code == EXIT_CONFIG
    assert "server_url: " in err and "without spaces" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.toml").exists()


@pytest.mark.parametrize("api_base", ["http://a b", "http://localhost:99999", "http://:11434"])
def test_an_api_base_no_request_could_reach_is_refused_and_nothing_written(
    tmp_path: Path, api_base: str
) -> None:
    args = list(BASE)
    args[args.index("http://localhost:11434")] = api_base
    code, _, err = run(*args, "--no-check", "--config", str(tmp_path / "c.toml"))
    assert code == EXIT_CONFIG
    assert "models[0].api_base: " in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "c.toml").exists()


def test_a_config_path_under_a_file_says_it_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    code, _, err = run(*BASE, "--config", str(tmp_path / "afile" / "n.toml"))
    assert code != 0
    assert err.strip() == (
        f"openbeepboop-node: error: cannot write {tmp_path / 'afile' / 'n.toml'}: "
        f"{tmp_path / 'afile'} is not a directory"
    )


def test_interactive_wizard_asks_what_the_flags_leave_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(options, "stdin_is_terminal", lambda: True)
    path = tmp_path / "node_config.toml"
    answers = "\n".join(
        [
            "http://10.0.0.5:8000",  # server URL
            KEY,  # node API key (hidden)
            "box-7",  # node id
            "3",  # concurrency
            "llama3",  # model name
            "http://127.0.0.1:1",  # API base (nothing there: no list to pick from)
            "ollama_chat/llama3",  # LiteLLM model
            "",  # no key env var
            "",  # no provider key
            "",  # timeout: default
            "0.7",  # default temperature
            "0",  # default max_tokens: none
            "y",  # another model
            "mistral",
            "http://127.0.0.1:1",
            "ollama_chat/mistral",
            "",
            "",
            "45",
            "",
            "",
            "n",
        ]
    )
    code, out, err = run("setup", "--config", str(path), "--no-check", input=answers + "\n")
    assert code == 0, out + err
    config = load_config(path, environ={})
    assert config.server_url == "http://10.0.0.5:8000"
    assert (config.node_id, config.concurrency) == ("box-7", 3)
    assert config.model_names() == ["llama3", "mistral"]
    assert config.models[0].defaults == {"temperature": 0.7}
    assert config.models[1].timeout == 45
    assert KEY not in out


def test_interactive_wizard_keeps_current_values_on_enter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node_config.toml"
    assert run(*BASE, "--config", str(path), "--model-api-key", "sk-provider")[0] == 0
    monkeypatch.setattr(options, "stdin_is_terminal", lambda: True)
    # Enter everywhere, then "no" to another model.
    code, out, err = run("setup", "--config", str(path), "--no-check", input="\n" * 12 + "n\n")
    assert code == 0, out + err
    config = load_config(path, environ={})
    assert config.api_key.get_secret_value() == KEY
    assert config.models[0].api_key is not None
    assert config.models[0].api_key.get_secret_value() == "sk-provider"
    assert config.node_id == "gpu-box-1"
    assert "sk-provider" not in out and KEY not in out
    assert "Queue server URL [http://127.0.0.1:8000]" in out
    assert "Node API key (NODE or ADMIN role) (Enter keeps the current one)" in out


def test_setup_is_reachable_as_a_module(tmp_path: Path) -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "openbeepboop_node", "setup", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--non-interactive", "--api-key-env", "--model-api-key", "--request-timeout"):
        assert flag in out


def test_server_url_may_be_repeated_or_comma_separated(tmp_path: Path) -> None:
    path = tmp_path / "node_config.toml"
    args = [a for a in BASE if a != "http://127.0.0.1:8000" and a != "--server-url"]
    code, out, err = run(
        *args,
        "--config",
        str(path),
        "--server-url",
        "http://a:8000",
        "--server-url",
        "http://b:8000,http://c:8000",
    )
    assert code == 0, out + err
    config = load_config(path, environ={})
    assert config.all_server_urls() == ["http://a:8000", "http://b:8000", "http://c:8000"]
    assert "server: http://a:8000, http://b:8000, http://c:8000" in out
    # Running setup again without the flag keeps the list; one URL replaces it.
    assert run(*args, "--config", str(path))[0] == 0
    assert len(load_config(path, environ={}).all_server_urls()) == 3
    assert run(*args, "--config", str(path), "--server-url", "http://d:8000")[0] == 0
    assert load_config(path, environ={}).all_server_urls() == ["http://d:8000"]
    assert "server_urls" not in path.read_text()
