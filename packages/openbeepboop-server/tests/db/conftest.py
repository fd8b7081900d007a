"""The core fixtures (``tests/_core_fixtures.py``) for this folder's tests."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/ is importable only once something there was collected; make sure of it.
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from _core_fixtures import (  # noqa: E402
    admin,
    alice,
    backend_url,
    bob,
    clock,
    db,
    keys,
    node,
    other_node,
    policy,
    postgres_url_factory,
    queue,
    sqlite_url,
)

__all__ = [
    "admin",
    "alice",
    "backend_url",
    "bob",
    "clock",
    "db",
    "keys",
    "node",
    "other_node",
    "policy",
    "postgres_url_factory",
    "queue",
    "sqlite_url",
]
