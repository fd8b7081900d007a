"""The HTTP machinery ``Client`` and ``AsyncClient`` share.

:class:`BaseClient` builds requests and turns responses into models or typed
errors; :class:`SyncAPIClient` and :class:`AsyncAPIClient` add the one thing
that differs, sending (with retries) on ``httpx.Client`` or
``httpx.AsyncClient``. The httpx client is created on the first request, so
making a ``Client`` costs nothing and opens no connection.

Given several server URLs, a request that finds its server gone goes at once
to the next one (:mod:`openbeepboop._servers`); only when every URL failed
does it count a retry and back off.

Each whole response has a deadline, not only each read: a server that
trickles its answer cannot hold a request for ever
(:mod:`openbeepboop._response_deadline`).

A try that may have reached the server without its answer arriving (a
timeout or a broken connection after connecting, a gateway's 502/504) marks
the error the call ends with as ``answer_lost``: a submit may have queued its
job. A command line can also be told (``_on_no_answer``) when a try ends
without an answer and another follows, to say that it is not hung.

The API key goes into the ``Authorization`` header of each request and nowhere
else: it is not logged, not in any ``repr`` and not in error messages.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import IO, Generic, TypeVar

import httpx
import pydantic

from openbeepboop import _retry, _servers
from openbeepboop._config import ClientSettings, make_timeout
from openbeepboop._constants import LONG_POLL_GRACE
from openbeepboop._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    status_error_class,
)
from openbeepboop._response_deadline import bound_responses

logger = logging.getLogger(__name__)

T = TypeVar("T")
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)

#: Turns a decoded JSON body into the model a method returns.
Parser = Callable[[object], T]
QueryParams = Mapping[str, str | int]
E = TypeVar("E", bound=APIError)

#: Failures of a try that never left this machine: the server cannot have acted on it.
_NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)
#: A gateway's answers after which the server behind it may have acted on the request.
_GATEWAY_LOST_STATUSES = frozenset({502, 504})


@dataclass(frozen=True)
class NoAnswer:
    """A try of a call ended without an answer, and another try follows.

    What a command line needs to say that it is not hung: which server did
    not answer and why, how long the call has waited, how many tries are left,
    each waiting up to ``try_seconds``, and that the call ends at the latest
    ``within`` seconds from now.
    """

    server: str
    reason: str
    waited: float
    tries_left: int
    try_seconds: float
    within: float


@dataclass(frozen=True)
class RequestOptions:
    """One API call: what to send, and per-call overrides of the client's defaults."""

    method: str
    path: str
    json: object | None = None
    params: QueryParams | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: httpx.Timeout | None = None
    #: Multipart parts (``{"file": (name, handle)}``) and form fields, instead of ``json``.
    files: Mapping[str, tuple[str, IO[bytes]]] | None = None
    data: Mapping[str, str] | None = None
    #: The answer is bytes (a file's content), handed to the parser as such.
    binary: bool = False


@functools.lru_cache(maxsize=1)
def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"openbeepboop-client/{version('openbeepboop-client')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "openbeepboop-client"


