"""What a NODE key may do: its scopes (models, ``node_id``) and who owns a ``node_id``.

A key created with ``--models a,b`` may fetch, serve and declare only those
models (not ``*``); one created with ``--node-id n`` may act only as node
``n``. Either mistake is a ``403`` (:class:`ScopeRefused`) on the node's very
first fetch, so a misconfigured node stops at start-up instead of idling.

A ``node_id`` is also owned: by the key scoped to it, for good, and otherwise
by the key that last acted under it while that node is live (seen within
``node_seen_seconds``). Another key acting under an owned id gets a ``409``
(:class:`NodeIdTaken`): two machines with one id would steal each other's
leases and muddle the registry. An ADMIN key may act for any node (as it may
deliver for any lease), so it neither owns an id nor is refused one. The
ownership check runs only when the registry row is written (the first time
a process sees a node under a key, then at most once a second), so it costs
a busy node nothing per fetch.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from openbeepboop_schemas import Role

from openbeepboop_server.db.tables import api_keys, nodes
from openbeepboop_server.errors import NodeIdTaken, ScopeRefused
from openbeepboop_server.keys import Caller

_SCOPED_OWNER = sa.select(api_keys.c.name).where(
    api_keys.c.node_id == sa.bindparam("node_id"),
    api_keys.c.revoked_at.is_(None),
    api_keys.c.name != sa.bindparam("key_name"),
)
_LIVE_USER = (
    sa.select(nodes.c.key_name)
    .select_from(nodes.join(api_keys, api_keys.c.name == nodes.c.key_name))
    .where(
        nodes.c.node_id == sa.bindparam("node_id"),
        nodes.c.key_name != sa.bindparam("key_name"),
        nodes.c.last_seen >= sa.bindparam("live_after"),
        api_keys.c.role == Role.NODE.value,
    )
)


def check_scope(caller: Caller, node_id: str, models: Iterable[str] | None) -> None:
    """Raise :class:`ScopeRefused` if ``caller`` may not act as ``node_id`` for ``models``."""
    if caller.node_id is not None and node_id != caller.node_id:
        raise ScopeRefused(
            f"key '{caller.key_name}' may act only as node_id '{caller.node_id}', not '{node_id}'"
        )
    if caller.models is None or models is None:
        return
    outside = sorted(set(models) - set(caller.models))
    if outside:
        raise ScopeRefused(
            f"key '{caller.key_name}' may serve only the model(s) "
            f"{', '.join(caller.models)}; outside its scope: {', '.join(outside)}"
        )


def check_owner(conn: sa.Connection, node_id: str, caller: Caller, *, live_after: float) -> None:
    """Raise :class:`NodeIdTaken` if another key owns ``node_id`` (see the module docstring)."""
    if caller.role is Role.ADMIN:
        return
    key_name = caller.key_name
    params = {"node_id": node_id, "key_name": key_name}
    scoped = conn.execute(_SCOPED_OWNER, params).scalar()
    if scoped is not None:
        raise NodeIdTaken(f"node_id '{node_id}' is reserved for key '{scoped}'; use another id")
    live = conn.execute(_LIVE_USER, {**params, "live_after": live_after}).scalar()
    if live is not None:
        raise NodeIdTaken(
            f"node_id '{node_id}' is in use by a live node with another key ('{live}'); "
            "give each node its own id"
        )
