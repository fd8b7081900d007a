"""The allow-list: only OpenAI generation parameters of a job reach LiteLLM."""

from __future__ import annotations

from openbeepboop_node.request_params import DEFAULTABLE_PARAMS, FORWARDED_PARAMS, job_params
from openbeepboop_schemas import ChatCompletionRequest


def request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_generation_parameters_pass_controls_are_dropped() -> None:
    params, dropped = job_params(
        request(
            temperature=0.5,
            tools=[{"type": "function", "function": {"name": "f"}}],
            response_format={"type": "json_object"},
            reasoning_effort="low",
            api_base="http://evil",
            api_key="sk-evil",
            base_url="http://evil",
            custom_llm_provider="x",
            mock_response="pwned",
            metadata={"a": 1},
            extra_headers={"X": "1"},
            timeout=1,
            num_retries=9,
            stream=False,
        )
    )
    assert params == {
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_object"},
        "reasoning_effort": "low",
    }
    assert sorted(dropped) == sorted(
        [
            "api_base",
            "api_key",
            "base_url",
            "custom_llm_provider",
            "mock_response",
            "metadata",
            "extra_headers",
            "timeout",
            "num_retries",
        ]
    )


def test_no_litellm_control_is_on_the_allow_list() -> None:
    controls = {
        "model",
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "custom_llm_provider",
        "mock_response",
        "extra_headers",
        "headers",
        "extra_body",
        "metadata",
        "timeout",
        "num_retries",
        "max_retries",
        "stream",
        "stream_options",
        "litellm_logging_obj",
        "fallbacks",
        "input_cost_per_token",
        "organization",
        "client",
    }
    assert not controls & FORWARDED_PARAMS
    assert "messages" not in DEFAULTABLE_PARAMS


def test_defaults_fill_only_what_the_job_left_out() -> None:
    defaults = {"temperature": 0.1, "max_tokens": 64}
    params, _ = job_params(request(temperature=0.9), defaults)
    assert (params["temperature"], params["max_tokens"]) == (0.9, 64)
    params, _ = job_params(request(temperature=None), defaults)
    assert params["temperature"] == 0.1  # an explicit null counts as "not set"
    params, _ = job_params(request(), None)
    assert set(params) == {"messages"}


def test_extra_message_fields_are_kept() -> None:
    params, _ = job_params(
        ChatCompletionRequest.model_validate(
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "hi", "name": "bob"},
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
                ],
            }
        )
    )
    assert params["messages"][0]["name"] == "bob"
    assert params["messages"][1]["tool_calls"] == [{"id": "1"}]
