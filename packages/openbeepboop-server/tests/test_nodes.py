"""The node registry: recorded by claims and heartbeats, listed for operators."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openbeepboop_server.db.database import Database
from openbeepboop_server.errors import TooManyModels, TooManyNodes
from openbeepboop_server.nodes import (
    NodeAdmission,
    NodeInfo,
    list_nodes,
    purge_excess_nodes,
    record_node,
    served_models,
)

from tests.support.core import migrated_database, sqlite_url_for


@pytest.fixture
def node_db(tmp_path: Path) -> Iterator[Database]:
    db = migrated_database(sqlite_url_for(tmp_path / "nodes.db"))
    yield db
    db.dispose()


def _record(db: Database, node_id: str, now: float, **kwargs: object) -> None:
    values: dict[str, object] = {"key_name": "k", "models": None, "version": None, **kwargs}
    with db.write() as conn:
        record_node(conn, node_id=node_id, now=now, **values)  # type: ignore[arg-type]


def test_a_new_node_is_registered(node_db: Database) -> None:
    _record(node_db, "gpu-1", 10.0, models=["b", "a", "a"], version="0.1.0")
    with node_db.read() as conn:
        assert list_nodes(conn) == [
            NodeInfo(
                node_id="gpu-1", key_name="k", version="0.1.0", models=["a", "b"], last_seen=10.0
            )
        ]


def test_refreshing_keeps_unknown_fields(node_db: Database) -> None:
    _record(node_db, "gpu-1", 10.0, models=["a"], version="0.1.0")
    _record(node_db, "gpu-1", 20.0, key_name="other-key")
    with node_db.read() as conn:
        (info,) = list_nodes(conn)
    assert (info.models, info.version, info.key_name, info.last_seen) == (
        ["a"],
        "0.1.0",
        "other-key",
        20.0,
    )


def test_a_node_first_seen_by_heartbeat_has_no_models(node_db: Database) -> None:
    _record(node_db, "hb", 5.0)
    with node_db.read() as conn:
        assert list_nodes(conn)[0].models == []


def test_list_is_most_recent_first(node_db: Database) -> None:
    _record(node_db, "a", 1.0)
    _record(node_db, "b", 3.0)
    _record(node_db, "c", 2.0)
    with node_db.read() as conn:
        assert [n.node_id for n in list_nodes(conn)] == ["b", "c", "a"]


def test_served_models_since(node_db: Database) -> None:
    _record(node_db, "old", 1.0, models=["old-model", "shared"])
    _record(node_db, "new", 10.0, models=["*", "shared", "new-model"])
    with node_db.read() as conn:
        assert served_models(conn, since=5.0) == ["new-model", "shared"]
        assert served_models(conn, since=0.0) == ["new-model", "old-model", "shared"]
        assert served_models(conn, since=11.0) == []


def test_postgresql_upsert(postgres_url_factory) -> None:  # type: ignore[no-untyped-def]
    db = migrated_database(postgres_url_factory())
    try:
        _record(db, "gpu-1", 1.0, models=["a"])
        _record(db, "gpu-1", 2.0, models=["b"], version="2")
        with db.read() as conn:
            (info,) = list_nodes(conn)
        assert (info.models, info.version, info.last_seen) == (["b"], "2", 2.0)
    finally:
        db.dispose()


def test_a_key_past_its_live_node_ids_is_refused_until_one_ages_out() -> None:
    admission = NodeAdmission(limit=2, window=90.0)
    admission.admit(1, "a", 0.0)
    admission.admit(1, "b", 10.0)
    admission.admit(1, "a", 50.0)  # known ids are always welcome
    with pytest.raises(TooManyNodes, match=r"max_nodes_per_key = 2"):
        admission.admit(1, "c", 60.0)
    admission.admit(2, "c", 60.0)  # another key counts apart
    # "b" was last seen at 10: unseen for the window, it no longer counts.
    admission.admit(1, "c", 101.0)
    assert admission.live(1) == 2
    with pytest.raises(TooManyNodes):
        admission.admit(1, "d", 102.0)


def test_admission_bounds_the_distinct_names_a_keys_live_nodes_declare() -> None:
    admission = NodeAdmission(limit=10, window=90.0, max_models=3)
    admission.admit(1, "a", 0.0, ["x", "y"])
    admission.admit(1, "b", 10.0, ["y", "z"])  # "y" counts once
    assert admission.declared(1) == 3
    with pytest.raises(TooManyModels, match=r"max_fetch_models_per_key = 3"):
        admission.admit(1, "c", 20.0, ["w"])
    assert admission.live(1) == 2  # the refused node was not admitted either
    admission.admit(1, "b", 30.0)  # None: declares what it did before
    admission.admit(1, "b", 40.0, ["w", "y"])  # replaces its own list: "z" is gone
    assert admission.declared(1) == 3
    admission.admit(2, "c", 40.0, ["p", "q", "r"])  # another key counts apart
    # "a" was last seen at 0: unseen for the window, its "x" no longer counts.
    admission.admit(1, "c", 95.0, ["v"])
    assert admission.declared(1) == 3


def test_purge_keeps_per_key_only_the_most_recent_nodes_that_are_not_live(
    node_db: Database,
) -> None:
    for index in range(5):
        _record(node_db, f"old-{index}", 10.0 + index)
    _record(node_db, "live", 500.0)
    _record(node_db, "other-key-old", 1.0, key_name="other")
    with node_db.write() as conn:
        assert purge_excess_nodes(conn, seen_before=400.0, keep=2) == 3
    with node_db.read() as conn:
        left = sorted(node.node_id for node in list_nodes(conn))
    assert left == ["live", "old-3", "old-4", "other-key-old"]
