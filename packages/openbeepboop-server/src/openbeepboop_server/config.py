"""``server_config.toml``: what it may hold, where it lives, how it is read and written.

The file is validated as a whole when it is read, so a typo or an out-of-range
value is one clear line naming the field (``[queue] lease_seconds: ...``)
before anything starts. Unknown keys are errors for the same reason: a
misspelt setting silently ignored is worse than a refusal.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import platformdirs
import tomli_w
from openbeepboop_schemas import MAX_POLL_IDS, MAX_WAIT_SECONDS
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from openbeepboop_server.db.database import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    DEFAULT_SQLITE_SYNCHRONOUS,
    check_supported,
)
from openbeepboop_server.db.database import SQLITE_SYNCHRONOUS_MODES as SQLITE_SYNCHRONOUS_MODES
from openbeepboop_server.errors import ServerError
from openbeepboop_server.http.budgets import (
    DEFAULT_MAX_CONTENT_PARTS,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_JSON_VALUES,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_N,
    DEFAULT_MAX_POLL_ANSWER_BYTES,
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_MAX_TOTAL_CONTENT_PARTS,
    MAX_JSON_DEPTH_CEILING,
    RequestBudgets,
)
from openbeepboop_server.queue.policy import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_FETCH_MODELS_PER_KEY,
    DEFAULT_MAX_NODES_PER_KEY,
    DEFAULT_NODE_RETENTION_DAYS,
    DEFAULT_PRIORITY_AGING_MINUTES,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_RETRY_BACKOFF_MAX_SECONDS,
    DEFAULT_RETRY_BACKOFF_SECONDS,
    QueuePolicy,
    default_node_seen_seconds,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

APP_NAME = "openbeepboop"
CONFIG_FILE_NAME = "server_config.toml"
DATABASE_FILE_NAME = "openbeepboop.db"
#: Environment variable naming the config file when ``--config`` is not given.
CONFIG_ENV = "OPENBEEPBOOP_SERVER_CONFIG"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: Largest request body accepted (``413`` above it): 10 MB.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
#: How often leases are checked for expiry.
DEFAULT_REAP_INTERVAL_SECONDS = 1.0
#: How often finished jobs past retention (and long-gone nodes) are purged.
DEFAULT_PURGE_INTERVAL_SECONDS = 3600.0
#: Client polls with ``wait`` one key may hold at once (per process).
DEFAULT_MAX_POLLS_PER_KEY = 100
#: Node fetches with ``wait`` one key may hold at once (per process): a fleet
#: often shares one NODE key, and each node holds one fetch per model group.
DEFAULT_MAX_FETCHES_PER_KEY = 1000
#: A connection must send a complete request head within this long.
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
#: A request's body must arrive whole within this long after its head (10 MB at
#: ~170 kB/s); a reverse proxy that buffers bodies makes this moot.
DEFAULT_BODY_TIMEOUT_SECONDS = 60.0
#: An idle keep-alive connection is closed after this long (uvicorn's own default).
DEFAULT_KEEP_ALIVE_SECONDS = 5.0
#: Open connections at once; past it new ones get a ``503`` and are closed.
DEFAULT_MAX_CONNECTIONS = 4096
#: The most a request head (request line and headers) may hold; past it ``431``
#: and the connection is closed. Real clients and proxies send a few kB.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
#: How often one task per process re-reads what its parked long-polls wait for
#: (changes it was not told about: docs/server-internals.md, "Wake-ups across replicas").
DEFAULT_RECHECK_SECONDS = 1.0
#: The shortest period any periodic task may be given (the long-polls'
#: re-check, the lease reaper, the purge, the batch check): each wakes a task
#: and reads the database, so ``batch_check_seconds = 0.000001`` kept an idle
#: server at 74 % of a core. Ten times a second is as fresh as any of them
#: needs to be; the defaults are ten times slower still.
MIN_INTERVAL_SECONDS = 0.1
#: The shortest ``[queue] lease_seconds``: a node extends its leases over HTTP a
#: few times per lease, and a lease shorter than that takes every job back
#: mid-call (``1e-9`` was taken: each job failed after ``max_attempts`` LLM calls).
MIN_LEASE_SECONDS = 1.0
#: The largest ``[queue] max_attempts``: every job stores it in an INTEGER
#: column, which on PostgreSQL holds at most this (past it, every submit failed).
MAX_ATTEMPTS_CEILING = 2**31 - 1
SqliteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class ConfigError(ServerError):
    """The configuration file is missing, unreadable or invalid."""


class _Section(BaseModel):
    # Strict: TOML says what type a value is, and `port = true` (a bool, which
    # lax validation takes for 1) or `port = "80"` is a mistake to name, not coerce.
    # TOML also has `inf` and `nan`: no setting means them (`lease_seconds = inf`
    # wrote an expiry no reaper ever reaches into every lease in flight).
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False
    )


class ServerSection(_Section):
    """``[server]``: where to listen and what a request may cost."""

    host: str = Field(default=DEFAULT_HOST, min_length=1)
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    #: Cap on long-poll waits, below the contract's 30 s for proxies with short idle timeouts.
    max_wait_seconds: float = Field(default=MAX_WAIT_SECONDS, ge=0, le=MAX_WAIT_SECONDS)
    max_polls_per_key: int = Field(default=DEFAULT_MAX_POLLS_PER_KEY, ge=1)
    max_fetches_per_key: int = Field(default=DEFAULT_MAX_FETCHES_PER_KEY, ge=1)
    header_timeout_seconds: float = Field(default=DEFAULT_HEADER_TIMEOUT_SECONDS, gt=0)
    body_timeout_seconds: float = Field(default=DEFAULT_BODY_TIMEOUT_SECONDS, gt=0)
    keep_alive_seconds: float = Field(default=DEFAULT_KEEP_ALIVE_SECONDS, gt=0)
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, ge=1)
    max_header_bytes: int = Field(default=DEFAULT_MAX_HEADER_BYTES, ge=1024)
    #: The long-polls' database re-check (the safety net behind other replicas' notices).
    recheck_seconds: float = Field(default=DEFAULT_RECHECK_SECONDS, ge=MIN_INTERVAL_SECONDS, le=60)


class DatabaseSection(_Section):
    """``[database]``: the SQLAlchemy URL, SQLite durability, the connection pool."""

    url: str = Field(min_length=1)
    sqlite_synchronous: SqliteSynchronous = DEFAULT_SQLITE_SYNCHRONOUS
    #: Connections each server process keeps open, and how many more it may
    #: open at a peak. Several PostgreSQL replicas share the database's
    #: ``max_connections``: size these so that replicas x (both) fits it
    #: (docs/deploy.md, "Connection pools").
    pool_size: int = Field(default=DEFAULT_POOL_SIZE, ge=1)
    max_overflow: int = Field(default=DEFAULT_MAX_OVERFLOW, ge=0)

    @field_validator("url")
    @classmethod
    def _parseable(cls, value: str) -> str:
        try:
            check_supported(make_url(value))
        except ArgumentError as exc:
            raise ValueError(f"not a database URL ({exc})") from None
        return value

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class QueueSection(_Section):
    """``[queue]``: leases, retries, retention and housekeeping.

    The queue's defaults come from :mod:`.queue.policy`; the bounds are checked
    here only, where a bad value can be reported by its setting's name.
    """

    lease_seconds: float = Field(default=DEFAULT_LEASE_SECONDS, ge=MIN_LEASE_SECONDS)
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=MAX_ATTEMPTS_CEILING)
    retention_days: float = Field(default=DEFAULT_RETENTION_DAYS, gt=0)
    retry_backoff_seconds: float = Field(default=DEFAULT_RETRY_BACKOFF_SECONDS, ge=0)
    retry_backoff_max_seconds: float = Field(default=DEFAULT_RETRY_BACKOFF_MAX_SECONDS, ge=0)
    #: None (the default, and what ``setup`` writes): derived from ``lease_seconds``.
    node_seen_seconds: float | None = Field(default=None, gt=0)
    reap_interval_seconds: float = Field(
        default=DEFAULT_REAP_INTERVAL_SECONDS, ge=MIN_INTERVAL_SECONDS, le=60
    )
    purge_interval_seconds: float = Field(
        default=DEFAULT_PURGE_INTERVAL_SECONDS, ge=MIN_INTERVAL_SECONDS
    )
    #: None (the default): unfinished jobs wait for a node for ever.
    max_queued_days: float | None = Field(default=None, gt=0)
    node_retention_days: float = Field(default=DEFAULT_NODE_RETENTION_DAYS, gt=0)
    #: Live node ids one key may use at once (per process); a new one past it gets 429.
    max_nodes_per_key: int = Field(default=DEFAULT_MAX_NODES_PER_KEY, ge=1)
    #: Minutes of waiting worth one step of ``priority`` (docs/api.md, "Claim order").
    priority_aging_minutes: float = Field(default=DEFAULT_PRIORITY_AGING_MINUTES, gt=0)

    def node_seen_window(self) -> float:
        """``node_seen_seconds``, or the default that follows ``lease_seconds``."""
        if self.node_seen_seconds is not None:
            return self.node_seen_seconds
        return default_node_seen_seconds(self.lease_seconds)

    def node_seen_warning(self) -> str | None:
        """Why an explicit ``node_seen_seconds`` will hide live nodes, or None.

        A node whose every slot is busy is heard from only by its heartbeat,
        every third of the lease; a window shorter than that drops it from
        ``/v1/models`` (and warns its submitters) while it works.
        """
        window, heartbeat = self.node_seen_window(), self.lease_seconds / 3
        if window > heartbeat:
            return None
        return (
            f"[queue] node_seen_seconds = {window:g} is not longer than the heartbeat period "
            f"of a busy node (lease_seconds / 3 = {heartbeat:g} s): nodes whose every slot is "
            "busy will drop out of /v1/models between heartbeats"
        )

    def policy(self) -> QueuePolicy:
        """The queue service's view of these settings."""
        return QueuePolicy(
            lease_seconds=self.lease_seconds,
            max_attempts=self.max_attempts,
            retry_backoff_seconds=self.retry_backoff_seconds,
            retry_backoff_max_seconds=self.retry_backoff_max_seconds,
            retention_days=self.retention_days,
            node_seen_seconds=self.node_seen_window(),
            max_queued_days=self.max_queued_days,
            node_retention_days=self.node_retention_days,
            max_nodes_per_key=self.max_nodes_per_key,
            priority_aging_seconds=self.priority_aging_minutes * 60,
        )


