"""node_config.toml: what it may hold, where it lives, how it is read and written.

The file is validated in full when it is read, so a typo is one clear line
naming the field (``models[0].litellm_model: field required``) before the node
claims any job. ``OPENBEEPBOOP_SERVER_URL`` (one URL or several,
comma-separated) and ``OPENBEEPBOOP_API_KEY`` override the file. The file
holds keys, so it is written atomically with mode 0600.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs
import tomli_w
from openbeepboop_schemas import (
    ANY_MODEL,
    MAX_FETCH_JOBS,
    MAX_NODE_MODELS,
    MAX_WAIT_SECONDS,
    ChatCompletionRequest,
    ModelName,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from openbeepboop_node.answer_bounds import DEFAULT_MAX_LEASE_BYTES, MIN_MAX_LEASE_BYTES
from openbeepboop_node.exceptions import ConfigError
from openbeepboop_node.private_files import write_private_file
from openbeepboop_node.request_guard import (
    DEFAULT_MAX_CONTENT_PARTS,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_REQUEST_CHARS,
    RequestLimits,
)
from openbeepboop_node.request_params import (
    DEFAULTABLE_PARAMS,
    MAX_EXTRA_PARAMS,
    extra_param_problem,
)
from openbeepboop_node.server_pool import DEFAULT_FAILBACK_SECONDS, split_urls

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

#: Folder name under the platform's user config and state directories.
APP_NAME = "openbeepboop"
CONFIG_FILE_NAME = "node_config.toml"
ENV_SERVER_URL = "OPENBEEPBOOP_SERVER_URL"
ENV_API_KEY = "OPENBEEPBOOP_API_KEY"

DEFAULT_CONCURRENCY = 4
#: Long-poll wait of one fetch; below the contract's MAX_WAIT_SECONDS.
DEFAULT_FETCH_WAIT_SECONDS = 25.0
DEFAULT_BACKOFF_INITIAL_SECONDS = 0.5
DEFAULT_BACKOFF_MAX_SECONDS = 30.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 30.0
#: Default timeout of one LLM call; a model's ``timeout`` overrides it.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 600.0
#: How long finished outcomes are collected before one submit carries them all.
DEFAULT_SUBMIT_LINGER_SECONDS = 0.005
#: How long a result may wait for the server's acknowledgement before it is
#: written to the spool (0: write every result while it is being sent).
DEFAULT_SPOOL_AFTER_SECONDS = 0.5
#: While jobs are running, how long a freed slot waits for others to free up
#: so that one fetch brings several leases (an idle node fetches at once).
DEFAULT_FETCH_LINGER_SECONDS = 0.01
#: ``batch``: how long the server may stay unreachable mid-run before giving up.
DEFAULT_BATCH_GIVE_UP_SECONDS = 60.0
#: ``batch``: how long, once nothing else is left, it waits for a paused backend.
DEFAULT_BATCH_BACKEND_WAIT_SECONDS = 10.0
#: Longest wait between two probes of a backend that could not be connected to.
DEFAULT_BACKEND_PROBE_MAX_SECONDS = 30.0
#: Placeholder in a ``name = "*"`` model's ``litellm_model``: the job's model name.
MODEL_PLACEHOLDER = "{model}"

#: The most server URLs one node may be given.
MAX_SERVER_URLS = 16

_NODE_ID_BAD_CHARS = re.compile(r"[^A-Za-z0-9._:@-]+")
#: What no URL may hold as written: whitespace and control characters.
_URL_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
#: A host name's characters (letters of any script, for names like bücher.example).
_HOST_NAME = re.compile(r"[\w.-]+")


def default_config_path() -> Path:
    """``<user config dir>/openbeepboop/node_config.toml``."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / CONFIG_FILE_NAME


def default_spool_path(node_id: str) -> Path:
    """``<user state dir>/openbeepboop/node-<node_id>-spool.sqlite3``."""
    return Path(platformdirs.user_state_dir(APP_NAME)) / f"node-{node_id}-spool.sqlite3"


