"""What ``cancel`` says about each job: cancelled now, or already finished and left alone.

The server answers a cancel with the job's entry afterwards, and a job that
was cancelled yesterday looks the same as one cancelled just now. So the
command reads the jobs' statuses first (one poll) and tells the cases apart:
a fresh cancel, a job already cancelled (nothing to do), a job that had
already completed or failed (its result stays), and one that finished while
the cancel was on its way.
"""

from __future__ import annotations

from openbeepboop_schemas import JobStatus, PollEntry

_CANCELLED = JobStatus.CANCELLED.value
_UNFINISHED = frozenset({JobStatus.QUEUED.value, JobStatus.PROCESSING.value})


def cancel_line(before: PollEntry | None, after: PollEntry) -> str:
    """One line for one job, from its status before the cancel and its entry after."""
    was = before.status if before is not None else None
    if was == _CANCELLED:
        return f"{after.id}: already CANCELLED (nothing to do)"
    if was is not None and was not in _UNFINISHED:
        kept = "its result stays" if was == JobStatus.COMPLETED.value else "nothing to cancel"
        return f"{after.id}: already {was}; not cancelled ({kept})"
    if after.status == _CANCELLED:
        return f"{after.id}: CANCELLED" + (f" (was {was})" if was else "")
    return f"{after.id}: {after.status} before the cancel reached it; not cancelled"
