"""LiteLLM for real, against the stand-in LLM on loopback: results, allow-list, errors."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import PROVIDER_KEY
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.exceptions import BackendUnreachableError, InferenceError
from openbeepboop_node.inference import (
    Inference,
    connection_failure,
    load_litellm,
    price_unknown_model_as_free,
    to_node_error,
)
from openbeepboop_node.model_routes import ModelRoutes
from openbeepboop_node.request_params import FORWARDED_PARAMS
from openbeepboop_schemas import ChatCompletion, ChatCompletionRequest
from openbeepboop_testkit.standin import StandinLLM


def request(content: str = "Hi", **params: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "standin", "messages": [{"role": "user", "content": content}], **params}
    )


async def complete(config: NodeConfig, req: ChatCompletionRequest) -> ChatCompletion:
    route = ModelRoutes(config).route_for(req.model)
    assert route is not None
    return await Inference().complete(route, req)


@pytest.fixture(scope="module")
def attacker() -> Iterator[StandinLLM]:
    """A second LLM server that a malicious job would like the node to call."""
    with StandinLLM() as server:
        yield server


def test_importing_the_node_does_not_import_litellm() -> None:
    probe = (
        "import sys, openbeepboop_node, openbeepboop_node.cli, openbeepboop_node.worker\n"
        "print('litellm' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_litellm_is_set_up_to_stay_offline() -> None:
    litellm = load_litellm()
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert litellm.suppress_debug_info is True
    assert litellm.success_callback == [] and litellm.failure_callback == []
    assert litellm.model_cost  # the bundled cost map loaded without a download


@pytest.mark.parametrize(("litellm_log", "redacted"), [("", "False"), ("DEBUG", "True")])
def test_litellm_blanks_messages_out_of_its_logging_only_when_its_logs_are_on(
    litellm_log: str, redacted: str
) -> None:
    # In a fresh interpreter: LiteLLM is set up once per process.
    probe = (
        "from openbeepboop_node.inference import load_litellm\n"
        "print(load_litellm().turn_off_message_logging)"
    )
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOG"}
    if litellm_log:
        env["LITELLM_LOG"] = litellm_log
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert out[-1] == redacted


def test_what_litellm_leaves_behind_is_frozen_out_of_the_collector() -> None:
    # In a fresh interpreter: this test process may have loaded LiteLLM already.
    probe = (
        "import gc\n"
        "from openbeepboop_node.inference import load_litellm\n"
        "assert gc.get_freeze_count() == 0\n"
        "litellm = load_litellm()\n"
        "print(gc.get_freeze_count(), any(o is litellm.model_cost for o in gc.get_objects()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    # LiteLLM's import is some 400,000 objects; a full collection no longer walks them.
    assert int(out[0]) > 100_000
    assert out[1] == "False"


async def test_result_is_the_chat_completion(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    result = await complete(make_config(), request("Hello there"))
    assert result.object == "chat.completion"
    assert result.choices[0].message.content == "Echo: Hello there"
    assert result.usage is not None and result.usage.completion_tokens == 3
    (call,) = llm.calls()
    assert call.api_key == PROVIDER_KEY
    assert call.model == "standin-model"


async def test_the_request_leaving_is_reported_once_before_the_answer(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    # Through LiteLLM's logger_fn, which it calls before the request and
    # again after the answer; an upgrade that stops calling it fails here.
    route = ModelRoutes(make_config()).route_for("standin")
    assert route is not None
    sent: list[str] = []
    result = await Inference().complete(route, request("Hi"), on_sent=lambda: sent.append("out"))
    assert result.choices[0].message.content == "Echo: Hi"
    assert sent == ["out"]
    assert len(llm.calls()) == 1


async def test_a_model_litellm_cannot_price_is_registered_as_free(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    litellm = load_litellm()
    model = "openai/obb-test-unpriced-model"
    with pytest.raises(Exception):  # noqa: B017 - LiteLLM raises a bare Exception
        litellm.get_model_info(model=model)
    models = [{"name": "standin", "litellm_model": model, "api_base": llm.base_url}]
    config = make_config(models=[{**models[0], "api_key": PROVIDER_KEY}])
    result = await complete(config, request("Hi"))
    assert result.choices[0].message.content == "Echo: Hi"
    info = litellm.get_model_info(model=model)
    assert (info["input_cost_per_token"], info["output_cost_per_token"]) == (0.0, 0.0)


def test_a_model_litellm_prices_keeps_its_price() -> None:
    litellm = load_litellm()
    before = litellm.get_model_info(model="gpt-4o")["input_cost_per_token"]
    price_unknown_model_as_free("gpt-4o")
    assert litellm.get_model_info(model="gpt-4o")["input_cost_per_token"] == before > 0


async def test_generation_parameters_reach_the_llm(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    await complete(
        make_config(),
        request(temperature=0.3, max_tokens=50, seed=7, stop=["\n"], top_p=0.9, n=2),
    )
    (call,) = llm.calls()
    assert call.body["temperature"] == 0.3
    assert call.body["max_tokens"] == 50
    assert call.body["seed"] == 7
    assert call.body["stop"] == ["\n"]
    assert call.body["n"] == 2
    assert call.body["top_p"] == 0.9


async def test_model_defaults_apply_only_where_the_job_is_silent(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    config = make_config()
    model = config.models[0].model_copy(update={"defaults": {"temperature": 0.1, "max_tokens": 9}})
    config = config.model_copy(update={"models": [model]})
    await complete(config, request("a", temperature=1.5))
    await complete(config, request("b"))
    first, second = llm.calls()
    assert (first.body["temperature"], first.body["max_tokens"]) == (1.5, 9)
    assert (second.body["temperature"], second.body["max_tokens"]) == (0.1, 9)


async def test_a_models_extra_params_reach_its_server_in_the_body(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    config = make_config()
    model = config.models[0].model_copy(update={"extra_params": ["top_k", "repetition_penalty"]})
    config = config.model_copy(update={"models": [model]})
    await complete(config, request("knobs", top_k=5, repetition_penalty=1.1, min_p=0.2))
    (call,) = llm.calls()
    assert (call.body["top_k"], call.body["repetition_penalty"]) == (5, 1.1)
    assert "min_p" not in call.body and "extra_body" not in call.body


ATTACK_FIELDS = {
    "api_base": None,  # filled with the attacker's URL
    "base_url": None,
    "api_key": "sk-attacker",
    "custom_llm_provider": "anthropic",
    "mock_response": "pwned",
    "extra_headers": {"X-Evil": "1"},
    "headers": {"X-Evil": "1"},
    "metadata": {"steal": True},
    "timeout": 0.000001,
    "num_retries": 50,
    "max_retries": 50,
    "extra_body": {"evil": True},
    "api_version": "evil",
    "organization": "evil-org",
    "input_cost_per_token": 100,
    "litellm_logging_obj": "x",
    "fallbacks": ["openai/gpt-4o"],
    "stream": False,
    "stream_options": {"include_usage": True},
    "service_tier": "priority",
    "store": True,
}


async def test_a_job_cannot_redirect_the_call_or_leak_the_key(
    llm: StandinLLM, attacker: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    attacker.reset()
    fields = dict(ATTACK_FIELDS, api_base=attacker.base_url, base_url=attacker.base_url)
    result = await complete(make_config(), request("innocent", **fields))
    # The operator's endpoint and key were used, the attacker saw nothing.
    assert attacker.calls() == []
    (call,) = llm.calls()
    assert call.api_key == PROVIDER_KEY
    assert "x-evil" not in {h.lower() for h in call.headers}
    assert set(call.body_keys) <= FORWARDED_PARAMS | {"model", "stream"}
    assert "evil" not in json.dumps(call.body)
    # No mock answer: the real (stand-in) LLM answered.
    assert result.choices[0].message.content == "Echo: innocent"
    assert PROVIDER_KEY not in result.model_dump_json()


async def test_an_explicit_api_key_field_does_not_replace_the_operators(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    await complete(make_config(), request("x", api_key="sk-attacker", extra_body={"api_key": "y"}))
    assert [c.api_key for c in llm.calls()] == [PROVIDER_KEY]


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (400, "invalid_request_error", False),
        (401, "authentication_error", False),
        (403, "permission_error", False),
        (404, "not_found_error", False),
        (408, "timeout", True),
        (422, "invalid_request_error", False),
        (429, "rate_limit_error", True),
        (500, "server_error", True),
        (502, "server_error", True),
        (503, "service_unavailable", True),
    ],
)
async def test_provider_status_maps_to_retryable_or_permanent(
    llm: StandinLLM,
    make_config: Callable[..., NodeConfig],
    status: int,
    error_type: str,
    retryable: bool,
) -> None:
    llm.configure(fail_status=status)
    with pytest.raises(InferenceError) as caught:
        await complete(make_config(), request("fail"))
    error = caught.value.error
    assert (error.type, error.retryable) == (error_type, retryable)
    # LiteLLM before ~1.100 reported a 422 as its BadRequestError (400).
    assert error.status_code == status or (status, error.status_code) == (422, 400)
    assert f"stand-in error (status {status})" in error.message
    assert len(llm.calls()) == 1  # LiteLLM's own retries are off: the queue retries


async def test_slow_llm_times_out_as_retryable(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    llm.configure(delay=3.0)
    config = make_config()
    model = config.models[0].model_copy(update={"timeout": 0.3})
    config = config.model_copy(update={"models": [model]})
    with pytest.raises(InferenceError) as caught:
        await complete(config, request("slow"))
    assert caught.value.error.retryable is True
    assert caught.value.error.type == "timeout"


def closed_port() -> int:
    """A loopback port where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A loopback port whose listener never accepts: its queue is full, a connect times out.

    With a backlog of 0 Linux completes one handshake into the accept queue;
    the filler takes it, and every later SYN is dropped.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    try:
        yield int(listener.getsockname()[1])
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def config_for(
    make_config: Callable[..., NodeConfig], litellm_model: str, api_base: str, timeout: float = 20
) -> NodeConfig:
    config = make_config()
    model = config.models[0].model_copy(
        update={"litellm_model": litellm_model, "api_base": api_base, "timeout": timeout}
    )
    return config.model_copy(update={"models": [model]})