#: How long ``POST /openai/v1/chat/completions`` waits for its job before answering an error.
DEFAULT_SYNC_TIMEOUT_SECONDS = 600.0
#: Largest file ``POST /openai/v1/files`` takes (OpenAI's own limit for batch input).
DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024
#: Most lines a batch input file may hold (OpenAI's own limit).
DEFAULT_MAX_FILE_LINES = 50_000
#: Shortest ``completion_window`` a batch may ask for: one hour, unless an operator lowers it.
DEFAULT_MIN_COMPLETION_WINDOW_SECONDS = 3600.0
#: Longest ``completion_window`` a batch may ask for: OpenAI's ``24h``.
DEFAULT_MAX_COMPLETION_WINDOW_SECONDS = 24 * 3600.0
#: How often running batches are looked at (finished, expired, cancelled).
DEFAULT_BATCH_CHECK_SECONDS = 1.0
#: An upload still ``uploading`` this long after it began was cut off by a crash: swept.
DEFAULT_STALE_UPLOAD_SECONDS = 600.0
#: The official SDK's own connection limit (1,000): a script gathering any number
#: of calls through one client never has more in flight than this.
DEFAULT_MAX_SYNC_REQUESTS_PER_KEY = 1000


class OpenAISection(_Section):
    """``[openai]``: the OpenAI-compatible surface under ``/openai/v1`` (docs/openai.md)."""

    sync_timeout_seconds: float = Field(default=DEFAULT_SYNC_TIMEOUT_SECONDS, gt=0)
    max_file_bytes: int = Field(default=DEFAULT_MAX_FILE_BYTES, ge=1024)
    max_file_lines: int = Field(default=DEFAULT_MAX_FILE_LINES, ge=1)
    min_completion_window_seconds: float = Field(
        default=DEFAULT_MIN_COMPLETION_WINDOW_SECONDS, gt=0
    )
    max_completion_window_seconds: float = Field(
        default=DEFAULT_MAX_COMPLETION_WINDOW_SECONDS, gt=0
    )
    batch_check_seconds: float = Field(
        default=DEFAULT_BATCH_CHECK_SECONDS, ge=MIN_INTERVAL_SECONDS, le=60
    )
    stale_upload_seconds: float = Field(default=DEFAULT_STALE_UPLOAD_SECONDS, gt=0)
    #: Synchronous chats one key may have waiting at once on this process; one more gets 429.
    max_sync_requests_per_key: int = Field(default=DEFAULT_MAX_SYNC_REQUESTS_PER_KEY, ge=1)


