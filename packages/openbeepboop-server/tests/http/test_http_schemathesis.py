"""Property-based conformance: the live app against its own OpenAPI document.

Schemathesis generates requests for every operation from ``/openapi.json``,
both schema-valid ones and deliberately invalid ones, and checks every
response: no 5xx, status codes, bodies, headers and content types as the
document says. It runs with an ADMIN key (the one role every authenticated
endpoint accepts) against a file-backed SQLite database, with a bounded
number of examples so the whole run stays well under a minute. Long-polls are
capped by ``[server] max_wait_seconds`` so generated ``wait`` values cannot
stall the run.

Hypothesis drives each operation directly (``operation.as_strategy``) rather
than through schemathesis' lazy pytest loader, which does not support the
pytest 9 node API yet.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openbeepboop_schemas import OPENAI_CHAT_COMPLETIONS_PATH, Role
from openbeepboop_server.app import create_app
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.http.routes import ENDPOINTS
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from tests.support.surface import bearer, make_settings

#: Examples per operation and mode; the run is derandomized (the same cases
#: every time, so CI is not flaky). For a deeper, random search:
#: OPENBEEPBOOP_SCHEMATHESIS_EXAMPLES=300 OPENBEEPBOOP_SCHEMATHESIS_RANDOM=1 pytest ...
#: Operations that answer 5xx by design when no node serves the model (sync timeout).
WAITS_FOR_A_NODE = frozenset({OPENAI_CHAT_COMPLETIONS_PATH})
MAX_EXAMPLES = int(os.environ.get("OPENBEEPBOOP_SCHEMATHESIS_EXAMPLES", "20"))
RANDOM = bool(os.environ.get("OPENBEEPBOOP_SCHEMATHESIS_RANDOM"))
IDEMPOTENCY = "Idempotency-Key"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    config = make_settings(
        tmp, server={"max_wait_seconds": 0.05}, openai={"sync_timeout_seconds": 0.05}
    )
    upgrade_to_head(config.database.url)
    app = create_app(config)
    # Loading the document starts the app's lifespan in schemathesis' own
    # event loop; every generated request then goes to that running app.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        context: ServerContext = app.state.context
        key, _ = context.keys.create(Role.ADMIN, "schemathesis")
        yield schema, bearer(key)
    finally:
        asgi.shutdown_lifespans()


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """Every operation with valid data; those that take input also with invalid data."""
    cases = []
    for endpoint in ENDPOINTS:
        cases.append((endpoint.method, endpoint.path, GenerationMode.POSITIVE))
        if endpoint.body or endpoint.query or "{" in endpoint.path:
            cases.append((endpoint.method, endpoint.path, GenerationMode.NEGATIVE))
    return cases


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    _cases(),
    ids=[f"{method} {path} {mode.value}" for method, path, mode in _cases()],
)
def test_app_conforms_to_its_openapi_document(
    api: tuple[Any, dict[str, str]], method: str, path: str, mode: GenerationMode
) -> None:
    schema, headers = api
    operation = schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=not RANDOM,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if mode is GenerationMode.POSITIVE and case.headers and IDEMPOTENCY in case.headers:
            # A key stands for the body it first came with (another body is a
            # 422): each generated case is a new request, so a new key. What a
            # key may look like is checked by the negative cases.
            case.headers[IDEMPOTENCY] = uuid.uuid4().hex
        if path in WAITS_FOR_A_NODE:
            # No node here: the documented answer is the 504 of the sync timeout.
            case.call_and_validate(headers=headers, excluded_checks=[not_a_server_error])
        else:
            case.call_and_validate(headers=headers)

    check()
