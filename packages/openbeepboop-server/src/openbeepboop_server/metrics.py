"""Prometheus metrics of one app, in a registry of its own.

Counters and the latency histogram are updated as requests are served; the
queue depth and the number of nodes are read from the database when
``/metrics`` is scraped (so they are right with several replicas, and cost
nothing between scrapes). Each app owns its :class:`CollectorRegistry`, so
several apps in one process (tests) never clash.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from openbeepboop_schemas import JobStatus
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from openbeepboop_server.db.faults import describe, is_unavailable

logger = logging.getLogger(__name__)

#: Content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency buckets from a sub-millisecond poll to a full 30 s long-poll.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class _TotalsLike(Protocol):
    completed: int
    failed: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    llm_seconds: float


class _KeyUsageLike(Protocol):
    @property
    def key_name(self) -> str: ...

    @property
    def totals(self) -> _TotalsLike: ...


class _ServedLike(Protocol):
    def models(self) -> list[str]: ...


class QueueReader(Protocol):
    """What the scrape-time collector needs from the queue service."""

    def queue_depth(
        self, statuses: Iterable[JobStatus] | None = None
    ) -> list[tuple[str, str, int]]: ...

    def finished_counts(self) -> list[tuple[str, int]]: ...

    def served_now(self) -> _ServedLike: ...

    def nodes_seen(self) -> int: ...

    def usage_totals(self) -> Sequence[_KeyUsageLike]: ...


def usage_counters(usage: Sequence[_KeyUsageLike]) -> list[Metric]:
    """Per-key usage as counters, from the usage table (the same on every replica).

    Read at scrape time from the all-time sums of ``key_usage``, so they only
    grow, survive restarts and retention purges, and agree across replicas.
    """
    jobs = CounterMetricFamily(
        "openbeepboop_key_jobs",
        "Jobs that ended, by key name and final status.",
        labels=["key", "status"],
    )
    tokens = CounterMetricFamily(
        "openbeepboop_key_tokens",
        "Tokens of the results, by key name and kind (prompt, completion).",
        labels=["key", "kind"],
    )
    seconds = CounterMetricFamily(
        "openbeepboop_key_llm_seconds",
        "LLM seconds (claim of a delivered job's last attempt to its delivery), by key name.",
        labels=["key"],
    )
    for row in usage:
        totals, key = row.totals, label_value(row.key_name)
        for status, count in (
            ("COMPLETED", totals.completed),
            ("FAILED", totals.failed),
            ("CANCELLED", totals.cancelled),
        ):
            jobs.add_metric([key, status], count)
        tokens.add_metric([key, "prompt"], totals.prompt_tokens)
        tokens.add_metric([key, "completion"], totals.completion_tokens)
        seconds.add_metric([key], totals.llm_seconds)
    return [jobs, tokens, seconds]


#: Models with a series of their own in ``openbeepboop_jobs`` (QUEUED and
#: PROCESSING each), the most live jobs first; the rest are summed under
#: ``model="other"``. A pool runs a few dozen models; every distinct name a
#: USER key submits for was once a series per status for ``retention_days``
#: (60,000 invented names: 60,000 series, 5.7 MB a scrape).
MAX_MODEL_SERIES = 100
#: The ``model`` label of the live jobs of models past :data:`MAX_MODEL_SERIES`.
OTHER_MODELS = "other"
#: Live statuses: the only ones counted per model.
LIVE_STATUSES = (JobStatus.QUEUED, JobStatus.PROCESSING)

# Characters a reader splitting lines (Python's ``splitlines``, a file read
# with universal newlines) takes for a line break, and other controls: the
# text format escapes only ``\n``, ``"`` and ``\``, so a raw CR in a model
# name broke the page for such readers.
_UNSAFE_IN_LABEL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def label_value(text: str) -> str:
    """``text`` with control characters and line separators written as ``\\xNN``/``\\uNNNN``."""
    return _UNSAFE_IN_LABEL.sub(lambda match: ascii(match.group())[1:-1], text)


def job_series(
    live: Iterable[tuple[str, str, int]],
    served: Iterable[str],
    finished: Iterable[tuple[str, int]],
    max_models: int = MAX_MODEL_SERIES,
) -> list[tuple[str, str, int]]:
    """The ``(status, model, count)`` samples of ``openbeepboop_jobs``, bounded.

    Live jobs (``live``: QUEUED and PROCESSING by model) get a series per
    model for at most ``max_models`` models, those with the most live jobs
    first and then served models with none (so a served model's queue reads
    0, not absent); the rest are summed under :data:`OTHER_MODELS`. Finished
    jobs are counted per status only, with an empty ``model`` (which
    Prometheus stores as no label): their models are history, not load.
    """
    by_model: dict[str, dict[str, int]] = {}
    for status, model, count in live:
        by_model.setdefault(model, {})[status] = count
    for model in served:
        by_model.setdefault(model, {})
    ranked = sorted(by_model, key=lambda model: (-sum(by_model[model].values()), model))
    samples: list[tuple[str, str, int]] = []
    for model in ranked[:max_models]:
        counts = by_model[model]
        samples.extend((s.value, label_value(model), counts.get(s.value, 0)) for s in LIVE_STATUSES)
    rest = ranked[max_models:]
    if rest:
        for status in LIVE_STATUSES:
            total = sum(by_model[model].get(status.value, 0) for model in rest)
            samples.append((status.value, OTHER_MODELS, total))
    samples.extend((status, "", count) for status, count in finished)
    return samples


class _QueueCollector:
    """Reads queue depth and recent nodes from the database at scrape time."""

    def __init__(self, source: Callable[[], QueueReader | None]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        # Declaring nothing stops the registry from calling collect() (and
        # so the database) when the collector is registered.
        return []

    def collect(self) -> Iterable[Metric]:
        queue = self._source()
        up = GaugeMetricFamily(
            "openbeepboop_database_up", "1 if the last scrape could read the database."
        )
        if queue is None:
            up.add_metric([], 0)
            yield up
            return
        jobs = GaugeMetricFamily(
            "openbeepboop_jobs",
            "Jobs in the database: QUEUED and PROCESSING by model (the busiest "
            f"{MAX_MODEL_SERIES}, the rest as model={OTHER_MODELS!r}), finished ones by status.",
            labels=["status", "model"],
        )
        nodes = GaugeMetricFamily(
            "openbeepboop_nodes_seen", "Nodes that fetched or heartbeated recently."
        )
        try:
            depth = job_series(
                queue.queue_depth(LIVE_STATUSES),
                queue.served_now().models(),
                queue.finished_counts(),
            )
            # A count in SQL: parsing every node's declared models (up to 256
            # names each) on each scrape cost seconds with thousands of nodes.
            seen = queue.nodes_seen()
            usage = usage_counters(queue.usage_totals())
        except Exception as exc:
            if is_unavailable(exc):
                logger.warning("metrics scrape: the database is unavailable (%s)", describe(exc))
            else:
                logger.exception("metrics scrape could not read the queue")
            up.add_metric([], 0)
            yield up
            return
        for status, model, count in depth:
            jobs.add_metric([status, model], count)
        nodes.add_metric([], seen)
        up.add_metric([], 1)
        yield from (jobs, nodes, *usage, up)


class Metrics:
    """Every metric of one app."""

    def __init__(self, source: Callable[[], QueueReader | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.submitted = Counter(
            "openbeepboop_jobs_submitted",
            "Jobs accepted by submit and bulk submit.",
            registry=self.registry,
        )
        self.claimed = Counter(
            "openbeepboop_jobs_claimed", "Leases handed to nodes.", registry=self.registry
        )
        self.outcomes = Counter(
            "openbeepboop_outcomes",
            "Outcomes delivered by nodes, by kind (result, error, release) and ack.",
            labelnames=["kind", "ack"],
            registry=self.registry,
        )
        self.cancelled = Counter(
            "openbeepboop_jobs_cancelled", "Jobs cancelled by users.", registry=self.registry
        )
        self.lease_expiries = Counter(
            "openbeepboop_lease_expiries",
            "Leases that expired (job requeued or failed).",
            registry=self.registry,
        )
        self.purged = Counter(
            "openbeepboop_jobs_purged",
            "Finished jobs deleted after the retention period.",
            registry=self.registry,
        )
        self.expired = Counter(
            "openbeepboop_jobs_expired",
            "Queued jobs failed as expired past [queue] max_queued_days.",
            registry=self.registry,
        )
        self.long_polls = Gauge(
            "openbeepboop_long_polls",
            "Long-polls waiting in this process: kind poll (clients), fetch, lease_watch (nodes).",
            labelnames=["kind"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "openbeepboop_http_request_duration_seconds",
            "HTTP request latency by method, route and status (long-polls included).",
            labelnames=["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_QueueCollector(source))

    def render(self) -> bytes:
        """The text exposition of every metric (reads the database: call off the event loop)."""
        return generate_latest(self.registry)
