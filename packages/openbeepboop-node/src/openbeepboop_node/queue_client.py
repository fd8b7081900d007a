"""The node's side of the node protocol (SPEC §4): fetch, submit, heartbeat.

One :class:`httpx.AsyncClient` with keep-alive serves every call, with a read
timeout above the long-poll wait. Failures are sorted into what the caller
can do about them: :class:`ServerUnavailableError` (wait and retry),
:class:`KeyRejectedError` (stop: the key is wrong), :class:`ServerRequestError`
(this request will never succeed).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

import httpx
from openbeepboop_schemas import (
    ErrorEnvelope,
    FetchRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    Lease,
    LeaseRef,
    Outcome,
    SubmitAck,
    SubmitRequest,
    SubmitResponse,
)
from pydantic import BaseModel, TypeAdapter, ValidationError

from openbeepboop_node.exceptions import (
    KeyRejectedError,
    ServerRequestError,
    ServerUnavailableError,
)

FETCH_PATH = "/internal/queue/fetch"
SUBMIT_PATH = "/internal/queue/submit"
HEARTBEAT_PATH = "/internal/queue/heartbeat"

#: Connect, write and pool timeout of every call, in seconds.
DEFAULT_TIMEOUT_SECONDS = 30.0
#: The read timeout exceeds the long-poll wait by this much.
READ_TIMEOUT_MARGIN_SECONDS = 15.0
#: Connections kept alive: a long-poll, a heartbeat and a submit run at once.
MAX_KEEPALIVE_CONNECTIONS = 8

T = TypeVar("T")


@functools.cache
def _lease_list() -> TypeAdapter[list[Lease]]:
    return TypeAdapter(list[Lease])


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        return ErrorEnvelope.model_validate_json(response.content).error.message
    except ValidationError:
        return response.text[:200] or response.reason_phrase


class QueueClient:
    """Talks to one queue server as one node."""

    def __init__(
        self,
        server_url: str,
        api_key: str,
        node_id: str,
        *,
        version: str | None = None,
        fetch_wait: float = 25.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.node_id = node_id
        self.version = version
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        if version:
            headers["User-Agent"] = f"openbeepboop-node/{version}"
        self._http = httpx.AsyncClient(
            base_url=self.server_url,
            headers=headers,
            timeout=httpx.Timeout(
                DEFAULT_TIMEOUT_SECONDS, read=fetch_wait + READ_TIMEOUT_MARGIN_SECONDS
            ),
            limits=httpx.Limits(max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS),
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def fetch(self, models: Sequence[str], max_jobs: int, wait: float) -> list[Lease]:
        """Claim up to ``max_jobs`` jobs, long-polling up to ``wait`` seconds."""
        body = FetchRequest(
            node_id=self.node_id,
            models=list(models),
            max_jobs=max_jobs,
            wait=wait,
            version=self.version,
        )
        response = await self._post(FETCH_PATH, body)
        return self._parse(response, _lease_list().validate_json)

    async def submit(self, outcomes: Sequence[Outcome]) -> list[SubmitAck]:
        """Deliver outcomes; one ack per outcome, in order."""
        body = SubmitRequest(node_id=self.node_id, outcomes=list(outcomes))
        response = await self._post(SUBMIT_PATH, body)
        return self._parse(response, SubmitResponse.model_validate_json).acks

    async def heartbeat(
        self, leases: Sequence[LeaseRef], models: Sequence[str] | None = None
    ) -> HeartbeatResponse:
        """Extend held leases; the answer names the lost and cancelled ones."""
        body = HeartbeatRequest(
            node_id=self.node_id,
            leases=list(leases),
            models=list(models) if models is not None else None,
            version=self.version,
        )
        response = await self._post(HEARTBEAT_PATH, body)
        return self._parse(response, HeartbeatResponse.model_validate_json)

    def _parse(self, response: httpx.Response, parse: Callable[[bytes], T]) -> T:
        # A 200 that is not the contract's JSON (a proxy's error page, a
        # different service on that port) is treated like an outage.
        try:
            return parse(response.content)
        except ValidationError as exc:
            raise ServerUnavailableError(
                f"unexpected answer from {response.request.url}: {exc.error_count()} problem(s)"
            ) from exc

    async def _post(self, path: str, body: BaseModel) -> httpx.Response:
        try:
            response = await self._http.post(path, content=body.model_dump_json())
        except httpx.TimeoutException as exc:
            raise ServerUnavailableError(
                f"{type(exc).__name__} talking to {self.server_url}"
            ) from exc
        except httpx.TransportError as exc:
            raise ServerUnavailableError(f"cannot connect to {self.server_url}: {exc}") from exc
        status = response.status_code
        if status < 400:
            return response
        message = _error_message(response)
        if status in (401, 403):
            what = "API key" if status == 401 else "API key's role (NODE or ADMIN needed)"
            raise KeyRejectedError(
                f"server {self.server_url} rejected the {what}: {message}", status
            )
        if status in (408, 429) or status >= 500:
            raise ServerUnavailableError(
                f"server answered {status}: {message}", _retry_after(response)
            )
        raise ServerRequestError(f"server refused {path} ({status}): {message}", status)
