"""Control characters: refused in the names the wire takes, escaped wherever text is shown."""

from __future__ import annotations

import pytest
from openbeepboop_schemas import (
    ChatCompletionRequest,
    FetchRequest,
    HeartbeatRequest,
    ModelStatus,
    NodeStatus,
    PoolStatus,
    RecentFailure,
    escape_control,
    format_pool_status,
)
from pydantic import ValidationError

#: The QA reproduction: clear screen, home, terminal title, colour, a forged line.
HOSTILE = "\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b[31mALL NODES DOWN\x1b[0m\nfake line"

CONTROLS = ["\x00", "\x07", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9b", "\x9f"]


def _chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize("control", CONTROLS)
def test_a_model_name_with_a_control_character_is_refused_everywhere(control: str) -> None:
    name = f"evil{control}name"
    with pytest.raises(ValidationError, match="control characters"):
        ChatCompletionRequest.model_validate(_chat(name))
    with pytest.raises(ValidationError, match="control characters"):
        FetchRequest.model_validate({"node_id": "n1", "models": [name]})
    with pytest.raises(ValidationError, match="control characters"):
        FetchRequest.model_validate({"node_id": "n1", "models": ["ok"], "serves": [name]})
    with pytest.raises(ValidationError, match="control characters"):
        HeartbeatRequest.model_validate({"node_id": "n1", "models": [name]})


@pytest.mark.parametrize("control", CONTROLS)
def test_a_node_version_with_a_control_character_is_refused(control: str) -> None:
    for body in (FetchRequest, HeartbeatRequest):
        with pytest.raises(ValidationError, match="control characters"):
            body.model_validate({"node_id": "n1", "models": ["m"], "version": f"1.0{control}"})


def test_printable_unicode_names_and_versions_still_pass() -> None:
    name = "org/llama-3.1:8b é→ 模型 \u00a0"
    assert ChatCompletionRequest.model_validate(_chat(name)).model == name
    fetch = FetchRequest.model_validate({"node_id": "n1", "models": [name], "version": "0.1 β"})
    assert fetch.models == [name] and fetch.version == "0.1 β"


def test_the_published_schema_states_the_rule() -> None:
    pattern = ChatCompletionRequest.model_json_schema()["properties"]["model"]["pattern"]
    assert pattern == "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"


def test_escape_control_leaves_one_inert_line() -> None:
    shown = escape_control(HOSTILE + "\u2028x\u0085y\x00")
    assert shown == (
        "\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07\\x1b[31mALL NODES DOWN\\x1b[0m\\x0afake line"
        "\\u2028x\\x85y\\x00"
    )
    assert shown.isprintable()
    assert escape_control("plain é→ 模型") == "plain é→ 模型"


def test_pool_status_text_holds_no_control_character() -> None:
    # A name stored by an older version (the wire refuses it now), a node's
    # version and a backend's error message all reach the tables escaped.
    status = PoolStatus(
        generated_at=1_000.0,
        window_seconds=300.0,
        node_seen_seconds=900.0,
        models=[ModelStatus(model=HOSTILE, queued=200)],
        models_total=1,
        nodes=[
            NodeStatus(
                node_id="n1\x1b[31m",
                key_name="k\r",
                version="1.0\x1b]0;x\x07",
                models=[HOSTILE],
                last_seen=990.0,
                seen_seconds_ago=10.0,
            )
        ],
        nodes_online=1,
        recent_failures=[
            RecentFailure(
                job_id="job-1",
                model=HOSTILE,
                error_message="\x1b[31mboom\x1b[0m",
                failed_at=900.0,
            )
        ],
    )
    lines = format_pool_status(status).split("\n")
    assert all(line.isprintable() for line in lines), lines
    assert not any(line.startswith("fake line") for line in lines)
    [model_line] = [line for line in lines if line.startswith("\\x1b[2J\\x1b[H")]
    assert "\\x1b[0m\\x0afake line  200 " in model_line
    assert any("\\x1b[31mboom\\x1b[0m" in line for line in lines)
