"""Where the client's settings come from, and the file ``setup`` writes.

Each setting is taken from the first place that has it:

1. the argument given to ``Client(...)``,
2. the environment (``OPENBEEPBOOP_SERVER_URL``, ``OPENBEEPBOOP_API_KEY``,
   ``OPENBEEPBOOP_DEFAULT_MODEL``),
3. ``client_config.toml`` (``config_path=`` or the platformdirs user config
   dir), written by ``openbeepboop-client setup``.

The server may be several URLs (replicas sharing one database): a list for
``base_url=``, commas in ``OPENBEEPBOOP_SERVER_URL`` or ``server_url``, or
``server_urls = [...]`` in the file (:mod:`openbeepboop._servers`).

Nothing here runs at import time: the file is read when a client is made.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from openbeepboop_schemas import OPENAI_PREFIX

from openbeepboop._constants import (
    APP_NAME,
    CONFIG_FILENAME,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ENV_API_KEY,
    ENV_DEFAULT_MODEL,
    ENV_SERVER_URL,
)
from openbeepboop._exceptions import ConfigError
from openbeepboop._files import write_private_file
from openbeepboop._servers import split_urls

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    # Only installed on 3.10 (see pyproject), so a type checker elsewhere may lack it.
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

logger = logging.getLogger(__name__)

#: Keys ``client_config.toml`` may hold, with the type each must have.
CONFIG_KEYS: dict[str, tuple[type, ...]] = {
    "server_url": (str,),
    "server_urls": (list,),
    "api_key": (str,),
    "default_model": (str,),
    "timeout": (int, float),
    "max_retries": (int,),
}


def default_config_path() -> Path:
    """``<user config dir>/openbeepboop/client_config.toml`` for this platform."""
    import platformdirs  # only needed when no explicit path is given

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / CONFIG_FILENAME


@dataclass(frozen=True)
class ConfigFile:
    """The values found in one ``client_config.toml``."""

    path: Path
    values: Mapping[str, object]

    def get_str(self, key: str) -> str | None:
        """A string value, or None when the file does not set it."""
        value = self.values.get(key)
        return value if isinstance(value, str) and value.strip() else None

    def server_urls(self) -> list[str]:
        """``server_urls``, or ``server_url`` split at commas; empty when neither is set."""
        urls = self.values.get("server_urls")
        if isinstance(urls, list):
            return split_urls([str(url) for url in urls])
        return split_urls(self.get_str("server_url") or "")


def read_config_file(path: Path) -> ConfigFile:
    """Parse and type-check a config file; every problem is one ConfigError line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist (run `openbeepboop-client setup`)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for key, value in data.items():
        types = CONFIG_KEYS.get(key)
        if types is None:
            logger.warning("ignoring unknown key %r in %s", key, path)
        elif not isinstance(value, types) or isinstance(value, bool):
            wanted = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"config file {path}: '{key}' must be a {wanted}")
    urls = data.get("server_urls")
    if urls is not None:
        if not urls or not all(isinstance(url, str) for url in urls):
            raise ConfigError(f"config file {path}: 'server_urls' must be a list of URLs")
        if "server_url" in data:
            raise ConfigError(
                f"config file {path}: set 'server_url' (one server) or 'server_urls' "
                "(several, in order), not both"
            )
    return ConfigFile(path=path, values=data)


def write_config_file(path: Path, values: Mapping[str, str | float | int | list[str]]) -> None:
    """Write ``values`` as TOML to ``path`` atomically, readable by the owner only."""
    import tomli_w  # only `setup` writes files

    text = tomli_w.dumps({key: value for key, value in values.items() if value is not None})
    write_private_file(path, text)


#: Path endings that name the server's root, not a prefix of it: the native API's
#: version, the OpenAI-compatible surface's prefix and that prefix's first part.
_SURFACE_SUFFIXES = (OPENAI_PREFIX, OPENAI_PREFIX.removesuffix("/v1"), "/v1")


def normalize_base_url(url: str) -> str:
    """The server's root URL: without a trailing ``/``, ``/v1``, ``/openai/v1`` or ``/openai``.

    Users coming from the OpenAI SDK often write ``.../v1``; our paths already
    start with ``/v1``, so it is dropped rather than doubled. A URL ending in
    the OpenAI-compatible surface's own prefix (``/openai/v1``, the SDK's
    ``base_url`` in docs/openai.md), or in its first part (``/openai``),
    names the same server: kept, the client's native paths would land on that
    surface's routes (a submit on the synchronous chat route, waiting there
    for the LLM and reading its answer as no job at all). Any other path is a
    prefix (a reverse proxy's) and is kept. Only the path is looked at: a host
    named ``openai`` stays.
    """
    url = url.strip().rstrip("/")
    host_start = url.find("://") + 3 if "://" in url else 0
    path_start = url.find("/", host_start)
    if path_start >= 0:
        root, path = url[:path_start], url[path_start:]
        for suffix in _SURFACE_SUFFIXES:
            if path.endswith(suffix):
                path = path[: -len(suffix)].rstrip("/")
                break
        url = root + path
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"server URL must start with http:// or https:// (got {url!r})")
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL as exc:
        raise ConfigError(f"server URL {url!r} is not a valid URL: {exc}") from None
    if not host:
        raise ConfigError(f"server URL {url!r} names no host")
    return url


