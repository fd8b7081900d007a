"""Random public identifiers: job, file and batch ids and lease tokens.

All start with the time in milliseconds (12 hex digits) followed by random
bits (80 for jobs and lease tokens, 48 for files and batches), like a ULID.
The random part makes them unguessable; the time prefix makes new ids sort
after old ones, so inserting them into their unique indexes appends near the
right edge of the B-tree instead of touching a random page — which keeps
bulk submits fast when millions of jobs are stored — and lets a listing's
cursor say where its item was after the item is gone (queue/views.py).
"""

from __future__ import annotations

import secrets
import time

from openbeepboop_schemas import JOB_ID_PREFIX

LEASE_TOKEN_PREFIX = "lease-"  # noqa: S105 - a prefix, not a secret


#: Hex digits of the millisecond an id begins with.
TIME_HEX_DIGITS = 12


def _time_ordered(random_bytes: int = 10) -> str:
    return f"{int(time.time() * 1000) & 0xFFFF_FFFF_FFFF:012x}{secrets.token_hex(random_bytes)}"


def new_time_ordered_id(prefix: str) -> str:
    """``prefix`` plus 24 hex characters: the millisecond, then 48 random bits (files, batches)."""
    return prefix + _time_ordered(6)


def new_job_id() -> str:
    """``job-`` plus 32 hex characters: time-ordered, 80 random bits."""
    return JOB_ID_PREFIX + _time_ordered()


def new_lease_token() -> str:
    """A lease token; whoever holds it may deliver the job's outcome."""
    return LEASE_TOKEN_PREFIX + _time_ordered() + secrets.token_hex(6)
