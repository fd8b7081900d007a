"""Warnings a server attaches to a submit: a job that was queued but may wait long.

The server queues a job for a model no node has served recently (a node may
come later) and says so in the answer's ``warnings``. A new user who then
calls ``job.get(wait=True)`` would otherwise wait in silence, so the client
does not keep it quiet: it keeps them on the job handles (``job.warnings``)
and raises each one once per call, the Python way, with :func:`warnings.warn`
and a class of its own::

    UserWarning
     └── SubmitWarning              any warning a submit answered with
          └── ModelNotServedWarning  code "model_not_served"

pointing at the caller's line (not this package's), so Python's default
filter shows it once per place and message, and a script silences it with
``warnings.filterwarnings("ignore", category=openbeepboop.SubmitWarning)``.
The command line prints its own ``Warning: ...`` line instead and ignores
these.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Sequence

from openbeepboop_schemas import JobWarning

#: Frames from files under this directory are the library's, not the caller's.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class SubmitWarning(UserWarning):
    """A warning the server gave about a job it accepted; ``warning`` is its wire form."""

    def __init__(self, warning: JobWarning) -> None:
        super().__init__(warning.message)
        self.warning = warning

    @property
    def code(self) -> str:
        """The server's code for it, e.g. ``model_not_served``."""
        return self.warning.code

    @property
    def model(self) -> str | None:
        """The model it is about, if one."""
        return self.warning.model


class ModelNotServedWarning(SubmitWarning):
    """No node serving the job's model was seen recently: the job waits until one asks."""


#: Warning code → the class raised for it; other codes raise :class:`SubmitWarning`.
WARNING_CLASSES: dict[str, type[SubmitWarning]] = {"model_not_served": ModelNotServedWarning}


def distinct(found: Iterable[JobWarning]) -> list[JobWarning]:
    """Each warning once (the same code about the same model is the same warning), in order."""
    first: dict[tuple[str, str | None], JobWarning] = {}
    for warning in found:
        first.setdefault((warning.code, warning.model), warning)
    return list(first.values())


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside this package (the user's call)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def warn_about(found: Iterable[JobWarning]) -> None:
    """Raise each distinct warning once, as a :class:`SubmitWarning` at the caller's line."""
    for warning in distinct(found):
        category = WARNING_CLASSES.get(warning.code, SubmitWarning)
        warnings.warn(category(warning), stacklevel=_caller_stacklevel())


def warnings_for(model: str, found: Sequence[JobWarning]) -> list[JobWarning]:
    """The warnings of a bulk answer that concern a job for ``model``.

    A bulk answer lists each warning once, naming its model; one that names
    none concerns every job of the answer.
    """
    return [warning for warning in found if warning.model in (None, model)]
