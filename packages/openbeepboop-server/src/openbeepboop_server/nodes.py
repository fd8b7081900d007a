"""The node registry: which nodes have been seen, with which models and version.

Claims and heartbeats refresh a node's row (inside their own transaction),
through a :class:`NodeRecorder` that skips rewrites a busy node would cause;
``/v1/models`` and ``openbeepboop-server nodes`` read it. A node is identified
by the ``node_id`` it declares; the key it last used is recorded beside it.
Submits ask a :class:`ServedSnapshot`, an in-memory copy refreshed about once
a second, whether anybody serves their model: never the database.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import (
    ANY_MODEL,
    MODEL_NOT_SERVED,
    FetchRequest,
    HeartbeatRequest,
    JobWarning,
    Role,
)

from openbeepboop_server.db.database import IN_CHUNK
from openbeepboop_server.db.safe_text import db_text, db_texts
from openbeepboop_server.db.tables import nodes
from openbeepboop_server.errors import TooManyModels, TooManyNodes
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.policy import (
    DEFAULT_MAX_FETCH_MODELS_PER_KEY,
    DEFAULT_NODE_SEEN_SECONDS,
)
from openbeepboop_server.scopes import check_reserved, may_take, node_id_taken

#: A node's registry row is rewritten at most this often by one process
#: (``last_seen`` lags by at most this much; ``/v1/models`` looks minutes back).
NODE_RECORD_SECONDS = 1.0
#: Bound on the memory of recent registry writes.
MAX_REMEMBERED_NODES = 10_000

#: What a registry row says of a node besides ``last_seen``: key name, models, version.
Facts = tuple[str, tuple[str, ...] | None, str | None]
#: What a :class:`NodeRecorder` remembers once a write has committed: node id, when, facts.
Recorded = tuple[str, float, Facts]


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
    live_after: float | None = None,
) -> bool:
    """Insert or refresh a node's row; ``None`` models/version keep what was known.

    With ``live_after``, only if ``key_name`` may take the row (:func:`may_take`:
    no other NODE key's node was seen since then); False, and nothing written,
    if it may not. The condition is part of the write, not a read before it,
    so of two keys writing one id at once only one succeeds: on PostgreSQL the
    second update (or insert) waits for the first's row and then sees it.
    """
    params: dict[str, object] = {
        "row_id": db_text(node_id),
        "new_key": db_text(key_name),
        "seen_at": now,
        "live_after": live_after,
        "new_version": None if version is None else db_text(version),
        "new_models": None if models is None else json.dumps(sorted(set(db_texts(models)))),
    }
    shape = (models is not None, version is not None, live_after is not None)
    if conn.execute(_refresh(*shape), params).rowcount:
        return True
    # No row yet, or one this key may not take (the upsert then changes nothing).
    params["first_models"] = params["new_models"] or "[]"
    return conn.execute(_upsert(conn.dialect.name, *shape), params).first() is not None


def _set_clause(has_models: bool, has_version: bool) -> dict[str, sa.BindParameter[Any]]:
    """What a refresh writes: the key and ``last_seen``, models and version when given."""
    values: dict[str, sa.BindParameter[Any]] = {
        "key_name": sa.bindparam("new_key"),
        "last_seen": sa.bindparam("seen_at"),
    }
    if has_models:
        values["models"] = sa.bindparam("new_models")
    if has_version:
        values["version"] = sa.bindparam("new_version")
    return values


def _taking(guarded: bool) -> sa.ColumnElement[bool] | None:
    """The condition of a guarded write (:func:`may_take`), as bind parameters."""
    if not guarded:
        return None
    return may_take(sa.bindparam("new_key"), live_after=sa.bindparam("live_after"))


@functools.cache
def _refresh(has_models: bool, has_version: bool, guarded: bool) -> sa.Update:
    """The registry row's update, built once per shape: building it (the
    ownership condition above all) cost as much as running it."""
    update = (
        nodes.update()
        .where(nodes.c.node_id == sa.bindparam("row_id"))
        .values(_set_clause(has_models, has_version))
    )
    allowed = _taking(guarded)
    return update if allowed is None else update.where(allowed)


@functools.cache
def _upsert(dialect: str, has_models: bool, has_version: bool, guarded: bool) -> sa.Insert:
    """The registry row's insert, refreshing the row if another write inserted it first
    (only if it may be taken, when ``guarded``); returns the id if it wrote."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement = insert(nodes).values(
        node_id=sa.bindparam("row_id"),
        key_name=sa.bindparam("new_key"),
        version=sa.bindparam("new_version"),
        models=sa.bindparam("first_models"),
        first_seen=sa.bindparam("seen_at"),
        last_seen=sa.bindparam("seen_at"),
    )
    # RETURNING, not rowcount: PostgreSQL's driver reports no rowcount for it.
    return statement.on_conflict_do_update(
        index_elements=[nodes.c.node_id],
        set_=_set_clause(has_models, has_version),
        where=_taking(guarded),
    ).returning(nodes.c.node_id)


