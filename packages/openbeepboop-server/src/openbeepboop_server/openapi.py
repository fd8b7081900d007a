"""The OpenAPI 3.1 document, generated from the endpoint table and the contract's models.

Paths come from :data:`openbeepboop_server.http.routes.ENDPOINTS` (the same
table the router is built from) and every schema from
:func:`openbeepboop_schemas.component_schemas`, so the document cannot drift
from what the server enforces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from openbeepboop_schemas import component_schemas

from openbeepboop_server.http.budgets import RequestBudgets
from openbeepboop_server.http.endpoints import Endpoint, component

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "bearerAuth"

_ERROR_DESCRIPTIONS = {
    400: "Malformed JSON or a body that fails validation; `param` names the field.",
    401: "Missing, unknown or revoked API key.",
    403: "The key's role may not call this endpoint.",
    404: "No such job (or another key's job).",
    413: "Request body over the server's size limit.",
    422: "The Idempotency-Key was first sent with a different body; nothing queued.",
    503: "The database is unreachable.",
}

_STATUS_DESCRIPTIONS = {200: "OK", 202: "Accepted: the job is durable."}


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": _ERROR_DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": component("ErrorEnvelope")}},
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    parameters: list[dict[str, Any]] = []
    for name in _path_params(endpoint.path):
        parameters.append(
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        )
    for query in endpoint.query:
        parameters.append(
            {
                "name": query.name,
                "in": "query",
                "required": False,
                "schema": dict(query.schema),
                "description": query.description,
            }
        )
    if endpoint.idempotent:
        parameters.append(_IDEMPOTENCY_PARAM)
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": component(endpoint.body.__name__)}},
        }
    elif endpoint.documented_body is not None:
        media_type, schema = endpoint.documented_body
        operation["requestBody"] = {"required": True, "content": {media_type: {"schema": schema}}}

    success: dict[str, Any] = {"description": _STATUS_DESCRIPTIONS.get(endpoint.status, "OK")}
    if endpoint.response is not None:
        success["content"] = {endpoint.media_type: {"schema": dict(endpoint.response)}}
    responses: dict[str, Any] = {str(endpoint.status): success}
    errors: set[int] = set(endpoint.errors)
    if endpoint.body is not None or endpoint.documented_body is not None:
        errors |= {400, 413}
    if endpoint.query:
        errors.add(400)
    if endpoint.idempotent:
        errors.add(422)
    if endpoint.roles is not None:
        errors |= {401, 403}
    for status in sorted(errors):
        responses[str(status)] = _error_response(status)
    operation["responses"] = responses
    operation["security"] = [] if endpoint.roles is None else [{SECURITY_SCHEME: []}]
    if endpoint.roles is not None:
        operation["x-roles"] = sorted(role.value for role in endpoint.roles)
    return operation


_IDEMPOTENCY_PARAM: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    # Printable characters (as the server checks them on the latin-1 header),
    # not only spaces: what the server accepts, so generated clients send that.
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^ *[!-~\u00a1-\u00ac\u00ae-\u00ff][ -~\u00a1-\u00ac\u00ae-\u00ff]*$",
    },
    "description": (
        "Makes a retried submit return the first job instead of creating another; "
        "the same key with a different body is a 422."
    ),
}


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def contract_components() -> dict[str, Any]:
    """The contract's schemas as OpenAPI 3.1 components."""
    return component_schemas()


def _apply_budgets(schemas: dict[str, Any], budgets: RequestBudgets) -> None:
    """Narrow the request schemas to this server's ``[limits]``, so the document tells the truth.

    The contract's models allow what any server may accept; a server with
    caps and budgets accepts less, and says so here (``maximum``, ``maxItems``).
    """
    request = schemas["ChatCompletionRequest"]["properties"]
    caps = {"n": budgets.max_n, "max_tokens": budgets.max_tokens}
    caps["max_completion_tokens"] = budgets.max_tokens
    for name, cap in caps.items():
        if cap is None:
            continue
        for option in request[name].get("anyOf", [request[name]]):
            if option.get("type") == "integer":
                option["maximum"] = min(cap, option.get("maximum", cap))
    request["messages"]["maxItems"] = budgets.max_messages
    content = schemas["ChatMessage"]["properties"]["content"]
    for option in content.get("anyOf", []):
        if option.get("type") == "array":
            option["maxItems"] = budgets.max_content_parts


def build_openapi(
    endpoints: Sequence[Endpoint], version: str, budgets: RequestBudgets | None = None
) -> dict[str, Any]:
    """The whole document (request schemas narrowed to ``budgets`` when given)."""
    schemas = contract_components()
    if budgets is not None:
        _apply_budgets(schemas, budgets)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "OpenBeepBoop queue server",
            "version": version,
            "description": (
                "A durable queue of OpenAI-style chat completion jobs. Users submit and "
                "poll; nodes fetch leases, heartbeat and deliver results. Every error "
                "answers with the OpenAI error envelope."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `sk-...`.",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }
