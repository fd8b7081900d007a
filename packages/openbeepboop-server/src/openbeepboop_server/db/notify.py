"""Cross-replica change notices: what a write transaction tells the other replicas.

On PostgreSQL several server processes ("replicas") share one database; each
holds its own long-polls. A commit on one replica must wake the long-polls of
the others, so every write transaction that changes jobs records here, on its
connection, what changed:

* ``available``: new claimable jobs, as a count per model (a submit, a batch
  turned into jobs) — fetchers of those models are woken; a submit claimed
  for a parked node in its own transaction leaves nothing to wake;
* ``requeued``: jobs went back to the queue (a retry, a release, an expired
  lease) — every fetcher looks again;
* ``finished``: ids of jobs that may now be terminal — polls watching them
  read them;
* ``keys``: an API key was revoked or its settings changed — every replica
  drops the keys it has cached (:mod:`openbeepboop_server.key_cache`).

:meth:`Database.write <openbeepboop_server.db.database.Database.write>` sends
what was recorded as ``NOTIFY`` inside the same transaction, in the same
round trip as its ``COMMIT``; PostgreSQL delivers it only if, and only when, the commit succeeds,
so a listener that reads after a notice always sees the change. A
transaction sends one notification however many jobs it touched (a bulk
submit of 1,000 jobs is one ``{"model": 1000}``), split only when the
payload would pass PostgreSQL's 8,000-byte limit. A change too large to
describe even then is sent as "look at everything" (``overflow``): the
receivers run their periodic re-check at once.

The channel is ``obb:`` plus the connection's schema, so two deployments
sharing a database in different schemas do not wake each other. On SQLite
nothing is recorded: one process serves a SQLite file, and the periodic
re-check covers anyone else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from openbeepboop_server.db import postgres

#: Where the pending notice of a transaction is kept (``Connection.info``).
_INFO_KEY = "openbeepboop_notice"
#: PostgreSQL refuses payloads of 8,000 bytes or more; stay clear of it.
MAX_PAYLOAD_BYTES = 7_800
#: The channel of the connection's schema (identifiers are at most 63 bytes); the
#: listener asks for it with this query, writers name it the same way (:mod:`.postgres`).
CHANNEL_QUERY = "SELECT left('obb:' || current_schema(), 63)"


@dataclass
class Notice:
    """What one transaction (or one part of it) changed, and which replica changed it."""

    replica: str = ""
    available: dict[str, int] = field(default_factory=dict)
    requeued: bool = False
    finished: list[str] = field(default_factory=list)
    #: A key was revoked or changed: cached keys must be read again.
    keys: bool = False
    #: Too much to describe: receivers re-check everything they wait on.
    overflow: bool = False

    @property
    def empty(self) -> bool:
        """True when nothing was recorded."""
        return not (self.available or self.requeued or self.finished or self.keys or self.overflow)

    def payloads(self) -> list[str]:
        """This notice as JSON payloads, each under :data:`MAX_PAYLOAD_BYTES`."""
        packer = _Packer(self.replica, keys=self.keys)
        if self.overflow:
            return [packer.overflow()]
        if self.requeued:
            packer.flag("q")
        for model, count in self.available.items():
            if not packer.add("m", model, count):
                return [packer.overflow()]
        for job_id in self.finished:
            if not packer.add("f", job_id):
                return [packer.overflow()]
        return packer.done()


class _Packer:
    """Fills payloads greedily; sizes are exact because the JSON is ASCII-only.

    The keys flag rides on every payload (it is tiny, and so no receiver can
    take one part of a split notice without it).
    """

    def __init__(self, replica: str, keys: bool = False) -> None:
        self._replica = replica
        self._keys = keys
        self._done: list[str] = []
        self._fresh()

    def _fresh(self) -> None:
        self._current = self._head()
        self._size = len(_dump(self._current))

    def flag(self, name: str) -> None:
        self._current[name] = 1
        self._size = len(_dump(self._current))

    def add(self, kind: str, name: str, count: int = 0) -> bool:
        """Add one model (``m``, with its count) or finished id (``f``); False if it cannot fit."""
        # A new key costs its name, brackets, quotes and a comma; an item its text and a comma.
        cost = len(_dump(name)) + 1 + (len(str(count)) + 1 if kind == "m" else 0)
        for attempt in range(2):
            opening = 0 if kind in self._current else len(kind) + 6
            if self._size + cost + opening <= MAX_PAYLOAD_BYTES:
                if kind == "m":
                    self._current.setdefault("m", {})[name] = count
                else:
                    self._current.setdefault("f", []).append(name)
                self._size += cost + opening
                return True
            if attempt or len(self._current) == len(self._head()):
                break  # too large even for an empty payload
            self._flush()
        return False

    def overflow(self) -> str:
        return _dump({**self._head(), "x": 1})

    def _head(self) -> dict[str, Any]:
        """What every payload carries: the sender, and the keys flag."""
        return {"r": self._replica, "k": 1} if self._keys else {"r": self._replica}

    def _flush(self) -> None:
        self._done.append(_dump(self._current))
        self._fresh()

    def done(self) -> list[str]:
        if len(self._current) > len(self._head()) or (self._keys and not self._done):
            self._flush()
        return self._done


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def decode(payload: str) -> Notice | None:
    """The notice in a payload, or None if it is not one of ours."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("r"), str):
        return None
    models = data.get("m", {})
    finished = data.get("f", [])
    if not isinstance(models, dict) or not isinstance(finished, list):
        return None
    return Notice(
        replica=data["r"],
        available={str(k): int(v) for k, v in models.items() if isinstance(v, int)},
        requeued=bool(data.get("q")),
        finished=[str(job_id) for job_id in finished],
        keys=bool(data.get("k")),
        overflow=bool(data.get("x")),
    )