def touch_nodes(conn: sa.Connection, node_ids: list[str], *, now: float) -> None:
    """Set ``last_seen`` of these (existing) nodes to ``now``: they are waiting in a long-poll."""
    for start in range(0, len(node_ids), IN_CHUNK):
        chunk = db_texts(node_ids[start : start + IN_CHUNK])
        conn.execute(nodes.update().where(nodes.c.node_id.in_(chunk)).values(last_seen=now))


def purge_excess_nodes(conn: sa.Connection, *, seen_before: float, keep: int) -> int:
    """Delete, per key, the rows of nodes last seen before ``seen_before`` beyond the
    ``keep`` most recent; how many.

    A key that cycles through new node ids leaves a row for each; without this
    they would stay for ``node_retention_days``. A real pool's retired nodes
    are far fewer than ``keep`` per key, so they keep the full retention.
    """
    ranked = (
        sa.select(
            nodes.c.node_id,
            sa.func.row_number()
            .over(partition_by=nodes.c.key_name, order_by=nodes.c.last_seen.desc())
            .label("rank"),
        )
        .where(nodes.c.last_seen < seen_before)
        .subquery()
    )
    excess = sa.select(ranked.c.node_id).where(ranked.c.rank > keep)
    return conn.execute(nodes.delete().where(nodes.c.node_id.in_(excess))).rowcount or 0


def purge_nodes(conn: sa.Connection, *, seen_before: float) -> int:
    """Delete the registry rows of nodes last seen before ``seen_before``; how many.

    Only the registry forgets them: their lease history stays with the jobs
    it belongs to (until those are purged), and a node that comes back is
    simply registered again on its next fetch.
    """
    return conn.execute(nodes.delete().where(nodes.c.last_seen < seen_before)).rowcount or 0


