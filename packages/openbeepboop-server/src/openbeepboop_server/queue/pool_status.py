"""The pool status: queues, nodes, throughput and failures, read in one transaction.

:func:`build_pool_status` is the one builder behind ``GET /v1/status``, the
status page and ``openbeepboop-server status``. Each of its reads is an index
range, so its cost does not grow with the jobs that merely exist:

* queue depth by status and model: the live statuses' part of ``ix_jobs_claim``
  (covering). This is the one read that grows with the queue: ~0.1 s of
  SQLite with 1M jobs queued, the same count a ``/metrics`` scrape makes; the
  HTTP side builds at most once per ``STATUS_CACHE_SECONDS`` per process;
* the oldest queued job: one index seek per model shown;
* nodes online: ``ix_nodes_last_seen``; leases held per node: the
  ``PROCESSING`` part of ``ix_jobs_status_lease`` (bounded by the pool's slots);
* what finished in the window, by status, model and key, and the latest
  failures: ``ix_jobs_finished`` (partial, covering), which holds finished
  jobs only, ordered by completion time within each status.

Throughput and error rate come from the database (jobs by ``completed_at``),
not from in-process counters, so every replica answers the same. No column
holding a prompt or a result is ever read here.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import (
    ANY_MODEL,
    JobStatus,
    KeyUsage,
    ModelStatus,
    NodeStatus,
    PoolStatus,
    RecentFailure,
    WindowCounts,
)

from openbeepboop_server.db.tables import api_keys, jobs, nodes
from openbeepboop_server.queue import views
from openbeepboop_server.queue.statuses import QUEUED, TERMINAL_IN_SQL

#: Throughput and error rate are measured over this many seconds back.
DEFAULT_WINDOW_SECONDS = 300.0
#: Bounds on every list of the status (the ``*_total`` fields count the rest).
MAX_STATUS_MODELS = 100
MAX_STATUS_NODES = 100
MAX_RECENT_FAILURES = 20
MAX_STATUS_KEYS = 50
#: Models listed per node (a node may declare 256 names of 256 characters:
#: 100 such nodes made a 6.5 MB answer); ``openbeepboop-server nodes`` lists all.
MAX_STATUS_NODE_MODELS = 16
#: A failure's message is cut to this many characters.
MAX_FAILURE_MESSAGE_CHARS = 500

_PROCESSING = JobStatus.PROCESSING.value
_COMPLETED = JobStatus.COMPLETED.value
_FAILED = JobStatus.FAILED.value
_CANCELLED = JobStatus.CANCELLED.value
_LIVE = (JobStatus.QUEUED, JobStatus.PROCESSING)

# Statements built once (docs/performance.md, "Statements built once").
_OLDEST_OF_MODEL = (
    sa.select(jobs.c.created_at)
    .where(jobs.c.status == QUEUED, jobs.c.model == sa.bindparam("model"))
    .order_by(jobs.c.seq)
    .limit(1)
)
_OLDEST = sa.select(jobs.c.created_at).where(jobs.c.status == QUEUED).order_by(jobs.c.seq).limit(1)
_ONLINE_NODES = (
    sa.select(nodes.c.node_id, nodes.c.key_name, nodes.c.version, nodes.c.models, nodes.c.last_seen)
    .where(nodes.c.last_seen >= sa.bindparam("since"))
    .order_by(nodes.c.last_seen.desc(), nodes.c.node_id)
)
_IN_FLIGHT = (
    sa.select(jobs.c.lease_node_id, sa.func.count())
    .where(jobs.c.status == _PROCESSING)
    .group_by(jobs.c.lease_node_id)
)
_FINISHED = (
    sa.select(jobs.c.status, jobs.c.model, jobs.c.owner_key_id, sa.func.count())
    .where(jobs.c.status.in_(TERMINAL_IN_SQL), jobs.c.completed_at >= sa.bindparam("since"))
    .group_by(jobs.c.status, jobs.c.model, jobs.c.owner_key_id)
)
# ``completed_at IS NOT NULL`` lets the planner use the partial ix_jobs_finished.
_RECENT_FAILURES = (
    sa.select(
        jobs.c.id,
        jobs.c.model,
        jobs.c.error_type,
        jobs.c.error_message,
        jobs.c.completed_at,
        jobs.c.attempts,
    )
    .where(jobs.c.status == _FAILED, jobs.c.completed_at.is_not(None))
    .order_by(jobs.c.completed_at.desc())
    .limit(MAX_RECENT_FAILURES)
)
_KEY_NAMES = sa.select(api_keys.c.id, api_keys.c.name).where(
    api_keys.c.id.in_(sa.bindparam("ids", expanding=True))
)


@dataclass
class _Tally:
    """Finished jobs of one model or key within the window, by status."""

    counts: Counter[str] = field(default_factory=Counter)

    def window(self, window_seconds: float) -> WindowCounts:
        completed, failed = self.counts[_COMPLETED], self.counts[_FAILED]
        ended = completed + failed
        return WindowCounts(
            completed=completed,
            failed=failed,
            cancelled=self.counts[_CANCELLED],
            completed_per_minute=round(completed * 60.0 / window_seconds, 3),
            error_rate=round(failed / ended, 4) if ended else None,
        )


def _age(now: float, created_at: float | None) -> float | None:
    return None if created_at is None else round(max(0.0, now - created_at), 3)


def build_pool_status(
    conn: sa.Connection,
    *,
    now: float,
    node_seen_seconds: float,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> PoolStatus:
    """The pool as the database has it at ``now`` (one read transaction: ``conn``)."""
    depth: dict[str, Counter[str]] = {}
    for status, model, count in views.depth(conn, _LIVE):
        depth.setdefault(model, Counter())[status] = count

    online = conn.execute(_ONLINE_NODES, {"since": now - node_seen_seconds}).all()
    in_flight = {node_id: int(count) for node_id, count in conn.execute(_IN_FLIGHT)}
    nodes_per_model: Counter[str] = Counter()
    node_views: list[NodeStatus] = []
    for row in online:
        declared = list(json.loads(row.models))
        nodes_per_model.update(name for name in set(declared) if name != ANY_MODEL)
        if len(node_views) < MAX_STATUS_NODES:
            node_views.append(
                NodeStatus(
                    node_id=row.node_id,
                    key_name=row.key_name,
                    version=row.version,
                    models=declared[:MAX_STATUS_NODE_MODELS],
                    last_seen=row.last_seen,
                    seen_seconds_ago=round(max(0.0, now - row.last_seen), 3),
                    in_flight=in_flight.get(row.node_id, 0),
                )
            )

    total = _Tally()
    per_model: dict[str, _Tally] = {}
    per_key: dict[int, _Tally] = {}
    for status, model, owner, count in conn.execute(_FINISHED, {"since": now - window_seconds}):
        tallies = (
            total,
            per_model.setdefault(model, _Tally()),
            per_key.setdefault(owner, _Tally()),
        )
        for tally in tallies:
            tally.counts[status] += int(count)

    names = set(depth) | set(nodes_per_model) | set(per_model)
    # Busiest first: the models an operator must see are the ones with work waiting.
    ranked = sorted(names, key=lambda name: (-sum(depth.get(name, Counter()).values()), name))[
        :MAX_STATUS_MODELS
    ]
    models = [
        _model_status(conn, name, depth, nodes_per_model, per_model, now, window_seconds)
        for name in ranked
    ]

    queued = sum(counts[QUEUED] for counts in depth.values())
    oldest = conn.execute(_OLDEST).scalar() if queued else None
    return PoolStatus(
        generated_at=now,
        window_seconds=window_seconds,
        node_seen_seconds=node_seen_seconds,
        queued=queued,
        processing=sum(counts[_PROCESSING] for counts in depth.values()),
        oldest_queued_seconds=_age(now, oldest),
        window=total.window(window_seconds),
        models=models,
        models_total=len(names),
        nodes=node_views,
        nodes_online=len(online),
        recent_failures=[_failure(row) for row in conn.execute(_RECENT_FAILURES)],
        keys=_key_usage(conn, per_key, window_seconds),
        keys_total=len(per_key),
    )


def _model_status(
    conn: sa.Connection,
    name: str,
    depth: dict[str, Counter[str]],
    nodes_per_model: Counter[str],
    per_model: dict[str, _Tally],
    now: float,
    window_seconds: float,
) -> ModelStatus:
    counts = depth.get(name, Counter())
    oldest = conn.execute(_OLDEST_OF_MODEL, {"model": name}).scalar() if counts[QUEUED] else None
    return ModelStatus(
        model=name,
        queued=counts[QUEUED],
        processing=counts[_PROCESSING],
        oldest_queued_seconds=_age(now, oldest),
        nodes=nodes_per_model[name],
        window=per_model.get(name, _Tally()).window(window_seconds),
    )


def _failure(row: Any) -> RecentFailure:
    """A failure as the status shows it, from a row of :data:`_RECENT_FAILURES`."""
    message = row.error_message
    if message is not None and len(message) > MAX_FAILURE_MESSAGE_CHARS:
        message = message[: MAX_FAILURE_MESSAGE_CHARS - 1] + "…"
    return RecentFailure(
        job_id=row.id,
        model=row.model,
        error_type=row.error_type,
        error_message=message,
        failed_at=row.completed_at,
        attempts=row.attempts,
    )


def _key_usage(
    conn: sa.Connection, per_key: dict[int, _Tally], window_seconds: float
) -> list[KeyUsage]:
    # The keys with the most finished jobs, named (names are unique and never reused).
    busiest = sorted(per_key, key=lambda key_id: (-sum(per_key[key_id].counts.values()), key_id))
    shown = busiest[:MAX_STATUS_KEYS]
    names = {row.id: row.name for row in conn.execute(_KEY_NAMES, {"ids": shown})} if shown else {}
    return [
        KeyUsage(
            key_name=names.get(key_id, f"#{key_id}"), window=per_key[key_id].window(window_seconds)
        )
        for key_id in shown
    ]
