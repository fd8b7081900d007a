"""``client.pool``: how the whole pool is doing (an ADMIN or METRICS key)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openbeepboop_schemas import STATUS_PATH, PoolStatus

from openbeepboop._base_client import RequestOptions

if TYPE_CHECKING:
    from openbeepboop._client import AsyncClient, Client


def _parse_status(body: object) -> PoolStatus:
    return PoolStatus.model_validate(body)


class Pool:
    """The pool of the synchronous client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def status(self) -> PoolStatus:
        """``GET /v1/status``: queues, nodes online, throughput, recent failures.

        A USER or NODE key gets :class:`~openbeepboop.PermissionDeniedError`.
        """
        return self._client.request(RequestOptions("GET", STATUS_PATH), _parse_status)


class AsyncPool:
    """The pool of :class:`~openbeepboop.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def status(self) -> PoolStatus:
        """``GET /v1/status`` (see :meth:`Pool.status`)."""
        return await self._client.request(RequestOptions("GET", STATUS_PATH), _parse_status)
