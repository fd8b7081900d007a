"""Reading a fetch answer lease by lease: one lease the node cannot read costs only its own job.

A fetch answer is a JSON array of leases. One the node cannot validate (a
server of another version, a corrupted row, a broken proxy) must not turn the
good ones beside it into an outage that leaves them all leased until they
expire. Each lease is read on its own: the good ones run. A bad one whose
``job_id`` and ``lease_token`` are usable is handed back as a *retryable*
error of type :data:`INVALID_LEASE` naming what was wrong: the attempt
counts, so a job no node can read ends ``FAILED`` with that message after
``max_attempts`` instead of going round the nodes for ever, while a node
that can read it (a newer one) still gets its chance. A bad lease without a
usable ref cannot be named to the server: it is logged once and skipped (it
expires on the server). An answer that is not a JSON array at all is still
the server's failure (docs/node.md, "A broken or hostile server").

An answer holding more leases than the fetch asked for (``max_jobs``) would
make the node hold more jobs than its ``concurrency`` and prefetch allow.
The first ``max_jobs`` are read as above; the rest are handed back at once
as *releases* (the same hand-back a lease of a paused backend gets: no
attempt counted, the job is requeued for another node), never run. One
warning per answer says how many; an extra without a usable ref, or naming
a job the node keeps from the same answer, is only dropped (it expires).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from openbeepboop_schemas import (
    MAX_ERROR_MESSAGE_CHARS,
    ErrorOutcome,
    Lease,
    LeaseRef,
    NodeError,
    ReleaseOutcome,
)
from pydantic import TypeAdapter, ValidationError

logger = logging.getLogger(__name__)

#: The error type a lease the node could not read is handed back with.
INVALID_LEASE = "invalid_lease"
#: The most validation problems one error message lists (the count says how many there were).
MAX_PROBLEMS_NAMED = 5


@functools.cache
def _lease_list() -> TypeAdapter[list[Lease]]:
    return TypeAdapter(list[Lease])


@dataclass(frozen=True)
class FetchAnswer:
    """The leases of one fetch answer that the node can run, and hand-backs for the rest."""

    leases: list[Lease]
    #: Error outcomes for leases the node could not read but can name.
    unreadable: list[ErrorOutcome] = field(default_factory=list)
    #: Releases of the leases beyond the ``max_jobs`` the fetch asked for.
    surplus: list[ReleaseOutcome] = field(default_factory=list)


def read_fetch_answer(body: bytes, max_jobs: int | None = None) -> FetchAnswer:
    """Read a fetch answer to a fetch for ``max_jobs`` leases (None: any number).

    Raises ValidationError only if it is not a JSON array at all.
    """
    try:
        # The common case in one pass of pydantic's JSON parser.
        leases = _lease_list().validate_json(body)
    except ValidationError as whole:
        items = _json_array(body)
        if items is None:
            raise whole from None
        if max_jobs is None or len(items) <= max_jobs:
            return _one_by_one(items)
        answer = _one_by_one(items[:max_jobs])
        return _with_surplus(answer, [_ref_of(item) for item in items[max_jobs:]], max_jobs)
    if max_jobs is None or len(leases) <= max_jobs:
        return FetchAnswer(leases)
    extra: list[LeaseRef | None] = [
        LeaseRef(job_id=lease.job_id, lease_token=lease.lease_token) for lease in leases[max_jobs:]
    ]
    return _with_surplus(FetchAnswer(leases[:max_jobs]), extra, max_jobs)


def _with_surplus(answer: FetchAnswer, extra: list[LeaseRef | None], max_jobs: int) -> FetchAnswer:
    """``answer`` with releases for the ``extra`` leases past ``max_jobs``; one warning."""
    kept = {lease.job_id for lease in answer.leases}
    kept.update(outcome.job_id for outcome in answer.unreadable)
    releases: list[ReleaseOutcome] = []
    for ref in extra:
        if ref is not None and ref.job_id not in kept:
            kept.add(ref.job_id)  # a job named twice among the extras is released once
            releases.append(ReleaseOutcome(job_id=ref.job_id, lease_token=ref.lease_token))
    logger.warning(
        "the server sent %d lease(s) to a fetch for at most %d: handing %d extra one(s) "
        "back unworked (released, no attempt counted)%s",
        max_jobs + len(extra),
        max_jobs,
        len(releases),
        f"; {len(extra) - len(releases)} more dropped (they expire on the server)"
        if len(releases) < len(extra)
        else "",
    )
    return FetchAnswer(answer.leases, answer.unreadable, releases)


def _json_array(body: bytes) -> list[Any] | None:
    """The items of a JSON array, or None when ``body`` is not one."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past Python's stack
        return None
    return value if isinstance(value, list) else None


def _one_by_one(items: list[Any]) -> FetchAnswer:
    leases: list[Lease] = []
    unreadable: list[ErrorOutcome] = []
    nameless: list[str] = []
    for item in items:
        try:
            # Through JSON again, so a lease is read exactly as in the whole answer.
            leases.append(Lease.model_validate_json(json.dumps(item)))
        except (ValidationError, ValueError, RecursionError) as exc:
            problem = describe(exc)
            ref = _ref_of(item)
            if ref is None:
                nameless.append(problem)
                continue
            logger.warning(
                "job %s: the server's lease is unreadable, handing it back: %s",
                ref.job_id,
                problem,
            )
            unreadable.append(_hand_back(ref, problem))
    if nameless:
        logger.warning(
            "skipped %d lease(s) of a fetch answer without a usable job_id and "
            "lease_token (they expire on the server): %s",
            len(nameless),
            nameless[0],
        )
    return FetchAnswer(leases, unreadable)


def describe(exc: Exception) -> str:
    """What was wrong with a lease, by field, without echoing its values."""
    if not isinstance(exc, ValidationError):
        return f"{type(exc).__name__}: {exc}"[:200]
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    named = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or '(lease)'}: {problem['msg']}"
        for problem in problems[:MAX_PROBLEMS_NAMED]
    )
    more = len(problems) - MAX_PROBLEMS_NAMED
    return named + (f"; and {more} more" if more > 0 else "")


def _ref_of(item: Any) -> LeaseRef | None:
    """The lease's ``job_id`` and ``lease_token``, if both are usable on the wire."""
    if not isinstance(item, dict):
        return None
    try:
        return LeaseRef.model_validate(
            {"job_id": item.get("job_id"), "lease_token": item.get("lease_token")}
        )
    except ValidationError:
        return None


def _hand_back(ref: LeaseRef, problem: str) -> ErrorOutcome:
    message = f"the node could not read the lease the server sent: {problem}"
    return ErrorOutcome(
        job_id=ref.job_id,
        lease_token=ref.lease_token,
        error=NodeError(
            message=message[:MAX_ERROR_MESSAGE_CHARS], type=INVALID_LEASE, retryable=True
        ),
    )
