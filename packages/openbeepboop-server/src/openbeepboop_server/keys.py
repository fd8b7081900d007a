"""API keys: create, list, revoke, authenticate.

A key is ``sk-`` plus 43 URL-safe characters (32 random bytes). Only its
SHA-256 hex digest is stored, so a stolen database does not hand out working
keys. A plain unsalted hash is enough here: the keys are random and long, so
there is nothing to brute-force, and authenticating must be one indexed lookup
per request. A key revoked from another process (the CLI) stops working on
the very next request, and so do changed limits and scopes: on SQLite every
request reads the key; on PostgreSQL a replica keeps the keys it has seen
only while it hears every key change (:mod:`openbeepboop_server.key_cache`).

Besides its role a key may carry limits (:class:`KeySettings`): quotas for a
submitter (``max_queued``, ``rate_limit``, enforced by
:mod:`openbeepboop_server.queue.quotas`), scopes for a node (``models``,
``node_id``, enforced by :mod:`openbeepboop_server.scopes`) and an expiry
after which it is refused like a revoked key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import MAX_PRIORITY, MIN_PRIORITY, FetchRequest, Role
from pydantic import ValidationError

from openbeepboop_server.db import notify
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.faults import describe
from openbeepboop_server.db.safe_text import db_text
from openbeepboop_server.db.tables import api_keys
from openbeepboop_server.errors import (
    InvalidKeyName,
    InvalidKeySettings,
    InvalidShare,
    KeyNameTaken,
)
from openbeepboop_server.key_cache import KeyCache

logger = logging.getLogger(__name__)

KEY_PREFIX = "sk-"
#: Random bytes behind each key (43 URL-safe characters).
KEY_RANDOM_BYTES = 32
MAX_KEY_NAME_LENGTH = 128
#: A key's share of claims when its jobs compete with other keys' (1 = an equal share).
DEFAULT_WEIGHT = 1
MAX_WEIGHT = 1000
#: The highest ``priority`` a key may submit with, unless an admin raises it.
DEFAULT_MAX_PRIORITY = 0
#: The largest ``max_queued`` and ``rate_limit``: far past any real quota, and
#: within the 32-bit INTEGER columns that hold them on PostgreSQL (``none``
#: lifts a limit altogether).
MAX_QUOTA = 1_000_000_000


@dataclass(frozen=True)
class KeySettings:
    """A key's limits, scopes and expiry; ``None`` everywhere means none.

    ``max_queued``: the most unfinished (QUEUED or PROCESSING) jobs the key may
    have; ``rate_limit``: submit requests per minute; ``models`` and
    ``node_id``: what a NODE key may serve and which node it may act as;
    ``expires_at``: Unix seconds after which the key is refused.
    """

    max_queued: int | None = None
    rate_limit: int | None = None
    models: tuple[str, ...] | None = None
    node_id: str | None = None
    expires_at: float | None = None


#: The fields of :class:`KeySettings`, which ``keys update`` may change one by one.
SETTING_NAMES = tuple(field.name for field in fields(KeySettings))


@dataclass(frozen=True)
class Caller:
    """Who is making a request: the authenticated key, with its limits and scopes."""

    key_id: int
    key_name: str
    role: Role
    max_queued: int | None = None
    rate_limit: int | None = None
    models: tuple[str, ...] | None = None
    node_id: str | None = None

    @property
    def has_quota(self) -> bool:
        """A submit by this key must pass :func:`~openbeepboop_server.queue.quotas.admit`."""
        return self.max_queued is not None or self.rate_limit is not None


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed: never the key itself."""

    name: str
    role: Role
    created_at: float
    revoked_at: float | None
    #: Fair share: claims for this key's jobs relative to other keys' (docs/api.md).
    weight: int = DEFAULT_WEIGHT
    #: The highest ``priority`` this key may submit with.
    max_priority: int = DEFAULT_MAX_PRIORITY
    settings: KeySettings = KeySettings()

    def status(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.settings.expires_at is not None and self.settings.expires_at <= now:
            return "expired"
        return "active"


def check_settings(role: Role, settings: KeySettings) -> None:
    """Refuse settings that make no sense for ``role`` (:class:`InvalidKeySettings`).

    Quotas limit submits, so only keys that submit (USER, ADMIN) take them;
    scopes limit what a node does, so only NODE keys take them.
    """
    if role not in (Role.USER, Role.ADMIN) and (
        settings.max_queued is not None or settings.rate_limit is not None
    ):
        raise InvalidKeySettings(
            f"--max-queued and --rate-limit apply to USER and ADMIN keys, not {role.value}"
        )
    if role is not Role.NODE and (settings.models is not None or settings.node_id is not None):
        raise InvalidKeySettings(f"--models and --node-id apply to NODE keys, not {role.value}")
    for name, value in (("max-queued", settings.max_queued), ("rate-limit", settings.rate_limit)):
        if value is not None and not 1 <= value <= MAX_QUOTA:
            raise InvalidKeySettings(
                f"--{name} must be between 1 and {MAX_QUOTA} (or 'none' for no limit)"
            )
    if settings.models is not None:
        if not settings.models:
            raise InvalidKeySettings("--models takes model names separated by commas (not '*')")
        for model in settings.models:
            check_model_name(model)
    if settings.node_id is not None:
        check_node_id(settings.node_id)


def _wire_problem(node_id: str, model: str) -> str | None:
    """Why a node's fetch naming ``node_id`` and ``model`` would be refused (pydantic's
    message), or None: the scope is checked by the wire schema itself, so it can never
    allow what no node can send."""
    try:
        FetchRequest.model_validate({"node_id": node_id, "models": [model]})
    except ValidationError as exc:
        return str(exc.errors()[0]["msg"])
    return None


#: A node id and a model name the wire schema takes, to check the other one alone.
_VALID_NODE_ID = "node"
_VALID_MODEL = "model"


def check_node_id(node_id: str) -> None:
    """Refuse a ``node_id`` scope no node could send: the fetch and heartbeat schema's rule."""
    if _wire_problem(node_id, _VALID_MODEL) is not None:
        shown = node_id if len(node_id) <= 40 else node_id[:40] + "..."
        raise InvalidKeySettings(
            f"--node-id: {shown!r} is not a node id a node can send "
            "(1-128 letters, digits and . _ : @ -)"
        )


def check_model_name(model: str) -> None:
    """Refuse a ``models`` scope entry no node could declare (the wire's model name rule).

    Control characters are refused too: a scope is typed by an operator, and
    one that holds them is a paste gone wrong, not a model a node serves.
    """
    if model == "*":
        raise InvalidKeySettings("--models takes model names separated by commas (not '*')")
    problem = _wire_problem(_VALID_NODE_ID, model)
    if problem is None and not model.isprintable():
        problem = "it holds control characters"
    if problem is not None:
        shown = model if len(model) <= 40 else model[:40] + "..."
        raise InvalidKeySettings(
            f"--models: {shown!r} is not a model name a node can declare "
            f"({problem[:1].lower()}{problem[1:]})"
        )


def _setting_columns(settings: KeySettings) -> dict[str, Any]:
    return {
        "max_queued": settings.max_queued,
        "rate_limit": settings.rate_limit,
        "models": None if settings.models is None else json.dumps(list(settings.models)),
        "node_id": settings.node_id,
        "expires_at": settings.expires_at,
    }


def _settings_of(row: Any) -> KeySettings:
    return KeySettings(
        max_queued=row.max_queued,
        rate_limit=row.rate_limit,
        models=None if row.models is None else tuple(json.loads(row.models)),
        node_id=row.node_id,
        expires_at=row.expires_at,
    )


def _caller(row: Any) -> Caller:
    return Caller(
        key_id=row[0],
        key_name=row[1],
        role=Role(row[2]),
        max_queued=row[3],
        rate_limit=row[4],
        models=None if row[5] is None else tuple(json.loads(row[5])),
        node_id=row[6],
    )


def hash_key(key: str) -> str:
    """The SHA-256 hex digest that is stored in place of ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def _check_share(weight: int | None, max_priority: int | None) -> None:
    if weight is not None and not 1 <= weight <= MAX_WEIGHT:
        raise InvalidShare(f"weight must be between 1 and {MAX_WEIGHT}, not {weight}")
    if max_priority is not None and not MIN_PRIORITY <= max_priority <= MAX_PRIORITY:
        raise InvalidShare(
            f"max_priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, not {max_priority}"
        )


#: The lookup :meth:`KeyService.authenticate` does, as plain SQL for the inline path.
_INLINE_LOOKUP = (
    "SELECT id, name, role, max_queued, rate_limit, models, node_id FROM api_keys "
    "WHERE key_sha256 = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
)
_LOOKUP = sa.select(
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.role,
    api_keys.c.max_queued,
    api_keys.c.rate_limit,
    api_keys.c.models,
    api_keys.c.node_id,
    api_keys.c.expires_at,
).where(
    api_keys.c.key_sha256 == sa.bindparam("digest"),
    api_keys.c.revoked_at.is_(None),
    sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > sa.bindparam("now")),
)
#: Which of some keys still work (the periodic re-check of waiting long-polls' keys).
_STILL_VALID = sa.select(api_keys.c.id).where(
    api_keys.c.id.in_(sa.bindparam("ids", expanding=True)),
    api_keys.c.revoked_at.is_(None),
    sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > sa.bindparam("now")),
)
#: Key ids asked about per statement.
MAX_IDS_PER_READ = 500
_LISTED = sa.select(
    api_keys.c.name,
    api_keys.c.role,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.max_queued,
    api_keys.c.rate_limit,
    api_keys.c.models,
    api_keys.c.node_id,
    api_keys.c.expires_at,
    api_keys.c.weight,
    api_keys.c.max_priority,
)


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        weight=row.weight,
        max_priority=row.max_priority,
        settings=_settings_of(row),
    )


def _refuse_revoked(row: Any) -> None:
    """Revocation is for good: changing a revoked key's settings would look like it works."""
    if row.revoked_at is not None:
        raise InvalidKeySettings(
            f"the key {row.name!r} is revoked, and a revoked key stays revoked; "
            "make a new one with `openbeepboop-server keys create`"
        )


class KeyService:
    """Key management over the ``api_keys`` table."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        # The event loop's own connection for inline lookups (SQLite only).
        self._inline: Any = None
        #: Keys seen, on PostgreSQL, while the replica listens for key changes
        #: (its ``LISTEN`` thread switches it on and off).
        self.cache: KeyCache[Caller] = KeyCache()

    def create(
        self,
        role: Role,
        name: str,
        settings: KeySettings | None = None,
        *,
        weight: int = DEFAULT_WEIGHT,
        max_priority: int = DEFAULT_MAX_PRIORITY,
    ) -> tuple[str, KeyInfo]:
        """A new key for ``role`` named ``name``; the key is returned once and never stored."""
        role = Role(role)
        settings = settings or KeySettings()
        check_settings(role, settings)
        _check_share(weight, max_priority)
        if (
            not name
            or len(name) > MAX_KEY_NAME_LENGTH
            or name != name.strip()
            or not name.isprintable()
        ):
            raise InvalidKeyName(
                f"key name must be 1-{MAX_KEY_NAME_LENGTH} printable characters without "
                "leading or trailing spaces"
            )
        key = generate_key()
        now = self._clock()
        with self._db.write() as conn:
            taken = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name)).first()
            if taken is not None:
                raise KeyNameTaken(f"an API key named {name!r} already exists")
            conn.execute(
                api_keys.insert().values(
                    name=name,
                    role=role.value,
                    key_sha256=hash_key(key),
                    created_at=now,
                    weight=weight,
                    max_priority=max_priority,
                    **_setting_columns(settings),
                )
            )
        info = KeyInfo(
            name=name,
            role=role,
            created_at=now,
            revoked_at=None,
            weight=weight,
            max_priority=max_priority,
            settings=settings,
        )
        return key, info

    def update_share(
        self, name: str, *, weight: int | None = None, max_priority: int | None = None
    ) -> KeyInfo | None:
        """Change a key's fair-share weight and priority ceiling; None if no key has that name.

        Takes effect at the next claim (weight) and the next submit (ceiling);
        jobs already queued keep the priority they were submitted with.
        """
        _check_share(weight, max_priority)
        values: dict[str, int] = {}
        if weight is not None:
            values["weight"] = weight
        if max_priority is not None:
            values["max_priority"] = max_priority
        name = db_text(name)
        with self._db.write() as conn:
            row = conn.execute(_LISTED.where(api_keys.c.name == name)).first()
            if row is None:
                return None
            _refuse_revoked(row)
            if values:
                conn.execute(api_keys.update().where(api_keys.c.name == name).values(**values))
                row = conn.execute(_LISTED.where(api_keys.c.name == name)).one()
        return _info(row)

    def list(self) -> list[KeyInfo]:
        """Every key ever created, oldest first, revoked ones included."""
        with self._db.read() as conn:
            rows = conn.execute(_LISTED.order_by(api_keys.c.id)).all()
        return [_info(row) for row in rows]

    def update(self, name: str, changes: dict[str, Any]) -> KeyInfo | None:
        """Change some of the settings of the key ``name``; None if unknown.

        A revoked key is refused (:class:`InvalidKeySettings`): it stays revoked.

        ``changes`` maps names of :class:`KeySettings` fields to their new
        values (``None`` lifts a limit). The next request with the key obeys them.
        """
        unknown = set(changes) - set(SETTING_NAMES)
        if unknown:
            raise InvalidKeySettings(f"unknown key settings: {', '.join(sorted(unknown))}")
        name = db_text(name)
        with self._db.write() as conn:
            row = conn.execute(_LISTED.where(api_keys.c.name == name)).first()
            if row is None:
                return None
            _refuse_revoked(row)
            info = _info(row)
            settings = replace(info.settings, **changes)
            check_settings(info.role, settings)
            values = _setting_columns(settings)
            if "rate_limit" in changes:
                values["rate_tat"] = None  # a new rate starts with a full allowance
            if "max_queued" in changes:
                values["queued_hint"] = None  # count afresh at the next submit
            conn.execute(api_keys.update().where(api_keys.c.name == name).values(**values))
            notify.keys_changed(conn)
        self.cache.drop()
        return replace(info, settings=settings)

    def revoke(self, name: str) -> bool:
        """Revoke the active key ``name``; False if there is none."""
        name = db_text(name)
        with self._db.write() as conn:
            result = conn.execute(
                api_keys.update()
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            notify.keys_changed(conn)
        self.cache.drop()
        return result.rowcount > 0

    def authenticate(self, key: str) -> Caller | None:
        """The caller ``key`` belongs to, or None if it is unknown or revoked.

        Keeps what it read in :attr:`cache` (used only while that is enabled).
        """
        if not key.startswith(KEY_PREFIX):
            return None
        digest = hash_key(key)
        generation = self.cache.generation
        with self._db.read() as conn:
            row = conn.execute(_LOOKUP, {"digest": digest, "now": self._clock()}).first()
        if row is None:
            return None
        caller = _caller(row)
        self.cache.put(digest, caller, row.expires_at, generation)
        return caller

    def refused_among(self, key_ids: Sequence[int]) -> set[int]:
        """Those of ``key_ids`` that no longer work: revoked, expired, or gone.

        One indexed read (per :data:`MAX_IDS_PER_READ` ids), whatever the
        number of requests each key has waiting.
        """
        now = self._clock()
        valid: set[int] = set()
        with self._db.read() as conn:
            for start in range(0, len(key_ids), MAX_IDS_PER_READ):
                chunk = key_ids[start : start + MAX_IDS_PER_READ]
                valid.update(conn.execute(_STILL_VALID, {"ids": chunk, "now": now}).scalars())
        return {key_id for key_id in key_ids if key_id not in valid}

    def cached(self, key: str) -> Caller | None:
        """The caller ``key`` belongs to if :attr:`cache` holds it; None means "look it up"."""
        if not self.cache.enabled or not key.startswith(KEY_PREFIX):
            return None
        return self.cache.get(hash_key(key), self._clock())

    @property
    def inline_capable(self) -> bool:
        """True when :meth:`authenticate_inline` may be used (SQLite)."""
        return self._db.is_sqlite

    def authenticate_inline(self, key: str) -> Caller | None:
        """:meth:`authenticate` without leaving the calling thread (SQLite only).

        Every request is authenticated, and handing the lookup to a worker
        thread cost more than the lookup itself (~0.3 ms of CPU against
        ~20 us for one indexed read). So on SQLite the event loop reads the
        key itself, on a connection of its own (never one from the pool, so
        it can never wait for a checkout), in autocommit mode: each lookup
        sees the latest commit, a key revoked by another process stops
        working at once, and in WAL mode a read never waits for a writer.
        Call it from one thread only (the event loop's).
        """
        if not key.startswith(KEY_PREFIX):
            return None
        digest = hash_key(key)
        for attempt in (1, 2):
            try:
                if self._inline is None:
                    # Pragmas (busy timeout, WAL) come from the engine's connect hook.
                    self._inline = self._db.engine.raw_connection()
                row = self._inline.execute(_INLINE_LOOKUP, (digest, self._clock())).fetchone()
                break
            except sqlite3.Error as exc:
                self.close_inline()
                if attempt == 2:
                    raise
                # One line: a second failure is answered (and logged) by the HTTP layer.
                logger.warning("inline key lookup failed (%s); reconnecting", describe(exc))
        if row is None:
            return None
        return _caller(row)

    def close_inline(self) -> None:
        """Give the inline lookup's connection back (at shutdown)."""
        conn, self._inline = self._inline, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                logger.debug("closing the inline lookup connection failed", exc_info=True)