class LimitsSection(_Section):
    """``[limits]``: what one request may cost and what one job may ask for.

    The request budgets bound the work a body can cause before it is parsed
    (docs/server.md, "Request budgets and caps"); the caps bound what a job may spend
    at the provider. Defaults are in :mod:`.http.budgets`.
    """

    max_json_depth: int = Field(default=DEFAULT_MAX_JSON_DEPTH, ge=8, le=MAX_JSON_DEPTH_CEILING)
    max_json_values: int = Field(default=DEFAULT_MAX_JSON_VALUES, ge=1_000)
    max_messages: int = Field(default=DEFAULT_MAX_MESSAGES, ge=1)
    max_content_parts: int = Field(default=DEFAULT_MAX_CONTENT_PARTS, ge=1)
    max_total_content_parts: int = Field(default=DEFAULT_MAX_TOTAL_CONTENT_PARTS, ge=1)
    max_poll_ids: int = Field(default=MAX_POLL_IDS, ge=1, le=MAX_POLL_IDS)
    max_poll_answer_bytes: int = Field(default=DEFAULT_MAX_POLL_ANSWER_BYTES, ge=1024)
    max_result_bytes: int = Field(default=DEFAULT_MAX_RESULT_BYTES, ge=1024)
    #: None (the default): no cap.
    max_tokens: int | None = Field(default=None, ge=1)
    max_n: int | None = Field(default=DEFAULT_MAX_N, ge=1, le=128)
    #: Distinct model names one key's fetch long-polls may wait for at once (per process).
    max_fetch_models_per_key: int = Field(default=DEFAULT_MAX_FETCH_MODELS_PER_KEY, ge=1)

    def budgets(self) -> RequestBudgets:
        """The HTTP layer's view of these settings (all but the sizes, enforced elsewhere)."""
        names = {field.name for field in dataclasses.fields(RequestBudgets)}
        return RequestBudgets(**self.model_dump(include=names))


