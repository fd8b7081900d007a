"""``client.models``: the models that recently seen nodes can serve."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openbeepboop_schemas import MODELS_PATH, ModelList

from openbeepboop._base_client import RequestOptions

if TYPE_CHECKING:
    from openbeepboop._client import AsyncClient, Client


def _parse_models(body: object) -> ModelList:
    return ModelList.model_validate(body)


class Models:
    """Models of the synchronous client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> ModelList:
        """``GET /v1/models`` in the OpenAI list shape."""
        return self._client.request(RequestOptions("GET", MODELS_PATH), _parse_models)


class AsyncModels:
    """Models of :class:`~openbeepboop.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> ModelList:
        """``GET /v1/models`` in the OpenAI list shape."""
        return await self._client.request(RequestOptions("GET", MODELS_PATH), _parse_models)