class BaseClient(Generic[HttpT]):
    """Settings, request building and response handling, without any I/O."""

    _settings: ClientSettings
    _http: HttpT | None
    _owns_http: bool

    def __init__(self, settings: ClientSettings, http_client: HttpT | None = None) -> None:
        self._settings = settings
        self._servers = _servers.ServerPool(settings.all_base_urls())
        self._http = http_client
        # A client passed in by the caller is theirs to close.
        self._owns_http = http_client is None
        self._closed = False
        #: Told when a try ends without an answer and another follows (the CLI sets it).
        self._on_no_answer: Callable[[NoAnswer], None] | None = None

    @property
    def base_url(self) -> str:
        """The server's URL in use, e.g. ``http://127.0.0.1:8000``."""
        return self._servers.current

    @property
    def base_urls(self) -> list[str]:
        """Every server URL given, in order of preference."""
        return list(self._servers.urls)

    @property
    def timeout(self) -> httpx.Timeout:
        """Default timeout of each HTTP request."""
        return self._settings.timeout

    @property
    def max_retries(self) -> int:
        """How many times a failed request is retried."""
        return self._settings.max_retries

    @property
    def default_model(self) -> str | None:
        """The model used when a request names none (from config), if any."""
        return self._settings.default_model

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _check_open(self) -> None:
        """Raise ClientClosedError once this client, or the pool it uses, is closed.

        Without it a closed client would fail deep inside httpx, or, closed
        before its first call, quietly open a new pool that nothing closes.
        """
        name = type(self).__name__
        if self._closed:
            raise ClientClosedError(
                f"this {name} is closed (close() was called, or its `with` block ended); "
                f"make a new {name} to send requests"
            )
        if self._http is not None and self._http.is_closed:
            raise ClientClosedError(
                f"this {name}'s connection pool is closed (by the client it was made from "
                f"with with_options(), or the http_client given to it); make a new {name}"
            )

    def _settings_with(
        self, timeout: float | httpx.Timeout | None, max_retries: int | None
    ) -> ClientSettings:
        """These settings with the overrides ``with_options`` was given (None keeps a value)."""
        return replace(
            self._settings,
            timeout=make_timeout(timeout) if timeout is not None else self._settings.timeout,
            max_retries=max_retries if max_retries is not None else self._settings.max_retries,
        )

    def _default_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._settings.api_key}",
            "Accept": "application/json",
            "User-Agent": _user_agent(),
        }

    def _http_client_kwargs(self) -> dict[str, object]:
        # Headers (the key among them) go on each request, not on the pool, so
        # a caller-supplied http_client works the same way.
        return {"timeout": self._settings.timeout}

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, options: RequestOptions, server: str
    ) -> httpx.Request:
        # Built once per call and per server URL, from the same options: that
        # is what keeps the Idempotency-Key of a submit the same across attempts.
        headers = {**self._default_headers(), **options.headers}
        return http.build_request(
            options.method,
            f"{server}{options.path}",
            json=options.json,
            files=dict(options.files) if options.files else None,
            data=dict(options.data) if options.data else None,
            params=dict(options.params) if options.params else None,
            headers=headers,
            timeout=options.timeout if options.timeout is not None else self._settings.timeout,
        )

    def _parse_response(
        self, response: httpx.Response, parse: Parser[T], binary: bool = False
    ) -> T:
        if binary:
            return parse(response.content)
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIResponseValidationError(
                f"the server answered {response.status_code} with a body that is not JSON",
                response,
                body=response.text[:500],
            ) from None
        try:
            return parse(body)
        except pydantic.ValidationError as exc:
            raise APIResponseValidationError(
                f"the server's answer does not fit the wire contract: {_first_error(exc)}",
                response,
                body=body,
            ) from exc

    def _make_status_error(self, response: httpx.Response) -> APIStatusError:
        body: object | None
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = response.text or None
        message = _error_message(response, body)
        error_class = status_error_class(response.status_code)
        return error_class(message, response=response, body=body)

    def _should_retry(self, response: httpx.Response) -> bool:
        return _retry.is_retryable_status(response.status_code)

    def _next_server(self, server: str, tried: set[str], reason: str) -> str | None:
        """A URL this attempt has not tried yet, after ``server`` failed; None when none is left."""
        self._servers.failed(server, reason)
        for url in self._servers.order():
            if url not in tried:
                tried.add(url)
                return url
        return None

    def _first_server(self, tried: set[str]) -> str:
        """The URL in use, which starts a new round of ``tried`` (before a call or a retry)."""
        tried.clear()
        url = self._servers.order()[0]
        tried.add(url)
        return url

    def _no_answer(
        self,
        request: httpx.Request,
        reason: str,
        tried: set[str],
        retries_done: int,
        call_started: float,
    ) -> None:
        """Tell ``_on_no_answer`` that this try got no answer, if another try follows."""
        hook = self._on_no_answer
        if hook is None:
            return
        urls = len(self._servers.urls)
        retries_left = self._settings.max_retries - retries_done
        left = (urls - len(tried)) + retries_left * urls
        if left <= 0:
            return
        timeout = request.extensions.get("timeout", {})
        read = timeout.get("read") or 0.0
        pauses = sum(
            _retry.longest_backoff(n) for n in range(retries_done, self._settings.max_retries)
        )
        url = request.url
        hook(
            NoAnswer(
                server=f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}",
                reason=reason,
                waited=time.monotonic() - call_started,
                tries_left=left,
                try_seconds=read,
                within=left * ((timeout.get("connect") or 0.0) + read) + pauses,
            )
        )

    def _log_retry(
        self, request: httpx.Request, retries_done: int, delay: float, reason: str
    ) -> None:
        logger.info(
            "%s %s failed (%s); retry %d of %d in %.2fs",
            request.method,
            request.url.path,
            reason,
            retries_done + 1,
            self._settings.max_retries,
            delay,
        )