class Settings(_Section):
    """Everything ``server_config.toml`` holds; what :func:`create_app` is built from."""

    server: ServerSection = Field(default_factory=ServerSection)
    database: DatabaseSection
    queue: QueueSection = Field(default_factory=QueueSection)
    openai: OpenAISection = Field(default_factory=OpenAISection)
    limits: LimitsSection = Field(default_factory=LimitsSection)

    def to_toml(self) -> str:
        """The settings as the TOML text ``setup`` writes.

        Settings left unset (None: derived at start-up, like
        ``node_seen_seconds``) stay out of the file, so they keep following
        what they derive from.
        """
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))


def default_config_path() -> Path:
    """``$OPENBEEPBOOP_SERVER_CONFIG``, else ``server_config.toml`` in the user config dir."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / CONFIG_FILE_NAME


def default_database_url() -> str:
    """SQLite in the user data dir, as an absolute path."""
    directory = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)).resolve()
    return sqlite_url(directory / DATABASE_FILE_NAME)


def sqlite_url(path: Path) -> str:
    """``sqlite:///`` plus an absolute path."""
    return f"sqlite:///{path.expanduser().resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL points at, or ``None`` for other databases and ``:memory:``."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def display_url(url: str) -> str:
    """``url`` with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def _resolve_sqlite(url: str, base: Path) -> str:
    # A relative SQLite path means "next to the config file", not "wherever the
    # server happens to be started from".
    path = sqlite_path(url)
    if path is None:
        return url
    path = path.expanduser()
    if not path.is_absolute():
        path = base / path
    return str(
        make_url(url).set(database=str(path.resolve())).render_as_string(hide_password=False)
    )


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    if len(loc) >= 2:
        where = f"[{loc[0]}] {'.'.join(loc[1:])}"
    elif loc:
        where = f"[{loc[0]}]"
    else:
        where = "file"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown setting"
    elif first["type"] == "missing":
        message = "required setting is missing"
    return f"{where}: {message}"


def parse_settings(data: dict[str, Any], *, source: str = "configuration", base: Path) -> Settings:
    """Validate a config mapping; relative SQLite paths are taken relative to ``base``."""
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    settings.database.url = _resolve_sqlite(settings.database.url, base)
    return settings


def load_settings(path: Path) -> Settings:
    """Read and validate ``server_config.toml``; every problem is one :class:`ConfigError` line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration at {path}: run `openbeepboop-server setup` first "
            "(or pass --config PATH)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    return parse_settings(data, source=str(path), base=path.parent.resolve())


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (the file sits beside keys).

    The data goes to a temporary file in the same directory, created 0600 from
    the start, flushed to disk and renamed over the target, and the directory
    is synced too, so a crash leaves either the old file or the new one, never
    half of one. A parent directory it has to create is made 0700.
    """
    directory = path.parent
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; some platforms cannot open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
