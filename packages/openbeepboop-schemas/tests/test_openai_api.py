"""The batch create request holds its free-form fields to OpenAI's bounds."""

from __future__ import annotations

from typing import Any

import pytest
from openbeepboop_schemas import BatchCreateRequest, ErrorEnvelope
from pydantic import ValidationError

BASE = {"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"}


def _refusal(**fields: Any) -> tuple[str | None, str]:
    with pytest.raises(ValidationError) as caught:
        BatchCreateRequest.model_validate({**BASE, **fields})
    error = ErrorEnvelope.from_validation_error(caught.value, BatchCreateRequest).error
    return error.param, error.message


def test_metadata_at_openai_bounds_is_accepted() -> None:
    metadata = {f"{index:064d}": "v" * 512 for index in range(16)}
    assert BatchCreateRequest.model_validate({**BASE, "metadata": metadata}).metadata == metadata


@pytest.mark.parametrize(
    ("metadata", "names"),
    [
        ({f"k{index}": "v" for index in range(150_000)}, "at most 16 key-value pairs"),
        ({"k" * 65: "v"}, "keys are at most 64 characters"),
        ({"k": "v" * 513}, "values are at most 512 characters"),
    ],
)
def test_metadata_past_openai_bounds_is_refused_naming_the_limit(
    metadata: dict[str, str], names: str
) -> None:
    param, message = _refusal(metadata=metadata)
    assert param == "metadata" and names in message
    assert len(message) < 200  # never echoes the huge key or value


def test_output_expires_after_is_openai_shape_only() -> None:
    fine = {"anchor": "created_at", "seconds": 3600}
    assert BatchCreateRequest.model_validate({**BASE, "output_expires_after": fine})
    assert _refusal(output_expires_after={"anchor": "created_at", "seconds": 10})[0] == (
        "output_expires_after.seconds"
    )
    big = {f"k{index}": "v" for index in range(1000)}
    assert _refusal(output_expires_after=big)[0] is not None


@pytest.mark.parametrize("window", ["24h", "90m", "30s", "1.5h"])
def test_completion_windows_of_ascii_digits_and_a_unit_are_accepted(window: str) -> None:
    assert BatchCreateRequest.model_validate({**BASE, "completion_window": window})


@pytest.mark.parametrize("window", ["\u0661s", "24h\n", " 24h", "24 h", "24H", "\uff12\uff14h"])
def test_completion_windows_with_other_digits_or_whitespace_are_refused(window: str) -> None:
    param, message = _refusal(completion_window=window)
    assert param == "completion_window" and "ASCII digits" in message
