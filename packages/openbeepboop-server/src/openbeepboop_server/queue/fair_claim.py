"""The SQL side of the claim order: which jobs a claim takes, read through the indexes.

:mod:`.fair_share` holds the rule (levels, turns, ranks); this module feeds it
and takes the jobs it picks. From ``ix_jobs_fair`` (status, model, owner,
claim_rank, seq): a skip scan finds each owner's next job (a few index seeks
per owner with queued jobs), then each owner picked is read a few jobs at a
time in rank order (``FOR UPDATE SKIP LOCKED`` on PostgreSQL). The cost of a
claim follows ``max_jobs`` and the number of owners with queued jobs of the
model, never the number of jobs queued. ``*`` first picks a bounded set of
models with queued jobs, owner by owner (:func:`any_model_candidates`), so
its cost follows the owners with queued work, never the number of distinct
models queued. A claim over several models reads and stores each owner's
turns under the pooled ``*`` row (:data:`.fair_share.POOLED`), so they are
shared across those models. The owners served have their
turns added to ``fair_shares`` in the claim's transaction
(:func:`store_turns`).
"""

from __future__ import annotations

import collections
import functools
import json
import math
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import ANY_MODEL, MAX_FETCH_JOBS, JobStatus

from openbeepboop_server.db.database import IN_CHUNK
from openbeepboop_server.db.driver_sql import DriverStatement
from openbeepboop_server.queue.fair_share import POOLED, Head, Turns

_COLUMNS = "seq, id, model, request, attempts"
#: Claims up to this many jobs read each job's details with its place in the
#: order (one round trip less: a node's single-job claim is on a job's
#: critical path). Larger ones read the details of the jobs taken afterwards,
#: so no request is read for a job a claim looked at but did not take.
DETAILS_IN_ORDER_MAX = 8
_FAIR = "status = :status AND model = :model"


def _table(index: str, dialect: str) -> str:
    """``jobs``, told which index to walk on SQLite.

    SQLite's planner has no statistics: without ``INDEXED BY`` it may pick
    another index on ``status`` and then sort every QUEUED row - fine at 1k
    queued, ruinous at 1M.
    """
    return f"jobs INDEXED BY {index}" if dialect == "sqlite" else "jobs"


#: A ``*`` claim looks at most this many models (and at least one per owner
#: with queued jobs). Each costs the claim a skip scan of its owners (about
#: 0.1 ms on SQLite), so 64 keeps a ``*`` claim near 7 ms however many
#: distinct models are queued, and a claim of up to 256 jobs still fills
#: from 64 models. Walking every distinct model queued instead cost 2.3-4 s
#: per claim with 60,000 invented names (SQLite; 6 s on PostgreSQL with
#: 20,000), holding the one writer meanwhile.
MAX_ANY_MODELS = 64

_UNFINISHED = "status IN ('QUEUED', 'PROCESSING')"


@functools.cache
def _owners_sql(dialect: str) -> sa.TextClause:
    """Owners with unfinished jobs, one index seek each: a skip scan over the
    partial ``ix_jobs_owner_unfinished``, which holds no finished job.

    The statuses are literals: SQLite uses a partial index only when the
    WHERE visibly implies the index's.
    """
    table = _table("ix_jobs_owner_unfinished", dialect)
    return sa.text(
        "WITH RECURSIVE owners(k) AS ("  # noqa: S608 - fixed fragments only
        f" SELECT (SELECT min(owner_key_id) FROM {table} WHERE {_UNFINISHED})"
        f" UNION ALL SELECT (SELECT min(owner_key_id) FROM {table} WHERE {_UNFINISHED}"
        "  AND owner_key_id > owners.k)"
        " FROM owners WHERE owners.k IS NOT NULL"
        ") SELECT k FROM owners WHERE k IS NOT NULL"
    )


