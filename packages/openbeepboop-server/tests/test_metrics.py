"""``openbeepboop_jobs`` stays bounded however many models users invent; the page parses.

See docs/server.md, "Health and metrics". Every distinct model name a USER
key ever submitted for was a series per status for ``retention_days``:
60,000 invented names made 60,366 series and a 5.7 MB page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openbeepboop_schemas import JobStatus
from openbeepboop_server.metrics import (
    MAX_MODEL_SERIES,
    OTHER_MODELS,
    Metrics,
    QueueReader,
    label_value,
)
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class _Served:
    names: list[str] = field(default_factory=list)

    def models(self) -> list[str]:
        return sorted(self.names)


@dataclass
class _Queue:
    """A queue service as the scrape sees it."""

    live: list[tuple[str, str, int]]
    finished: list[tuple[str, int]] = field(default_factory=list)
    served: list[str] = field(default_factory=list)

    def queue_depth(self, statuses: object = None) -> list[tuple[str, str, int]]:
        return self.live

    def finished_counts(self) -> list[tuple[str, int]]:
        return self.finished

    def served_now(self) -> _Served:
        return _Served(self.served)

    def nodes_seen(self) -> int:
        return 0

    def usage_totals(self) -> list[object]:
        return []


def _jobs_samples(queue: _Queue) -> dict[tuple[str, str], float]:
    reader: QueueReader = queue  # type: ignore[assignment]
    page = Metrics(lambda: reader).render().decode()
    # Read as a line-splitting reader would (universal newlines).
    text = "\n".join(page.splitlines()) + "\n"
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return {
        (sample.labels["status"], sample.labels.get("model", "")): sample.value
        for sample in families["openbeepboop_jobs"].samples
    }


def test_live_jobs_are_counted_per_model_up_to_the_cap_the_rest_as_other() -> None:
    live = [("QUEUED", f"model-{index:05d}", 1) for index in range(5_000)]
    live.append(("QUEUED", "busy", 40))
    live.append(("PROCESSING", "busy", 2))
    queue = _Queue(live, finished=[("COMPLETED", 60_000), ("FAILED", 3)], served=["idle"])
    samples = _jobs_samples(queue)
    per_model = {model for _, model in samples if model not in ("", OTHER_MODELS)}
    assert len(per_model) == MAX_MODEL_SERIES
    assert samples[("QUEUED", "busy")] == 40 and samples[("PROCESSING", "busy")] == 2
    # Everything is counted once: the per-model series and "other" add up.
    queued = sum(v for (status, model), v in samples.items() if status == "QUEUED")
    assert queued == 5_040
    assert samples[("QUEUED", OTHER_MODELS)] == 5_000 - (MAX_MODEL_SERIES - 1)
    # Finished jobs: one series per status, no model.
    assert samples[("COMPLETED", "")] == 60_000 and samples[("FAILED", "")] == 3
    assert len(samples) == 2 * MAX_MODEL_SERIES + 2 + 2


def test_a_served_model_with_nothing_queued_reads_zero() -> None:
    samples = _jobs_samples(_Queue([("QUEUED", "llama3", 2)], served=["llama3", "qwen"]))
    assert samples[("QUEUED", "qwen")] == 0 and samples[("PROCESSING", "qwen")] == 0
    assert samples[("QUEUED", "llama3")] == 2
    assert ("QUEUED", OTHER_MODELS) not in samples


def test_control_characters_in_a_label_do_not_break_the_page() -> None:
    # Names stored before control characters were refused are still counted.
    hostile = ["cr\rlf", "x\ny", 'a"b', "back\\slash", "\u2028sep", "tab\there"]
    samples = _jobs_samples(_Queue([("QUEUED", name, 1) for name in hostile]))
    models = {model for _, model in samples}
    assert {"cr\\rlf", "x\ny", 'a"b', "back\\slash", "\\u2028sep", "tab\\there"} <= models


def test_label_value_leaves_ordinary_names_alone() -> None:
    assert label_value("llama3:8b-instruct/üñï😀") == "llama3:8b-instruct/üñï😀"
    assert label_value("a\rb\x00c\x85") == "a\\rb\\x00c\\x85"


def test_statuses_are_the_schemas_statuses() -> None:
    samples = _jobs_samples(_Queue([], finished=[(JobStatus.CANCELLED.value, 1)]))
    assert samples == {("CANCELLED", ""): 1}