@pytest.mark.parametrize("litellm_model", ["openai/m", "ollama_chat/m", "hosted_vllm/m"])
async def test_a_refused_connection_is_a_backend_failure_not_the_jobs(
    make_config: Callable[..., NodeConfig], litellm_model: str
) -> None:
    config = config_for(make_config, litellm_model, f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(BackendUnreachableError) as caught:
        await complete(config, request("anyone?"))
    assert "127.0.0.1" in str(caught.value)


@pytest.mark.parametrize("litellm_model", ["openai/m", "ollama_chat/m"])
async def test_a_name_that_does_not_resolve_is_a_backend_failure(
    make_config: Callable[..., NodeConfig], litellm_model: str
) -> None:
    # .invalid never resolves (RFC 6761): no DNS server is asked for a real name.
    config = config_for(make_config, litellm_model, "http://backend.invalid:11434")
    with pytest.raises(BackendUnreachableError):
        await complete(config, request("anyone?"))


@pytest.mark.parametrize("litellm_model", ["openai/m", "ollama_chat/m"])
async def test_a_connect_timeout_is_a_backend_failure(
    make_config: Callable[..., NodeConfig], litellm_model: str, unanswered_port: int
) -> None:
    base = f"http://127.0.0.1:{unanswered_port}"
    config = config_for(make_config, litellm_model, base, timeout=0.5)
    with pytest.raises(BackendUnreachableError):
        await complete(config, request("anyone?"))


async def test_a_slow_answer_is_a_timeout_of_the_job_not_a_dead_backend(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    # Connected, then no answer in time (a read timeout): today's retry rules.
    llm.configure(delay=3.0)
    config = config_for(make_config, "openai/m", llm.base_url, timeout=0.3)
    with pytest.raises(InferenceError) as caught:
        await complete(config, request("slow"))
    assert (caught.value.error.type, caught.value.error.retryable) == ("timeout", True)


@pytest.mark.parametrize("status", [500, 503, 400])
async def test_a_backend_that_answers_with_an_error_keeps_the_retry_rules(
    llm: StandinLLM, make_config: Callable[..., NodeConfig], status: int
) -> None:
    llm.configure(fail_status=status)
    with pytest.raises(InferenceError) as caught:
        await complete(make_config(), request("answered"))
    assert caught.value.error.status_code == status


def test_a_tls_failure_is_not_taken_for_a_dead_backend() -> None:
    import httpx

    error = httpx.ConnectError("certificate verify failed")
    error.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    assert connection_failure(error) is None


def test_the_cause_chain_is_searched_for_a_connect_failure() -> None:
    import httpx

    def chained(inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as exc:
                raise RuntimeError("litellm.InternalServerError: Connection error.") from exc
        except RuntimeError as outer:
            return outer

    assert connection_failure(chained(ConnectionRefusedError(111, "refused"))) is not None
    assert connection_failure(chained(socket.gaierror(-2, "Name or service not known")))
    assert connection_failure(chained(httpx.ConnectTimeout("connect timeout")))
    assert connection_failure(chained(httpx.ReadTimeout("read timeout"))) is None
    assert connection_failure(chained(httpx.RemoteProtocolError("disconnected"))) is None
    assert connection_failure(RuntimeError("nothing below")) is None


def test_context_window_and_content_policy_are_permanent() -> None:
    litellm = load_litellm()
    window = litellm.ContextWindowExceededError(
        message="too long", model="m", llm_provider="openai"
    )
    policy = litellm.ContentPolicyViolationError(message="no", model="m", llm_provider="openai")
    assert (to_node_error(window).type, to_node_error(window).retryable) == (
        "context_window_exceeded",
        False,
    )
    assert "too long" in to_node_error(window).message
    assert (to_node_error(policy).type, to_node_error(policy).retryable) == (
        "content_policy_violation",
        False,
    )


def test_connection_errors_are_retryable() -> None:
    litellm = load_litellm()
    error = to_node_error(
        litellm.APIConnectionError(message="refused", llm_provider="openai", model="m")
    )
    assert (error.type, error.retryable, error.status_code) == ("api_connection_error", True, None)


def test_unknown_failures_are_retryable_and_keys_are_masked() -> None:
    error = to_node_error(RuntimeError(f"boom with {PROVIDER_KEY}"), (PROVIDER_KEY,))
    assert error.retryable is True
    assert error.type == "node_error"
    assert PROVIDER_KEY not in error.message and "***" in error.message


async def test_keyless_openai_compatible_server_works(
    llm: StandinLLM, make_config: Callable[..., NodeConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = make_config()
    model = config.models[0].model_copy(update={"api_key": None})
    config = config.model_copy(update={"models": [model]})
    result = await complete(config, request("no key"))
    assert result.choices[0].message.content == "Echo: no key"
    assert [c.api_key for c in llm.calls()] == ["no-key"]


def _nested_completion(depth: int) -> bytes:
    """A chat.completion with an extra field of ``depth`` nested lists."""
    body = {
        "id": "chatcmpl-deep",
        "object": "chat.completion",
        "created": 1,
        "model": "deep",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        "extra": "X",
    }
    return json.dumps(body).replace('"X"', "[" * depth + "]" * depth).encode()


async def _answer_with(config: NodeConfig, body: bytes) -> ChatCompletion:
    """Run a job against a raw loopback backend that answers every call with ``body``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    backend = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = backend.sockets[0].getsockname()[1]
    model = config.models[0].model_copy(update={"api_base": f"http://127.0.0.1:{port}/v1"})
    try:
        return await complete(config.model_copy(update={"models": [model]}), request("raw"))
    finally:
        backend.close()


@pytest.mark.parametrize(("depth", "fails"), [(60, False), (220, True), (300, True)])
async def test_an_answer_nested_too_deep_to_deliver_fails_its_job(
    make_config: Callable[..., NodeConfig], depth: int, fails: bool
) -> None:
    # Deeper than the server's JSON parser reads (200), or than pydantic can
    # serialise (~250): delivered, it would be refused or crash the delivery.
    if not fails:
        result = await _answer_with(make_config(), _nested_completion(depth))
        assert result.choices[0].message.content == "ok"
        return
    with pytest.raises(InferenceError) as caught:
        await _answer_with(make_config(), _nested_completion(depth))
    error = caught.value.error
    assert (error.type, error.retryable) == ("invalid_response", False)
    assert "nested more than 128 levels" in error.message


async def test_an_answer_without_choices_fails_its_job(
    make_config: Callable[..., NodeConfig],
) -> None:
    # No choice is no answer: stored as COMPLETED it would hand the user nothing.
    body = json.loads(_nested_completion(1))
    body["choices"] = []
    with pytest.raises(InferenceError) as caught:
        await _answer_with(make_config(), json.dumps(body).encode())
    error = caught.value.error
    assert (error.type, error.retryable) == ("invalid_response", False)
    assert "choices" in error.message
