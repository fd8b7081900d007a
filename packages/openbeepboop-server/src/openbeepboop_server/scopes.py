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
deliver for any lease), so it neither owns an id nor is refused one.

The live owner is one key at a time across replicas because the registry
write itself refuses another key's live row (:func:`may_take`, the condition
of ``nodes.record_node``'s update and upsert): two keys taking one id at the
same instant both write the one row, and the database lets the second see
the first's (a row lock on PostgreSQL, the one writer on SQLite), so exactly
one of them gets it. The reservation of ``--node-id`` is read once per
process and key (:func:`check_reserved`): only an administrator changes it.
Both run only when the registry row is written (the first time a process
sees a node under a key, then at most once a second), so they cost a busy
node nothing per fetch.
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
#: The names of NODE keys: a registry row another key wrote (an ADMIN acting for
#: the node) owns nothing. Not a correlated EXISTS: in an upsert's ON CONFLICT
#: condition SQLAlchemy cannot correlate it to the row in conflict.
_NODE_KEYS = sa.select(api_keys.c.name).where(api_keys.c.role == Role.NODE.value)
_HOLDER = sa.select(nodes.c.key_name).where(nodes.c.node_id == sa.bindparam("node_id"))


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


def check_reserved(conn: sa.Connection, node_id: str, caller: Caller) -> None:
    """Raise :class:`NodeIdTaken` if ``node_id`` is reserved for another key (``--node-id``)."""
    if caller.role is Role.ADMIN:
        return
    params = {"node_id": node_id, "key_name": caller.key_name}
    scoped = conn.execute(_SCOPED_OWNER, params).scalar()
    if scoped is not None:
        raise NodeIdTaken(f"node_id '{node_id}' is reserved for key '{scoped}'; use another id")


def may_take(
    key_name: str | sa.BindParameter[str], *, live_after: float | sa.BindParameter[float]
) -> sa.ColumnElement[bool]:
    """True of a registry row that ``key_name`` may write: its own, a node not seen
    since ``live_after``, or a row an ADMIN key wrote last."""
    return sa.or_(
        nodes.c.key_name == key_name,
        nodes.c.last_seen < live_after,
        nodes.c.key_name.not_in(_NODE_KEYS),
    )


def node_id_taken(conn: sa.Connection, node_id: str) -> NodeIdTaken:
    """The error for a registry write :func:`may_take` refused, naming the key holding the id."""
    live = conn.execute(_HOLDER, {"node_id": node_id}).scalar()
    return NodeIdTaken(
        f"node_id '{node_id}' is in use by a live node with another key ('{live}'); "
        "give each node its own id"
    )
