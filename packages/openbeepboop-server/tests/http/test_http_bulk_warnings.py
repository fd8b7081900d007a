"""A bulk submit's warnings: every one in the body, a bounded few as headers.

See docs/api.md, "Bulk submit". A bulk of 5,000 distinct unserved models
once answered with one ``OpenBeepBoop-Warning`` header each (750 KB of
headers): the jobs were stored, but HTTP clients could not read the answer.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from openbeepboop_schemas import BULK_SUBMIT_PATH, MAX_BULK_SUBMIT, WARNING_HEADER, Role
from openbeepboop_server.context import ServerContext
from openbeepboop_server.http.user_routes import MAX_WARNING_HEADERS
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat
from tests.support.waiting import wait_until


@pytest.fixture
def served_url(app: Starlette) -> Iterator[str]:
    """The app served by a real uvicorn on a loopback port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "uvicorn to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _model(index: int) -> str:
    # Non-ASCII, so that each is JSON-escaped to six bytes a character in a header.
    return f"modèle-{index}-" + "ü" * 60


def test_a_bulk_of_distinct_unserved_models_is_readable_by_httpx(
    served_url: str, app: Starlette
) -> None:
    context: ServerContext = app.state.context
    user = context.keys.create(Role.USER, "bulk-user")[0]
    models = [_model(index) for index in range(MAX_BULK_SUBMIT)]
    with httpx.Client(base_url=served_url, timeout=120) as http:
        response = http.post(
            BULK_SUBMIT_PATH,
            json={"requests": [chat(model) for model in models]},
            headers=bearer(user),
        )
    assert response.status_code == 202, response.text[:500]
    body = response.json()
    assert len(body["data"]) == MAX_BULK_SUBMIT
    assert [warning["model"] for warning in body["warnings"]] == models
    headers = response.headers.get_list(WARNING_HEADER)
    assert len(headers) == MAX_WARNING_HEADERS
    assert headers[:-1] == [warning["message"] for warning in body["warnings"][: len(headers) - 1]]
    assert str(MAX_BULK_SUBMIT - (MAX_WARNING_HEADERS - 1)) in headers[-1]
    assert "warnings" in headers[-1]


@pytest.mark.parametrize("count", [1, MAX_WARNING_HEADERS])
def test_up_to_the_cap_every_warning_is_a_header(
    client: TestClient, api_keys: ApiKeys, count: int
) -> None:
    requests = [chat(f"nobody-{index}") for index in range(count)]
    response = client.post(
        BULK_SUBMIT_PATH, json={"requests": requests}, headers=bearer(api_keys.user)
    )
    assert response.status_code == 202
    messages = [warning["message"] for warning in response.json()["warnings"]]
    assert len(messages) == count
    assert response.headers.get_list(WARNING_HEADER) == messages


def test_one_past_the_cap_folds_the_rest_into_a_summary(
    client: TestClient, api_keys: ApiKeys
) -> None:
    requests = [chat(f"nobody-{index}") for index in range(MAX_WARNING_HEADERS + 1)]
    response = client.post(
        BULK_SUBMIT_PATH, json={"requests": requests}, headers=bearer(api_keys.user)
    )
    messages = [warning["message"] for warning in response.json()["warnings"]]
    headers = response.headers.get_list(WARNING_HEADER)
    assert headers[:-1] == messages[: MAX_WARNING_HEADERS - 1]
    assert headers[-1].startswith("and 2 more warnings")
