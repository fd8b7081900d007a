"""Turn what a caller passes to ``create`` into a validated wire request.

Validating on the client, with the same model the server uses, means a bad
request fails before anything is sent, and a bulk submit of thousands either
goes out whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping

import pydantic
from openbeepboop_schemas import ChatCompletionRequest

from openbeepboop._exceptions import InvalidRequestError


def build_chat_request(
    params: Mapping[str, object], default_model: str | None
) -> ChatCompletionRequest:
    """A ``ChatCompletionRequest`` from OpenAI keyword arguments.

    ``model`` falls back to ``default_model``; unknown OpenAI fields are kept
    exactly as given. Raises InvalidRequestError naming the offending field.
    """
    body = {key: value for key, value in params.items() if value is not None}
    if not body.get("model"):
        if not default_model:
            raise InvalidRequestError(
                "no model: name one in the request, or set default_model "
                "(client_config.toml or OPENBEEPBOOP_DEFAULT_MODEL)"
            )
        body["model"] = default_model
    try:
        return ChatCompletionRequest.model_validate(body)
    except pydantic.ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    """``'messages.0.role': Input should be ...`` for the first error, plus a count."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    text = f"'{where}': {first['msg']}" if where else str(first["msg"])
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return text
