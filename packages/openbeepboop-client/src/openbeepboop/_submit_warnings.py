"""Warnings a server attaches to a submit: a job that was queued but may wait long.

The server queues a job for a model no node has served recently (a node may
come later) and says so in the answer's ``warnings``. The client keeps them on
the job handles (``job.warnings``) and logs each one once at WARNING on this
module's logger, so a script that never looks still hears about it; the
command line prints its own ``Warning: ...`` line instead and silences this
logger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from openbeepboop_schemas import JobWarning

logger = logging.getLogger(__name__)


def distinct(warnings: Iterable[JobWarning]) -> list[JobWarning]:
    """Each warning once (the same code about the same model is the same warning), in order."""
    first: dict[tuple[str, str | None], JobWarning] = {}
    for warning in warnings:
        first.setdefault((warning.code, warning.model), warning)
    return list(first.values())


def log_warnings(warnings: Iterable[JobWarning]) -> None:
    """Log each distinct warning once."""
    for warning in distinct(warnings):
        logger.warning("%s", warning.message)


def warnings_for(model: str, warnings: Sequence[JobWarning]) -> list[JobWarning]:
    """The warnings of a bulk answer that concern a job for ``model``.

    A bulk answer lists each warning once, naming its model; one that names
    none concerns every job of the answer.
    """
    return [warning for warning in warnings if warning.model in (None, model)]