class SyncAPIClient(BaseClient[httpx.Client]):
    """Sends requests on one lazily created, keep-alive ``httpx.Client``."""

    def _client(self) -> httpx.Client:
        self._check_open()
        if self._http is None:
            self._http = httpx.Client(**self._http_client_kwargs())  # type: ignore[arg-type]
            bound_responses(self._http)
        return self._http

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def request(self, options: RequestOptions, parse: Parser[T]) -> T:
        """Send one call, retrying what is worth retrying, and parse the answer."""
        http = self._client()
        tried: set[str] = set()
        server = self._first_server(tried)
        request = self._build_request(http, options, server)
        retries_done = 0
        call_started = time.monotonic()
        lost = False
        while True:
            started = time.monotonic()
            try:
                response = http.send(request)
            except httpx.TimeoutException as exc:
                lost = lost or not isinstance(exc, _NEVER_SENT)
                self._no_answer(request, _timeout_reason(exc), tried, retries_done, call_started)
                moved = self._next_server(server, tried, "timeout")
                if moved is not None:
                    server, request = moved, self._build_request(http, options, moved)
                    continue
                if retries_done >= self._settings.max_retries:
                    raise _marked(APITimeoutError(request), lost) from exc
                delay = _retry.retry_delay(retries_done, None)
                self._log_retry(request, retries_done, delay, "timeout")
            except httpx.TransportError as exc:
                lost = lost or not isinstance(exc, _NEVER_SENT)
                if not _retry.is_retryable_transport_error(exc):
                    raise _marked(_connection_error(request, exc), lost) from exc
                self._no_answer(request, _reason(exc), tried, retries_done, call_started)
                moved = self._next_server(server, tried, type(exc).__name__)
                if moved is not None:
                    server, request = moved, self._build_request(http, options, moved)
                    continue
                if retries_done >= self._settings.max_retries:
                    raise _marked(_connection_error(request, exc), lost) from exc
                delay = _retry.retry_delay(retries_done, None)
                self._log_retry(request, retries_done, delay, type(exc).__name__)
            else:
                _log_response(response, started)
                if response.is_success:
                    return self._parse_response(response, parse, options.binary)
                lost = lost or response.status_code in _GATEWAY_LOST_STATUSES
                if response.status_code in _servers.FAILOVER_STATUSES:
                    moved = self._next_server(server, tried, f"HTTP {response.status_code}")
                    if moved is not None:
                        response.close()
                        server, request = moved, self._build_request(http, options, moved)
                        continue
                if retries_done >= self._settings.max_retries or not self._should_retry(response):
                    raise _marked(self._make_status_error(response), lost)
                delay = _retry.retry_delay(retries_done, response)
                self._log_retry(request, retries_done, delay, f"HTTP {response.status_code}")
                response.close()
            self._sleep(delay)
            retries_done += 1
            moved = self._first_server(tried)
            if moved != server:
                server, request = moved, self._build_request(http, options, moved)

    def close(self) -> None:
        """Close the connection pool (if this client made it); the client is done with."""
        self._closed = True
        if self._http is not None and self._owns_http:
            self._http.close()


