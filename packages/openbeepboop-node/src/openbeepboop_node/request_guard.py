"""What a job's request may hold before it reaches LiteLLM: size ceilings and media URLs.

A job is written by whoever holds a USER key, and the node pays for what
LiteLLM does with it: LiteLLM copies a request's messages several times per
call (validation, provider transformation, logging), so a request of
millions of tiny content parts grew a node past 3 GB and stalled it for
seconds; and for several providers (Anthropic, Gemini, Bedrock, ...)
LiteLLM downloads an ``image_url`` (or a file or audio URL) itself, from
the node's network, before sending the bytes on. Both are decided here,
once per job, before any call:

- **Size.** Messages, content parts, nesting, and the characters of every
  string are counted in one walk that stops at the first ceiling passed, so
  refusing an absurd request costs as little as the ceiling, not the
  request. Past a ceiling the job fails permanently (``request_too_large``),
  naming the ceiling: the same request would fail again anywhere.
- **Media URLs.** Any string in a message (outside its text) that starts with
  a URL scheme other than ``data:`` is a URL LiteLLM may fetch. It is refused
  (``media_url_refused``) unless the model's operator set
  ``allow_media_urls``, and even then only ``http(s)`` URLs whose host
  resolves to public addresses only (no loopback, private, link-local,
  multicast, reserved or unspecified address). ``data:`` URLs carry their
  bytes and always pass.

A normal job (a few text messages) costs a few microseconds here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from openbeepboop_schemas import ChatCompletionRequest, NodeError

from openbeepboop_node.exceptions import InferenceError

#: Default ceilings (node_config.toml ``max_messages``, ``max_content_parts``,
#: ``max_request_chars``): far above any real conversation, far below what
#: hurts a node. 32 M characters leave room for images sent as ``data:`` URLs.
DEFAULT_MAX_MESSAGES = 10_000
DEFAULT_MAX_CONTENT_PARTS = 10_000
DEFAULT_MAX_REQUEST_CHARS = 32 * 1024 * 1024
#: Fixed ceilings on the request's structure: JSON values (list items and
#: object members) and nesting depth, tools and extra fields included.
MAX_REQUEST_ITEMS = 200_000
MAX_REQUEST_DEPTH = 64
#: How long resolving one media URL's host may take before it is refused.
RESOLVE_TIMEOUT_SECONDS = 5.0
#: Keys whose strings are text the model reads, never a URL LiteLLM fetches.
TEXT_KEYS = frozenset(
    {"text", "content", "arguments", "refusal", "reasoning_content", "thinking", "name"}
)
#: Schemes whose URLs may be fetched when the operator allows media URLs.
FETCHABLE_SCHEMES = frozenset({"http", "https"})

_URL_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.\-]*):")


@dataclass(frozen=True)
class RequestLimits:
    """The node's ceilings on one job's request."""

    max_messages: int = DEFAULT_MAX_MESSAGES
    max_content_parts: int = DEFAULT_MAX_CONTENT_PARTS
    max_request_chars: int = DEFAULT_MAX_REQUEST_CHARS


def _refuse(error_type: str, message: str) -> InferenceError:
    return InferenceError(NodeError(message=message, type=error_type, retryable=False))


def _too_large(what: str, limit: int, setting: str | None = None) -> InferenceError:
    where = f" (node setting {setting})" if setting else ""
    return _refuse(
        "request_too_large",
        f"the request is too large for this node: more than {limit:,} {what}{where}",
    )


class _Walk:
    """One walk over a request's JSON values, stopping at the first ceiling passed."""

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.chars = 0
        self.items = 0
        #: Strings outside text that start with a URL scheme other than data:.
        self.urls: list[str] = []

    def visit(self, value: Any, key: str | None, *, find_urls: bool) -> None:
        stack: list[tuple[Any, str | None, int]] = [(value, key, 0)]
        while stack:
            current, current_key, depth = stack.pop()
            if isinstance(current, str):
                self.chars += len(current)
                if self.chars > self.limits.max_request_chars:
                    raise _too_large(
                        "characters", self.limits.max_request_chars, "max_request_chars"
                    )
                if find_urls and current_key not in TEXT_KEYS:
                    match = _URL_SCHEME.match(current)
                    if match is not None and match.group(1).lower() != "data":
                        self.urls.append(current.strip())
                continue
            if depth >= MAX_REQUEST_DEPTH:
                raise _too_large("levels of nesting", MAX_REQUEST_DEPTH)
            if isinstance(current, dict):
                self._count(len(current))
                stack.extend((v, str(k), depth + 1) for k, v in current.items())
            elif isinstance(current, (list, tuple)):
                self._count(len(current))
                stack.extend((v, current_key, depth + 1) for v in current)

    def _count(self, items: int) -> None:
        self.items += items
        if self.items > MAX_REQUEST_ITEMS:
            raise _too_large("JSON values", MAX_REQUEST_ITEMS)


def scan_request(request: ChatCompletionRequest, limits: RequestLimits) -> list[str]:
    """Check ``request`` against ``limits``; returns the media URLs its messages hold.

    InferenceError (permanent, ``request_too_large``) past a ceiling.
    """
    messages = request.messages
    if len(messages) > limits.max_messages:
        raise _too_large("messages", limits.max_messages, "max_messages")
    walk = _Walk(limits)
    parts = 0
    for message in messages:
        content = message.content
        if isinstance(content, str):
            walk.visit(content, "content", find_urls=False)
        elif content is not None:
            parts += len(content)
            if parts > limits.max_content_parts:
                raise _too_large("content parts", limits.max_content_parts, "max_content_parts")
            walk.visit(content, None, find_urls=True)
        if message.model_extra:
            walk.visit(message.model_extra, None, find_urls=True)
    if request.model_extra:
        # Tools, response formats, ...: counted, never fetched by LiteLLM.
        walk.visit(request.model_extra, None, find_urls=False)
    return walk.urls


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
    )
    return [str(info[4][0]) for info in infos]


async def check_media_urls(urls: Iterable[str], allowed: bool) -> None:
    """Refuse media URLs (permanent ``media_url_refused``) unless allowed and public."""
    for url in urls:
        shown = url if len(url) <= 200 else url[:200] + "..."
        if not allowed:
            raise _refuse(
                "media_url_refused",
                f"media URLs are not allowed for this model ({shown}); "
                "send the content inline as a data: URL",
            )
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in FETCHABLE_SCHEMES or not parts.hostname:
            raise _refuse("media_url_refused", f"only http(s) media URLs are allowed, not {shown}")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
            addresses = await _resolve(parts.hostname, port)
        except (OSError, ValueError, asyncio.TimeoutError):
            raise _refuse(
                "media_url_refused", f"the host of media URL {shown} cannot be resolved"
            ) from None
        if not addresses or not all(_public(address) for address in addresses):
            raise _refuse(
                "media_url_refused",
                f"media URL {shown} points at a non-public address "
                "(loopback, private, link-local, multicast or reserved)",
            )