def default_prefetch(concurrency: int) -> int:
    """The most leases held beyond ``concurrency`` unless the config says otherwise.

    As many as there are slots: a limit, not what is held. The node holds
    only what it uses up during one fetch round trip, twice over
    (:mod:`openbeepboop_node.prefetch`), which is one lease for jobs that
    take seconds and up to a slot's worth each for a busy node on short jobs.
    """
    return concurrency


def default_node_id() -> str:
    """This machine's host name, trimmed to what the wire contract accepts."""
    name = _NODE_ID_BAD_CHARS.sub("-", socket.gethostname()).strip("-")[:128]
    return name or "node"


# Numbers and switches of the file are pydantic's strict types: TOML has its
# own, and lax mode would read ``concurrency = true`` as 1 or ``"5"`` as 5,
# which is a typo to report, not a value to guess (an integer still does for
# a float setting). ``allow_inf_nan=False``: TOML reads ``inf`` and ``nan``
# as floats, and no duration, wait or interval is endless (an endless
# ``timeout`` failed every job at the LLM call instead of at startup).


class ModelConfig(BaseModel):
    """One ``[[models]]`` entry: a model name jobs ask for and how to reach it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: The wire's rule: the node declares this name to the server.
    name: ModelName
    litellm_model: str = Field(min_length=1)
    api_base: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(default=None, min_length=1)
    timeout: StrictFloat | None = Field(default=None, gt=0)
    #: Most leases of this entry held at once (running and prefetched); unset:
    #: only the node's ``concurrency`` bounds it.
    concurrency: StrictInt | None = Field(default=None, ge=1, le=MAX_FETCH_JOBS)
    defaults: dict[str, Any] = Field(default_factory=dict)
    #: Generation parameters that replace whatever a job sets.
    fixed: dict[str, Any] = Field(default_factory=dict)
    #: Ceiling on a job's max_tokens / max_completion_tokens (lowered to it).
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    #: Ceiling on a job's n (lowered to it).
    max_n: StrictInt | None = Field(default=None, ge=1)
    #: Let jobs carry media URLs LiteLLM may fetch (public http(s) addresses only).
    allow_media_urls: StrictBool = False
    #: Request fields outside OpenAI's a job may set for this model, sent to its
    #: server in the request body (a self-hosted server's own sampling knobs).
    extra_params: list[str] = Field(default_factory=list, max_length=MAX_EXTRA_PARAMS)

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, value: str | None) -> str | None:
        # Checked as a server URL is: LiteLLM, like the node's own client,
        # would take http://a b and fail every job of the model later.
        return None if value is None else _http_url(value)

    @field_validator("defaults", "fixed")
    @classmethod
    def _known_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - DEFAULTABLE_PARAMS)
        if unknown:
            raise ValueError(
                f"not an OpenAI generation parameter a node forwards: {', '.join(unknown)}"
            )
        _check_finite(value)
        _check_as_a_request(value)
        return value

    @field_validator("extra_params")
    @classmethod
    def _extra_params(cls, value: list[str]) -> list[str]:
        for name in value:
            problem = extra_param_problem(name)
            if problem is not None:
                raise ValueError(f"{name!r}: {problem}")
        if len(set(value)) != len(value):
            raise ValueError("a name is listed twice")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> ModelConfig:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("set api_key or api_key_env, not both")
        if self.name == ANY_MODEL and MODEL_PLACEHOLDER not in self.litellm_model:
            raise ValueError(
                f'a name = "{ANY_MODEL}" model needs {MODEL_PLACEHOLDER} in litellm_model '
                f'(e.g. "ollama_chat/{MODEL_PLACEHOLDER}")'
            )
        if self.name == ANY_MODEL:
            provider, slash, _ = self.litellm_model.partition("/")
            if not slash or not provider or MODEL_PLACEHOLDER in provider:
                # Otherwise a job's model name ("anthropic/...") would choose
                # the provider, and with it where the operator's key is sent.
                raise ValueError(
                    f'a name = "{ANY_MODEL}" model needs a fixed provider before '
                    f"{MODEL_PLACEHOLDER} in litellm_model "
                    f'(e.g. "ollama_chat/{MODEL_PLACEHOLDER}"), '
                    "so that a job's model name cannot choose the provider"
                )
        return self

    def litellm_model_for(self, job_model: str) -> str:
        """The LiteLLM model string for a job asking for ``job_model``."""
        return self.litellm_model.replace(MODEL_PLACEHOLDER, job_model)

    def resolve_api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The provider key: from the file, or from the named environment variable."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env is None:
            return None
        value = (os.environ if environ is None else environ).get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"model {self.name!r}: api_key_env: environment variable "
                f"{self.api_key_env} is not set"
            )
        return value


class NodeConfig(BaseModel):
    """The whole of node_config.toml (all durations in seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: The first (preferred) server URL; with one server, the only one.
    server_url: str
    #: Every server URL in order of preference (replicas sharing one database).
    #: The file holds ``server_url`` (one) or ``server_urls`` (several); each
    #: fills the other here.
    server_urls: list[str] = Field(default_factory=list, max_length=MAX_SERVER_URLS)
    #: Seconds after failing over before calls try the first URL again.
    server_failback: StrictFloat = Field(default=DEFAULT_FAILBACK_SECONDS, gt=0)
    api_key: SecretStr = Field(min_length=1)
    node_id: str = Field(
        default_factory=default_node_id,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:@-]+$",
    )
    concurrency: StrictInt = Field(default=DEFAULT_CONCURRENCY, ge=1, le=MAX_FETCH_JOBS)
    fetch_wait: StrictFloat = Field(default=DEFAULT_FETCH_WAIT_SECONDS, ge=0, le=MAX_WAIT_SECONDS)
    #: Most seconds between heartbeats; a third of the held leases' period when
    #: unset or longer (:mod:`openbeepboop_node.heartbeat`).
    heartbeat_interval: StrictFloat | None = Field(default=None, gt=0)
    backoff_initial: StrictFloat = Field(default=DEFAULT_BACKOFF_INITIAL_SECONDS, gt=0)
    backoff_max: StrictFloat = Field(default=DEFAULT_BACKOFF_MAX_SECONDS, gt=0)
    shutdown_grace: StrictFloat = Field(default=DEFAULT_SHUTDOWN_GRACE_SECONDS, ge=0)
    request_timeout: StrictFloat = Field(default=DEFAULT_REQUEST_TIMEOUT_SECONDS, gt=0)
    submit_linger: StrictFloat = Field(default=DEFAULT_SUBMIT_LINGER_SECONDS, ge=0, le=1)
    fetch_linger: StrictFloat = Field(default=DEFAULT_FETCH_LINGER_SECONDS, ge=0, le=1)
    spool_after: StrictFloat = Field(default=DEFAULT_SPOOL_AFTER_SECONDS, ge=0)
    #: Leases held beyond ``concurrency``, waiting for a slot; unset means
    #: :func:`default_prefetch`; 0 holds only what is running.
    prefetch: StrictInt | None = Field(default=None, ge=0, le=MAX_FETCH_JOBS)
    batch_give_up: StrictFloat = Field(default=DEFAULT_BATCH_GIVE_UP_SECONDS, ge=0)
    batch_backend_wait: StrictFloat = Field(default=DEFAULT_BATCH_BACKEND_WAIT_SECONDS, ge=0)
    backend_probe_max: StrictFloat = Field(default=DEFAULT_BACKEND_PROBE_MAX_SECONDS, gt=0)
    spool_path: Path | None = None
    #: Ceilings on one job's request (:mod:`openbeepboop_node.request_guard`).
    max_messages: StrictInt = Field(default=DEFAULT_MAX_MESSAGES, ge=1)
    max_content_parts: StrictInt = Field(default=DEFAULT_MAX_CONTENT_PARTS, ge=1)
    max_request_chars: StrictInt = Field(default=DEFAULT_MAX_REQUEST_CHARS, ge=1)
    #: The largest lease a fetch answer may hold (:mod:`openbeepboop_node.answer_bounds`).
    max_lease_bytes: StrictInt = Field(default=DEFAULT_MAX_LEASE_BYTES, ge=MIN_MAX_LEASE_BYTES)
    models: list[ModelConfig] = Field(min_length=1, max_length=MAX_NODE_MODELS)

    @model_validator(mode="before")
    @classmethod
    def _one_url_form(cls, data: Any) -> Any:
        """``server_url`` or ``server_urls`` in the file; each fills the other."""
        if not isinstance(data, Mapping):
            return data
        single, several = data.get("server_url"), data.get("server_urls")
        if single is not None and several is not None:
            if isinstance(several, list) and several and several[0] == single:
                return data  # as this class itself dumps it
            raise ValueError(
                "set server_url (one server) or server_urls (several, in order), not both"
            )
        if several is not None:
            if not isinstance(several, list) or not all(isinstance(u, str) for u in several):
                return data  # the field's own validation names the problem
            urls = split_urls(several)
            if not urls:
                raise ValueError("server_urls: give at least one URL")
            return {**data, "server_urls": urls, "server_url": urls[0] if urls else ""}
        if isinstance(single, str):
            urls = split_urls(single)  # a comma-separated string is a list too
            return {**data, "server_url": urls[0] if urls else single, "server_urls": urls}
        return data

    @field_validator("server_url")
    @classmethod
    def _server_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("server_urls")
    @classmethod
    def _server_urls(cls, value: list[str]) -> list[str]:
        urls = [_http_url(url) for url in value]
        if len(set(urls)) != len(urls):
            raise ValueError("a URL appears twice")
        return urls

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for model in value:
            if model.name in seen:
                raise ValueError(f"model name {model.name!r} appears twice")
            seen.add(model.name)
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> NodeConfig:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must not be below backoff_initial")
        for model in self.models:
            if model.concurrency is not None and model.concurrency > self.concurrency:
                raise ValueError(
                    f"model {model.name!r}: concurrency {model.concurrency} is above the "
                    f"node's concurrency {self.concurrency}"
                )
        return self

    def all_server_urls(self) -> list[str]:
        """Every server URL, in order of preference (at least one)."""
        return self.server_urls or [self.server_url]

    def model_for(self, job_model: str) -> ModelConfig | None:
        """The entry serving ``job_model``: its own name first, then a ``*`` entry."""
        for model in self.models:
            if model.name == job_model:
                return model
        for model in self.models:
            if model.name == ANY_MODEL:
                return model
        return None

    def model_names(self) -> list[str]:
        """The model names this node declares to the server."""
        return [model.name for model in self.models]

    def resolved_spool_path(self) -> Path:
        """Where finished outcomes wait for delivery."""
        return self.spool_path or default_spool_path(self.node_id)

    def prefetch_leases(self) -> int:
        """How many leases may wait in the node for a free slot."""
        return default_prefetch(self.concurrency) if self.prefetch is None else self.prefetch

    def model_caps(self) -> dict[str, int]:
        """Entry name -> its own ``concurrency``, for the entries that set one."""
        return {m.name: m.concurrency for m in self.models if m.concurrency is not None}

    def request_limits(self) -> RequestLimits:
        """The ceilings every job's request is checked against before its call."""
        return RequestLimits(
            max_messages=self.max_messages,
            max_content_parts=self.max_content_parts,
            max_request_chars=self.max_request_chars,
        )

    def timeout_for(self, model: ModelConfig) -> float:
        """The LLM call timeout for ``model``."""
        return model.timeout or self.request_timeout

    def to_toml_data(self) -> dict[str, Any]:
        """The config as TOML-ready data: defaults left out, keys in clear."""
        data = self.model_dump(
            mode="json",
            exclude_unset=True,
            exclude={"api_key", "models", "server_url", "server_urls"},
        )
        urls = self.all_server_urls()
        where: dict[str, Any] = {"server_url": urls[0]} if len(urls) == 1 else {"server_urls": urls}
        data = {**where, "api_key": self.api_key.get_secret_value(), **data}
        data["node_id"] = self.node_id
        data["concurrency"] = self.concurrency
        models = []
        for model in self.models:
            entry = model.model_dump(
                mode="json",
                exclude_none=True,
                exclude={"api_key", "defaults", "fixed", "allow_media_urls", "extra_params"},
            )
            if model.api_key is not None:
                entry["api_key"] = model.api_key.get_secret_value()
            if model.allow_media_urls:
                entry["allow_media_urls"] = True
            if model.extra_params:
                entry["extra_params"] = list(model.extra_params)
            if model.defaults:
                entry["defaults"] = dict(model.defaults)
            if model.fixed:
                entry["fixed"] = dict(model.fixed)
            models.append(entry)
        data["models"] = models
        return data


