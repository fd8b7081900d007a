"""``Authorization: Bearer sk-...`` → a :class:`Caller`, or ``401``/``403``.

A revoked key stops working on the very next request, in every replica: on
SQLite the key is read on every request, on PostgreSQL a replica answers
from keys it has cached only while it hears every key change
(:mod:`openbeepboop_server.key_cache`). The key itself is never logged and
never echoed in an error.
"""

from __future__ import annotations

from collections.abc import Collection

from openbeepboop_schemas import Role
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from openbeepboop_server.http.context import get_context
from openbeepboop_server.http.errors import ApiError, invalid_key, unauthorized
from openbeepboop_server.keys import Caller

KEY_PREFIX = "sk-"
#: Longer "keys" are refused without a database lookup.
MAX_KEY_LENGTH = 256


def bearer_token(request: Request) -> str:
    """The key from the ``Authorization`` header, or ``401`` if there is none."""
    header = request.headers.get("authorization")
    if not header:
        raise unauthorized(
            "missing API key: send an 'Authorization: Bearer sk-...' header", "missing_api_key"
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized(
            "malformed Authorization header: expected 'Bearer sk-...'", "invalid_api_key"
        )
    return token


async def authenticate(request: Request, roles: Collection[Role]) -> Caller:
    """The caller behind the request's key, if its role is one of ``roles``."""
    token = bearer_token(request)
    caller = None
    if token.startswith(KEY_PREFIX) and len(token) <= MAX_KEY_LENGTH:
        keys = get_context(request).keys
        if keys.inline_capable:
            caller = keys.authenticate_inline(token)  # one indexed read: cheaper than a thread hop
        else:
            caller = keys.cached(token) or await run_in_threadpool(keys.authenticate, token)
    if caller is None:
        raise invalid_key()
    if caller.role not in roles:
        allowed = ", ".join(sorted(role.value for role in roles))
        raise ApiError(
            403,
            f"a {caller.role.value} key may not call this endpoint (allowed roles: {allowed})",
            code="insufficient_role",
        )
    return caller
