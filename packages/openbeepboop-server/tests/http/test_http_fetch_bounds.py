"""What one NODE key may hold on a server: distinct model names, node ids.

An attacker holding one NODE key parked a thousand fetches declaring 256
invented names each; every submit then waited seconds behind the wake-ups and
the re-check that scaled with fetches x names. Now a key's fetches together
wait for at most ``[limits] max_fetch_models_per_key`` distinct names.
The same key invented node ids until ``/v1/status`` was 6.5 MB: now a key
uses at most ``[queue] max_nodes_per_key`` live ids, and the status lists a
bounded number of models per node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from openbeepboop_schemas import Role
from openbeepboop_server.app import create_app
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.keys import KeySettings

from tests.support.surface import bearer, chat, make_settings
from tests.support.waiting import eventually

WAIT = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def served(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, ServerContext]]:
    # Indirect parameter: the key's distinct model names (default 4).
    max_models = getattr(request, "param", 4)
    settings = make_settings(
        tmp_path, limits={"max_fetch_models_per_key": max_models}, queue={"max_nodes_per_key": 3}
    )
    upgrade_to_head(settings.database.url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, app.state.context


def _fetch(node_id: str, models: list[str]) -> dict[str, object]:
    return {"node_id": node_id, "models": models, "wait": WAIT}


@pytest.mark.anyio
async def test_a_fetch_past_the_keys_distinct_models_is_refused_429(
    served: tuple[httpx.AsyncClient, ServerContext],
) -> None:
    http, context = served
    node = context.keys.create(Role.NODE, "pool")[0]
    user = context.keys.create(Role.USER, "u")[0]
    parked = asyncio.ensure_future(
        http.post(
            "/internal/queue/fetch", json=_fetch("a", ["m1", "m2", "m3"]), headers=bearer(node)
        )
    )
    await eventually(lambda: context.wakeups.parked_fetch_waiters == 1, "the first fetch parks")

    refused = await http.post(
        "/internal/queue/fetch", json=_fetch("b", ["m4", "m5"]), headers=bearer(node)
    )
    assert refused.status_code == 429
    assert refused.headers["Retry-After"]
    error = refused.json()["error"]
    assert error["code"] == "too_many_long_polls"
    assert "max_fetch_models_per_key" in error["message"]
    assert "4" in error["message"]

    # Names already waited for cost nothing more: a pool sharing its models fits.
    sharing = asyncio.ensure_future(
        http.post("/internal/queue/fetch", json=_fetch("c", ["m1", "m4"]), headers=bearer(node))
    )
    await eventually(lambda: context.wakeups.parked_fetch_waiters == 2, "the second fetch parks")

    # Both are answered by jobs as usual.
    for model in ("m3", "m4"):
        submitted = await http.post("/v1/chat/completions", json=chat(model), headers=bearer(user))
        assert submitted.status_code == 202
    first, second = await asyncio.wait_for(asyncio.gather(parked, sharing), WAIT)
    assert [lease["model"] for lease in first.json()] == ["m3"]
    assert [lease["model"] for lease in second.json()] == ["m4"]
    # Once they have left, the key's names are free again.
    caller = context.keys.authenticate(node)
    assert caller is not None and context.fetch_models.held(caller.key_id) == 0


@pytest.mark.anyio
async def test_a_new_node_id_past_the_keys_live_nodes_is_refused_429(
    served: tuple[httpx.AsyncClient, ServerContext],
) -> None:
    http, context = served
    node = bearer(context.keys.create(Role.NODE, "pool")[0])
    other = bearer(context.keys.create(Role.NODE, "other-pool")[0])
    admin = bearer(context.keys.create(Role.ADMIN, "admin")[0])
    for node_id in ("n1", "n2", "n3"):
        answer = await http.post(
            "/internal/queue/fetch", json={"node_id": node_id, "models": ["m"]}, headers=node
        )
        assert answer.status_code == 200, answer.text

    fetched = await http.post(
        "/internal/queue/fetch", json={"node_id": "n4", "models": ["m"]}, headers=node
    )
    beaten = await http.post(
        "/internal/queue/heartbeat", json={"node_id": "n5", "leases": []}, headers=node
    )
    for refused in (fetched, beaten):
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"]
        error = refused.json()["error"]
        assert error["code"] == "too_many_nodes"
        assert "max_nodes_per_key = 3" in error["message"]

    # Its own ids still work, and another key has its own count.
    again = await http.post(
        "/internal/queue/fetch", json={"node_id": "n1", "models": ["m"]}, headers=node
    )
    assert again.status_code == 200
    elsewhere = await http.post(
        "/internal/queue/fetch", json={"node_id": "x1", "models": ["m"]}, headers=other
    )
    assert elsewhere.status_code == 200
    status = (await http.get("/v1/status", headers=admin)).json()
    assert status["nodes_online"] == 4


@pytest.mark.anyio
@pytest.mark.parametrize("served", [1024], indirect=True)
async def test_the_status_lists_a_bounded_number_of_models_per_node(
    served: tuple[httpx.AsyncClient, ServerContext],
) -> None:
    http, context = served
    node = bearer(context.keys.create(Role.NODE, "pool")[0])
    admin = bearer(context.keys.create(Role.ADMIN, "admin")[0])
    names = [f"{index:03d}" + "x" * 253 for index in range(256)]
    for node_id in ("n1", "n2", "n3"):
        answer = await http.post(
            "/internal/queue/fetch", json={"node_id": node_id, "models": names}, headers=node
        )
        assert answer.status_code == 200, answer.text
    status = await http.get("/v1/status", headers=admin)
    assert status.status_code == 200
    assert [len(entry["models"]) for entry in status.json()["nodes"]] == [16, 16, 16]
    # 3 nodes x 256 names of 256 characters were ~200 KB; the lists are bounded now.
    assert len(status.content) < 64 * 1024


@pytest.mark.anyio
async def test_declared_models_past_the_keys_distinct_names_are_refused_429(
    served: tuple[httpx.AsyncClient, ServerContext],
) -> None:
    # Not parked fetches this time: what a key's live nodes declare to the
    # registry (a fetch's serves, a heartbeat's models) is what /v1/models lists.
    http, context = served
    node = bearer(context.keys.create(Role.NODE, "pool")[0])
    user = bearer(context.keys.create(Role.USER, "u")[0])
    first = await http.post(
        "/internal/queue/fetch",
        json={"node_id": "n1", "models": ["m1"], "serves": ["m1", "m2", "m3"]},
        headers=node,
    )
    assert first.status_code == 200, first.text
    fetched = await http.post(
        "/internal/queue/fetch",
        json={"node_id": "n2", "models": ["m1"], "serves": ["m4", "m5"]},
        headers=node,
    )
    beaten = await http.post(
        "/internal/queue/heartbeat",
        json={"node_id": "n2", "leases": [], "models": ["m4", "m5"]},
        headers=node,
    )
    for refused in (fetched, beaten):
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"]
        error = refused.json()["error"]
        assert error["code"] == "too_many_models"
        assert "max_fetch_models_per_key = 4" in error["message"]

    # Names the key already declares cost nothing; a node may change its own list.
    for body in (
        {"node_id": "n2", "leases": [], "models": ["m1", "m2", "m4"]},
        {"node_id": "n1", "leases": [], "models": ["m3"]},
    ):
        answer = await http.post("/internal/queue/heartbeat", json=body, headers=node)
        assert answer.status_code == 200, answer.text
    listed = (await http.get("/v1/models", headers=user)).json()["data"]
    assert [card["id"] for card in listed] == ["m1", "m2", "m3", "m4"]


@pytest.mark.anyio
async def test_names_outside_a_scoped_keys_models_are_refused_without_counting(
    served: tuple[httpx.AsyncClient, ServerContext],
) -> None:
    http, context = served
    scoped = KeySettings(models=("m1", "m2"))
    node = bearer(context.keys.create(Role.NODE, "scoped", scoped)[0])
    for node_id, names in (("n1", ["x1", "x2", "x3", "x4"]), ("n2", ["x5", "x6"])):
        refused = await http.post(
            "/internal/queue/fetch",
            json={"node_id": node_id, "models": ["m1"], "serves": names},
            headers=node,
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "outside_key_scope"
    fine = await http.post(
        "/internal/queue/fetch",
        json={"node_id": "n3", "models": ["m1"], "serves": ["m1", "m2"]},
        headers=node,
    )
    assert fine.status_code == 200, fine.text