#: The rest of the request a ``defaults`` or ``fixed`` table is checked within.
_PROBE_REQUEST: dict[str, Any] = {"model": "probe", "messages": [{"role": "user", "content": "."}]}


def _check_as_a_request(params: Mapping[str, Any]) -> None:
    """Refuse parameters the server would refuse in a job (``max_tokens = -3``, ``n = true``).

    They are sent with every job of the model, so a value outside the wire
    contract would make every one of them fail at the backend: the schemas'
    own request model checks them, in the server's strict JSON types.
    """
    try:
        ChatCompletionRequest.model_validate({**params, **_PROBE_REQUEST}, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def _check_finite(params: Mapping[str, Any]) -> None:
    """Refuse ``inf`` and ``nan`` anywhere in a ``defaults`` or ``fixed`` value (``seed = inf``).

    Those tables are typed ``Any`` below the parameters the schemas check,
    and JSON has no such numbers, so a job carrying one could not be sent:
    the standard JSON encoder's own ``allow_nan=False`` finds them, nested too.
    """
    for name, value in params.items():
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError(f"{name}: must be a finite number (not inf or nan)") from None


def _http_url(value: str) -> str:
    """``value`` trimmed, if the node's HTTP client can send requests to it.

    aiohttp takes ``http://a b`` and fails each request later with a host
    name that does not resolve, so the URL is checked here, where the line
    names the setting: no spaces or control characters, a port that is a
    number below 65536, and a host that is an IP address or a name. Server
    URLs and a model's ``api_base`` are checked alike.
    """
    value = value.strip()
    if _URL_BAD_CHARS.search(value):
        raise ValueError("must be a URL without spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is no number or out of range
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    if not _valid_host(parts.hostname or ""):
        raise ValueError(f"not a valid host name in {value}")
    return value.rstrip("/")


def _valid_host(host: str) -> bool:
    """An IP address, or a name of letters, digits, ``-`` and ``_`` between single dots."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    if not _HOST_NAME.fullmatch(host):
        return False
    try:
        host.encode("idna")  # also refuses an empty label (a..b) or one over 63 characters
    except UnicodeError:
        return False
    return True


def format_validation_error(exc: ValidationError) -> str:
    """The first problem as ``field.path: message`` (``models[0].name: ...``)."""
    first = exc.errors(include_url=False)[0]
    where = ""
    for part in first["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown setting"
    elif first["type"] == "missing":
        message = "required setting is missing"
    more = exc.error_count() - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {message}{suffix}" if where else f"{message}{suffix}"


def read_toml(path: Path) -> dict[str, Any]:
    """The raw TOML table at ``path``; ConfigError when missing or not TOML."""
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
            return data
    except FileNotFoundError:
        raise ConfigError(
            f"no node config at {path}: run `openbeepboop-node setup` (or pass --config)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def apply_env(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``data`` with the OPENBEEPBOOP_SERVER_URL / OPENBEEPBOOP_API_KEY overrides applied."""
    env = os.environ if environ is None else environ
    merged = dict(data)
    if env.get(ENV_SERVER_URL):
        # One URL or several, comma-separated; it replaces either form in the file.
        merged.pop("server_urls", None)
        merged["server_url"] = env[ENV_SERVER_URL]
    if env.get(ENV_API_KEY):
        merged["api_key"] = env[ENV_API_KEY]
    return merged


def parse_config(data: Mapping[str, Any], source: str = CONFIG_FILE_NAME) -> NodeConfig:
    """Validate raw settings; ConfigError names the file and the field."""
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read, override from the environment, and validate the node's config."""
    path = path or default_config_path()
    return parse_config(apply_env(read_toml(path), environ), str(path))


def write_config(config: NodeConfig, path: Path) -> None:
    """Write ``config`` to ``path`` with :func:`write_private_file`."""
    write_private_file(path, tomli_w.dumps(config.to_toml_data()))
