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


def test_a_max_tokens_default_is_not_added_beside_a_jobs_max_completion_tokens() -> None:
    # Setup writes defaults.max_tokens for every new model: a job that set the
    # newer name must not be sent both (one limit, two names).
    params, _ = job_params(request(max_completion_tokens=300), {"max_tokens": 1024})
    assert params["max_completion_tokens"] == 300 and "max_tokens" not in params
    params, _ = job_params(request(max_tokens=10), {"max_completion_tokens": 99})
    assert params["max_tokens"] == 10 and "max_completion_tokens" not in params
    params, _ = job_params(request(), {"max_tokens": 1024})
    assert params["max_tokens"] == 1024


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


def test_fixed_parameters_replace_the_jobs() -> None:
    params, _ = job_params(
        request(temperature=1.5, seed=3), {"temperature": 0.7}, fixed={"temperature": 0}
    )
    assert params["temperature"] == 0
    assert params["seed"] == 3


def test_the_token_cap_lowers_both_token_limits_and_fills_an_unset_one() -> None:
    capped, _ = job_params(request(max_tokens=10_000, max_completion_tokens=50), max_tokens=100)
    assert (capped["max_tokens"], capped["max_completion_tokens"]) == (100, 50)
    only_new, _ = job_params(request(max_completion_tokens=10_000), max_tokens=100)
    assert only_new["max_completion_tokens"] == 100 and "max_tokens" not in only_new
    unset, _ = job_params(request(), max_tokens=100)
    assert unset["max_tokens"] == 100
    defaulted, _ = job_params(request(), {"max_tokens": 5000}, max_tokens=100)
    assert defaulted["max_tokens"] == 100


def test_the_n_cap_lowers_n_and_leaves_it_unset_otherwise() -> None:
    assert job_params(request(n=128), max_n=2)[0]["n"] == 2
    assert job_params(request(n=1), max_n=2)[0]["n"] == 1
    assert "n" not in job_params(request(), max_n=2)[0]


def test_fields_the_operator_names_go_in_extra_body_and_nothing_else_does() -> None:
    # vLLM's own sampling knobs: dropped unless the model's extra_params names them.
    thinking = {"enable_thinking": False}
    job = request(top_k=5, min_p=None, chat_template_kwargs=thinking, api_base="x")
    params, dropped = job_params(job, extra=("top_k", "min_p", "chat_template_kwargs"))
    assert params["extra_body"] == {"top_k": 5, "chat_template_kwargs": thinking}
    assert dropped == ["api_base"]
    params, dropped = job_params(job)
    assert "extra_body" not in params
    assert sorted(dropped) == ["api_base", "chat_template_kwargs", "min_p", "top_k"]
