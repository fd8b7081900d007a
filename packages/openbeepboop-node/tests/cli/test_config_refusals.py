"""node_config.toml: a boolean is no number, and defaults the wire would refuse are refused.

TOML has its own types, so ``concurrency = true`` is a typo, not 1; and a
model's ``defaults``/``fixed`` are sent with every job, so a value the server
would refuse in a job (``max_tokens = -3``) would make every one of them
fail. Both are the node's usual one config line and exit code, before it
asks the server for anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import tomli_w
from click.testing import CliRunner
from openbeepboop_node.cli import main
from openbeepboop_node.cli.errors import EXIT_CONFIG
from openbeepboop_node.config import ModelConfig, NodeConfig
from pydantic import BaseModel

MODEL = {"name": "llama3", "litellm_model": "ollama_chat/llama3"}
#: Nothing listens there, and ``batch`` gives up at once: a config that got past
#: validation ends as an unreachable server (another exit code), never a hang.
VALID: dict[str, Any] = {
    "server_url": "http://127.0.0.1:9",
    "api_key": "sk-" + "a" * 40,
    "node_id": "gpu-box-1",
    "batch_give_up": 0.0,
    "models": [MODEL],
}


def _model(**fields: Any) -> dict[str, Any]:
    return {"models": [{**MODEL, **fields}]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"concurrency": True}, "concurrency: Input should be a valid integer"),
        ({"prefetch": False}, "prefetch: Input should be a valid integer"),
        ({"max_messages": True}, "max_messages: Input should be a valid integer"),
        ({"concurrency": "4"}, "concurrency: Input should be a valid integer"),
        ({"fetch_wait": True}, "fetch_wait: Input should be a valid number"),
        ({"shutdown_grace": "30"}, "shutdown_grace: Input should be a valid number"),
        (_model(concurrency=True), "models[0].concurrency: Input should be a valid integer"),
        (_model(max_tokens=True), "models[0].max_tokens: Input should be a valid integer"),
        (_model(timeout=True), "models[0].timeout: Input should be a valid number"),
        (_model(allow_media_urls=1), "models[0].allow_media_urls: Input should be a valid boolean"),
        (
            _model(defaults={"max_tokens": -3}),
            "models[0].defaults: Value error, max_tokens: Input should be greater than or equal",
        ),
        (
            _model(defaults={"max_completion_tokens": True}),
            "models[0].defaults: Value error, max_completion_tokens: Input should be a valid",
        ),
        (
            _model(defaults={"temperature": 3}),
            "models[0].defaults: Value error, temperature: must be between 0 and 2",
        ),
        (
            _model(fixed={"n": 0}),
            "models[0].fixed: Value error, n: Input should be greater than or equal to 1",
        ),
        (
            _model(fixed={"top_p": True}),
            "models[0].fixed: Value error, top_p: must be a number",
        ),
        (
            _model(name="evil\x1b[31m"),
            "models[0].name: Value error, must not hold control characters",
        ),
    ],
)
def test_a_nonsense_setting_is_one_config_line(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(tomli_w.dumps({**VALID, **change}))
    result = CliRunner().invoke(main, ["-q", "batch", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("openbeepboop-node: error: ")
    assert expected in lines[0]


def test_sensible_numbers_still_load(tmp_path: Path) -> None:
    from openbeepboop_node.config import load_config

    path = tmp_path / "node.toml"
    change = {
        "fetch_wait": 5,  # an integer for a number of seconds
        "concurrency": 2,
        **_model(
            timeout=30,
            defaults={"max_tokens": 512, "temperature": 0.2, "seed": 7, "stop": ["\n\n"]},
            fixed={"top_p": 1},
        ),
    }
    path.write_text(tomli_w.dumps({**VALID, **change}))
    config = load_config(path, environ={})
    assert config.fetch_wait == 5.0 and config.models[0].timeout == 30.0
    assert config.models[0].defaults["max_tokens"] == 512


def _float_settings(model: type[BaseModel]) -> list[str]:
    """Every setting of ``model`` that holds a float (alone or optional)."""
    return [
        name
        for name, info in model.model_fields.items()
        if float in (info.annotation, *get_args(info.annotation))
        or any(float in get_args(arg) for arg in get_args(info.annotation))
    ]


NODE_FLOATS = _float_settings(NodeConfig)
MODEL_FLOATS = _float_settings(ModelConfig)


def test_every_duration_is_found() -> None:
    """The lists below are read from the classes, so a new float setting is covered too."""
    assert {"fetch_wait", "request_timeout", "shutdown_grace", "spool_after"} <= set(NODE_FLOATS)
    assert MODEL_FLOATS == ["timeout"]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize("where", [*NODE_FLOATS, *(f"models[0].{name}" for name in MODEL_FLOATS)])
def test_no_float_setting_is_endless(tmp_path: Path, where: str, value: str) -> None:
    """TOML reads ``inf`` and ``nan`` as floats; each is refused with the usual line."""
    data = {**VALID, "models": [dict(MODEL)]}
    table, name = (data["models"][0], where[len("models[0].") :]) if "." in where else (data, where)
    table[name] = float(value)
    path = tmp_path / "node.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(main, ["-q", "batch", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"openbeepboop-node: error: {path}: {where}: "), lines[0]


@pytest.mark.parametrize(
    ("table", "params", "expected"),
    [
        ("defaults", {"seed": float("inf")}, "seed: must be a finite number"),
        ("fixed", {"temperature": float("inf")}, "temperature: must be a finite number"),
        ("defaults", {"logit_bias": {"50256": float("-inf")}}, "logit_bias: must be a finite"),
        ("fixed", {"stop": [float("nan")]}, "stop: must be a finite number"),
    ],
)
def test_no_endless_number_in_defaults_or_fixed(
    tmp_path: Path, table: str, params: dict[str, Any], expected: str
) -> None:
    """Sent with every job, where JSON has no such numbers: refused, nested too."""
    path = tmp_path / "node.toml"
    path.write_text(tomli_w.dumps({**VALID, **_model(**{table: params})}))
    result = CliRunner().invoke(main, ["-q", "batch", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG, result.output
    assert f"models[0].{table}: Value error, {expected}" in result.stderr, result.stderr


def test_check_refuses_an_endless_model_timeout(tmp_path: Path) -> None:
    """The QA file as written by hand: ``check`` no longer reports the model ok."""
    path = tmp_path / "node.toml"
    path.write_text(
        'server_url = "http://127.0.0.1:9"\n'
        f'api_key = "{VALID["api_key"]}"\n'
        'node_id = "cfginf"\n\n'
        "[[models]]\n"
        'name = "cfgm"\n'
        'litellm_model = "openai/m"\n'
        'api_base = "http://127.0.0.1:9/v1"\n'
        "timeout = inf\n"
    )
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG, result.output
    assert result.stdout.startswith("FAILED config: "), result.stdout
    assert "models[0].timeout: Input should be a finite number" in result.stdout
    assert "Traceback" not in result.output
