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
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from openbeepboop_schemas import Role

from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import api_keys
from openbeepboop_server.db.text import db_text
from openbeepboop_server.errors import InvalidKeyName, KeyNameTaken

KEY_PREFIX = "sk-"
#: Random bytes behind each key (43 URL-safe characters).
KEY_RANDOM_BYTES = 32
MAX_KEY_NAME_LENGTH = 128


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


def hash_key(key: str) -> str:
    """The SHA-256 hex digest that is stored in place of ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


class KeyService:
    """Key management over the ``api_keys`` table."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def create(self, role: Role, name: str) -> tuple[str, KeyInfo]:
        """A new key for ``role`` named ``name``; the key is returned once and never stored."""
        role = Role(role)
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
                    name=name, role=role.value, key_sha256=hash_key(key), created_at=now
                )
            )
        return key, KeyInfo(name=name, role=role, created_at=now, revoked_at=None)

    def list(self) -> list[KeyInfo]:
        """Every key ever created, oldest first, revoked ones included."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(
                    api_keys.c.name, api_keys.c.role, api_keys.c.created_at, api_keys.c.revoked_at
                ).order_by(api_keys.c.id)
            ).all()
        return [
            KeyInfo(
                name=row.name,
                role=Role(row.role),
                created_at=row.created_at,
                revoked_at=row.revoked_at,
            )
            for row in rows
        ]

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