class AsyncAPIClient(BaseClient[httpx.AsyncClient]):
    """Sends requests on one lazily created, keep-alive ``httpx.AsyncClient``."""

    def _client(self) -> httpx.AsyncClient:
        self._check_open()
        if self._http is None:
            self._http = httpx.AsyncClient(**self._http_client_kwargs())  # type: ignore[arg-type]
            bound_responses(self._http)
        return self._http

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def request(self, options: RequestOptions, parse: Parser[T]) -> T:
        """Send one call, retrying what is worth retrying, and parse the answer."""
        http = self._client()
        tried: set[str] = set()
        server = self._first_server(tried)
        request = self._build_request(http, options, server)
        retries_done = 0
        call_started = time.monotonic()
        lost = False
        while True:
            started = time.monotonic()
            try:
                response = await http.send(request)
            except httpx.TimeoutException as exc:
                lost = lost or not isinstance(exc, _NEVER_SENT)
                self._no_answer(request, _timeout_reason(exc), tried, retries_done, call_started)
                moved = self._next_server(server, tried, "timeout")
                if moved is not None:
                    server, request = moved, self._build_request(http, options, moved)
                    continue
                if retries_done >= self._settings.max_retries:
                    raise _marked(APITimeoutError(request), lost) from exc
                delay = _retry.retry_delay(retries_done, None)
                self._log_retry(request, retries_done, delay, "timeout")
            except httpx.TransportError as exc:
                lost = lost or not isinstance(exc, _NEVER_SENT)
                if not _retry.is_retryable_transport_error(exc):
                    raise _marked(_connection_error(request, exc), lost) from exc
                self._no_answer(request, _reason(exc), tried, retries_done, call_started)
                moved = self._next_server(server, tried, type(exc).__name__)
                if moved is not None:
                    server, request = moved, self._build_request(http, options, moved)
                    continue
                if retries_done >= self._settings.max_retries:
                    raise _marked(_connection_error(request, exc), lost) from exc
                delay = _retry.retry_delay(retries_done, None)
                self._log_retry(request, retries_done, delay, type(exc).__name__)
            else:
                _log_response(response, started)
                if response.is_success:
                    return self._parse_response(response, parse, options.binary)
                lost = lost or response.status_code in _GATEWAY_LOST_STATUSES
                if response.status_code in _servers.FAILOVER_STATUSES:
                    moved = self._next_server(server, tried, f"HTTP {response.status_code}")
                    if moved is not None:
                        await response.aclose()
                        server, request = moved, self._build_request(http, options, moved)
                        continue
                if retries_done >= self._settings.max_retries or not self._should_retry(response):
                    raise _marked(self._make_status_error(response), lost)
                delay = _retry.retry_delay(retries_done, response)
                self._log_retry(request, retries_done, delay, f"HTTP {response.status_code}")
                await response.aclose()
            await self._sleep(delay)
            retries_done += 1
            moved = self._first_server(tried)
            if moved != server:
                server, request = moved, self._build_request(http, options, moved)

    async def close(self) -> None:
        """Close the connection pool (if this client made it); the client is done with."""
        self._closed = True
        if self._http is not None and self._owns_http:
            await self._http.aclose()


def long_poll_timeout(base: httpx.Timeout, wait: float | None) -> httpx.Timeout | None:
    """A timeout whose read part outlasts a server-side wait of ``wait`` seconds."""
    if not wait:
        return None
    needed = wait + LONG_POLL_GRACE
    if base.read is not None and base.read >= needed:
        return None
    return httpx.Timeout(connect=base.connect, read=needed, write=base.write, pool=base.pool)


def _marked(error: E, lost: bool) -> E:
    """``error``, marked ``answer_lost`` when a try may have reached the server unanswered."""
    error.answer_lost = lost
    return error


def _reason(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


def _timeout_reason(exc: httpx.TimeoutException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "could not connect in time"
    return "no answer in time"


def _connection_error(request: httpx.Request, exc: httpx.TransportError) -> APIConnectionError:
    reason = _reason(exc)
    url = request.url
    where = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"
    if isinstance(exc, httpx.ConnectError):
        return APIConnectionError(
            request, message=f"could not connect to the server at {where}: {reason}"
        )
    # Connected, then the exchange broke (a reset, a close mid-answer): saying
    # "could not connect" would send the user to check a URL that works.
    return APIConnectionError(
        request, message=f"the connection to the server at {where} broke: {reason}"
    )


def _log_response(response: httpx.Response, started: float) -> None:
    logger.debug(
        "%s %s -> %d (%.0f ms)",
        response.request.method,
        response.request.url.path,
        response.status_code,
        (time.monotonic() - started) * 1000,
    )


def _error_message(response: httpx.Response, body: object | None) -> str:
    """One line: ``404 Not Found: no such job``, from the envelope when there is one."""
    detail: str | None = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            detail = str(error["message"])
        elif isinstance(error, str):
            detail = error
    elif isinstance(body, str) and body.strip():
        detail = body.strip()[:200]
    head = f"{response.status_code} {response.reason_phrase}".strip()
    text = f"{head}: {detail}" if detail else head
    return " ".join(text.split())


def _first_error(exc: pydantic.ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


__all__ = [
    "AsyncAPIClient",
    "BaseClient",
    "NoAnswer",
    "Parser",
    "RequestOptions",
    "SyncAPIClient",
    "long_poll_timeout",
]
