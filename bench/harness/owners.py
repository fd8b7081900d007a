"""Many USER keys at once, for the fair-share scenarios (many owners with queued jobs).

Made through the server package's own :class:`KeyService` on the server's
database (what ``keys create`` does, without a process per key): a hundred
``keys create`` runs would cost minutes of a loaded two-core machine.
"""

from __future__ import annotations

from openbeepboop_schemas import Role

from harness.cluster import Server


def make_owner_keys(server: Server, count: int, prefix: str = "bench-owner") -> list[str]:
    """``count`` new USER keys named ``PREFIX-<i>``; the keys, in order."""
    from openbeepboop_server.db.database import Database
    from openbeepboop_server.keys import KeyService

    db = Database.connect(server.database_url)
    try:
        service = KeyService(db)
        return [service.create(Role.USER, f"{prefix}-{i}")[0] for i in range(count)]
    finally:
        db.dispose()
