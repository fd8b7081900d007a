"""What the dispatch layer works with: the running app's database, queue, wake-ups and metrics.

The app's :class:`~openbeepboop_server.context.ServerContext` is one; dispatch
names only what it uses, so that it does not import the module that assembles
the app (which imports dispatch).
"""

from __future__ import annotations

from typing import Protocol

from openbeepboop_server.config import Settings
from openbeepboop_server.db.database import Database
from openbeepboop_server.dispatch.wakeups import Wakeups
from openbeepboop_server.metrics import Metrics
from openbeepboop_server.queue.service import QueueService


class DispatchContext(Protocol):
    """The live objects of one running app that dispatch reads."""

    settings: Settings
    db: Database
    queue: QueueService
    wakeups: Wakeups
    metrics: Metrics
    #: Seconds between database re-checks of a long-poll, for changes made by other replicas.
    recheck_seconds: float
