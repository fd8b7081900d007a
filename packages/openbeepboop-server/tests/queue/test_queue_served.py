"""Which models are served: the window, node counts, and the snapshot submits are checked against.

See docs/server.md, "Which models are served".
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import MODEL_NOT_SERVED, FetchRequest, HeartbeatRequest
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import Caller
from openbeepboop_server.nodes import ServedModels, ServedSnapshot
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request


def _fetch(queue: QueueService, node: Caller, node_id: str, *models: str) -> None:
    queue.claim(node, FetchRequest(node_id=node_id, models=list(models)))


def test_served_by_counts_nodes_per_model_and_any_model_nodes_apart(
    queue: QueueService, node: Caller
) -> None:
    _fetch(queue, node, "a", "llama3", "qwen")
    _fetch(queue, node, "b", "llama3")
    _fetch(queue, node, "c", "*", "mistral")
    served = queue.served_by()
    assert served.models() == ["llama3", "mistral", "qwen"]
    assert [served.nodes_for(m) for m in ("llama3", "mistral", "qwen")] == [3, 1, 2]
    assert served.any_model == 1
    # A `*` node serves a model nobody names, without making it a model.
    assert served.serves("anything") and served.nodes_for("anything") == 1


def test_nodes_declaring_the_same_models_each_count(queue: QueueService, node: Caller) -> None:
    for index in range(3):
        _fetch(queue, node, f"same-{index}", "qwen", "llama3")
        _fetch(queue, node, f"any-{index}", "*", "mistral")
    served = queue.served_by()
    assert [served.nodes_for(m) for m in ("llama3", "mistral", "qwen")] == [6, 3, 6]
    assert served.any_model == 3


def test_a_node_counts_only_within_the_window(
    queue: QueueService, node: Caller, clock: FakeClock
) -> None:
    window = queue.policy.node_seen_seconds
    _fetch(queue, node, "stays", "kept")
    _fetch(queue, node, "goes", "gone", "kept")
    clock.advance(window / 2)
    _fetch(queue, node, "stays", "kept")
    clock.advance(window / 2 + 0.5)
    served = queue.served_by()
    assert served.models() == ["kept"]
    assert served.nodes_for("kept") == 1
    # A heartbeat is a contact too.
    queue.heartbeat(node, HeartbeatRequest(node_id="goes", models=["gone"]))
    assert queue.served_by().models() == ["gone", "kept"]


def test_submit_warnings_name_each_unserved_model_once(queue: QueueService, node: Caller) -> None:
    _fetch(queue, node, "a", "served")
    warnings = queue.submit_warnings(["nobody", "served", "nobody", "also-nobody"])
    assert [(w.code, w.model) for w in warnings] == [
        (MODEL_NOT_SERVED, "nobody"),
        (MODEL_NOT_SERVED, "also-nobody"),
    ]
    assert '"nobody"' in warnings[0].message
    assert f"{queue.policy.node_seen_seconds:g} s" in warnings[0].message


def test_a_node_serving_any_model_silences_every_warning(queue: QueueService, node: Caller) -> None:
    assert queue.submit_warnings(["x"])
    _fetch(queue, node, "wild", "*")
    assert queue.submit_warnings(["x", "y"]) == []


def test_the_snapshot_forgets_a_silent_node_at_the_next_refresh(
    queue: QueueService, node: Caller, clock: FakeClock
) -> None:
    _fetch(queue, node, "n", "m")
    assert queue.submit_warnings(["m"]) == []  # counted at once, before any refresh
    clock.advance(queue.policy.node_seen_seconds + 1)
    assert queue.submit_warnings(["m"]) == []  # until the snapshot is re-read...
    queue.refresh_served()
    assert [w.model for w in queue.submit_warnings(["m"])] == ["m"]


def test_a_model_name_that_could_break_a_header_is_escaped(
    queue: QueueService,
) -> None:
    (warning,) = queue.submit_warnings(["évil\r\nX-Injected: 1"])
    assert warning.model == "évil\r\nX-Injected: 1"
    assert warning.message.isascii() and "\r" not in warning.message
    assert "\n" not in warning.message


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    """Every SQL statement run on ``db`` while the test runs."""
    seen: list[str] = []

    def record(*args: object) -> None:
        seen.append(str(args[2]))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(db.engine, "before_cursor_execute", record)


def test_checking_a_submit_reads_nothing(
    queue: QueueService, alice: Caller, node: Caller, statements: list[str]
) -> None:
    _fetch(queue, node, "n", "served")
    queue.refresh_served()
    statements.clear()
    for model in ("served", "unserved") * 50:
        job = queue.submit(alice, chat_request(model=model))
        queue.submit_warnings([job.model])
    assert statements, "the submits ran no statement at all?"
    assert not [s for s in statements if "nodes" in s], "a submit read the node registry"


def test_snapshot_note_adds_only_what_it_lacks() -> None:
    snapshot = ServedSnapshot(window=60)
    snapshot.note(["a"])
    first = snapshot.served
    snapshot.note(["a"])
    snapshot.note(None)
    assert snapshot.served is first  # names are added in place: no copy per node
    assert snapshot.warnings(["a"]) == []
    assert [w.model for w in snapshot.warnings(["b"])] == ["b"]
    snapshot.note(["b", "*"])
    assert snapshot.served.any_model == 1 and snapshot.warnings(["c"]) == []
    snapshot.replace(ServedModels())
    assert [w.model for w in snapshot.warnings(["a"])] == ["a"]
