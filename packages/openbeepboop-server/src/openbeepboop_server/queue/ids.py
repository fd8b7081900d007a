"""Random public identifiers: job ids and lease tokens.

Both start with the time in milliseconds (12 hex digits) followed by 80 random
bits, like a ULID. The random part makes them unguessable; the time prefix
makes new ids sort after old ones, so inserting them into their unique
indexes appends near the right edge of the B-tree instead of touching a random
page — which keeps bulk submits fast when millions of jobs are stored.
"""

from __future__ import annotations

import secrets
import time

from openbeepboop_schemas import JOB_ID_PREFIX

LEASE_TOKEN_PREFIX = "lease-"  # noqa: S105 - a prefix, not a secret


def _time_ordered() -> str:
    return f"{int(time.time() * 1000) & 0xFFFF_FFFF_FFFF:012x}{secrets.token_hex(10)}"


def new_job_id() -> str:
    """``job-`` plus 32 hex characters: time-ordered, 80 random bits."""
    return JOB_ID_PREFIX + _time_ordered()


def new_lease_token() -> str:
    """A lease token; whoever holds it may deliver the job's outcome."""
    return LEASE_TOKEN_PREFIX + _time_ordered() + secrets.token_hex(6)
