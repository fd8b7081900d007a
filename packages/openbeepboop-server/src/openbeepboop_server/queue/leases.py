"""Leases over time: their history, heartbeats, restart grace.

Every claim leaves a row in ``leases`` whose ``outcome`` stays NULL while the
lease is held. That history is what lets the server answer a token precisely:
never issued (rejected), issued and still held (valid), or issued and taken
back by expiry, cancellation or an earlier delivery (stale / duplicate).
Taking an expired lease back changes the job's status, so it lives with the
other status changes in :mod:`.transitions`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import HeartbeatRequest, HeartbeatResponse, JobStatus, Role

from openbeepboop_server.db.database import IN_CHUNK
from openbeepboop_server.db.driver_sql import DriverStatement
from openbeepboop_server.db.safe_text import db_texts
from openbeepboop_server.db.tables import jobs, leases
from openbeepboop_server.keys import Caller

# Lease outcomes (leases.outcome); NULL means still held.
COMPLETED = "completed"
FAILED = "failed"
RETRIED = "retried"
RELEASED = "released"
EXPIRED = "expired"
CANCELLED = "cancelled"
#: Outcomes the holder itself delivered: the same lease again is a duplicate.
DELIVERED = frozenset({COMPLETED, FAILED, RETRIED, RELEASED})


@dataclass
class JobState:
    """A leased job's row as read (and then changed) inside one transaction."""

    seq: int
    job_id: str
    status: str
    lease_token: str | None
    attempts: int
    max_attempts: int
    #: The key that owns the job (its usage is counted when the job ends).
    owner_key_id: int = 0


@dataclass
class LeaseState:
    """A lease history row joined with its job."""

    lease_id: int
    token: str
    key_id: int
    outcome: str | None
    job: JobState
    #: When this lease was taken: its delivery minus this is the job's LLM time.
    claimed_at: float = 0.0

    def held_by(self, caller: Caller) -> bool:
        """The caller took this lease (an ADMIN key may act for any node)."""
        return caller.role is Role.ADMIN or self.key_id == caller.key_id

    @property
    def is_current(self) -> bool:
        """Still the job's live lease: not ended, and the job still PROCESSING under it."""
        return (
            self.outcome is None
            and self.job.status == JobStatus.PROCESSING.value
            and self.job.lease_token == self.token
        )


#: Leases by token (``tokens``, expanded when executed) with their jobs, built
#: once: a select built per delivery cost ~150 us of CPU, three times the read.
_LEASES_BY_TOKEN_SQL = (
    sa.select(
        leases.c.id.label("lease_id"),
        leases.c.token,
        leases.c.key_id,
        leases.c.outcome,
        leases.c.claimed_at,
        jobs.c.seq,
        jobs.c.id.label("job_id"),
        jobs.c.status,
        jobs.c.lease_token,
        jobs.c.attempts,
        jobs.c.max_attempts,
        jobs.c.owner_key_id,
    )
    .select_from(leases.join(jobs, jobs.c.seq == leases.c.job_seq))
    .where(leases.c.token.in_(sa.bindparam("tokens", expanding=True)))
    .order_by(jobs.c.seq)  # a fixed lock order, so two deliverers cannot deadlock
)
#: Both rows locked: after waiting for a concurrent delivery, PostgreSQL then
#: re-reads the lease's outcome too, so a twin delivery is a duplicate.
_LEASES_BY_TOKEN_LOCKED = DriverStatement(_LEASES_BY_TOKEN_SQL.with_for_update(of=[jobs, leases]))
#: Run on the driver's cursor, as the delivery's other statements (db/driver_sql.py).
_LEASES_BY_TOKEN = DriverStatement(_LEASES_BY_TOKEN_SQL)


def load_leases(conn: sa.Connection, tokens: Iterable[str], *, lock: bool) -> dict[str, LeaseState]:
    """The leases named by ``tokens`` with their jobs (locked FOR UPDATE on PostgreSQL)."""
    wanted = db_texts(list(dict.fromkeys(tokens)))
    found: dict[str, LeaseState] = {}
    job_states: dict[int, JobState] = {}
    query = _LEASES_BY_TOKEN_LOCKED if lock else _LEASES_BY_TOKEN
    for start in range(0, len(wanted), IN_CHUNK):
        for row in query.all(conn, {"tokens": wanted[start : start + IN_CHUNK]}):
            # Two tokens of one job share its state, so a change through one is seen by the other.
            job = job_states.setdefault(
                row.seq,
                JobState(
                    seq=row.seq,
                    job_id=row.job_id,
                    status=row.status,
                    lease_token=row.lease_token,
                    attempts=row.attempts,
                    max_attempts=row.max_attempts,
                    owner_key_id=row.owner_key_id,
                ),
            )
            found[row.token] = LeaseState(
                lease_id=row.lease_id,
                token=row.token,
                key_id=row.key_id,
                outcome=row.outcome,
                job=job,
                claimed_at=row.claimed_at,
            )
    return found


