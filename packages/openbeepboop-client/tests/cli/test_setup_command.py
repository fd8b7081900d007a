"""``setup``: flags without a terminal, a wizard on one, a private file either way.

The server setup asks for its models (``GET /v1/models``) is mocked for
every host: by default its nodes serve ``llama3`` and ``qwen``.
"""

from __future__ import annotations

import shlex
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from conftest import Cli, assert_one_line_error, error_body
from openbeepboop._config import default_config_path, read_config_file
from openbeepboop.cli import setup as cli_setup

KEY = "sk-" + "s" * 40
OTHER_KEY = "sk-" + "o" * 40


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def models_body(*names: str) -> dict:
    return {"object": "list", "data": [{"id": name, "nodes": 1} for name in names]}


@pytest.fixture(autouse=True)
def models() -> Iterator[respx.Route]:
    """``GET /v1/models`` on whatever server setup is given."""
    with respx.mock(assert_all_called=False) as router:
        yield router.get(path="/v1/models").respond(200, json=models_body("llama3", "qwen"))


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


def test_flags_skip_their_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: respx.Route
) -> None:
    monkeypatch.setattr(cli_setup, "stdin_is_terminal", lambda: True)
    models.respond(200, json=models_body())  # no node serves anything: nothing to offer
    path = tmp_path / "c.toml"
    result = Cli(path)("setup", "--server-url", "http://h:1", "--api-key", KEY, input="\n")
    assert result.exit_code == 0, result.stderr
    assert "Queue server URL" not in result.stdout
    assert "No node serves a model right now" in result.stdout
    assert read_config_file(path).values == {"server_url": "http://h:1", "api_key": KEY}


def test_the_wizard_offers_the_served_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: respx.Route
) -> None:
    monkeypatch.setattr(cli_setup, "stdin_is_terminal", lambda: True)
    path = tmp_path / "c.toml"
    result = Cli(path)("setup", input=f"http://queue:9000\n{KEY}\n\n")  # Enter takes the offer
    assert result.exit_code == 0, result.stderr
    assert "Models the server's nodes serve now: llama3, qwen" in result.stdout
    assert "Default model (empty for none) [llama3]" in result.stdout
    assert read_config_file(path).get_str("default_model") == "llama3"
    # It asked the server just entered, with the key just entered.
    request = models.calls.last.request
    assert str(request.url) == "http://queue:9000/v1/models"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert result.stdout.splitlines()[-1] == (
        f'Try it: openbeepboop-client submit "Say hello" --config {shlex.quote(str(path))} --wait'
    )


def test_the_wizard_says_when_the_chosen_model_is_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_setup, "stdin_is_terminal", lambda: True)
    path = tmp_path / "c.toml"
    result = Cli(path)("setup", input=f"http://queue:9000\n{KEY}\nmistral\n")
    assert result.exit_code == 0, result.stderr
    assert "no node serves 'mistral' right now; its jobs wait until one does" in result.stderr
    assert read_config_file(path).get_str("default_model") == "mistral"


def test_try_it_names_a_served_model_when_no_default_was_set(
    tmp_path: Path, models: respx.Route
) -> None:
    path = tmp_path / "my config" / "c.toml"
    result = Cli(path)("setup", "--non-interactive", "--server-url", "http://h:1", "--api-key", KEY)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"Try it: openbeepboop-client submit \"Say hello\" --config '{path}' --model llama3 --wait"
    )
    assert models.called


def test_the_model_with_the_most_nodes_is_offered_first(
    tmp_path: Path, models: respx.Route
) -> None:
    cards = [{"id": "a", "nodes": 1}, {"id": "b", "nodes": 3}, {"id": "c", "nodes": 3}]
    models.respond(200, json={"object": "list", "data": cards})
    path = tmp_path / "c.toml"
    result = Cli(path)("setup", "--non-interactive", "--server-url", "http://h:1", "--api-key", KEY)
    assert result.stdout.splitlines()[-1].endswith("--model b --wait")


def test_try_it_with_a_default_model_asks_nothing(tmp_path: Path, models: respx.Route) -> None:
    path = tmp_path / "c.toml"
    result = Cli(path)(
        "setup", "--non-interactive", "--server-url", "http://h:1", "--api-key", KEY,
        "--default-model", "qwen",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f'Try it: openbeepboop-client submit "Say hello" --config {path} --wait'
    )
    assert not models.called


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (httpx.ConnectError("refused"), "is the server running"),
        (httpx.Response(401, json=error_body("invalid API key")), "rejected the API key"),
    ],
)
def test_a_server_that_cannot_be_asked_still_gets_its_file(
    tmp_path: Path, models: respx.Route, answer: object, why: str
) -> None:
    if isinstance(answer, Exception):
        models.mock(side_effect=answer)
    else:
        models.mock(return_value=answer)
    path = tmp_path / "c.toml"
    result = Cli(path)("setup", "--non-interactive", "--server-url", "http://h:1", "--api-key", KEY)
    assert result.exit_code == 0, result.stderr
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("Warning: could not list the server's models: ") and why in warning
    assert read_config_file(path).get_str("api_key") == KEY
    assert "No node serves a model yet" in result.stdout
    assert "--model NAME --wait" in result.stdout


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
