"""The table every route is built from: path, method, roles, bodies, answers.

The router (:func:`build_routes`) and the OpenAPI document are generated from
the same :class:`Endpoint` list, so the roles enforced, the bodies validated
and the document published cannot disagree. The wrapper built here does, in
order, for every endpoint: authenticate and check the role, read and validate
the declared body, then call the handler with a :class:`Call`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from openbeepboop_schemas import Role
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openbeepboop_server.context import ServerContext
from openbeepboop_server.http.access_log import ROUTE_KEY
from openbeepboop_server.http.auth import authenticate
from openbeepboop_server.http.bodies import read_model
from openbeepboop_server.http.context import get_context
from openbeepboop_server.keys import Caller

ModelT = TypeVar("ModelT", bound=BaseModel)

USERS = frozenset({Role.USER, Role.ADMIN})
NODES = frozenset({Role.NODE, Role.ADMIN})
#: Who may read how the pool is doing (``/metrics``, the status): never submit or fetch.
OBSERVERS = frozenset({Role.ADMIN, Role.METRICS})


@dataclass(frozen=True)
class Call:
    """One authenticated, validated request, as a handler receives it."""

    request: Request
    context: ServerContext
    caller: Caller | None
    body: BaseModel | None

    def body_as(self, model: type[ModelT]) -> ModelT:
        """The validated body, typed as the endpoint declared it."""
        assert isinstance(self.body, model)
        return self.body

    @property
    def user(self) -> Caller:
        """The caller of an endpoint that requires a key."""
        assert self.caller is not None
        return self.caller


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class QueryParam:
    """A documented query parameter (validated by the handler)."""

    name: str
    schema: Mapping[str, Any]
    description: str


@dataclass(frozen=True)
class Endpoint:
    """One route: what it does, who may call it, what it takes and returns."""

    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    #: ``None``: no key needed.
    roles: frozenset[Role] | None
    status: int = 200
    #: Request body model (validated before the handler runs).
    body: type[BaseModel] | None = None
    #: JSON Schema of the success body (refs into the contract's components).
    response: Mapping[str, Any] | None = None
    #: Media type of the success body.
    media_type: str = "application/json"
    query: Sequence[QueryParam] = field(default_factory=tuple)
    #: Error statuses this endpoint answers besides the auth and size ones.
    errors: Sequence[int] = field(default_factory=tuple)
    description: str = ""
    tag: str = "jobs"
    #: Takes an ``Idempotency-Key`` header.
    idempotent: bool = False
    #: Validate the body in pydantic's strict mode (no ``true`` → ``1``).
    strict: bool = False
    #: A body the handler reads itself, documented only: (media type, JSON Schema).
    documented_body: tuple[str, Mapping[str, Any]] | None = None
    #: Check the ``[limits]`` request budgets before validating the body.
    budgeted: bool = True


def component(name: str) -> dict[str, Any]:
    """A ``$ref`` to a contract model in ``components/schemas``."""
    return {"$ref": f"#/components/schemas/{name}"}


def array_of(name: str) -> dict[str, Any]:
    """A JSON array of a contract model."""
    return {"type": "array", "items": component(name)}


def _endpoint_app(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def app(request: Request) -> Response:
        request.scope[ROUTE_KEY] = endpoint.path
        caller = None
        if endpoint.roles is not None:
            caller = await authenticate(request, endpoint.roles)
        body = None
        if endpoint.body is not None:
            budgets = request.app.state.budgets if endpoint.budgeted else None
            body = await read_model(request, endpoint.body, strict=endpoint.strict, budgets=budgets)
        call = Call(request=request, context=get_context(request), caller=caller, body=body)
        return await endpoint.handler(call)

    app.__name__ = endpoint.operation_id
    return app


def build_routes(endpoints: Sequence[Endpoint]) -> list[Route]:
    """Starlette routes for the endpoints (one route per path and method)."""
    return [
        Route(endpoint.path, _endpoint_app(endpoint), methods=[endpoint.method])
        for endpoint in endpoints
    ]
