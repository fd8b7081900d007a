"""``client.usage``: what a key's jobs used (its own key; every key for an ADMIN key)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from openbeepboop_schemas import USAGE_PATH, UsageReport

from openbeepboop._base_client import QueryParams, RequestOptions

if TYPE_CHECKING:
    from openbeepboop._client import AsyncClient, Client

#: A window bound: a datetime (UTC if naive) or Unix seconds.
When = datetime | float | int


def _bound(value: When) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
    return repr(float(value))


def _options(key: str | None, since: When | None, until: When | None) -> RequestOptions:
    params: dict[str, str | int] = {}
    if key is not None:
        params["key"] = key
    if since is not None:
        params["since"] = _bound(since)
    if until is not None:
        params["until"] = _bound(until)
    query: QueryParams = params
    return RequestOptions("GET", USAGE_PATH, params=query)


def _parse_usage(body: object) -> UsageReport:
    return UsageReport.model_validate(body)


class Usage:
    """Usage per key for the synchronous client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def retrieve(
        self, *, key: str | None = None, since: When | None = None, until: When | None = None
    ) -> UsageReport:
        """``GET /v1/usage``: jobs by final status, tokens and LLM seconds, per key.

        Counted in whole hours: every hour overlapping ``[since, until)``. A
        USER key sees its own key (naming another is a
        :class:`~openbeepboop.PermissionDeniedError`); an ADMIN key sees every
        submitting key, or ``key``.
        """
        return self._client.request(_options(key, since, until), _parse_usage)


class AsyncUsage:
    """Usage per key for :class:`~openbeepboop.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def retrieve(
        self, *, key: str | None = None, since: When | None = None, until: When | None = None
    ) -> UsageReport:
        """``GET /v1/usage`` (see :meth:`Usage.retrieve`)."""
        return await self._client.request(_options(key, since, until), _parse_usage)