# -- recording, inside a write transaction -------------------------------------------


def _pending(conn: sa.Connection) -> Notice | None:
    """The transaction's notice, created on first use; None on SQLite (nothing to tell)."""
    if conn.dialect.name != "postgresql":
        return None
    notice: Notice | None = conn.info.get(_INFO_KEY)
    if notice is None:
        notice = conn.info[_INFO_KEY] = Notice()
    return notice


def jobs_available(conn: sa.Connection, models: Iterable[str]) -> None:
    """Record new claimable jobs, one entry of ``models`` per job."""
    notice = _pending(conn)
    if notice is not None:
        for model in models:
            notice.available[model] = notice.available.get(model, 0) + 1


def jobs_taken(conn: sa.Connection, models: Iterable[str]) -> None:
    """Record jobs claimed in the transaction that made them claimable (a submit handed
    to a parked node): other replicas' fetchers have nothing to wake for."""
    notice = _pending(conn)
    if notice is not None:
        for model in models:
            left = notice.available.get(model, 0) - 1
            if left > 0:
                notice.available[model] = left
            else:
                notice.available.pop(model, None)


def jobs_requeued(conn: sa.Connection) -> None:
    """Record that jobs went back to the queue (their models are not at hand)."""
    notice = _pending(conn)
    if notice is not None:
        notice.requeued = True


def jobs_finished(conn: sa.Connection, job_ids: Iterable[str]) -> None:
    """Record jobs that may have reached a terminal status."""
    notice = _pending(conn)
    if notice is not None:
        notice.finished.extend(job_ids)


def keys_changed(conn: sa.Connection) -> None:
    """Record that an API key was revoked or its settings changed."""
    notice = _pending(conn)
    if notice is not None:
        notice.keys = True


def send_pending(conn: sa.Connection, replica: str) -> None:
    """Send what the transaction recorded and commit it (the notice is delivered on commit).

    One round trip for both (:func:`.postgres.notify_and_commit`); with
    nothing recorded, the caller's own commit ends the transaction.
    """
    notice: Notice | None = conn.info.pop(_INFO_KEY, None)
    if notice is None or notice.empty:
        return
    notice.replica = replica
    postgres.notify_and_commit(conn, notice.payloads())


def forget_pending(conn: sa.Connection) -> None:
    """Drop what a rolled-back transaction recorded (its changes never happened)."""
    conn.info.pop(_INFO_KEY, None)
