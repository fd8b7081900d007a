"""Strings as both databases can store and compare them.

PostgreSQL refuses any text parameter containing a NUL character (psycopg
raises before the query runs), so a NUL in a model name, an error message or
a polled id would turn a client's odd input into a server error. Such strings
can never match anything we stored, so replacing NUL with U+FFFD changes no
answer and keeps SQLite and PostgreSQL behaving alike.
"""

from __future__ import annotations

import hashlib

#: Longest idempotency key stored as is; longer ones are stored as their digest.
MAX_STORED_IDEMPOTENCY_KEY = 200


def db_text(value: str) -> str:
    """``value`` with NUL characters replaced, safe as a parameter on every backend."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def db_texts(values: list[str]) -> list[str]:
    """:func:`db_text` over a list."""
    return [db_text(value) for value in values]


def idempotency_column(key: str) -> str:
    """How an idempotency key is stored: itself, or its SHA-256 when too long for the column."""
    if len(key) <= MAX_STORED_IDEMPOTENCY_KEY:
        return db_text(key)
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
