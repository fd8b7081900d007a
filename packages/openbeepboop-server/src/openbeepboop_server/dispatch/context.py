"""What the dispatch layer works with: the running app's database, queue, wake-ups and metrics.

The app's :class:`~openbeepboop_server.context.ServerContext` is one; dispatch
names only what it uses, so that it does not import the module that assembles
the app (which imports dispatch).
"""

from __future__ import annotations

from typing import Protocol

from openbeepboop_server.config import Settings
from openbeepboop_server.db.database import Database
from openbeepboop_server.dispatch.empty_looks import EmptyLooks
from openbeepboop_server.dispatch.slots import LongPollSlots, ModelSlots
from openbeepboop_server.dispatch.wakeups import Wakeups
from openbeepboop_server.keys import KeyService
from openbeepboop_server.metrics import Metrics
from openbeepboop_server.queue.service import QueueService


class DispatchContext(Protocol):
    """The live objects of one running app that dispatch reads."""

    settings: Settings
    db: Database
    queue: QueueService
    #: The API keys (the re-check asks which keys of waiting long-polls still work).
    keys: KeyService
    wakeups: Wakeups
    metrics: Metrics
    #: Seconds between the process's database re-checks for all parked long-polls
    #: (changes made by other replicas: :mod:`.recheck`).
    recheck_seconds: float
    #: Client polls with ``wait`` held per key, against ``[server] max_polls_per_key``.
    poll_slots: LongPollSlots
    #: Node fetches with ``wait`` held per key, against ``[server] max_fetches_per_key``.
    fetch_slots: LongPollSlots
    #: Node lease watches with ``wait`` held per key, against ``[server] max_fetches_per_key``.
    lease_watch_slots: LongPollSlots
    #: Distinct model names of the fetches with ``wait`` held per key, against
    #: ``[limits] max_fetch_models_per_key``.
    fetch_models: ModelSlots
    #: What idle nodes' last fetches found, so an unchanged queue is not asked again.
    empty_looks: EmptyLooks