def heartbeat(
    conn: sa.Connection,
    caller: Caller,
    beat: HeartbeatRequest,
    *,
    now: float,
    lease_seconds: float,
    lock: bool,
) -> HeartbeatResponse:
    """Extend every lease the caller still holds; say which were lost or cancelled."""
    states = load_leases(conn, (ref.lease_token for ref in beat.leases), lock=lock)
    expires = now + lease_seconds
    extended: list[str] = []
    lost: list[str] = []
    cancelled: list[str] = []
    to_extend: list[dict[str, Any]] = []
    for ref in beat.leases:
        state = states.get(ref.lease_token)  # a NUL-bearing token was never issued: absent
        if state is None or state.job.job_id != ref.job_id or not state.held_by(caller):
            lost.append(ref.job_id)
        elif state.outcome == CANCELLED:
            cancelled.append(ref.job_id)
        elif state.is_current:
            extended.append(ref.job_id)
            to_extend.append({"b_seq": state.job.seq, "b_token": state.token})
        else:
            lost.append(ref.job_id)
    if to_extend:
        conn.execute(
            jobs.update()
            .where(
                jobs.c.seq == sa.bindparam("b_seq"),
                jobs.c.lease_token == sa.bindparam("b_token"),
            )
            .values(lease_expires_at=expires, updated_at=now),
            to_extend,
        )
    return HeartbeatResponse(
        lease_expires_at=expires if extended else None,
        lease_seconds=lease_seconds,
        extended=extended,
        lost=lost,
        cancelled=cancelled,
    )


_END_LEASE_BY_ID = DriverStatement(
    leases.update()
    .where(leases.c.id == sa.bindparam("b_id"))
    .values(outcome=sa.bindparam("b_outcome"), ended_at=sa.bindparam("b_now"))
)


def end_leases_by_id(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Record how held leases ended; ``rows``: ``b_id`` (lease row), ``b_outcome``, ``b_now``."""
    if rows:
        _END_LEASE_BY_ID.execute(conn, rows)


def end_leases(conn: sa.Connection, tokens: list[str], outcome: str, now: float) -> None:
    """Record how still-held leases ended."""
    if not tokens:
        return
    conn.execute(
        leases.update()
        .where(leases.c.token == sa.bindparam("b_token"), leases.c.outcome.is_(None))
        .values(outcome=outcome, ended_at=now),
        [{"b_token": token} for token in tokens],
    )


def grant_restart_grace(conn: sa.Connection, *, now: float, lease_seconds: float) -> int:
    """Give every PROCESSING lease at least a full period from ``now``; how many moved.

    Time the server was down must not count against nodes: they could not
    heartbeat while it was gone.
    """
    floor = now + lease_seconds
    result = conn.execute(
        jobs.update()
        .where(jobs.c.status == JobStatus.PROCESSING.value, jobs.c.lease_expires_at < floor)
        .values(lease_expires_at=floor, updated_at=now)
    )
    return int(result.rowcount)


#: Another replica's ``LISTEN`` connection on this schema's channel
#: (:mod:`openbeepboop_server.dispatch.replicas`): the listener runs nothing after
#: its ``LISTEN``, so that stays its session's query in ``pg_stat_activity``,
#: for as long as the replica lives (PostgreSQL ends the session when the
#: process dies). The identifier is quoted as psycopg's ``sql.Identifier`` does.
_OTHER_LISTENERS = sa.text(
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND query = 'LISTEN \"'"
    " || replace(left('obb:' || current_schema(), 63), '\"', '\"\"') || '\"')"
)


def other_replicas_alive(conn: sa.Connection) -> bool:
    """PostgreSQL: another replica of this database (and schema) is running now.

    Its nodes could heartbeat through it, so time this replica was down was
    not time nobody could: a replica starting beside a live one grants no
    restart grace (docs/server.md, "Scaling out with PostgreSQL").
    """
    return bool(conn.execute(_OTHER_LISTENERS).scalar_one())
