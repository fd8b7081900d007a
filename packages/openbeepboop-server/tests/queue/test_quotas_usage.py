"""Per-key quotas, the rate limit, usage counters, scopes and expiry, on every backend.

See docs/server.md, "Quotas and rate limits", "Usage per key" and "Scoped
and expiring keys".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import (
    ErrorOutcome,
    FetchRequest,
    Lease,
    NodeError,
    ResultOutcome,
    Role,
    SubmitRequest,
)
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import jobs, key_usage
from openbeepboop_server.errors import NodeIdTaken, QuotaExceeded, ScopeRefused
from openbeepboop_server.keys import Caller, KeyService, KeySettings
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.retention import retention_cutoff
from openbeepboop_server.queue.service import QueueService
from openbeepboop_server.queue.usage import (
    HOUR_SECONDS,
    TOKEN_CEILING,
    KeyTotals,
    add_totals,
    hour_of,
)

from tests.support.core import FakeClock, chat_request, completion, migrated_database


@pytest.fixture
def svc(any_db: Database, policy: QueuePolicy, clock: FakeClock) -> QueueService:
    return QueueService(any_db, policy, clock=clock)


@pytest.fixture
def keyring(any_db: Database, clock: FakeClock) -> KeyService:
    return KeyService(any_db, clock=clock)


def _caller(keys: KeyService, role: Role, name: str, **settings: object) -> tuple[str, Caller]:
    key, _ = keys.create(role, name, KeySettings(**settings))  # type: ignore[arg-type]
    caller = keys.authenticate(key)
    assert caller is not None
    return key, caller


def _count(db: Database, caller: Caller) -> int:
    with db.read() as conn:
        query = sa.select(sa.func.count()).where(jobs.c.owner_key_id == caller.key_id)
        return int(conn.execute(query).scalar_one())


def test_max_queued_counts_unfinished_jobs_and_a_bulk_is_all_or_nothing(
    svc: QueueService, keyring: KeyService, any_db: Database
) -> None:
    _, user = _caller(keyring, Role.USER, "capped", max_queued=5)
    _, node = _caller(keyring, Role.NODE, "node")
    first = svc.submit_many(user, [chat_request() for _ in range(4)], "first")
    with pytest.raises(QuotaExceeded) as refused:
        svc.submit_many(user, [chat_request(), chat_request()])
    assert refused.value.code == "max_queued_exceeded" and refused.value.retry_after >= 1
    assert _count(any_db, user) == 4  # nothing of the refused bulk
    svc.submit(user, chat_request())
    with pytest.raises(QuotaExceeded):
        svc.submit(user, chat_request())
    # PROCESSING still counts; a finished job frees its place.
    (lease,) = svc.claim(node, FetchRequest(node_id="n1", models=["*"]))
    with pytest.raises(QuotaExceeded):
        svc.submit(user, chat_request())
    result = ResultOutcome(job_id=lease.job_id, lease_token=lease.lease_token, result=completion())
    svc.deliver(node, SubmitRequest(node_id="n1", outcomes=[result]))
    svc.submit(user, chat_request())
    # At the quota again, an idempotent replay stores nothing, so it is not refused.
    with pytest.raises(QuotaExceeded):
        svc.submit(user, chat_request())
    replayed = svc.submit_many(user, [chat_request() for _ in range(4)], "first")
    assert [job.id for job in replayed] == [job.id for job in first]


def test_the_rate_limit_allows_a_minute_then_one_per_interval(
    svc: QueueService, keyring: KeyService, any_db: Database, clock: FakeClock
) -> None:
    _, user = _caller(keyring, Role.USER, "paced", rate_limit=6)  # one per 10 s
    for _ in range(6):
        svc.submit(user, chat_request())
    with pytest.raises(QuotaExceeded) as refused:
        svc.submit_many(user, [chat_request(), chat_request()])
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.retry_after == 10
    assert _count(any_db, user) == 6
    clock.advance(9.5)
    with pytest.raises(QuotaExceeded) as again:
        svc.submit(user, chat_request())
    assert again.value.retry_after == 1
    clock.advance(0.5)
    svc.submit_many(user, [chat_request(), chat_request()])  # a bulk is one request
    assert _count(any_db, user) == 8
    # Lifting the limit applies at the next request.
    keyring.update("paced", {"rate_limit": None})
    unlimited = _reload(keyring, "paced", user)
    for _ in range(10):
        svc.submit(unlimited, chat_request())


def test_a_refused_request_does_not_spend_the_rate(
    svc: QueueService, keyring: KeyService, clock: FakeClock
) -> None:
    _, user = _caller(keyring, Role.USER, "both", rate_limit=2, max_queued=1)
    svc.submit(user, chat_request())
    with pytest.raises(QuotaExceeded) as refused:
        svc.submit(user, chat_request())
    assert refused.value.code == "max_queued_exceeded"
    keyring.update("both", {"max_queued": None})
    key_user = _reload(keyring, "both", user)
    svc.submit(key_user, chat_request())  # the refused one spent nothing: 2 of 2
    with pytest.raises(QuotaExceeded):
        svc.submit(key_user, chat_request())


def _reload(keys: KeyService, name: str, caller: Caller) -> Caller:
    (info,) = [info for info in keys.list() if info.name == name]
    return Caller(
        key_id=caller.key_id,
        key_name=name,
        role=caller.role,
        max_queued=info.settings.max_queued,
        rate_limit=info.settings.rate_limit,
        models=info.settings.models,
        node_id=info.settings.node_id,
    )


def _finish(svc: QueueService, node: Caller, leases: list[Lease], usage: dict[str, int]) -> None:
    outcomes = [
        ResultOutcome(
            job_id=lease.job_id, lease_token=lease.lease_token, result=completion(usage=usage)
        )
        for lease in leases
    ]
    svc.deliver(node, SubmitRequest(node_id="n1", outcomes=outcomes))


def test_usage_counts_statuses_tokens_and_llm_seconds_and_survives_the_purge(
    svc: QueueService, keyring: KeyService, clock: FakeClock, any_db: Database
) -> None:
    _, alice = _caller(keyring, Role.USER, "alice")
    _, bob = _caller(keyring, Role.USER, "bob")
    _, node = _caller(keyring, Role.NODE, "node")
    svc.submit_many(alice, [chat_request() for _ in range(4)])
    bobs = svc.submit(bob, chat_request("other-model"))
    leases = svc.claim(node, FetchRequest(node_id="n1", models=["llama3"], max_jobs=3))
    clock.advance(2.5)
    _finish(svc, node, leases[:2], {"prompt_tokens": 7, "completion_tokens": 3})
    failure = ErrorOutcome(
        job_id=leases[2].job_id,
        lease_token=leases[2].lease_token,
        error=NodeError(message="no", type="invalid_request_error", retryable=False),
    )
    svc.deliver(node, SubmitRequest(node_id="n1", outcomes=[failure]))
    svc.cancel(bob, bobs.id)
    queued = svc.list_jobs(alice, status=None).data[0]
    svc.cancel(alice, queued.id)

    (row,) = svc.usage("alice").data
    assert (row.completed, row.failed, row.cancelled) == (2, 1, 1)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (14, 6, 20)
    assert row.llm_seconds == pytest.approx(7.5)  # three delivered jobs, 2.5 s each
    everyone = {entry.key: entry for entry in svc.usage(None).data}
    assert set(everyone) == {"alice", "bob"} and everyone["bob"].cancelled == 1
    assert everyone["bob"].llm_seconds == 0

    # Windows are whole hours; the counters outlive the jobs.
    now = clock.now
    assert svc.usage("alice", since=now + HOUR_SECONDS).data[0].completed == 0
    assert svc.usage("alice", since=now, until=now + 1).data[0].completed == 2
    clock.advance(svc.policy.retention_days * 86_400 + 10)
    assert retention_cutoff(svc.policy, clock.now) > now
    assert svc.purge_finished() == 5
    assert _count(any_db, alice) == 0
    assert svc.usage("alice").data[0].completed == 2
    totals = {row.key_name: row.totals for row in svc.usage_totals()}
    assert totals["alice"].prompt_tokens == 14


def test_usage_totals_saturate_per_hour_and_sum_over_saturated_hours(
    svc: QueueService, keyring: KeyService, clock: FakeClock, any_db: Database
) -> None:
    _, alice = _caller(keyring, Role.USER, "alice")
    _, node = _caller(keyring, Role.NODE, "node")
    absurd = {"prompt_tokens": 10**20, "completion_tokens": -7}
    for _ in range(2):  # two hours, each saturated
        svc.submit_many(alice, [chat_request(), chat_request()])
        leases = svc.claim(node, FetchRequest(node_id="n1", models=["*"], max_jobs=2))
        _finish(svc, node, leases, absurd)
        clock.advance(HOUR_SECONDS)
    # A row stored before the bound (2**63 - 1, as two huge deliveries once
    # made on SQLite) is bounded by the upsert itself, without overflowing.
    with any_db.write() as conn:
        add_totals(conn, clock.now, {alice.key_id: KeyTotals(prompt_tokens=1)})
        conn.execute(
            key_usage.update()
            .where(key_usage.c.hour == hour_of(clock.now))
            .values(prompt_tokens=2**63 - 1)
        )
        add_totals(conn, clock.now, {alice.key_id: KeyTotals(prompt_tokens=2**63 - 1)})

    (row,) = svc.usage("alice").data
    assert row.completed == 4
    assert row.prompt_tokens == 3 * TOKEN_CEILING
    assert row.completion_tokens == 0  # negative counts count as nothing
    totals = {row.key_name: row.totals for row in svc.usage_totals()}
    assert totals["alice"].prompt_tokens == 3 * TOKEN_CEILING


def test_scopes_refuse_other_models_and_node_ids(svc: QueueService, keyring: KeyService) -> None:
    _, scoped = _caller(keyring, Role.NODE, "scoped", models=("a", "b"), node_id="box")
    svc.claim(scoped, FetchRequest(node_id="box", models=["a"]))
    for fetch in (
        FetchRequest(node_id="box", models=["c"]),
        FetchRequest(node_id="box", models=["*"]),
        FetchRequest(node_id="box", models=["a"], serves=["a", "c"]),
        FetchRequest(node_id="elsewhere", models=["a"]),
    ):
        with pytest.raises(ScopeRefused):
            svc.claim(scoped, fetch)
    _, stranger = _caller(keyring, Role.NODE, "stranger")
    with pytest.raises(NodeIdTaken):
        svc.claim(stranger, FetchRequest(node_id="box", models=["a"]))
    _, admin = _caller(keyring, Role.ADMIN, "root")
    svc.claim(admin, FetchRequest(node_id="box", models=["a"]))  # an ADMIN acts for any node


def test_an_expired_key_does_not_authenticate(keyring: KeyService, clock: FakeClock) -> None:
    key, info = keyring.create(Role.USER, "temp", KeySettings(expires_at=clock.now + 60))
    assert keyring.authenticate(key) is not None
    assert info.status(clock.now) == "active"
    clock.advance(61)
    assert keyring.authenticate(key) is None
    (listed,) = keyring.list()
    assert listed.status(clock.now) == "expired"
    keyring.update("temp", {"expires_at": None})
    assert keyring.authenticate(key) is not None


def test_settings_that_do_not_fit_the_role_are_refused(keyring: KeyService) -> None:
    from openbeepboop_server.errors import InvalidKeySettings

    for role, settings in (
        (Role.NODE, KeySettings(max_queued=1)),
        (Role.USER, KeySettings(models=("a",))),
        (Role.METRICS, KeySettings(rate_limit=5)),
        (Role.USER, KeySettings(max_queued=0)),
        (Role.NODE, KeySettings(models=("*",))),
    ):
        with pytest.raises(InvalidKeySettings):
            keyring.create(role, f"bad-{role.value}", settings)
    assert keyring.update("nobody", {"max_queued": 3}) is None


def test_max_queued_and_the_rate_hold_across_replicas(
    postgres_url_factory: Callable[[], str], policy: QueuePolicy
) -> None:
    """Two services on one PostgreSQL database, submitting at once, never pass a quota."""
    url = postgres_url_factory()
    databases = [migrated_database(url), migrated_database(url)]
    try:
        replicas = [QueueService(database, policy) for database in databases]
        keyring = KeyService(databases[0])
        _, capped = _caller(keyring, Role.USER, "capped", max_queued=30)
        _, paced = _caller(keyring, Role.USER, "paced", rate_limit=20)

        def hammer(replica: QueueService, caller: Caller) -> int:
            accepted = 0
            for _ in range(25):
                try:
                    replica.submit_many(caller, [chat_request(), chat_request()])
                    accepted += 1
                except QuotaExceeded:
                    pass
            return accepted

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            capped_runs = [pool.submit(hammer, replica, capped) for replica in replicas * 2]
            paced_runs = [pool.submit(hammer, replica, paced) for replica in replicas * 2]
            capped_accepted = sum(run.result() for run in capped_runs)
            paced_accepted = sum(run.result() for run in paced_runs)
        elapsed = time.monotonic() - started
        assert capped_accepted == 15 and _count(databases[0], capped) == 30
        # 20 per minute with bursts of 20: 100 requests at once let 20 through, plus one
        # per 3 s they took (the clock is real; a loaded machine may be slow).
        assert 20 <= paced_accepted <= 20 + int(elapsed / 3) + 1
        assert _count(databases[0], paced) == 2 * paced_accepted
    finally:
        for database in databases:
            database.dispose()
