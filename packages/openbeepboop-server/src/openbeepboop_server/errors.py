"""Exceptions the server raises on purpose.

::

    ServerError                 base of every server exception
    ├── KeyNameTaken            ``keys create`` with a name already in use
    ├── InvalidKeyName          ``keys create`` with an empty or overlong name
    ├── InvalidShare            a key's weight or max_priority out of range
    ├── InvalidKeySettings      key limits or scopes that do not fit the key
    ├── QuotaExceeded           a submit past its key's ``max_queued`` or ``rate_limit``
    ├── ScopeRefused            a NODE key acting outside its models or ``node_id``
    ├── NodeIdTaken             a ``node_id`` another key is acting under
    ├── TooManyNodes            a new ``node_id`` past the key's live nodes
    ├── InvalidSetting          a configuration value the database layer cannot use
    ├── PriorityAboveCeiling    a submit's ``priority`` above its key's ``max_priority``
    ├── KeyNoLongerValid        a waiting request's key was revoked or expired meanwhile
    ├── DatabaseBehind          schema older than this code: run ``migrate``
    └── DatabaseAhead           schema newer than this code: upgrade the server

The names are part of the server's internal interface, hence no ``Error``
suffix. Everything else that escapes (a driver error, a bug) is unexpected and is
logged by whoever catches it.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every exception the server raises deliberately."""


class KeyNameTaken(ServerError):  # noqa: N818
    """An API key with this name already exists (active or revoked)."""


class InvalidKeyName(ServerError, ValueError):  # noqa: N818
    """A key name that is empty, too long, or padded with spaces."""


class InvalidShare(ServerError, ValueError):  # noqa: N818
    """A key's fair-share weight or priority ceiling out of its range."""


class InvalidKeySettings(ServerError, ValueError):  # noqa: N818
    """Key limits, scopes or an expiry that are invalid, or do not fit the key's role."""


class QuotaExceeded(ServerError):  # noqa: N818
    """A submit past its key's quota; nothing of it was stored.

    ``retry_after``: whole seconds after which the same request may pass
    (exact for the rate limit, a hint for ``max_queued``); ``code``: which quota.
    """

    def __init__(self, message: str, *, retry_after: int, code: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class IdempotencyKeyReused(ServerError):  # noqa: N818
    """An ``Idempotency-Key`` sent again with a different request; nothing was stored."""


class ScopeRefused(ServerError):  # noqa: N818
    """A NODE key used outside its scope (models or ``node_id``)."""


class NodeIdTaken(ServerError):  # noqa: N818
    """A ``node_id`` that belongs to another key."""


class TooManyNodes(ServerError):  # noqa: N818
    """A new ``node_id`` for a key that already uses as many live ones as allowed."""

    def __init__(self, limit: int, window: float) -> None:
        super().__init__(
            f"this API key already has {limit} live nodes on this server (node_ids seen in "
            f"the last {window:g} s; the limit is [queue] max_nodes_per_key = {limit}); "
            "reuse a node_id, or wait until unused ones age out"
        )
        self.limit = limit


class TooManyModels(ServerError):  # noqa: N818
    """A node declaring model names that take its key past its distinct names."""

    def __init__(self, limit: int, declared: int, window: float) -> None:
        super().__init__(
            f"this API key's live nodes already declare {declared} distinct models on this "
            f"server (nodes seen in the last {window:g} s; the limit is [limits] "
            f"max_fetch_models_per_key = {limit}); declare the models your nodes serve"
        )
        self.limit = limit


class InvalidSetting(ServerError, ValueError):  # noqa: N818
    """A database setting (URL, ``synchronous`` mode, ...) that cannot be used."""


class PriorityAboveCeiling(ServerError, ValueError):  # noqa: N818
    """A submit asked for a ``priority`` above its API key's ``max_priority``."""

    def __init__(self, priority: int, ceiling: int) -> None:
        super().__init__(
            f"priority {priority} is above this API key's max_priority of {ceiling}; "
            "submit with a priority of at most "
            f"{ceiling} or ask an admin to raise it (keys update --max-priority)"
        )
        self.priority = priority
        self.ceiling = ceiling


class KeyNoLongerValid(ServerError):  # noqa: N818
    """The key of a request that is waiting (a long-poll, a synchronous chat) was revoked
    or expired while it waited; the request ends as one made with that key now would."""


class DatabaseBehind(ServerError):  # noqa: N818
    """The database schema is older than this server; ``openbeepboop-server migrate`` fixes it."""


class DatabaseAhead(ServerError):  # noqa: N818
    """The database was migrated by a newer server version than this one."""
