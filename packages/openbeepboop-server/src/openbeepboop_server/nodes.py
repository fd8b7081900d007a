"""The node registry: which nodes have been seen, with which models and version.

Claims and heartbeats refresh a node's row (inside their own transaction),
through a :class:`NodeRecorder` that skips rewrites a busy node would cause;
``/v1/models`` and ``openbeepboop-server nodes`` read it. A node is identified
by the ``node_id`` it declares; the key it last used is recorded beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa
from openbeepboop_schemas import ANY_MODEL, FetchRequest, HeartbeatRequest

from openbeepboop_server.db.safe_text import db_text, db_texts
from openbeepboop_server.db.tables import nodes

#: A node's registry row is rewritten at most this often by one process
#: (``last_seen`` lags by at most this much; ``/v1/models`` looks minutes back).
NODE_RECORD_SECONDS = 1.0
#: Bound on the memory of recent registry writes.
MAX_REMEMBERED_NODES = 10_000

#: What a :class:`NodeRecorder` remembers once a write has committed: node id, when, facts.
Recorded = tuple[str, float, tuple[object, ...]]


@dataclass(frozen=True)
class NodeInfo:
    """One node as last seen."""

    node_id: str
    key_name: str
    version: str | None
    models: list[str]
    last_seen: float


def record_node(
    conn: sa.Connection,
    *,
    node_id: str,
    key_name: str,
    now: float,
    models: list[str] | None,
    version: str | None,
) -> None:
    """Insert or refresh a node's row; ``None`` models/version keep what was known."""
    node_id, key_name = db_text(node_id), db_text(key_name)
    version = None if version is None else db_text(version)
    models = None if models is None else db_texts(models)
    values: dict[str, object] = {"key_name": key_name, "last_seen": now}
    if models is not None:
        values["models"] = json.dumps(sorted(set(models)))
    if version is not None:
        values["version"] = version
    updated = conn.execute(nodes.update().where(nodes.c.node_id == node_id).values(**values))
    if updated.rowcount:
        return
    insert = {
        "node_id": node_id,
        "key_name": key_name,
        "version": version,
        "models": json.dumps(sorted(set(models or []))),
        "first_seen": now,
        "last_seen": now,
    }
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(
            pg_insert(nodes)
            .values(**insert)
            .on_conflict_do_update(index_elements=[nodes.c.node_id], set_=values)
        )
    else:
        # SQLite writes are serialised (one writer), so nobody inserted in between.
        conn.execute(nodes.insert().values(**insert))


class NodeRecorder:
    """Refreshes nodes' registry rows, at most once per :data:`NODE_RECORD_SECONDS` per node.

    A busy node fetches many times a second; rewriting its ``last_seen`` each
    time was a quarter of a small claim's cost, for a value read with a
    resolution of seconds. One recorder per process (it lives in the queue
    service); what it remembers is only ever a reason to skip a write.
    """

    def __init__(self) -> None:
        # What this process last wrote to each node's registry row, and when.
        self._recorded: dict[str, tuple[float, tuple[object, ...]]] = {}

    def record(
        self, conn: sa.Connection, seen: FetchRequest | HeartbeatRequest, key_name: str, now: float
    ) -> Recorded | None:
        """Refresh the row of the node that sent ``seen``, unless this process did so
        with the same facts less than :data:`NODE_RECORD_SECONDS` ago.

        Returns what to :meth:`remember` once the transaction has committed
        (None when skipped).
        """
        node_id, models, version = seen.node_id, seen.models, seen.version
        facts = (key_name, None if models is None else tuple(models), version)
        last = self._recorded.get(node_id)
        if last is not None and last[1] == facts and 0 <= now - last[0] < NODE_RECORD_SECONDS:
            return None
        record_node(
            conn, node_id=node_id, key_name=key_name, now=now, models=models, version=version
        )
        return node_id, now, facts

    def remember(self, recorded: Recorded | None) -> None:
        """Note a committed :meth:`record` (None: nothing was written)."""
        if recorded is not None:
            node_id, now, facts = recorded
            if len(self._recorded) >= MAX_REMEMBERED_NODES:
                self._recorded.clear()  # many short-lived node ids: start over, stay bounded
            self._recorded[node_id] = (now, facts)


def list_nodes(conn: sa.Connection) -> list[NodeInfo]:
    """Every registered node, most recently seen first."""
    rows = conn.execute(sa.select(nodes).order_by(nodes.c.last_seen.desc(), nodes.c.node_id)).all()
    return [
        NodeInfo(
            node_id=row.node_id,
            key_name=row.key_name,
            version=row.version,
            models=list(json.loads(row.models)),
            last_seen=row.last_seen,
        )
        for row in rows
    ]


def served_models(conn: sa.Connection, *, since: float) -> list[str]:
    """Models declared by nodes seen at or after ``since``, sorted; ``*`` left out."""
    rows = conn.execute(sa.select(nodes.c.models).where(nodes.c.last_seen >= since)).scalars()
    models: set[str] = set()
    for declared in rows:
        models.update(json.loads(declared))
    models.discard(ANY_MODEL)
    return sorted(models)