@functools.cache
def _owner_models_sql(dialect: str) -> sa.TextClause:
    """The models of a few of an owner's claimable queued jobs, through the same
    partial index (the owner's history is never read)."""
    table = _table("ix_jobs_owner_unfinished", dialect)
    return sa.text(
        f"SELECT model FROM {table} WHERE owner_key_id = :owner AND {_UNFINISHED}"  # noqa: S608 - fixed fragments only
        " AND status = :status AND not_before <= :now LIMIT :limit"
    )


def any_model_candidates(conn: sa.Connection, now: float) -> list[str]:
    """The models a ``*`` claim orders, at most :data:`MAX_ANY_MODELS` (or one per owner).

    Each owner with queued jobs brings the models of a few of its claimable
    jobs, an equal share of :data:`MAX_ANY_MODELS` each, so one owner's
    thousands of distinct models can neither crowd the others out of the
    claim nor make it walk them all. The fair order then runs over every
    owner's jobs of those models as for a named fetch.
    """
    dialect = conn.dialect.name
    owners = list(conn.execute(_owners_sql(dialect)).scalars())
    if not owners:
        return []
    share = max(1, MAX_ANY_MODELS // len(owners))
    found: dict[str, None] = {}
    for owner in owners:
        params = {"owner": owner, "status": JobStatus.QUEUED.value, "now": now, "limit": share}
        found.update(dict.fromkeys(conn.execute(_owner_models_sql(dialect), params).scalars()))
    return list(found)


@functools.cache
def _heads_sql(dialect: str) -> DriverStatement:
    """Each owner with claimable jobs of a model, its next job's rank and priority,
    its weight and its stored virtual time under ``:share`` (the model, or
    :data:`.fair_share.POOLED` for a claim over several models).

    A skip scan over ``ix_jobs_fair``: a few index seeks per owner with QUEUED
    jobs, whatever the number of jobs each has queued.
    """
    table = _table("ix_jobs_fair", dialect)
    return DriverStatement(
        sa.text(
            "WITH RECURSIVE owners(k) AS ("  # noqa: S608 - fixed fragments only
            f" SELECT (SELECT min(owner_key_id) FROM {table} WHERE {_FAIR})"
            f" UNION ALL SELECT (SELECT min(owner_key_id) FROM {table}"
            f"  WHERE {_FAIR} AND owner_key_id > owners.k)"
            " FROM owners WHERE owners.k IS NOT NULL"
            "), heads AS ("
            " SELECT owners.k AS owner,"
            f"  (SELECT seq FROM {table} WHERE {_FAIR} AND owner_key_id = owners.k"
            "   AND not_before <= :now ORDER BY claim_rank, seq LIMIT 1) AS head"
            " FROM owners WHERE owners.k IS NOT NULL"
            ") SELECT heads.owner, jobs.claim_rank, jobs.priority,"
            " coalesce(api_keys.weight, 1) AS weight, fair_shares.virtual_time, heads.head"
            " FROM heads JOIN jobs ON jobs.seq = heads.head"
            " LEFT JOIN api_keys ON api_keys.id = heads.owner"
            " LEFT JOIN fair_shares ON fair_shares.model = :share"
            "  AND fair_shares.owner_key_id = heads.owner"
        )
    )


@functools.cache
def _owner_jobs_sql(dialect: str, after: bool, details: bool) -> DriverStatement:
    """An owner's next claimable jobs of a model, by rank (``details``: and
    ``_COLUMNS``); locked on PostgreSQL.

    ``FOR UPDATE SKIP LOCKED``: a concurrent claimer (another replica) skips
    the rows this one is taking instead of waiting for them.
    """
    table = _table("ix_jobs_fair", dialect)
    columns = f"claim_rank, {_COLUMNS}" if details else "seq, claim_rank"
    past = " AND (claim_rank > :rank OR (claim_rank = :rank AND seq > :seq))" if after else ""
    lock = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    return DriverStatement(
        sa.text(
            f"SELECT {columns} FROM {table} WHERE {_FAIR} AND owner_key_id = :owner"  # noqa: S608 - fixed fragments only
            f" AND not_before <= :now{past} ORDER BY claim_rank, seq LIMIT :limit{lock}"
        )
    )


_DETAILS_SQL = sa.text(f"SELECT {_COLUMNS} FROM jobs WHERE seq IN :seqs").bindparams(  # noqa: S608 - fixed fragments only
    sa.bindparam("seqs", expanding=True)
)


#: A claim for more declared models than this first asks, in one statement,
#: which of them have queued jobs: a node may declare 256 names, and one
#: skip-scan statement per name held the one SQLite writer (and a submit
#: handing its job to that node) for all of them.
FILTER_MODELS_ABOVE = 2


@functools.cache
def _queued_among_sql(dialect: str) -> sa.TextClause:
    """Which of a list of models have QUEUED jobs: one index seek each, one statement."""
    if dialect == "postgresql":
        names = "unnest(CAST(:models AS text[])) AS m(name)"
    else:
        names = "(SELECT value AS name FROM json_each(:models)) AS m"
    table = _table("ix_jobs_claim", dialect)
    return sa.text(
        f"SELECT m.name FROM {names} WHERE EXISTS"  # noqa: S608 - fixed fragments only
        f" (SELECT 1 FROM {table} WHERE status = :status AND model = m.name)"
    )


def queued_among(conn: sa.Connection, models: list[str]) -> list[str]:
    """Those of ``models`` (distinct names) with QUEUED jobs, in their order.

    One statement per :data:`~openbeepboop_server.db.database.IN_CHUNK` names,
    whatever the queue holds: the cost follows the names, not the jobs.
    """
    dialect = conn.dialect.name
    sql = _queued_among_sql(dialect)
    found: set[str] = set()
    for start in range(0, len(models), IN_CHUNK):
        chunk = models[start : start + IN_CHUNK]
        value: Any = chunk if dialect == "postgresql" else json.dumps(chunk)
        params = {"status": JobStatus.QUEUED.value, "models": value}
        found.update(conn.execute(sql, params).scalars())
    return [model for model in models if model in found]


def _heads(conn: sa.Connection, models: list[str], now: float, pooled: bool) -> list[Head]:
    sql = _heads_sql(conn.dialect.name)
    heads: list[Head] = []
    for model in models:
        share = POOLED if pooled else model
        params = {"status": JobStatus.QUEUED.value, "model": model, "now": now, "share": share}
        heads.extend(Head(model, *row) for row in sql.all(conn, params))
    return heads


class _OwnerJobs:
    """One owner's claimable jobs of one model, read (and locked) a few at a time."""

    def __init__(
        self, conn: sa.Connection, model: str, owner: int, now: float, first: int, details: bool
    ):
        self._conn = conn
        self._details = details
        self._params: dict[str, Any] = {
            "status": JobStatus.QUEUED.value,
            "model": model,
            "owner": owner,
            "now": now,
        }
        self._next_limit = first
        #: Rows with ``seq`` and ``claim_rank`` (and, with ``details``, ``_COLUMNS``).
        self._buffer: collections.deque[Any] = collections.deque()
        self._last: Any = None
        self._done = False

    def peek(self) -> Any:
        """The owner's next job's row (``seq``, ``claim_rank``, ...), reading more
        when the buffer ran dry; None when the owner has none left."""
        if not self._buffer and not self._done:
            self._read()
        return self._buffer[0] if self._buffer else None

    def take(self) -> Any:
        """Take the job :meth:`peek` returned; its row."""
        row = self._buffer.popleft()
        self._last = row
        return row

    def _read(self) -> None:
        limit = self._next_limit
        self._next_limit = min(limit * 2, MAX_FETCH_JOBS)
        params = {**self._params, "limit": limit}
        after = self._last is not None
        if self._last is not None:
            params.update(seq=self._last.seq, rank=self._last.claim_rank)
        sql = _owner_jobs_sql(self._conn.dialect.name, after, self._details)
        rows = sql.all(self._conn, params)
        self._buffer.extend(rows)
        self._done = len(rows) < limit


def _fair_order(
    conn: sa.Connection,
    models: list[str],
    limit: int,
    now: float,
    aging_seconds: float,
    details: bool,
    pooled: bool,
) -> tuple[list[Any], Turns | None]:
    """The rows of up to ``limit`` jobs in claim order (``details``: with
    ``_COLUMNS``), and the turns that chose them (``pooled``: shared across
    ``models``)."""
    heads = _heads(conn, models, now, pooled)
    if not heads:
        return [], None
    turns = Turns(heads, now=now, aging_seconds=aging_seconds, picks=limit, pooled=pooled)
    # A pooled owner counts once, however many of the models it has queued.
    weights = {(POOLED if pooled else head.model, head.owner): head.weight for head in heads}
    total_weight = sum(max(weight, 1) for weight in weights.values())
    readers: dict[tuple[str, int], _OwnerJobs] = {}
    order: list[Any] = []
    while len(order) < limit:
        turn = turns.next()
        if turn is None:
            break
        reader = readers.get(turn)
        if reader is None:
            weight = turns.weight(*turn)
            first = min(limit, math.ceil(limit * weight / total_weight) + 1)
            reader = readers[turn] = _OwnerJobs(conn, turn[0], turn[1], now, first, details)
        if reader.peek() is None:
            turns.exhausted(*turn, claimed_one=False)
            continue
        order.append(reader.take())
        following = reader.peek() if len(order) < limit else None
        if following is None:
            turns.exhausted(*turn, claimed_one=True)
        else:
            turns.served(*turn, following.claim_rank, following.seq)
    return order, turns


def fair_candidates(
    conn: sa.Connection, models: list[str], limit: int, now: float, aging_seconds: float
) -> tuple[list[Any], Turns | None]:
    """Up to ``limit`` claimable jobs of ``models`` (``*``: any) in claim order, as rows of
    ``seq, id, model, request, attempts``; and the turns to store once they are taken.

    A claim over several models (``*``, or several names declared) shares
    each owner's turns across them, whichever of them have jobs queued right
    now: a node's claims keep one account per owner from one fetch to the next.
    """
    details = limit <= DETAILS_IN_ORDER_MAX
    if ANY_MODEL in models:
        unique = any_model_candidates(conn, now)
        pooled = True
    else:
        unique = list(dict.fromkeys(models))
        pooled = len(unique) > 1
        if len(unique) > FILTER_MODELS_ABOVE:
            unique = queued_among(conn, unique)
    order, turns = _fair_order(conn, unique, limit, now, aging_seconds, details, pooled)
    if details or not order:
        return order, turns
    seqs = [row.seq for row in order]
    found: dict[int, Any] = {}
    for start in range(0, len(seqs), IN_CHUNK):
        chunk = seqs[start : start + IN_CHUNK]
        found.update((row.seq, row) for row in conn.execute(_DETAILS_SQL, {"seqs": chunk}))
    return [found[seq] for seq in seqs], turns


def store_turns(conn: sa.Connection, turns: Turns) -> None:
    """Add each served owner's claims to its stored virtual time (sorted: no deadlocks)."""
    rows = [
        {"model": model, "owner": owner, "floor": floor, "added": added}
        for model, owner, floor, added in turns.advances()
    ]
    if rows:
        _store_sql(conn.dialect.name).execute(conn, rows)


@functools.cache
def _store_sql(dialect: str) -> DriverStatement:
    larger = "max" if dialect == "sqlite" else "greatest"
    return DriverStatement(
        sa.text(
            "INSERT INTO fair_shares (model, owner_key_id, virtual_time)"  # noqa: S608 - fixed fragments only
            " VALUES (:model, :owner, :floor + :added)"
            " ON CONFLICT (model, owner_key_id) DO UPDATE SET virtual_time ="
            f" {larger}(fair_shares.virtual_time, :floor) + :added"
        )
    )