class NodeRecorder:
    """Refreshes nodes' registry rows, at most once per :data:`NODE_RECORD_SECONDS` per node.

    A busy node fetches many times a second; rewriting its ``last_seen`` each
    time was a quarter of a small claim's cost, for a value read with a
    resolution of seconds. One recorder per process (it lives in the queue
    service); what it remembers is only ever a reason to skip a write.

    Every write it makes for a NODE key is conditional (``record_node`` with
    ``live_after``): it refuses the id of another key's live node with
    :class:`NodeIdTaken`. A skipped write cannot hide such a takeover made
    through another replica: a write is skipped only within ``live_seconds``
    (and :data:`NODE_RECORD_SECONDS`) of this process's own write of the
    row, and until ``live_seconds`` after that write no other key may take
    the row. Replicas' clocks must agree to well within ``live_seconds``, as
    leases already need.
    """

    def __init__(
        self,
        snapshot: ServedSnapshot | None = None,
        live_seconds: float = DEFAULT_NODE_SEEN_SECONDS,
    ) -> None:
        # What this process last wrote to each node's registry row, and when.
        self._recorded: dict[str, tuple[float, Facts]] = {}
        self._snapshot = snapshot
        # A node seen this recently under another key still owns its id (scopes.may_take).
        self._live_seconds = live_seconds
        self._skip_seconds = min(NODE_RECORD_SECONDS, live_seconds)

    def record(
        self, conn: sa.Connection, seen: FetchRequest | HeartbeatRequest, caller: Caller, now: float
    ) -> Recorded | None:
        """Refresh the row of the node that sent ``seen``, unless this process did so
        with the same facts less than :data:`NODE_RECORD_SECONDS` (or ``live_seconds``,
        if shorter) ago.

        Returns what to :meth:`remember` once the transaction has committed
        (None when skipped). :class:`NodeIdTaken` if the id is another key's.
        """
        key_name = caller.key_name
        node_id, models, version = seen.node_id, seen.declared_models, seen.version
        facts: Facts = (key_name, None if models is None else tuple(models), version)
        last = self._recorded.get(node_id)
        if last is not None and last[1] == facts and 0 <= now - last[0] < self._skip_seconds:
            return None
        if last is None or last[1][0] != key_name:
            # New to this process, or another key: is the id reserved for some other key?
            check_reserved(conn, node_id, caller)
        # An ADMIN acts for any node; a NODE key writes only a row no other live key holds.
        live_after = None if caller.role is Role.ADMIN else now - self._live_seconds
        written = record_node(
            conn,
            node_id=node_id,
            key_name=key_name,
            now=now,
            models=models,
            version=version,
            live_after=live_after,
        )
        if not written:
            raise node_id_taken(conn, node_id)
        return node_id, now, facts

    def remember(self, recorded: Recorded | None) -> None:
        """Note a committed :meth:`record` (None: nothing was written).

        The node's models also count at once in the :class:`ServedSnapshot`, if any.
        """
        if recorded is not None:
            node_id, now, facts = recorded
            if self._snapshot is not None:
                self._snapshot.note(facts[1])
                previous = self._recorded.get(node_id)
                if previous is None or previous[1] != facts:
                    self._snapshot.changed()
            if len(self._recorded) >= MAX_REMEMBERED_NODES:
                self._recorded.clear()  # many short-lived node ids: start over, stay bounded
            self._recorded[node_id] = (now, facts)


class _DeclaredNames:
    """The model names one key's live nodes declare, each counted once per node.

    Each node's declaration is kept as a frozenset of the names stored here
    (``canonical``), so a thousand nodes declaring the same 256 long names
    share one copy of each string.
    """

    def __init__(self) -> None:
        self.by_node: dict[str, frozenset[str]] = {}
        # Name -> how many of the key's live nodes declare it.
        self.counts: dict[str, int] = {}
        self.canonical: dict[str, str] = {}

    def distinct_after(self, node_id: str, names: frozenset[str]) -> int:
        """How many distinct names the key would declare with ``node_id`` declaring ``names``."""
        old = self.by_node.get(node_id, frozenset())
        added = sum(1 for name in names if name not in self.counts)
        dropped = sum(1 for name in old - names if self.counts[name] == 1)
        return len(self.counts) + added - dropped

    def declare(self, node_id: str, names: frozenset[str]) -> None:
        """``node_id`` now declares ``names`` (instead of what it declared before)."""
        self.forget(node_id)
        shared = frozenset(self.canonical.setdefault(name, name) for name in names)
        for name in shared:
            self.counts[name] = self.counts.get(name, 0) + 1
        self.by_node[node_id] = shared

    def forget(self, node_id: str) -> None:
        """``node_id`` declares nothing any more (it aged out, or declares anew)."""
        for name in self.by_node.pop(node_id, ()):
            left = self.counts[name] - 1
            if left:
                self.counts[name] = left
            else:
                del self.counts[name]
                del self.canonical[name]