def check_api_key(key: str) -> str:
    """The key without surrounding blanks; ConfigError if it cannot be one.

    A key goes into an HTTP header, which holds printable ASCII only: a
    character pasted along with it would otherwise fail every request with
    an encoding error that names neither the key nor the fix. The message
    never repeats the key.
    """
    key = key.strip()
    if not key or any(char.isspace() for char in key):
        raise ConfigError("the API key must be one word without spaces (e.g. sk-...)")
    if not (key.isascii() and key.isprintable()):
        raise ConfigError(
            "the API key holds a character no key has (keys are printable ASCII, e.g. "
            "sk-...): was something pasted along with it?"
        )
    return key


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs, resolved once when it is made."""

    base_url: str
    api_key: str
    timeout: httpx.Timeout
    max_retries: int
    default_model: str | None = None
    config_path: Path | None = None
    #: Every server URL in order (``base_url`` first); empty means ``base_url`` alone.
    base_urls: tuple[str, ...] = ()

    def all_base_urls(self) -> list[str]:
        """Every server URL, in order of preference (at least one)."""
        return list(self.base_urls) or [self.base_url]

    def __repr__(self) -> str:  # the key must never end up in a log or traceback
        return (
            f"ClientSettings(base_url={self.base_url!r}, base_urls={self.base_urls!r}, "
            "api_key='***', "
            f"timeout={self.timeout!r}, max_retries={self.max_retries}, "
            f"default_model={self.default_model!r}, config_path={self.config_path!r})"
        )


def make_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """A full ``httpx.Timeout``; a bare number keeps the short connect timeout."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    seconds = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    return httpx.Timeout(seconds, connect=min(seconds, DEFAULT_CONNECT_TIMEOUT))


def resolve_settings(
    *,
    base_url: str | Sequence[str] | None = None,
    api_key: str | None = None,
    timeout: float | httpx.Timeout | None = None,
    max_retries: int | None = None,
    default_model: str | None = None,
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClientSettings:
    """Settings from arguments, then the environment, then the config file."""
    env = os.environ if environ is None else environ
    urls = split_urls(base_url or _env(env, ENV_SERVER_URL) or "")
    api_key = api_key or _env(env, ENV_API_KEY)
    default_model = default_model or _env(env, ENV_DEFAULT_MODEL)

    explicit = config_path is not None
    path = Path(config_path) if config_path is not None else None
    file: ConfigFile | None = None
    if path is not None:
        file = read_config_file(path)
    else:
        path = default_config_path()
        if path.exists():
            try:
                file = read_config_file(path)
            except ConfigError:
                if not (urls and api_key):
                    raise
                # Arguments or environment already say everything needed; a
                # broken file the caller did not ask for must not stop them.
                logger.warning("ignoring unreadable config file %s", path, exc_info=True)

    if file is not None:
        urls = urls or file.server_urls()
        api_key = api_key or file.get_str("api_key")
        default_model = default_model or file.get_str("default_model")
        if timeout is None and "timeout" in file.values:
            timeout = float(file.values["timeout"])  # type: ignore[arg-type]
        if max_retries is None and "max_retries" in file.values:
            max_retries = int(file.values["max_retries"])  # type: ignore[call-overload]

    where = f"{path}" + ("" if file is not None or explicit else " (not found)")
    if not urls:
        raise ConfigError(
            f"no server URL: pass base_url=, set {ENV_SERVER_URL}, or run "
            f"`openbeepboop-client setup` (config file: {where})"
        )
    if not api_key:
        raise ConfigError(
            f"no API key: pass api_key=, set {ENV_API_KEY}, or run "
            f"`openbeepboop-client setup` (config file: {where})"
        )
    retries = DEFAULT_MAX_RETRIES if max_retries is None else max_retries
    if retries < 0:
        raise ConfigError(f"max_retries must be 0 or more (got {retries})")
    base_urls = [normalize_base_url(url) for url in urls]
    if len(set(base_urls)) != len(base_urls):
        raise ConfigError(f"a server URL appears twice in {', '.join(base_urls)}")
    return ClientSettings(
        base_url=base_urls[0],
        base_urls=tuple(base_urls) if len(base_urls) > 1 else (),
        api_key=check_api_key(api_key),
        timeout=make_timeout(timeout),
        max_retries=retries,
        default_model=default_model,
        config_path=path if file is not None else None,
    )


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None
