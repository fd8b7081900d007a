"""Every endpoint, every kind of caller: exactly the roles the API grants get in.

The roles are those of docs/api.md, "Endpoints and roles".

The expected matrix is written out here from the spec, not derived from the
server's own endpoint table, so a wrong role in the table fails this test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openbeepboop_schemas import BULK_SUBMIT_PATH, Role
from openbeepboop_server.app import create_app
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.migrate import upgrade_to_head
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat, make_settings

ADMIN, NODE, USER, METRICS = "admin", "node", "user", "metrics"
USERS = {ADMIN, USER}
NODES = {ADMIN, NODE}
OBSERVERS = {ADMIN, METRICS}
EVERYONE = {ADMIN, NODE, USER, METRICS, "none", "revoked"}
CALLERS = ["admin", "node", "user", "metrics", "none", "revoked"]


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    allowed: set[str]
    success: int
    body: dict[str, Any] | None = None


CASES = [
    Case("POST", "/v1/chat/completions", USERS, 202, chat()),
    Case("POST", BULK_SUBMIT_PATH, USERS, 202, {"requests": [chat(), chat("other")]}),
    Case("POST", "/v1/results/poll", USERS, 200, {"ids": ["{job}", "job-unknown"]}),
    Case("GET", "/v1/jobs/{job}", USERS, 200),
    Case("POST", "/v1/jobs/{job}/cancel", USERS, 200),
    Case("GET", "/v1/jobs", USERS, 200),
    Case("GET", "/v1/models", USERS, 200),
    Case("POST", "/internal/queue/fetch", NODES, 200, {"node_id": "n1", "models": ["none"]}),
    Case(
        "POST",
        "/internal/queue/submit",
        NODES,
        200,
        {
            "node_id": "n1",
            "outcomes": [{"kind": "release", "job_id": "job-x", "lease_token": "t"}],
        },
    ),
    Case("POST", "/internal/queue/heartbeat", NODES, 200, {"node_id": "n1", "leases": []}),
    Case(
        "POST",
        "/internal/queue/watch",
        NODES,
        200,
        {"node_id": "n1", "leases": [{"job_id": "job-x", "lease_token": "t"}]},
    ),
    Case("GET", "/healthz", EVERYONE, 200),
    Case("GET", "/openapi.json", EVERYONE, 200),
    Case("GET", "/metrics", OBSERVERS, 200),
    Case("GET", "/v1/status", OBSERVERS, 200),
    Case("GET", "/v1/usage", USERS, 200),
    Case("GET", "/status", EVERYONE, 200),
    Case("GET", "/status/status.js", EVERYONE, 200),
    Case("GET", "/status/status.css", EVERYONE, 200),
    # No node serves its model here: refused before anything is queued.
    Case("POST", "/openai/v1/chat/completions", USERS, 404, chat()),
    Case("GET", "/openai/v1/models", USERS, 200),
    # Past authentication these answer what an empty store answers.
    Case("POST", "/openai/v1/files", USERS, 400, {"not": "multipart"}),
    Case("GET", "/openai/v1/files", USERS, 200),
    Case("GET", "/openai/v1/files/{file_id}", USERS, 404),
    Case("DELETE", "/openai/v1/files/{file_id}", USERS, 404),
    Case("GET", "/openai/v1/files/{file_id}/content", USERS, 404),
    Case(
        "POST",
        "/openai/v1/batches",
        USERS,
        404,
        {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    ),
    Case("GET", "/openai/v1/batches", USERS, 200),
    Case("GET", "/openai/v1/batches/{batch_id}", USERS, 404),
    Case("POST", "/openai/v1/batches/{batch_id}/cancel", USERS, 404),
]


@dataclass
class Env:
    client: TestClient
    keys: ApiKeys
    context: ServerContext


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("roles")
    settings = make_settings(tmp, openai={"sync_timeout_seconds": 0.05})
    upgrade_to_head(settings.database.url)
    with TestClient(create_app(settings)) as client:
        context: ServerContext = client.app.state.context  # type: ignore[attr-defined]
        keys = context.keys
        revoked, _ = keys.create(Role.USER, "revoked")
        keys.revoke("revoked")
        yield Env(
            client=client,
            context=context,
            keys=ApiKeys(
                admin=keys.create(Role.ADMIN, "a")[0],
                node=keys.create(Role.NODE, "n")[0],
                user=keys.create(Role.USER, "u")[0],
                other_user=keys.create(Role.USER, "u2")[0],
                revoked=revoked,
                metrics=keys.create(Role.METRICS, "m")[0],
            ),
        )


def _fill(value: Any, job: str) -> Any:
    if isinstance(value, str):
        return value.replace("{job}", job)
    if isinstance(value, list):
        return [_fill(item, job) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, job) for key, item in value.items()}
    return value


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.method} {case.path}")
def test_role_matrix(env: Env, case: Case, caller: str) -> None:
    # A job of the user's, so that get/cancel/poll have something real to find.
    job = env.client.post(
        "/v1/chat/completions", json=chat(), headers=bearer(env.keys.user)
    ).json()["id"]
    key = env.keys.by_name(caller)
    headers = bearer(key) if key else {}
    response = env.client.request(
        case.method, _fill(case.path, job), json=_fill(case.body, job), headers=headers
    )

    if caller in case.allowed:
        assert response.status_code == case.success, response.text
    elif caller in ("none", "revoked"):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["type"] == "permission_error"


def test_every_endpoint_is_in_the_matrix(env: Env) -> None:
    document = env.client.get("/openapi.json").json()
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    covered = {(case.method, case.path.replace("{job}", "{job_id}")) for case in CASES}
    assert documented == covered


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer ", "Basic c2stYWJj", "sk-abc", "Bearer sk-" + "x" * 400, "Bearer nope"],
)
def test_malformed_authorization_is_401(env: Env, header: str) -> None:
    response = env.client.get("/v1/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"missing_api_key", "invalid_api_key"}


def test_revocation_takes_effect_on_the_next_request(env: Env) -> None:
    key, _ = env.context.keys.create(Role.USER, "short-lived")
    assert env.client.get("/v1/jobs", headers=bearer(key)).status_code == 200
    assert env.context.keys.revoke("short-lived")
    response = env.client.get("/v1/jobs", headers=bearer(key))
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_scheme_is_case_insensitive(env: Env) -> None:
    response = env.client.get("/v1/jobs", headers={"Authorization": f"bearer {env.keys.user}"})
    assert response.status_code == 200


def test_error_never_echoes_the_key(env: Env) -> None:
    bad = "sk-" + "Z" * 40
    response = env.client.get("/v1/jobs", headers=bearer(bad))
    assert bad not in response.text
