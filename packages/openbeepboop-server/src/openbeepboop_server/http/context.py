"""A request's way to the running app's :class:`~openbeepboop_server.context.ServerContext`."""

from __future__ import annotations

from starlette.requests import Request

from openbeepboop_server.context import ServerContext


def get_context(request: Request) -> ServerContext:
    """The running app's context (set by the lifespan)."""
    context: ServerContext = request.app.state.context
    return context
