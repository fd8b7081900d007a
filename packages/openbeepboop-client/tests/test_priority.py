"""The native ``priority`` field: sent by create() and create_many(), refused above the ceiling."""

from __future__ import annotations

import json

import pytest
import respx
from conftest import error_body, job_body
from openbeepboop import Client, InvalidRequestError, PermissionDeniedError

MESSAGES = [{"role": "user", "content": "Hi"}]


def test_create_sends_the_priority_only_when_given(
    server: respx.MockRouter, client: Client
) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    client.chat.completions.create(model="m", messages=MESSAGES, priority=3)
    assert json.loads(route.calls.last.request.content)["priority"] == 3
    client.chat.completions.create(model="m", messages=MESSAGES)
    assert "priority" not in json.loads(route.calls.last.request.content)


def test_create_many_priority_is_the_default_of_each_request(
    server: respx.MockRouter, client: Client
) -> None:
    answer = {"object": "list", "data": [job_body("job-1"), job_body("job-2")]}
    route = server.post("/v1/chat/completions/bulk").respond(202, json=answer)
    client.chat.completions.create_many(
        [
            {"model": "m", "messages": MESSAGES},
            {"model": "m", "messages": MESSAGES, "priority": -1},
        ],
        priority=2,
    )
    sent = json.loads(route.calls.last.request.content)["requests"]
    assert [request["priority"] for request in sent] == [2, -1]


@pytest.mark.parametrize("bad", [True, "5", 2.5, 1001])
def test_a_bad_priority_is_refused_before_sending(
    server: respx.MockRouter, client: Client, bad: object
) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body())
    with pytest.raises(InvalidRequestError, match="priority"):
        client.chat.completions.create(model="m", messages=MESSAGES, priority=bad)  # type: ignore[arg-type]
    assert not route.called


def test_above_the_ceiling_is_permission_denied(server: respx.MockRouter, client: Client) -> None:
    message = "priority 5 is above this API key's max_priority of 0"
    server.post("/v1/chat/completions").respond(403, json=error_body(message, "permission_error"))
    with pytest.raises(PermissionDeniedError, match="max_priority of 0"):
        client.chat.completions.create(model="m", messages=MESSAGES, priority=5)
