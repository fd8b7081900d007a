"""The node's side of the node protocol (docs/api.md, 'Nodes'): fetch, submit, heartbeat, watch.

One :class:`aiohttp.ClientSession` with keep-alive serves every call, with a
read timeout above the long-poll wait. aiohttp rather than httpx because
these requests are most of the node's own CPU besides LiteLLM: an httpx
request costs about four times as much CPU in the caller (0.74 against 0.19
ms on the bench machine; docs/performance.md, "aiohttp queue client"), and
LiteLLM already installs and uses aiohttp. Failures are sorted into what the caller can do
about them: :class:`ServerUnavailableError` (wait and retry),
:class:`KeyRejectedError` (stop: the key is wrong), :class:`ServerRequestError`
(this request will never succeed).

Given several server URLs (replicas on one database), a call that finds its
server gone (connection refused or reset, timeout, 502/503/504) goes at once
to the next URL; :mod:`~openbeepboop_node.server_pool` holds that policy.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import certifi
from openbeepboop_schemas import (
    FETCH_PATH,
    HEARTBEAT_PATH,
    LEASE_WATCH_PATH,
    QUEUE_SUBMIT_PATH,
    ErrorEnvelope,
    ErrorOutcome,
    FetchRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    Lease,
    LeaseRef,
    LeaseWatchRequest,
    LeaseWatchResponse,
    Outcome,
    ReleaseOutcome,
    SubmitAck,
    SubmitRequest,
    SubmitResponse,
)
from pydantic import BaseModel, ValidationError

from openbeepboop_node.answer_bounds import (
    DEFAULT_MAX_LEASE_BYTES,
    MAX_OTHER_ANSWER_BYTES,
    AnswerTooLargeError,
    Deadline,
    fetch_answer_cap,
    read_answer,
    transfer_seconds,
)
from openbeepboop_node.exceptions import (
    KeyRejectedError,
    NotAQueueServerError,
    ServerRequestError,
    ServerUnavailableError,
)
from openbeepboop_node.failure_causes import failed_exchange, unreachable_reason
from openbeepboop_node.fetch_answer import read_fetch_answer
from openbeepboop_node.server_pool import DEFAULT_FAILBACK_SECONDS, ServerPool

#: Connect timeout (including waiting for a pooled connection), in seconds.
DEFAULT_TIMEOUT_SECONDS = 30.0
#: The read timeout exceeds the long-poll wait by this much.
READ_TIMEOUT_MARGIN_SECONDS = 15.0
#: An idle connection is dropped after this long. Below the 5 s after which
#: uvicorn (the server) closes idle connections, so the node does not send a
#: request down a connection the server has just closed.
KEEPALIVE_SECONDS = 4.0

#: A heartbeat or delivery gives up on a replica after this share of the lease
#: (and at least :data:`MIN_LEASE_EXCHANGE_SECONDS`) instead of the full connect
#: and read allowance: a replica that accepts connections and never answers
#: (stopped, frozen, in a long pause) must not hold a node's leases until they
#: expire while another replica would take the heartbeat (docs/node.md).
LEASE_EXCHANGE_SHARE = 0.25
MIN_LEASE_EXCHANGE_SECONDS = 5.0
#: Each delivery in a row that timed out multiplies the next one's allowance by
#: this much, up to the lease: a server that slow is busy, not gone, and resending
#: it the same results (acked ``duplicate``) costs it the work again.
PATIENCE_GROWTH = 2.0
#: The calls that keep or end held leases.
_LEASE_PATHS = frozenset({HEARTBEAT_PATH, QUEUE_SUBMIT_PATH})

#: Answers that mean "this replica is gone, another may answer" (from a proxy in front).
FAILOVER_STATUSES = frozenset({502, 503, 504})

#: Answers to a node path that, without the error envelope, mean "no queue server here".
NOT_A_QUEUE_STATUSES = frozenset({404, 405, 501})

#: A fetch answer larger than this is parsed on a worker thread, off the event loop.
OFF_LOOP_PARSE_BYTES = 256 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """What the server said to one request, read in full."""

    url: str
    status: int
    body: bytes
    reason: str = ""
    #: Seconds from a ``Retry-After`` header, when it holds a number.
    retry_after: float | None = None


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _has_envelope(answer: Answer) -> bool:
    try:
        ErrorEnvelope.model_validate_json(answer.body)
    except ValidationError:
        return False
    return True


def _error_message(answer: Answer) -> str:
    """The server's message; for another service's answer, one line of it (never a page of HTML)."""
    try:
        return ErrorEnvelope.model_validate_json(answer.body).error.message
    except ValidationError:
        text = " ".join(answer.body[:200].decode("utf-8", "replace").split())
        if not text or text.startswith("<"):
            return answer.reason or f"HTTP {answer.status}"
        return text


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTP(S)_PROXY``, ``NO_PROXY``).

    Looked up once per client: aiohttp's own ``trust_env`` looks proxies and
    ``~/.netrc`` up again on a worker thread for every request.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def default_ssl_context() -> ssl.SSLContext:
    """The system's trusted CAs plus certifi's bundle (what httpx and LiteLLM trust)."""
    context = ssl.create_default_context()
    context.load_verify_locations(certifi.where())
    return context


class _FailoverError(Exception):
    """One URL did not answer; the call may go on to the next one."""

    def __init__(self, error: ServerUnavailableError) -> None:
        super().__init__(str(error))
        self.error = error


class QueueClient:
    """Talks to the queue server (one of its URLs at a time) as one node."""

    def __init__(
        self,
        server_url: str | Sequence[str],
        api_key: str,
        node_id: str,
        *,
        version: str | None = None,
        fetch_wait: float = 25.0,
        read_margin: float = READ_TIMEOUT_MARGIN_SECONDS,
        failback: float = DEFAULT_FAILBACK_SECONDS,
        connect_timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_lease_bytes: int = DEFAULT_MAX_LEASE_BYTES,
    ) -> None:
        urls = [server_url] if isinstance(server_url, str) else list(server_url)
        self.servers = ServerPool(urls, failback=failback)
        self.node_id = node_id
        self.version = version
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        if version:
            self._headers["User-Agent"] = f"openbeepboop-node/{version}"
        #: No request may wait longer than this for a byte of the answer.
        self.read_timeout = fetch_wait + read_margin
        self.read_margin = read_margin
        self.connect_timeout = connect_timeout
        #: The largest lease a fetch answer may hold (answer_bounds.py).
        self.max_lease_bytes = max_lease_bytes
        self._proxies = {url: proxy_for(url) for url in self.servers.urls}
        #: The lease length of the last leases fetched (the server's ``lease_seconds``).
        self._lease_seconds: float | None = None
        # Made on first use: an aiohttp session belongs to the running event loop.
        self._session: aiohttp.ClientSession | None = None

    @property
    def server_url(self) -> str:
        """The URL calls go to now."""
        return self.servers.current

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    keepalive_timeout=KEEPALIVE_SECONDS, ssl=default_ssl_context()
                ),
                headers=self._headers,
                cookie_jar=aiohttp.DummyCookieJar(),  # the protocol has no cookies
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.connect_timeout, sock_read=self.read_timeout
                ),
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self,
        models: Sequence[str],
        max_jobs: int,
        wait: float,
        serves: Sequence[str] | None = None,
        *,
        refuse: Callable[[ErrorOutcome | ReleaseOutcome], object] | None = None,
    ) -> list[Lease]:
        """Claim up to ``max_jobs`` jobs, long-polling up to ``wait`` seconds.

        ``serves``: every model the node serves now, when ``models`` names fewer.
        ``refuse`` gets the hand-back of each lease the node could not read
        and the release of each lease beyond ``max_jobs``
        (:mod:`~openbeepboop_node.fetch_answer`); the leases returned are the
        ones it can run, never more than ``max_jobs``.
        """
        body = FetchRequest(
            node_id=self.node_id,
            models=list(models),
            max_jobs=max_jobs,
            wait=wait,
            version=self.version,
            serves=None if serves is None else list(serves),
        )
        # ``serves`` only when it says something: the body stays as before otherwise.
        response = await self._post(
            FETCH_PATH,
            body,
            omit=None if serves else {"serves"},
            wait=wait,
            cap=fetch_answer_cap(max_jobs, self.max_lease_bytes),
        )
        read = functools.partial(read_fetch_answer, max_jobs=max_jobs)
        if len(response.body) > OFF_LOOP_PARSE_BYTES:
            # Parsing megabytes of job bodies takes the loop away from the
            # heartbeats, deliveries and signals of every other job.
            answer = await asyncio.to_thread(self._parse, response, read)
        else:
            answer = self._parse(response, read)
        if answer.leases:
            self._lease_seconds = min(lease.lease_seconds for lease in answer.leases)
        if refuse is not None:
            for unreadable in answer.unreadable:
                refuse(unreadable)
            for release in answer.surplus:
                refuse(release)
        return answer.leases

    async def submit(self, outcomes: Sequence[Outcome], *, patience: int = 0) -> list[SubmitAck]:
        """Deliver outcomes; one ack per outcome, in order.

        ``patience``: how many deliveries in a row timed out before this one;
        each lengthens the time this one may take (:meth:`_fixed_allowance`).
        """
        body = SubmitRequest(node_id=self.node_id, outcomes=list(outcomes))
        response = await self._post(QUEUE_SUBMIT_PATH, body, patience=patience)
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

    async def watch_leases(self, leases: Sequence[LeaseRef], wait: float) -> LeaseWatchResponse:
        """Wait up to ``wait`` s until one of ``leases`` is cancelled or lost; which ones."""
        body = LeaseWatchRequest(node_id=self.node_id, leases=list(leases), wait=wait)
        response = await self._post(LEASE_WATCH_PATH, body, wait=wait)
        return self._parse(response, LeaseWatchResponse.model_validate_json)

    def _parse(self, answer: Answer, parse: Callable[[bytes], T]) -> T:
        # A 200 that is not the contract's JSON (a proxy's error page, a
        # different service on that port) is treated like an outage.
        try:
            return parse(answer.body)
        except ValidationError as exc:
            raise ServerUnavailableError(
                f"unexpected answer from {answer.url}: {exc.error_count()} problem(s)"
            ) from exc

    async def _post(
        self,
        path: str,
        body: BaseModel,
        omit: set[str] | None = None,
        *,
        wait: float = 0.0,
        cap: int = MAX_OTHER_ANSWER_BYTES,
        patience: int = 0,
    ) -> Answer:
        """POST ``body``; ``wait``: how long the server may hold it; ``cap``: most answer bytes.

        ``patience``: see :meth:`_fixed_allowance`.
        """
        data = body.model_dump_json(exclude=omit)
        failure: ServerUnavailableError | None = None
        for server in self.servers.order():
            try:
                answer = await self._post_to(server, path, data, wait, cap, patience)
            except _FailoverError as exc:
                failure = exc.error
                failure.__cause__ = exc.__cause__
                self.servers.failed(server, failure)
                continue
            self.servers.succeeded(server)
            return answer
        assert failure is not None  # the pool holds at least one URL
        raise failure

    def _fixed_allowance(self, path: str, patience: int = 0) -> float:
        """Seconds an exchange may take besides its long-poll wait and its body's transfer.

        The connect timeout and the read margin, or for a heartbeat or a
        delivery at most :data:`LEASE_EXCHANGE_SHARE` of the lease: past that,
        the next replica gets the call while the leases still hold. A
        delivery after ``patience`` timed-out ones gets :data:`PATIENCE_GROWTH`
        times more per timeout, never more than the lease (heartbeats keep the
        leases of results waiting for delivery), nor, before the node has seen
        a lease, than the connect timeout and the read margin. The first
        attempt keeps the short allowance, so a hung replica is still left
        for the next one as quickly as before.
        """
        fixed = full = self.connect_timeout + self.read_margin
        if path in _LEASE_PATHS and self._lease_seconds is not None:
            bound = max(MIN_LEASE_EXCHANGE_SECONDS, LEASE_EXCHANGE_SHARE * self._lease_seconds)
            fixed = min(fixed, bound)
            full = max(fixed, self._lease_seconds)
        if patience > 0:
            # The exponent capped: hours of timeouts must not overflow the float.
            fixed = min(full, fixed * PATIENCE_GROWTH ** min(patience, 32))
        return fixed

    async def _post_to(
        self, server: str, path: str, data: str, wait: float, cap: int, patience: int = 0
    ) -> Answer:
        url = server + path
        loop = asyncio.get_running_loop()
        # The whole exchange, not only each read (answer_bounds.py): a server
        # trickling its answer a byte at a time is cut off here.
        allowed = self._fixed_allowance(path, patience) + wait + transfer_seconds(len(data))
        started = loop.time()
        deadline = Deadline(started + allowed)
        session = self._open()
        timeout = session.timeout
        if patience and allowed > self.read_timeout:
            # A patient delivery: the session's read timeout must not cut it first.
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout, sock_read=allowed
            )
        try:
            async with (
                deadline,
                session.post(
                    url, data=data, proxy=self._proxies[server], timeout=timeout
                ) as response,
            ):
                answer = Answer(
                    url,
                    response.status,
                    await read_answer(response, cap, deadline),
                    response.reason or "",
                    _seconds(response.headers.get("Retry-After")),
                )
        except asyncio.TimeoutError as exc:  # aiohttp's read and connect timeouts, or the deadline
            if loop.time() >= deadline.when:
                what = f"no whole answer within {deadline.when - started:.0f} s"
            else:
                what = unreachable_reason(exc)
            raise _FailoverError(
                ServerUnavailableError(f"timed out talking to {server} ({what})", timed_out=True)
            ) from exc
        except AnswerTooLargeError as exc:
            hint = ""
            if path == FETCH_PATH:
                hint = " (a server whose max_body_bytes is above max_lease_bytes needs that raised)"
            raise _FailoverError(
                ServerUnavailableError(
                    f"server {server} sent too large an answer to {path}: {exc}{hint}"
                )
            ) from exc
        except aiohttp.ClientError as exc:
            raise _FailoverError(ServerUnavailableError(failed_exchange(server, exc))) from exc
        status = answer.status
        if status < 400:
            return answer
        if status in NOT_A_QUEUE_STATUSES and not _has_envelope(answer):
            said = answer.reason or _error_message(answer)
            raise NotAQueueServerError(
                f"server_url {server} is not an OpenBeepBoop queue server: {path} answered "
                f"{status} {said} without its error envelope (check server_url in the node "
                "config: the queue server's address, with no path)",
                status,
            )
        message = _error_message(answer)
        if status in (401, 403):
            # 403: a wrong role, or a NODE key used outside its scope (models,
            # node_id); the server's message says which.
            what = "API key" if status == 401 else "API key's role or scope"
            raise KeyRejectedError(f"server {server} rejected the {what}: {message}", status)
        if status in FAILOVER_STATUSES:
            raise _FailoverError(
                ServerUnavailableError(
                    f"server {server} answered {status}: {message}", answer.retry_after
                )
            )
        if status in (408, 429) or status >= 500:
            raise ServerUnavailableError(
                f"server {server} answered {status}: {message}", answer.retry_after
            )
        raise ServerRequestError(f"server refused {path} ({status}): {message}", status, message)
