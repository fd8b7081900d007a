"""Several server URLs: configuration, failover order, the same idempotent request on each."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx
from conftest import API_KEY, Cli, entry_body, job_body
from openbeepboop import APIConnectionError, AsyncClient, Client, InternalServerError
from openbeepboop._config import read_config_file, resolve_settings, write_config_file
from openbeepboop._exceptions import ConfigError
from openbeepboop._servers import ServerPool, split_urls

A, B, C = "http://a.test", "http://b.test", "http://c.test"
MESSAGES = [{"role": "user", "content": "Hi"}]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_split_urls() -> None:
    assert split_urls(f"{A}, {B},") == [A, B]
    assert split_urls([A, f"{B},{C}"]) == [A, B, C]


def test_pool_sticks_fails_over_in_order_and_comes_back_after_failback() -> None:
    clock = Clock()
    pool = ServerPool([A, B, C], failback=30, clock=clock)
    assert pool.order() == [A, B, C]
    pool.failed(A, "refused")
    pool.failed(A, "refused")  # a second call in flight on A moves nothing more
    assert pool.order() == [B, C, A]
    clock.now = 29
    assert pool.current == B
    clock.now = 30
    assert pool.order() == [A, B, C]


def test_settings_take_a_list_commas_the_environment_and_the_file(tmp_path: Path) -> None:
    settings = resolve_settings(base_url=[A + "/v1", B], api_key=API_KEY, environ={})
    assert settings.base_url == A
    assert settings.all_base_urls() == [A, B]
    env = {"OPENBEEPBOOP_SERVER_URL": f"{B}, {C}", "OPENBEEPBOOP_API_KEY": API_KEY}
    assert resolve_settings(environ=env).all_base_urls() == [B, C]
    path = tmp_path / "client_config.toml"
    write_config_file(path, {"server_urls": [C, A], "api_key": API_KEY})
    assert resolve_settings(config_path=path, environ={}).all_base_urls() == [C, A]
    single = resolve_settings(base_url=A, api_key=API_KEY, environ={})
    assert single.all_base_urls() == [A]
    assert single.base_urls == ()


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"server_url": A, "server_urls": [B]}, "not both"),
        ({"server_urls": []}, "must be a list of URLs"),
        ({"server_urls": [A, 3]}, "must be a list of URLs"),
    ],
)
def test_bad_server_urls_in_the_file_are_one_line(
    tmp_path: Path, values: dict[str, object], problem: str
) -> None:
    path = tmp_path / "client_config.toml"
    import tomli_w

    path.write_text(tomli_w.dumps({**values, "api_key": API_KEY}))
    with pytest.raises(ConfigError, match=problem):
        read_config_file(path)


def test_a_url_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="appears twice"):
        resolve_settings(base_url=[A, A + "/"], api_key=API_KEY, environ={})


@pytest.fixture
def replicas() -> respx.MockRouter:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.ReadTimeout("timed out"),
        httpx.Response(502),
        httpx.Response(503),
        httpx.Response(504),
    ],
)
def test_a_submit_goes_to_the_next_url_at_once_with_the_same_key(
    replicas: respx.MockRouter, failure: Exception | httpx.Response
) -> None:
    first = replicas.post(f"{A}/v1/chat/completions")
    if isinstance(failure, httpx.Response):
        first.mock(return_value=failure)
    else:
        first.mock(side_effect=failure)
    second = replicas.post(f"{B}/v1/chat/completions").mock(
        return_value=httpx.Response(202, json=job_body("job-one"))
    )
    with Client(base_url=[A, B], api_key=API_KEY, max_retries=0) as client:
        job = client.chat.completions.create(model="llama3", messages=MESSAGES)
        assert job.id == "job-one"
        # With max_retries=0 this went through: moving to another URL is no retry.
        assert first.call_count == 1 and second.call_count == 1
        keys = {call.request.headers["Idempotency-Key"] for call in replicas.calls}
        assert len(keys) == 1  # the replicas share one database: no second job
        assert second.calls[0].request.headers["Host"] == "b.test"
        assert client.base_url == B
        # The client stays on B.
        client.chat.completions.create(model="llama3", messages=MESSAGES)
        assert first.call_count == 1 and second.call_count == 2


def test_a_500_is_not_a_reason_to_move(replicas: respx.MockRouter) -> None:
    first = replicas.get(f"{A}/v1/jobs/job-1").mock(return_value=httpx.Response(500))
    second = replicas.get(f"{B}/v1/jobs/job-1").mock(
        return_value=httpx.Response(200, json=entry_body("job-1"))
    )
    with (
        Client(base_url=[A, B], api_key=API_KEY, max_retries=1) as client,
        pytest.raises(InternalServerError),
    ):
        client.jobs.get("job-1")
    assert first.call_count == 2
    assert second.call_count == 0


def test_when_every_url_fails_each_retry_tries_them_all_again(
    replicas: respx.MockRouter,
) -> None:
    first = replicas.post(f"{A}/v1/results/poll").mock(side_effect=httpx.ConnectError("no"))
    second = replicas.post(f"{B}/v1/results/poll").mock(side_effect=httpx.ConnectError("no"))
    with (
        Client(base_url=[A, B], api_key=API_KEY, max_retries=2) as client,
        pytest.raises(APIConnectionError, match="could not connect"),
    ):
        client.jobs.poll(["job-1"])
    assert first.call_count == 3 and second.call_count == 3


async def test_the_async_client_fails_over_too(replicas: respx.MockRouter) -> None:
    replicas.post(f"{A}/v1/results/poll").mock(side_effect=httpx.ConnectError("refused"))
    second = replicas.post(f"{B}/v1/results/poll").mock(
        return_value=httpx.Response(200, json=[entry_body("job-1")])
    )
    async with AsyncClient(base_url=f"{A},{B}", api_key=API_KEY, max_retries=0) as client:
        (entry,) = await client.jobs.poll(["job-1"])
    assert entry.id == "job-1"
    assert second.call_count == 1


def test_setup_writes_several_urls(tmp_path: Path) -> None:
    path = tmp_path / "client_config.toml"
    key = "sk-" + "s" * 40
    args = ["setup", "--non-interactive", "--api-key", key]
    result = Cli(path)(*args, "--server-url", A, "--server-url", f"{B}/,{C}")
    assert result.exit_code == 0, result.stderr
    assert read_config_file(path).values["server_urls"] == [A, B, C]
    assert f"{A}, {B}, {C}" in result.stdout
    result = Cli(path)(*args, "--force")  # keeps the list
    assert read_config_file(path).values["server_urls"] == [A, B, C]
    result = Cli(path)(*args, "--force", "--server-url", A)
    assert read_config_file(path).values == {"server_url": A, "api_key": key}
