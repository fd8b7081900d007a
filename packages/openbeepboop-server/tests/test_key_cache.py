"""The key cache (key_cache.py): used only while enabled, never past an entry's age or a
key's expiry, and never refilled by a lookup that read the database before a drop."""

from __future__ import annotations

from openbeepboop_server.key_cache import KeyCache

from tests.support.core import FakeClock


def test_nothing_is_kept_or_served_until_enabled_or_after_disable() -> None:
    cache: KeyCache[str] = KeyCache()
    cache.put("d", "alice", None, cache.generation)
    assert cache.get("d", 0.0) is None
    cache.enable()
    cache.put("d", "alice", None, cache.generation)
    assert cache.get("d", 0.0) == "alice"
    cache.disable()
    assert cache.get("d", 0.0) is None
    cache.put("d", "alice", None, cache.generation)
    assert cache.get("d", 0.0) is None


def test_a_lookup_that_started_before_a_drop_is_not_stored() -> None:
    cache: KeyCache[str] = KeyCache()
    cache.enable()
    before = cache.generation  # the lookup reads the database ...
    cache.drop()  # ... while a revoke's notice arrives
    cache.put("d", "alice", None, before)
    assert cache.get("d", 0.0) is None
    before = cache.generation
    cache.disable()
    cache.enable()  # the listener lost its connection and is back
    cache.put("d", "alice", None, before)
    assert cache.get("d", 0.0) is None


def test_entries_end_at_their_age_and_at_the_keys_own_expiry() -> None:
    clock = FakeClock()
    cache: KeyCache[str] = KeyCache(max_age=10.0, monotonic=clock)
    cache.enable()
    cache.put("d", "alice", None, cache.generation)
    clock.advance(9.9)
    assert cache.get("d", 0.0) == "alice"
    clock.advance(0.1)
    assert cache.get("d", 0.0) is None
    cache.put("e", "bob", 2_000.0, cache.generation)
    assert cache.get("e", 1_999.9) == "bob"
    assert cache.get("e", 2_000.0) is None


def test_a_full_cache_starts_afresh() -> None:
    cache: KeyCache[int] = KeyCache(max_entries=3)
    cache.enable()
    for number in range(4):
        cache.put(f"d{number}", number, None, cache.generation)
    assert [cache.get(f"d{number}", 0.0) for number in range(4)] == [None, None, None, 3]


def test_nothing_is_served_while_a_key_change_may_be_waiting_unread() -> None:
    waiting = [False]
    cache: KeyCache[str] = KeyCache()
    cache.enable(lambda: waiting[0])
    cache.put("d", "alice", None, cache.generation)
    assert cache.get("d", 0.0) == "alice"
    waiting[0] = True  # a notice reached the socket; the listener thread has not read it
    assert cache.get("d", 0.0) is None