class NodeAdmission:
    """Bounds, per key and before any write, the live ``node_id`` values it uses in this
    process and the distinct model names those nodes declare.

    Every fetch or heartbeat with a new ``node_id`` creates a registry row, so
    one key inventing ids could grow the registry (and everything that reads
    it: ``/v1/models``, the status) without limit. A key may use at most
    ``limit`` ids seen within ``window`` seconds (``node_seen_seconds``: the
    ids that count as live); a new one past that raises :class:`TooManyNodes`
    before the claim's transaction opens, so a refusal costs no database
    work. Ids leave the count once unseen for ``window``; the registry rows
    themselves go at the purge (:func:`purge_nodes`, :func:`purge_excess_nodes`).

    The names those live nodes declare (a fetch's ``serves`` or ``models``,
    a heartbeat's ``models``) are bounded the same way, by ``max_models``
    distinct names per key (``[limits] max_fetch_models_per_key``, the bound
    a key's parked fetches already obey): without it 1,000 ids declaring 256
    different names each made ``/v1/models`` tens of megabytes. A declaration
    past it raises :class:`TooManyModels`. Per process, like the long-poll
    caps; the process's threads share it under a lock.
    """

    def __init__(
        self, limit: int, window: float, max_models: int = DEFAULT_MAX_FETCH_MODELS_PER_KEY
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_models = max_models
        # Per key: node id -> when it was last seen, least recently seen first.
        self._seen: dict[int, OrderedDict[str, float]] = {}
        self._declared: dict[int, _DeclaredNames] = {}
        self._lock = threading.Lock()

    def live(self, key_id: int) -> int:
        """How many node ids ``key_id`` has used within the window (as last pruned)."""
        return len(self._seen.get(key_id, ()))

    def declared(self, key_id: int) -> int:
        """How many distinct model names ``key_id``'s live nodes declare (as last pruned)."""
        declared = self._declared.get(key_id)
        return 0 if declared is None else len(declared.counts)

    def admit(
        self, key_id: int, node_id: str, now: float, models: Iterable[str] | None = None
    ) -> None:
        """Note that ``key_id`` acts as ``node_id`` now, declaring ``models`` (None: as
        before); :class:`TooManyNodes` or :class:`TooManyModels` if it may not."""
        with self._lock:
            seen = self._seen.get(key_id)
            if seen is None:
                seen = self._seen[key_id] = OrderedDict()
            declared = self._declared.get(key_id)
            if declared is None:
                declared = self._declared[key_id] = _DeclaredNames()
            cutoff = now - self.window
            while seen and next(iter(seen.values())) < cutoff:
                declared.forget(seen.popitem(last=False)[0])
            if node_id not in seen and len(seen) >= self.limit:
                raise TooManyNodes(self.limit, self.window)
            if models is not None:
                names = frozenset(models)
                if names != declared.by_node.get(node_id):
                    distinct = declared.distinct_after(node_id, names)
                    if distinct > self.max_models:
                        raise TooManyModels(self.max_models, len(declared.counts), self.window)
                    declared.declare(node_id, names)
            seen[node_id] = now
            seen.move_to_end(node_id)


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


def count_nodes_seen(conn: sa.Connection, *, since: float) -> int:
    """How many nodes were seen at or after ``since`` (a count: no model list is read)."""
    query = sa.select(sa.func.count()).select_from(nodes).where(nodes.c.last_seen >= since)
    return int(conn.execute(query).scalar_one())


@dataclass(frozen=True)
class ServedModels:
    """Which models the nodes seen recently serve, and how many nodes serve each.

    ``named`` counts, per model, the nodes that declare it by name but not
    ``*``; ``any_model`` counts the nodes that declare ``*`` (they are handed
    jobs of every model, so they count for each one without being a model).
    """

    named: Mapping[str, int] = field(default_factory=dict)
    any_model: int = 0

    def models(self) -> list[str]:
        """The models declared by name, sorted (``*`` is none)."""
        return sorted(self.named)

    def nodes_for(self, model: str) -> int:
        """How many of these nodes would be handed a job for ``model``."""
        return self.named.get(model, 0) + self.any_model

    def serves(self, model: str) -> bool:
        """True if some node would be handed a job for ``model``."""
        return self.any_model > 0 or model in self.named


def served_by(conn: sa.Connection, *, since: float) -> ServedModels:
    """What the nodes seen at or after ``since`` serve.

    Counted per distinct list of models in SQL: a thousand nodes declaring the
    same models are one row, not a thousand to decode (the housekeeper reads
    this about once a second).
    """
    query = (
        sa.select(nodes.c.models, sa.func.count())
        .where(nodes.c.last_seen >= since)
        .group_by(nodes.c.models)
    )
    named: dict[str, int] = {}
    any_model = 0
    for declared, count in conn.execute(query).all():
        models = set(json.loads(declared))
        if ANY_MODEL in models:
            any_model += count
            for model in models - {ANY_MODEL}:
                named.setdefault(model, 0)
        else:
            for model in models:
                named[model] = named.get(model, 0) + count
    return ServedModels(named, any_model)


def served_models(conn: sa.Connection, *, since: float) -> list[str]:
    """Models declared by nodes seen at or after ``since``, sorted; ``*`` left out."""
    return served_by(conn, since=since).models()


def not_served(model: str, window: float) -> str:
    """What is wrong with a request for ``model`` when no node serves it.

    The model is quoted as JSON with non-ASCII escaped, so the words are one
    line that is also a valid HTTP header value, whatever the name holds.
    """
    return f"no node serving model {json.dumps(model)} has been seen in the last {window:g} s"


def not_served_warning(model: str, window: float) -> JobWarning:
    """The warning a submit for ``model`` carries when no node serves it."""
    return JobWarning(
        code=MODEL_NOT_SERVED,
        model=model,
        message=(
            f"{not_served(model, window)}; the job is queued and waits until such a node "
            "asks for work"
        ),
    )


class ServedSnapshot:
    """What nodes serve, as last read, for checks that must not touch the database.

    A submit is a hot path (hundreds per second): asking the registry there
    would add a read to every submit. Instead the housekeeper replaces the
    snapshot about once a second (:meth:`replace`), and every registry write
    of this process adds its node's models at once (:meth:`note`), so a node
    that has just fetched counts immediately. A node that went silent counts
    until the next replacement: the answer lags by about a second. Reads and
    writes swap one immutable value, so no lock is needed.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._served = ServedModels()
        # Names noted since the last replacement. Added to in place: copying
        # the whole snapshot for each new node cost every fetch declaring new
        # names the size of everything served (a set's ``update`` and ``in``
        # are each atomic under the GIL, so readers in threads need no lock).
        self._noted: set[str] = set()
        # True until the first reading, and whenever a node of this process
        # declared something new since the last one (see :meth:`listing_stale`).
        self._stale = True

    @property
    def served(self) -> ServedModels:
        """The snapshot as last read (names noted since are in :meth:`warnings` only)."""
        return self._served

    def replace(self, served: ServedModels) -> None:
        """Take a fresh reading of the registry."""
        self._served = served
        self._noted = set()
        self._stale = False

    def changed(self) -> None:
        """A node of this process declared other models, key or version than before."""
        self._stale = True

    @property
    def listing_stale(self) -> bool:
        """True when ``/v1/models`` must re-read the registry rather than answer from here.

        Only a change seen by this process makes it so: nodes that merely
        fetch again change nothing, and what other replicas' nodes do (or
        nodes ageing out) arrives with the next reading, about a second later.
        """
        return self._stale

    def note(self, models: Iterable[str] | None) -> None:
        """A node declaring ``models`` was just recorded by this process."""
        if models is None:
            return
        current = self._served
        if current.any_model:
            return  # nothing it could add to an answer; the next refresh counts it
        declared = set(models)
        if ANY_MODEL in declared:
            self._served = ServedModels(current.named, current.any_model + 1)
            return
        self._noted.update(declared.difference(current.named))

    def warnings(self, models: Iterable[str]) -> list[JobWarning]:
        """One warning per distinct model of ``models`` that no recent node serves."""
        served, noted = self._served, self._noted
        if served.any_model:
            return []
        return [
            not_served_warning(model, self.window)
            for model in dict.fromkeys(models)
            if model not in served.named and model not in noted
        ]
