"""A body holding a number JSON cannot carry (``NaN``, ``Infinity``, ``1e400``) is refused.

The server stores a job's request as JSON and hands it to a node as JSON;
such a number used to be stored as ``null``, so the job ran with a different
request than the user sent. Now every route that takes a request, and every
batch input line, refuses it with a ``400`` naming where it is.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openbeepboop_server.http.budgets import RequestBudgets
from openbeepboop_server.http.openai.batch_budgets import budgeted_line_parser
from openbeepboop_server.queue.batch_lines import validate_lines
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat, completion

URL = "/v1/chat/completions"
HI = '"messages": [{"role": "user", "content": "hi"}]'
NON_FINITE = ["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1" + "0" * 400 + ".5"]


def _post(client: TestClient, path: str, body: str, key: str) -> Any:
    headers = {**bearer(key), "Content-Type": "application/json"}
    return client.post(path, content=body.encode(), headers=headers)


def _refused(response: Any, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "non_finite_number"
    assert error["param"] == param
    assert param in error["message"]


@pytest.mark.parametrize("number", NON_FINITE)
def test_native_submit_refuses_a_non_finite_number_it_would_pass_on(
    client: TestClient, api_keys: ApiKeys, number: str
) -> None:
    unknown = f'{{"model": "m", {HI}, "x_vendor": {{"scale": [1, {number}]}}}}'
    _refused(_post(client, "/v1/chat/completions", unknown, api_keys.user), "x_vendor.scale.1")
    metadata = f'{{"model": "m", {HI}, "metadata": {{"weight": {number}}}}}'
    _refused(_post(client, "/v1/chat/completions", metadata, api_keys.user), "metadata.weight")
    jobs = client.get("/v1/jobs", headers=bearer(api_keys.user)).json()
    assert jobs["data"] == []  # nothing was stored


def test_bulk_submit_and_openai_chat_refuse_it_too(client: TestClient, api_keys: ApiKeys) -> None:
    bulk = f'{{"requests": [{{"model": "m", {HI}}}, {{"model": "m", {HI}, "seed_scale": 1e400}}]}}'
    _refused(
        _post(client, "/v1/chat/completions/bulk", bulk, api_keys.user), "requests.1.seed_scale"
    )
    chat = f'{{"model": "m", {HI}, "metadata": {{"w": NaN}}, "stream": false}}'
    _refused(_post(client, "/openai/v1/chat/completions", chat, api_keys.user), "metadata.w")


def test_finite_numbers_and_look_alike_strings_are_stored_as_sent(
    client: TestClient, api_keys: ApiKeys
) -> None:
    # The same letters inside strings, large but finite numbers, and integers of
    # any length (exact in JSON and in Python) pass unchanged.
    body = (
        f'{{"model": "m", "messages": [{{"role": "user", "content": "NaN Infinity 1e400"}}], '
        f'"metadata": {{"big": 1e300, "tiny": 1e-300, "digits": {"9" * 300}}}}}'
    )
    response = _post(client, "/v1/chat/completions", body, api_keys.user)
    assert response.status_code == 202, response.text
    [lease] = client.post(
        "/internal/queue/fetch",
        json={"node_id": "n", "models": ["m"]},
        headers=bearer(api_keys.node),
    ).json()
    request = lease["request"]
    assert request["messages"][0]["content"] == "NaN Infinity 1e400"
    assert request["metadata"] == {"big": 1e300, "tiny": 1e-300, "digits": int("9" * 300)}


def _line(custom_id: str, body: str) -> bytes:
    head = json.dumps({"custom_id": custom_id, "method": "POST", "url": URL})
    return f'{head[:-1]}, "body": {body}}}'.encode()


@pytest.mark.parametrize("budgeted", [True, False])
def test_a_batch_line_with_a_non_finite_number_is_a_line_numbered_error(budgeted: bool) -> None:
    parser = budgeted_line_parser(RequestBudgets()) if budgeted else None
    lines = [
        _line("ok", f'{{"model": "m", {HI}}}'),
        _line("inf", f'{{"model": "m", {HI}, "metadata": {{"w": 1e400}}}}'),
        _line("nan", f'{{"model": "m", {HI}, "top_k_scale": NaN}}'),
    ]
    checked = validate_lines(lines, URL, parser) if parser else validate_lines(lines, URL)
    assert [(error.line, error.code, error.param) for error in checked.errors] == [
        (2, "non_finite_number", "body.metadata.w"),
        (3, "non_finite_number", "body.top_k_scale"),
    ]


def test_a_nodes_result_is_kept_whatever_numbers_it_holds(
    client: TestClient, api_keys: ApiKeys
) -> None:
    # Refusing a delivered result would lose a paid answer: only requests are held to this.
    client.post("/v1/chat/completions", json=chat("m"), headers=bearer(api_keys.user))
    [lease] = client.post(
        "/internal/queue/fetch",
        json={"node_id": "n", "models": ["m"]},
        headers=bearer(api_keys.node),
    ).json()
    result = json.dumps(completion(model="m"))[:-1] + ', "x_logprob": -Infinity}'
    outcome = json.dumps(
        {"kind": "result", "job_id": lease["job_id"], "lease_token": lease["lease_token"]}
    )
    body = f'{{"node_id": "n", "outcomes": [{outcome[:-1]}, "result": {result}}}]}}'
    answer = _post(client, "/internal/queue/submit", body, api_keys.node)
    assert answer.status_code == 200, answer.text
    assert [ack["ack"] for ack in answer.json()["acks"]] == ["accepted"]
