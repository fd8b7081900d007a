"""API keys: format, hashing at rest, names, revocation, authentication."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import api_keys
from openbeepboop_server.errors import (
    InvalidKeyName,
    InvalidKeySettings,
    KeyNameTaken,
    ServerError,
)
from openbeepboop_server.keys import MAX_QUOTA, Caller, KeyInfo, KeyService, KeySettings

from tests.support.core import FakeClock, migrated_database, sqlite_url_for

KEY_PATTERN = re.compile(r"^sk-[A-Za-z0-9_-]{32,}$")


@pytest.fixture
def key_db(tmp_path: Path) -> Iterator[Database]:
    db = migrated_database(sqlite_url_for(tmp_path / "keys.db"))
    yield db
    db.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(key_db: Database, clock: FakeClock) -> KeyService:
    return KeyService(key_db, clock=clock)


def test_create_returns_a_key_and_its_info(service: KeyService, clock: FakeClock) -> None:
    key, info = service.create(Role.NODE, "gpu-box")
    assert KEY_PATTERN.match(key)
    assert len(key) >= 3 + 43
    assert info == KeyInfo(name="gpu-box", role=Role.NODE, created_at=clock.now, revoked_at=None)


def test_keys_are_random(service: KeyService) -> None:
    made = {service.create(Role.USER, f"u{i}")[0] for i in range(20)}
    assert len(made) == 20


def test_only_the_sha256_hex_is_stored(service: KeyService, key_db: Database) -> None:
    key, _ = service.create(Role.ADMIN, "root")
    with key_db.read() as conn:
        row = conn.execute(sa.select(api_keys)).one()
    assert row.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert key not in " ".join(str(value) for value in row)
    raw = Path(str(key_db.engine.url.database)).read_bytes()
    key_db.dispose()  # fold the WAL into the file so the scan sees every byte
    raw += Path(str(key_db.engine.url.database)).read_bytes()
    assert key.encode() not in raw and key[3:].encode() not in raw


def test_authenticate(service: KeyService) -> None:
    key, _ = service.create(Role.USER, "alice")
    caller = service.authenticate(key)
    assert isinstance(caller, Caller)
    assert (caller.key_name, caller.role) == ("alice", Role.USER)
    assert service.authenticate(key + "x") is None
    assert service.authenticate("sk-" + "a" * 43) is None
    assert service.authenticate("") is None
    assert service.authenticate(key[3:]) is None


def test_names_are_unique_even_after_revocation(service: KeyService) -> None:
    service.create(Role.USER, "alice")
    with pytest.raises(KeyNameTaken, match="alice"):
        service.create(Role.ADMIN, "alice")
    service.revoke("alice")
    with pytest.raises(KeyNameTaken):
        service.create(Role.USER, "alice")
    assert issubclass(KeyNameTaken, ServerError)


@pytest.mark.parametrize("name", ["", " padded", "x" * 129])
def test_bad_names_are_refused(service: KeyService, name: str) -> None:
    with pytest.raises(InvalidKeyName):
        service.create(Role.USER, name)
    assert service.list() == []


def test_role_strings_are_accepted(service: KeyService) -> None:
    _, info = service.create("USER", "from-cli")  # type: ignore[arg-type]
    assert info.role is Role.USER
    with pytest.raises(ValueError):
        service.create("ROOT", "bad-role")  # type: ignore[arg-type]


def test_list_in_creation_order_with_revocations(service: KeyService, clock: FakeClock) -> None:
    service.create(Role.ADMIN, "admin")
    clock.advance(1)
    service.create(Role.NODE, "node")
    clock.advance(1)
    assert service.revoke("node") is True
    listed = service.list()
    assert [(k.name, k.role) for k in listed] == [("admin", Role.ADMIN), ("node", Role.NODE)]
    assert listed[0].revoked_at is None
    assert listed[1].revoked_at == clock.now


def test_revoke_stops_the_key_at_once_and_only_once(service: KeyService) -> None:
    key, _ = service.create(Role.USER, "alice")
    assert service.authenticate(key) is not None
    assert service.revoke("alice") is True
    assert service.authenticate(key) is None
    assert service.revoke("alice") is False
    assert service.revoke("nobody") is False


def test_revocation_from_another_process_takes_effect_at_once(
    service: KeyService, key_db: Database
) -> None:
    key, _ = service.create(Role.USER, "alice")
    assert service.authenticate(key) is not None
    # The CLI runs in another process with its own engine on the same file.
    other = Database.connect(str(key_db.engine.url))
    try:
        assert KeyService(other).revoke("alice") is True
    finally:
        other.dispose()
    assert service.authenticate(key) is None


def test_inline_lookup_answers_like_authenticate(service: KeyService) -> None:
    key, _ = service.create(Role.NODE, "gpu")
    assert service.inline_capable
    try:
        assert service.authenticate_inline(key) == service.authenticate(key)
        for bad in (key + "x", "sk-" + "a" * 43, "", key[3:]):
            assert service.authenticate_inline(bad) is None
        service.close_inline()
        service.close_inline()  # closing twice is harmless
        assert service.authenticate_inline(key) == service.authenticate(key)  # reconnected
    finally:
        service.close_inline()


def test_inline_lookup_sees_a_revocation_from_another_process_at_once(
    service: KeyService, key_db: Database
) -> None:
    key, _ = service.create(Role.USER, "alice")
    try:
        assert service.authenticate_inline(key) is not None
        other = Database.connect(str(key_db.engine.url))
        try:
            assert KeyService(other).revoke("alice") is True
        finally:
            other.dispose()
        assert service.authenticate_inline(key) is None
    finally:
        service.close_inline()


def test_the_largest_quota_fits_every_database(any_db: Database) -> None:
    """``MAX_QUOTA`` is stored on PostgreSQL's 32-bit INTEGER columns too; one more is refused."""
    service = KeyService(any_db)
    settings = KeySettings(max_queued=MAX_QUOTA, rate_limit=MAX_QUOTA)
    service.create(Role.USER, "big", settings)
    (listed,) = [info for info in service.list() if info.name == "big"]
    assert listed.settings == settings
    for field in ("max_queued", "rate_limit"):
        with pytest.raises(InvalidKeySettings, match=str(MAX_QUOTA)):
            service.update("big", {field: MAX_QUOTA + 1})


@pytest.mark.parametrize(
    "settings",
    [
        KeySettings(node_id="bad id!"),
        KeySettings(node_id=""),
        KeySettings(models=("m" * 257,)),
        KeySettings(models=("ok", "\x1b[31m")),
    ],
)
def test_scopes_no_node_could_send_are_refused(service: KeyService, settings: KeySettings) -> None:
    with pytest.raises(InvalidKeySettings):
        service.create(Role.NODE, "box", settings)
    assert service.list() == []


def test_a_revoked_key_cannot_be_changed(service: KeyService) -> None:
    service.create(Role.USER, "gone")
    service.revoke("gone")
    with pytest.raises(InvalidKeySettings, match="revoked"):
        service.update("gone", {"expires_at": None})
    with pytest.raises(InvalidKeySettings, match="revoked"):
        service.update_share("gone", weight=5)
    (info,) = service.list()
    assert info.revoked_at is not None and info.weight == 1
    assert service.update("nobody", {"max_queued": 1}) is None
    assert service.update_share("nobody", weight=2) is None
