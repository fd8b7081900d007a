"""Random public identifiers: job ids and lease tokens."""

from __future__ import annotations

import secrets

from openbeepboop_schemas import JOB_ID_PREFIX

LEASE_TOKEN_PREFIX = "lease-"  # noqa: S105 - a prefix, not a secret


def new_job_id() -> str:
    """``job-`` plus 24 hex characters (96 random bits): unguessable, URL-safe."""
    return JOB_ID_PREFIX + secrets.token_hex(12)


def new_lease_token() -> str:
    """A lease token; whoever holds it may deliver the job's outcome."""
    return LEASE_TOKEN_PREFIX + secrets.token_urlsafe(24)
