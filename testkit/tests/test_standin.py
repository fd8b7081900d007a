"""The stand-in LLM behaves as its knobs say, in a thread and as a process."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from openbeepboop_testkit.processes import ProcessSet, free_port
from openbeepboop_testkit.standin import (
    PERMANENT_ERROR_MESSAGE,
    StandinClient,
    StandinLLM,
    standin_command,
)


def chat(base_url: str, prompt: str, key: str = "sk-test", **extra: object) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], **extra}
    return httpx.post(
        f"{base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", "X-Trace": "t1"},
        timeout=30,
    )


def test_answers_a_chat_completion_and_logs_the_call() -> None:
    with StandinLLM() as llm:
        response = chat(llm.base_url, "hello there world", seed=7)
        assert response.status_code == 200
        body = response.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == "Echo: hello there world"
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        [call] = llm.calls()
        assert call.prompt == "hello there world"
        assert call.api_key == "sk-test"
        assert "authorization" not in call.headers
        assert call.headers["x-trace"] == "t1"
        assert call.body_keys == ["messages", "model", "seed"]
        assert call.answered_at is not None and llm.answered_calls() == [call]
        models = httpx.get(f"{llm.base_url}/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["standin-model"]


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    with StandinLLM() as llm:
        body = chat(llm.base_url, "one two three four", max_tokens=2).json()
        assert body["choices"][0]["message"]["content"] == "Echo: one"
        assert body["choices"][0]["finish_reason"] == "length"


def test_fail_status_always_fails_with_an_openai_error() -> None:
    with StandinLLM(fail_status=503) as llm:
        for _ in range(2):
            response = chat(llm.base_url, "x")
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "server_error"
        assert [c.status for c in llm.calls()] == [503, 503]


def test_fail_first_n_is_counted_per_prompt() -> None:
    with StandinLLM(fail_first_n=2, fail_status=429) as llm:
        assert [chat(llm.base_url, "a").status_code for _ in range(3)] == [429, 429, 200]
        assert chat(llm.base_url, "b").status_code == 429
        assert llm.prompt_counts() == {"a": 3, "b": 1}


def test_flaky_marker_limits_fail_first_n() -> None:
    with StandinLLM(fail_first_n=1, flaky_marker="FLAKY") as llm:
        assert chat(llm.base_url, "steady").status_code == 200
        assert [chat(llm.base_url, "FLAKY one").status_code for _ in range(2)] == [500, 200]


def test_fail_prompts_are_permanent_400s() -> None:
    with StandinLLM(fail_prompts=["POISON"]) as llm:
        for _ in range(2):
            response = chat(llm.base_url, "a POISON pill")
            assert response.status_code == 400
            assert PERMANENT_ERROR_MESSAGE in response.json()["error"]["message"]
        assert chat(llm.base_url, "fine").status_code == 200


def test_runtime_control_over_http_and_reset() -> None:
    with StandinLLM() as llm:
        control = StandinClient(llm.url)
        assert control.configure(fail_status=500)["fail_status"] == 500
        assert chat(llm.base_url, "x").status_code == 500
        control.configure(fail_status=None)
        assert chat(llm.base_url, "x").status_code == 200
        assert len(control.calls()) == 2
        control.reset()
        assert control.calls() == []
        bad = httpx.post(f"{llm.url}/_control", json={"nope": 1}, timeout=10)
        assert bad.status_code == 400


def test_runs_as_a_process_with_a_port_file(tmp_path: Path) -> None:
    procs = ProcessSet(tmp_path / "logs")
    try:
        port_file = tmp_path / "port"
        argv = standin_command(port_file, fail_prompts=["BAD"], delay=0.01)
        assert argv[0] == sys.executable
        proc = procs.start("standin", argv)
        port = proc.wait_for_port_file(port_file)
        control = StandinClient(f"http://127.0.0.1:{port}")
        assert chat(control.base_url, "ok").status_code == 200
        assert chat(control.base_url, "BAD one").status_code == 400
        assert [c.prompt for c in control.calls()] == ["ok", "BAD one"]
    finally:
        procs.stop_all()
    assert proc.returncode is not None


@pytest.mark.parametrize("stream", [True])
def test_streaming_is_refused(stream: bool) -> None:
    with StandinLLM() as llm:
        assert chat(llm.base_url, "x", stream=stream).status_code == 400


def test_calls_are_logged_on_arrival_before_the_delay() -> None:
    import threading

    with StandinLLM(delay=30) as llm:
        worker = threading.Thread(target=lambda: chat(llm.base_url, "slow"), daemon=True)
        worker.start()
        from openbeepboop_testkit.processes import wait_until

        [call] = wait_until(llm.calls, timeout=30, message="the call to arrive")
        assert call.prompt == "slow" and call.answered_at is None
        assert llm.answered_calls() == []
        llm.configure(delay=0)


def test_a_chosen_port_is_refused_until_the_stand_in_starts_there() -> None:
    port = free_port()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
    llm = StandinLLM(port=port)
    for _ in range(2):  # started, stopped and started again on the same port
        with llm:
            assert llm.port == port
            assert chat(llm.base_url, "up").status_code == 200
