"""Every route that takes query parameters refuses a repeated one like an unknown one.

docs/api.md promises ``unknown_parameter`` for both: one value silently
winning over the other would hide the caller's mistake.
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer


@pytest.mark.parametrize(
    "path",
    ["/v1/jobs?limit=1&limit=2", "/v1/usage?key=u&key=v", "/openai/v1/batches?limit=1&limit=2"],
)
def test_a_repeated_query_parameter_is_unknown_parameter(
    client: TestClient, api_keys: ApiKeys, path: str
) -> None:
    response = client.get(path, headers=bearer(api_keys.user))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "unknown_parameter"
    assert "more than once" in error["message"] and error["param"] in ("limit", "key")


@pytest.mark.parametrize(
    "path", ["/v1/jobs?bogus=1", "/v1/usage?bogus=1", "/openai/v1/files?bogus=1"]
)
def test_an_unknown_query_parameter_is_unknown_parameter(
    client: TestClient, api_keys: ApiKeys, path: str
) -> None:
    response = client.get(path, headers=bearer(api_keys.user))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "message": "unknown query parameter 'bogus'",
        "type": "invalid_request_error",
        "param": "bogus",
        "code": "unknown_parameter",
    }
