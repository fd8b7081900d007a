"""``Client`` and ``AsyncClient``: the entry points of the library.

::

    from openbeepboop import Client

    client = Client()   # base_url/api_key: arguments, then env, then client_config.toml
    job = client.chat.completions.create(model="llama3", messages=[...])
    print(job.get(wait=True).choices[0].message.content)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from types import TracebackType

import httpx

from openbeepboop._base_client import AsyncAPIClient, SyncAPIClient
from openbeepboop._config import ClientSettings, resolve_settings
from openbeepboop._resources import (
    AsyncChat,
    AsyncJobs,
    AsyncModels,
    AsyncPool,
    Chat,
    Jobs,
    Models,
    Pool,
)
from openbeepboop._resources.batches import AsyncBatches, Batches
from openbeepboop._resources.usage import AsyncUsage, Usage


class Client(SyncAPIClient):
    """A synchronous client of one queue server.

    Every argument is optional: ``base_url`` and ``api_key`` fall back to
    ``OPENBEEPBOOP_SERVER_URL`` / ``OPENBEEPBOOP_API_KEY``, then to
    ``client_config.toml`` (``config_path`` or the user config directory);
    a ConfigError says where it looked when neither has them. ``timeout`` is
    seconds per HTTP request (or an ``httpx.Timeout``); ``max_retries`` how often
    a failed request is retried. No connection is opened until the first call.
    """

    def __init__(
        self,
        *,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        default_model: str | None = None,
        config_path: str | os.PathLike[str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        settings = resolve_settings(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            default_model=default_model,
            config_path=config_path,
        )
        super().__init__(settings, http_client)

    @classmethod
    def _from_settings(cls, settings: ClientSettings, http_client: httpx.Client | None) -> Client:
        client = cls.__new__(cls)
        SyncAPIClient.__init__(client, settings, http_client)
        return client

    @cached_property
    def chat(self) -> Chat:
        """``client.chat.completions.create(...)`` / ``.create_many(...)``."""
        return Chat(self)

    @cached_property
    def jobs(self) -> Jobs:
        """Look at, poll, wait for, list and cancel jobs."""
        return Jobs(self)

    @cached_property
    def models(self) -> Models:
        """Models the server's nodes serve."""
        return Models(self)

    @cached_property
    def pool(self) -> Pool:
        """The pool's status (an ADMIN or METRICS key)."""
        return Pool(self)

    @cached_property
    def usage(self) -> Usage:
        """What keys' jobs used: this key's, or every key's for an ADMIN key."""
        return Usage(self)

    @cached_property
    def batches(self) -> Batches:
        """Server-side OpenAI batches: upload, create, follow, fetch results."""
        return Batches(self)

    def with_options(
        self, *, timeout: float | httpx.Timeout | None = None, max_retries: int | None = None
    ) -> Client:
        """A client with other defaults that shares this one's connection pool."""
        copy = Client._from_settings(self._settings_with(timeout, max_retries), self._client())
        copy._owns_http = False
        return copy

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(AsyncAPIClient):
    """An asyncio client of one queue server; the same settings as :class:`Client`."""

    def __init__(
        self,
        *,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        default_model: str | None = None,
        config_path: str | os.PathLike[str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        settings = resolve_settings(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            default_model=default_model,
            config_path=config_path,
        )
        super().__init__(settings, http_client)

    @classmethod
    def _from_settings(
        cls, settings: ClientSettings, http_client: httpx.AsyncClient | None
    ) -> AsyncClient:
        client = cls.__new__(cls)
        AsyncAPIClient.__init__(client, settings, http_client)
        return client

    @cached_property
    def chat(self) -> AsyncChat:
        """``await client.chat.completions.create(...)`` / ``.create_many(...)``."""
        return AsyncChat(self)

    @cached_property
    def jobs(self) -> AsyncJobs:
        """Look at, poll, wait for, list and cancel jobs."""
        return AsyncJobs(self)

    @cached_property
    def models(self) -> AsyncModels:
        """Models the server's nodes serve."""
        return AsyncModels(self)

    @cached_property
    def pool(self) -> AsyncPool:
        """The pool's status (an ADMIN or METRICS key)."""
        return AsyncPool(self)

    @cached_property
    def usage(self) -> AsyncUsage:
        """What keys' jobs used: this key's, or every key's for an ADMIN key."""
        return AsyncUsage(self)

    @cached_property
    def batches(self) -> AsyncBatches:
        """Server-side OpenAI batches: upload, create, follow, fetch results."""
        return AsyncBatches(self)

    def with_options(
        self, *, timeout: float | httpx.Timeout | None = None, max_retries: int | None = None
    ) -> AsyncClient:
        """A client with other defaults that shares this one's connection pool."""
        copy = AsyncClient._from_settings(self._settings_with(timeout, max_retries), self._client())
        copy._owns_http = False
        return copy

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
