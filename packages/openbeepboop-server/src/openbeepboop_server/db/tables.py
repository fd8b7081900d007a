"""The schema at head, as SQLAlchemy Core tables.

These objects are what the queue code queries with. They are NOT how the
schema is created: only the Alembic revisions in ``migrations/versions`` create
or change tables, and ``tests/db`` checks that the two agree.

Timestamps are Unix seconds stored as floats (``REAL`` / ``double precision``)
so that SQLite and PostgreSQL compare them the same way and no timezone ever
enters the picture.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: SQLite only makes ``INTEGER PRIMARY KEY`` an alias of the rowid (fast,
#: monotonic); PostgreSQL wants a 64-bit identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.Float(precision=53)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("key_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("revoked_at", Timestamp, nullable=True),
    # Fair share: this key's share of claims relative to other owners (1 = equal).
    sa.Column("weight", sa.Integer(), nullable=False, server_default="1"),
    # The highest ``priority`` this key may submit with (docs/api.md, "Claim order").
    sa.Column("max_priority", sa.Integer(), nullable=False, server_default="0"),
    # Quotas (NULL: unlimited): the most unfinished jobs, submit requests per minute.
    sa.Column("max_queued", sa.Integer(), nullable=True),
    sa.Column("rate_limit", sa.Integer(), nullable=True),
    # The rate limiter's state (GCRA "theoretical arrival time"), in the
    # database so that every replica spends the same allowance.
    sa.Column("rate_tat", Timestamp, nullable=True),
    # An upper bound of the key's unfinished jobs (NULL: unknown, count them),
    # so that most submits of a key with max_queued need no count (quotas.py).
    sa.Column("queued_hint", sa.BigInteger(), nullable=True),
    # NODE scopes (NULL: any): a JSON list of model names, one node_id.
    sa.Column("models", sa.Text(), nullable=True),
    sa.Column("node_id", sa.String(128), nullable=True),
    # After this instant the key is refused like a revoked one (NULL: never).
    sa.Column("expires_at", Timestamp, nullable=True),
    sa.UniqueConstraint("name", name="uq_api_keys_name"),
    sa.UniqueConstraint("key_sha256", name="uq_api_keys_key_sha256"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    # ``seq`` orders the queue (FIFO) and pages listings; ``id`` is the public name.
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column(
        "owner_key_id",
        BigId,
        sa.ForeignKey("api_keys.id", name="fk_jobs_owner_key_id"),
        nullable=False,
    ),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("request", sa.Text(), nullable=False),
    sa.Column("result", sa.Text(), nullable=True),
    sa.Column("error_message", sa.Text(), nullable=True),
    sa.Column("error_type", sa.String(128), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("lease_token", sa.String(64), nullable=True),
    sa.Column("lease_node_id", sa.String(128), nullable=True),
    sa.Column("lease_key_id", BigId, nullable=True),
    sa.Column("lease_expires_at", Timestamp, nullable=True),
    sa.Column("not_before", Timestamp, nullable=False, server_default="0"),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("started_at", Timestamp, nullable=True),
    sa.Column("completed_at", Timestamp, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
    # A job of an OpenAI batch: which batch, its input line (from 1), the line's custom_id.
    sa.Column("batch_id", sa.String(64), nullable=True),
    sa.Column("batch_line", sa.Integer(), nullable=True),
    sa.Column("custom_id", sa.Text(), nullable=True),
    # The submit's ``priority`` and the rank it gives the job among its owner's
    # jobs: created_at - priority * aging step (queue/fair_share.py).
    sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("claim_rank", Timestamp, nullable=False),
    sa.UniqueConstraint("id", name="uq_jobs_id"),
    # The claim path: QUEUED jobs of one model in FIFO order; not_before is a
    # residual filter (backed-off jobs are few), so a claim reads O(max_jobs)
    # index entries whether 1k or 1M jobs are queued.
    sa.Index("ix_jobs_claim", "status", "model", "seq"),
    # The fair claim: owners with QUEUED jobs of a model (a skip scan), and
    # each owner's next job by rank.
    sa.Index("ix_jobs_fair", "status", "model", "owner_key_id", "claim_rank", "seq"),
    # Claims for "*" and status-filtered admin listings.
    sa.Index("ix_jobs_status_seq", "status", "seq"),
    # Lease expiry sweeps and restart grace.
    sa.Index("ix_jobs_status_lease", "status", "lease_expires_at"),
    # Backed-off jobs only (partial: fresh and released jobs have not_before = 0
    # and cost this index nothing), for "when is the next retry due".
    sa.Index(
        "ix_jobs_backoff",
        "not_before",
        sqlite_where=sa.text("status = 'QUEUED' AND not_before > 0"),
        postgresql_where=sa.text("status = 'QUEUED' AND not_before > 0"),
    ),
    # A USER key's own jobs, newest first.
    sa.Index("ix_jobs_owner_seq", "owner_key_id", "seq"),
    # A batch's jobs by status (partial: native jobs never enter it), for its
    # progress counts, its cancel and its output files.
    sa.Index(
        "ix_jobs_batch",
        "batch_id",
        "status",
        sqlite_where=sa.text("batch_id IS NOT NULL"),
        postgresql_where=sa.text("batch_id IS NOT NULL"),
    ),
    # Finished jobs only (partial: submits and claims never touch it), for the
    # pool status: what finished in the last minutes, by model and key (covering),
    # and the latest failures; retention's "finished before the cutoff" reads it too.
    sa.Index(
        "ix_jobs_finished",
        "status",
        "completed_at",
        "model",
        "owner_key_id",
        sqlite_where=sa.text("completed_at IS NOT NULL"),
        postgresql_where=sa.text("completed_at IS NOT NULL"),
    ),
    # A key's unfinished jobs only (partial), for its ``max_queued`` quota: a
    # count reads as many entries as the key has jobs waiting, never its history.
    sa.Index(
        "ix_jobs_owner_unfinished",
        "owner_key_id",
        sqlite_where=sa.text("status IN ('QUEUED', 'PROCESSING')"),
        postgresql_where=sa.text("status IN ('QUEUED', 'PROCESSING')"),
    ),
)

leases = sa.Table(
    "leases",
    metadata,
    # One row per claim ever made, so a token we never issued (rejected) can be
    # told apart from one we issued and took back (stale).
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column(
        "job_seq",
        BigId,
        sa.ForeignKey("jobs.seq", name="fk_leases_job_seq", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("node_id", sa.String(128), nullable=False),
    sa.Column("key_id", BigId, nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("claimed_at", Timestamp, nullable=False),
    # NULL while held; then completed / failed / retried / released / expired / cancelled.
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("ended_at", Timestamp, nullable=True),
    sa.UniqueConstraint("token", name="uq_leases_token"),
    sa.Index("ix_leases_job_seq", "job_seq"),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("node_id", sa.String(128), primary_key=True),
    sa.Column("key_name", sa.String(128), nullable=False),
    sa.Column("version", sa.String(64), nullable=True),
    sa.Column("models", sa.Text(), nullable=False),
    sa.Column("first_seen", Timestamp, nullable=False),
    sa.Column("last_seen", Timestamp, nullable=False),
    sa.Index("ix_nodes_last_seen", "last_seen"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("owner_key_id", BigId, primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    # JSON list of the job ids the first request created, in order.
    sa.Column("job_ids", sa.Text(), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # SHA-256 of the first request's body: the key may not replay another one.
    # NULL for keys recorded before revision 0007 (they replay whatever the body).
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.Index("ix_idempotency_created_at", "created_at"),
)

#: Files of the OpenAI surface (``/openai/v1/files``): uploads and batch outputs.
files = sa.Table(
    "files",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("owner_key_id", BigId, nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("filename", sa.String(512), nullable=False),
    sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("lines", sa.Integer(), nullable=False, server_default="0"),
    # ``uploading`` while its chunks are written (invisible), then ``processed``.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # The upload's Idempotency-Key and the SHA-256 of what it uploaded (NULL: none):
    # the key lives as long as the file, and a retry is answered this file.
    sa.Column("idempotency_key", sa.String(256), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.UniqueConstraint("id", name="uq_files_id"),
    sa.Index("ix_files_owner_seq", "owner_key_id", "seq"),
    sa.Index("uq_files_idempotency", "owner_key_id", "idempotency_key", unique=True),
)

#: A file's bytes, in parts of at most ``files.CHUNK_BYTES``, in order.
file_chunks = sa.Table(
    "file_chunks",
    metadata,
    sa.Column("file_seq", BigId, primary_key=True),
    sa.Column("part", sa.Integer(), primary_key=True),
    sa.Column("data", sa.LargeBinary(), nullable=False),
)

#: Batches of the OpenAI surface; their lines are ordinary jobs (``jobs.batch_id``).
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("owner_key_id", BigId, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("endpoint", sa.String(256), nullable=False),
    sa.Column("input_file_id", sa.String(64), nullable=False),
    sa.Column("completion_window", sa.String(32), nullable=False),
    sa.Column("metadata", sa.Text(), nullable=True),
    # JSON list of BatchLineError, when validation failed.
    sa.Column("errors", sa.Text(), nullable=True),
    sa.Column("output_file_id", sa.String(64), nullable=True),
    sa.Column("error_file_id", sa.String(64), nullable=True),
    # request_counts as of the end (while running they are counted from the jobs).
    sa.Column("total", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("completed", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("in_progress_at", Timestamp, nullable=True),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("finalizing_at", Timestamp, nullable=True),
    sa.Column("completed_at", Timestamp, nullable=True),
    sa.Column("failed_at", Timestamp, nullable=True),
    sa.Column("expired_at", Timestamp, nullable=True),
    sa.Column("cancelling_at", Timestamp, nullable=True),
    sa.Column("cancelled_at", Timestamp, nullable=True),
    # The input file's line count when created: while the batch is validating,
    # ``lines - total`` of them count against the owner's max_queued (quotas.py).
    sa.Column("lines", sa.Integer(), nullable=False, server_default="0"),
    # The create's Idempotency-Key and the SHA-256 of its body (NULL: none).
    sa.Column("idempotency_key", sa.String(256), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.UniqueConstraint("id", name="uq_batches_id"),
    sa.Index("ix_batches_owner_seq", "owner_key_id", "seq"),
    sa.Index("uq_batches_idempotency", "owner_key_id", "idempotency_key", unique=True),
    sa.Index("ix_batches_status", "status"),
)

#: Fair share: each owner's virtual time per model (claims served / weight).
fair_shares = sa.Table(
    "fair_shares",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("owner_key_id", BigId, primary_key=True),
    sa.Column("virtual_time", Timestamp, nullable=False, server_default="0"),
)

#: What each key's jobs used, per hour (the hour's start, Unix seconds), kept
#: when the jobs themselves are purged: ``GET /v1/usage`` and the metrics read it.
key_usage = sa.Table(
    "key_usage",
    metadata,
    sa.Column("key_id", BigId, primary_key=True),
    sa.Column("hour", Timestamp, primary_key=True),
    # Jobs that ended in the hour, by final status.
    sa.Column("completed", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("failed", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("cancelled", sa.BigInteger(), nullable=False, server_default="0"),
    # From the results' ``usage``.
    sa.Column("prompt_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("completion_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    # Claim of the last attempt to the node's delivery, for delivered jobs.
    sa.Column("llm_seconds", Timestamp, nullable=False, server_default="0"),
    sa.Index("ix_key_usage_hour", "hour"),
)
