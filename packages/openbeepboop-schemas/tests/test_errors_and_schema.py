"""The error envelope, and the JSON Schema export the server's OpenAPI uses."""

from __future__ import annotations

import json

import pytest
from openbeepboop_schemas import (
    CONTRACT_MODELS,
    ChatCompletionRequest,
    ErrorEnvelope,
    PollRequest,
    component_schemas,
)
from pydantic import ValidationError


def test_envelope_shape() -> None:
    envelope = ErrorEnvelope.build("nope", "not_found_error", code="job_not_found")
    assert envelope.model_dump() == {
        "error": {
            "message": "nope",
            "type": "not_found_error",
            "param": None,
            "code": "job_not_found",
        }
    }


def test_validation_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 9}
        )
    error = ErrorEnvelope.from_validation_error(caught.value).error
    assert error.type == "invalid_request_error"
    assert error.param == "temperature"
    assert "temperature" in error.message


def test_validation_error_counts_the_rest() -> None:
    with pytest.raises(ValidationError) as caught:
        PollRequest.model_validate({"ids": [], "wait": -1})
    error = ErrorEnvelope.from_validation_error(caught.value).error
    assert error.param == "ids"
    assert "1 more error" in error.message


def test_every_contract_model_exports_a_schema() -> None:
    schemas = component_schemas()
    for model in CONTRACT_MODELS:
        assert model.__name__ in schemas, model.__name__
    text = json.dumps(schemas)
    assert "#/components/schemas/" in text
    assert "$defs" not in text
    poll = schemas["PollRequest"]
    assert poll["properties"]["ids"]["maxItems"] == 1000


def test_schema_is_standard_json_schema() -> None:
    schemas = component_schemas()
    temperature = schemas["ChatCompletionRequest"]["properties"]["temperature"]
    assert "ge" not in json.dumps(temperature)
    numeric = [arm for arm in temperature["anyOf"] if arm.get("type") in ("integer", "number")]
    assert numeric
    assert all(arm["minimum"] == 0 and arm["maximum"] == 2 for arm in numeric)


def test_schema_says_stream_must_be_false() -> None:
    stream = component_schemas()["ChatCompletionRequest"]["properties"]["stream"]
    assert {"type": "boolean", "const": False} in stream["anyOf"]


def test_schema_requires_the_outcome_tag() -> None:
    schemas = component_schemas()
    for name in ("ResultOutcome", "ErrorOutcome", "ReleaseOutcome"):
        assert "kind" in schemas[name]["required"], name
