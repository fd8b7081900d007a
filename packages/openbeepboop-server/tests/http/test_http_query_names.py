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


@pytest.mark.parametrize(
    ("path", "param", "says"),
    [
        ("/v1/usage?since=1e400", "since", "must be an ISO 8601 date or date-time"),
        ("/v1/usage?until=NaN", "until", "must be an ISO 8601 date or date-time"),
        ("/v1/usage?since=99999999999999999999", "since", "or Unix seconds"),
        ("/v1/jobs?limit=NaN", "limit", "must be an integer from 1 to 100"),
        ("/v1/jobs?limit=1e400", "limit", "must be an integer from 1 to 100"),
        ("/v1/jobs?limit=0", "limit", "must be an integer from 1 to 100"),
    ],
)
def test_a_query_value_a_parameter_cannot_take_is_one_line_naming_it(
    client: TestClient, api_keys: ApiKeys, path: str, param: str, says: str
) -> None:
    # What the parameter takes, as the OpenAI listings say of their limit; not
    # the validator's "input is too short" for a date, or "unable to parse string".
    response = client.get(path, headers=bearer(api_keys.user))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "invalid_value")
    assert error["message"].startswith(f"'{param}': must be ") and says in error["message"]
    assert "Input should" not in error["message"] and "\n" not in error["message"]
