"""The cyclic garbage collector in a long-running server: start-up frozen, pauses counted.

CPython's full collection walks every container object alive, with the
event loop stopped. What imports and start-up leave (about 90,000 objects
of SQLAlchemy, pydantic, Starlette and the app) lives as long as the
process, yet every full collection walked it: 63-80 ms on the bench machine,
every 15-20 s under steady traffic, for every request in flight. Once the
server is up, ``openbeepboop-server start`` collects once and freezes what
is alive (:func:`freeze_startup_heap`): later full collections walk only
what requests left alive, ~4 ms on a quiet server and about half as long as
before with 1,000 long-polls parked (docs/performance.md, "Start-up heap
frozen"). The node does the same once LiteLLM is imported.

Each collection's pause is counted by :class:`GcPauses` and served on
``/metrics`` as ``openbeepboop_gc_pause_seconds{generation}``, so a latency
tail can be matched against the collector. The counts are plain integers
updated by the collector's callback and read at scrape time: a
``prometheus_client`` metric takes a non-reentrant lock, and a collection
can start while the same thread holds it.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

#: Upper bounds of the pause buckets, in seconds (a young collection takes
#: tens of microseconds, a full one with a large heap a few hundred ms).
PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
GENERATIONS = 3


def freeze_startup_heap() -> int:
    """Collect once, then keep everything still alive out of later collections.

    Garbage is collected first, so nothing collectable is frozen. Returns
    how many objects are frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauses:
    """Counts every collection's pause by generation (a ``gc.callbacks`` entry).

    Also a ``prometheus_client`` collector: register it with a registry to
    serve the pauses, and the number of frozen objects, at scrape time.
    """

    def __init__(self) -> None:
        # Per generation: one count per bucket and one past the last (+Inf),
        # not cumulative; and the sum of the pauses.
        self._counts = [[0] * (len(PAUSE_BUCKETS) + 1) for _ in range(GENERATIONS)]
        self._sums = [0.0] * GENERATIONS
        self._started = 0.0

    def install(self) -> None:
        """Start counting (once per process is enough; a second call changes nothing)."""
        if self._observe not in gc.callbacks:
            gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        # Collections never overlap (one at a time, under the GIL), so these
        # updates need no lock.
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = info["generation"]
        self._counts[generation][bisect.bisect_left(PAUSE_BUCKETS, pause)] += 1
        self._sums[generation] += pause

    def describe(self) -> list[Metric]:
        """Nothing declared up front: the registry then only calls :meth:`collect` to scrape."""
        return []

    def collect(self) -> Iterable[Metric]:
        """The pause histogram per generation and the frozen-object gauge, as they are now."""
        pauses = HistogramMetricFamily(
            "openbeepboop_gc_pause_seconds",
            "Garbage collector pauses (the event loop stopped), by generation (2: full).",
            labels=["generation"],
        )
        for generation in range(GENERATIONS):
            counts = list(self._counts[generation])  # a copy: the collector may add meanwhile
            cumulative, running = [], 0
            for bound, count in zip((*map(str, PAUSE_BUCKETS), "+Inf"), counts, strict=True):
                running += count
                cumulative.append((bound, running))
            # The count is the +Inf bucket of the same copy, so the two always agree.
            pauses.add_metric([str(generation)], cumulative, self._sums[generation])
        frozen = GaugeMetricFamily(
            "openbeepboop_gc_frozen_objects",
            "Objects kept out of garbage collection since start-up (gc.freeze).",
        )
        frozen.add_metric([], gc.get_freeze_count())
        return [pauses, frozen]
