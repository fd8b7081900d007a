"""API keys: create, list, revoke, authenticate.

A key is ``sk-`` plus 43 URL-safe characters (32 random bytes). Only its
SHA-256 hex digest is stored, so a stolen database does not hand out working
keys. A plain unsalted hash is enough here: the keys are random and long, so
there is nothing to brute-force, and authenticating must be one indexed lookup
per request. There is no cache: a key revoked from another process (the CLI)
stops working on the very next request.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import MAX_PRIORITY, MIN_PRIORITY, Role

from openbeepboop_server.db.database import Database
from openbeepboop_server.db.safe_text import db_text
from openbeepboop_server.db.tables import api_keys
from openbeepboop_server.errors import InvalidKeyName, InvalidShare, KeyNameTaken

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


@dataclass(frozen=True)
class Caller:
    """Who is making a request: the authenticated key."""

    key_id: int
    key_name: str
    role: Role


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


def _listed() -> sa.Select[Any]:
    """The columns a key is listed with."""
    return sa.select(
        api_keys.c.name,
        api_keys.c.role,
        api_keys.c.created_at,
        api_keys.c.revoked_at,
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
    )


#: The lookup :meth:`KeyService.authenticate` does, as plain SQL for the inline path.
_INLINE_LOOKUP = "SELECT id, name, role FROM api_keys WHERE key_sha256 = ? AND revoked_at IS NULL"


class KeyService:
    """Key management over the ``api_keys`` table."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        # The event loop's own connection for inline lookups (SQLite only).
        self._inline: Any = None

    def create(
        self,
        role: Role,
        name: str,
        *,
        weight: int = DEFAULT_WEIGHT,
        max_priority: int = DEFAULT_MAX_PRIORITY,
    ) -> tuple[str, KeyInfo]:
        """A new key for ``role`` named ``name``; the key is returned once and never stored."""
        role = Role(role)
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
                )
            )
        info = KeyInfo(name, role, now, None, weight=weight, max_priority=max_priority)
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
            if values:
                conn.execute(api_keys.update().where(api_keys.c.name == name).values(**values))
            row = conn.execute(_listed().where(api_keys.c.name == name)).first()
        return None if row is None else _info(row)

    def list(self) -> list[KeyInfo]:
        """Every key ever created, oldest first, revoked ones included."""
        with self._db.read() as conn:
            rows = conn.execute(_listed().order_by(api_keys.c.id)).all()
        return [_info(row) for row in rows]

    def revoke(self, name: str) -> bool:
        """Revoke the active key ``name``; False if there is none."""
        name = db_text(name)
        with self._db.write() as conn:
            result = conn.execute(
                api_keys.update()
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
        return result.rowcount > 0

    def authenticate(self, key: str) -> Caller | None:
        """The caller ``key`` belongs to, or None if it is unknown or revoked."""
        if not key.startswith(KEY_PREFIX):
            return None
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.role).where(
                    api_keys.c.key_sha256 == hash_key(key), api_keys.c.revoked_at.is_(None)
                )
            ).first()
        if row is None:
            return None
        return Caller(key_id=row.id, key_name=row.name, role=Role(row.role))

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
                row = self._inline.execute(_INLINE_LOOKUP, (digest,)).fetchone()
                break
            except sqlite3.Error:
                self.close_inline()
                if attempt == 2:
                    raise
                logger.warning("inline key lookup failed; reconnecting", exc_info=True)
        if row is None:
            return None
        return Caller(key_id=row[0], key_name=row[1], role=Role(row[2]))

    def close_inline(self) -> None:
        """Give the inline lookup's connection back (at shutdown)."""
        conn, self._inline = self._inline, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                logger.debug("closing the inline lookup connection failed", exc_info=True)
