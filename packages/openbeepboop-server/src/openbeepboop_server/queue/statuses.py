"""Job statuses as the strings rows, poll entries and acks carry, derived once from the schemas.

The schemas' :data:`~openbeepboop_schemas.TERMINAL_STATUSES` is the one
definition; these sets of its values let the per-request loops compare plain
strings, and the SQL that filters on them binds one fixed, ordered tuple.
"""

from __future__ import annotations

from openbeepboop_schemas import TERMINAL_STATUSES, JobStatus

#: COMPLETED, FAILED, CANCELLED: the job can never change again.
TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
#: The same, ordered, for SQL ``IN`` lists built once at import.
TERMINAL_IN_SQL = tuple(sorted(TERMINAL))
#: QUEUED, PROCESSING: a wait on the job may still end with an answer.
LIVE = frozenset(status.value for status in JobStatus if status not in TERMINAL_STATUSES)
#: A job waiting to be claimed (again, after a retryable error or a release).
QUEUED = JobStatus.QUEUED.value
