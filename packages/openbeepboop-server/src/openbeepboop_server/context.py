"""What a running app holds: settings, database, services, wake-ups, metrics.

It is created by the lifespan (the database is opened at start-up, not at
import or at ``create_app``) and kept on ``app.state``; HTTP handlers reach it
through :func:`openbeepboop_server.http.context.get_context`, the housekeeper
and the dispatch layer are given it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openbeepboop_server.config import Settings
from openbeepboop_server.db.database import Database
from openbeepboop_server.dispatch.empty_looks import EmptyLooks
from openbeepboop_server.dispatch.slots import LongPollSlots, ModelSlots
from openbeepboop_server.dispatch.status_cache import StatusCache
from openbeepboop_server.dispatch.wakeups import Wakeups
from openbeepboop_server.keys import KeyService
from openbeepboop_server.metrics import Metrics
from openbeepboop_server.queue.service import QueueService

#: Seconds between the database re-checks for all parked long-polls of a process
#: (changes made by other replicas: :mod:`openbeepboop_server.dispatch.recheck`).
RECHECK_SECONDS = 1.0


@dataclass
class ServerContext:
    """The live objects of one running app."""

    settings: Settings
    db: Database
    queue: QueueService
    keys: KeyService
    wakeups: Wakeups
    metrics: Metrics
    recheck_seconds: float = RECHECK_SECONDS
    #: The pool status as last served (``GET /v1/status``).
    status_cache: StatusCache = field(default_factory=StatusCache)
    #: Idle nodes' last empty fetches (:mod:`~openbeepboop_server.dispatch.empty_looks`).
    empty_looks: EmptyLooks = field(default_factory=EmptyLooks)
    poll_slots: LongPollSlots = field(init=False)
    fetch_slots: LongPollSlots = field(init=False)
    lease_watch_slots: LongPollSlots = field(init=False)
    sync_chat_slots: LongPollSlots = field(init=False)
    fetch_models: ModelSlots = field(init=False)

    def __post_init__(self) -> None:
        server = self.settings.server
        self.poll_slots = LongPollSlots("polls", server.max_polls_per_key, "max_polls_per_key")
        self.fetch_slots = LongPollSlots(
            "fetches", server.max_fetches_per_key, "max_fetches_per_key"
        )
        # A node keeps at most one fetch and one lease watch open, so the
        # fetch limit bounds the watches too, each in a pool of its own: a
        # busy node's watch never takes the slot its next fetch needs.
        self.lease_watch_slots = LongPollSlots(
            "lease watches", server.max_fetches_per_key, "max_fetches_per_key"
        )
        self.fetch_models = ModelSlots(self.settings.limits.max_fetch_models_per_key)
        # Synchronous chats wait in a pool of their own: an SDK script gathering
        # hundreds of calls must not take the slots the key's polls need.
        self.sync_chat_slots = LongPollSlots(
            "chat completions",
            self.settings.openai.max_sync_requests_per_key,
            "max_sync_requests_per_key",
            section="openai",
            advice="send large volumes as a batch (files.create, then batches.create)",
        )
