"""``openbeepboop-node setup``: build node_config.toml from flags and prompts.

Every prompt has a flag twin. On a terminal, whatever the flags leave open is
asked for (with the current file's values as defaults, so running setup
again edits the config). Without a terminal, or with ``--non-interactive``,
nothing is asked: required values that no flag and no current value give
end the command with one line naming their flags (exit status 2), never a
hang. A model given with ``--model`` replaces the entry of that name or is
added to the file's other models.

Before the file is written, the checks of :mod:`~openbeepboop_node.checks`
run on it (the server takes the key, each backend answers); without a
terminal a failed check ends setup with its line and exit status and
nothing is written, on a terminal setup asks whether to write it anyway.
``--no-check`` skips them. On a terminal, once a model's API base is known,
the models its backend lists are offered to pick from.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from openbeepboop_node.backends import Backend, list_models, open_check_session
from openbeepboop_node.checks import run_checks
from openbeepboop_node.cli.check import failed_status
from openbeepboop_node.cli.errors import CommandError, MissingWithoutTerminal
from openbeepboop_node.cli.options import config_option, is_interactive
from openbeepboop_node.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_REQUEST_TIMEOUT_SECONDS,
    NodeConfig,
    default_config_path,
    default_node_id,
    parse_config,
    read_toml,
    write_config,
)
from openbeepboop_node.exceptions import BackendUnreachableError, ConfigError
from openbeepboop_node.request_params import DEFAULTABLE_PARAMS

#: Offered as the server URL when nothing else is known.
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
#: The ``defaults.max_tokens`` setup proposes for a model that has none. A job
#: without ``max_tokens`` otherwise runs until the model stops or its context
#: is full (minutes on a CPU); 1024 tokens fits a long answer, and a job that
#: needs more says so itself. ``--max-tokens 0`` keeps a model without one.
DEFAULT_MAX_TOKENS = 1024


@dataclass
class SetupAnswers:
    """What the flags said; ``None`` means "not given"."""

    server_url: str | None = None
    api_key: str | None = None
    node_id: str | None = None
    concurrency: int | None = None
    prefetch: int | None = None
    model: str | None = None
    litellm_model: str | None = None
    api_base: str | None = None
    api_key_env: str | None = None
    model_api_key: str | None = None
    request_timeout: float | None = None
    model_concurrency: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


def parse_default(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from ``--default``; VALUE is JSON when it parses, else a string."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint="--default")
    if name not in DEFAULTABLE_PARAMS:
        raise click.BadParameter(
            f"{name!r} is not an OpenAI generation parameter a node forwards",
            param_hint="--default",
        )
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


class _Asker:
    """Asks on a terminal; elsewhere notes the flags of what is required and missing."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        #: Flags of required values nothing gave (without a terminal).
        self.missing: list[str] = []
        #: Models given DEFAULT_MAX_TOKENS because nobody chose a value (told after writing).
        self.proposed_max_tokens: list[str] = []

    def value(
        self,
        given: Any,
        prompt: str,
        flag: str,
        *,
        current: Any = None,
        fallback: Any = None,
        required: bool = True,
        secret: bool = False,
        kind: Any = str,
    ) -> Any:
        if given is not None:
            return given
        default = current if current is not None else fallback
        if not self.interactive:
            if default is None and required:
                self.missing.append(flag)
            return default
        if secret and default:
            answer = click.prompt(
                f"{prompt} (Enter keeps the current one)",
                default="",
                hide_input=True,
                show_default=False,
                type=kind,
            )
            return answer or default
        if not required and default is None:
            return self._optional(prompt, kind)
        return click.prompt(prompt, default=default, hide_input=secret, type=kind)

    @staticmethod
    def _optional(prompt: str, kind: Any) -> Any:
        # click would reject a blank answer for a typed prompt: convert by hand.
        while True:
            answer = click.prompt(f"{prompt} (blank for none)", default="", show_default=False)
            if answer == "":
                return None
            if not isinstance(kind, click.ParamType):
                return answer
            try:
                return kind.convert(answer, None, None)
            except click.BadParameter as exc:
                click.echo(f"Error: {exc.message}", err=True)

    def another(self) -> bool:
        return self.interactive and click.confirm("Add another model?", default=False)


def _model_entry(
    ask: _Asker, answers: SetupAnswers, existing: list[dict[str, Any]], suggest: bool
) -> dict[str, Any]:
    """One ``[[models]]`` entry; ``suggest`` offers the first current model's name."""
    first = existing[0] if existing and suggest else {}
    name = ask.value(
        answers.model, "Model name clients ask for", "--model", current=first.get("name")
    )
    entry: dict[str, Any] = dict(next((m for m in existing if m.get("name") == name), {}))
    entry["name"] = name
    api_base = ask.value(
        answers.api_base,
        "API base URL of the model server",
        "--api-base",
        current=entry.get("api_base"),
        required=False,
    )
    _set(entry, "api_base", api_base)
    suggested = entry.get("litellm_model")
    if ask.interactive and answers.litellm_model is None and api_base:
        suggested = _pick_backend_model(api_base, entry.get("litellm_model")) or suggested
    entry["litellm_model"] = ask.value(
        answers.litellm_model,
        "LiteLLM model (e.g. ollama_chat/llama3, openai/gpt-4o-mini)",
        "--litellm-model",
        current=suggested,
    )
    if answers.api_key_env is not None and answers.model_api_key is not None:
        raise ConfigError("give --api-key-env or --model-api-key, not both")
    key_env = None
    if answers.model_api_key is None:
        key_env = ask.value(
            answers.api_key_env,
            "Environment variable holding the provider's API key",
            "--api-key-env",
            current=entry.get("api_key_env"),
            required=False,
        )
    key = None
    if not key_env:
        key = ask.value(
            answers.model_api_key,
            "Provider API key",
            "--model-api-key",
            current=entry.get("api_key"),
            required=False,
            secret=True,
        )
    _set(entry, "api_key_env", key_env or None)
    _set(entry, "api_key", key or None)
    timeout = ask.value(
        answers.request_timeout,
        "Request timeout in seconds",
        "--request-timeout",
        current=entry.get("timeout"),
        fallback=DEFAULT_REQUEST_TIMEOUT_SECONDS,
        kind=click.FloatRange(min=0, min_open=True),
    )
    _set(entry, "timeout", timeout if timeout != DEFAULT_REQUEST_TIMEOUT_SECONDS else None)
    if answers.model_concurrency is not None:
        # A flag only, never a question: most nodes serve one model (docs/node.md).
        entry["concurrency"] = answers.model_concurrency
    defaults = dict(entry.get("defaults") or {})
    defaults.update(answers.defaults)
    temperature = ask.value(
        answers.temperature,
        "Default temperature when a job sets none",
        "--temperature",
        current=defaults.get("temperature"),
        required=False,
        kind=click.FloatRange(0, 2),
    )
    _set(defaults, "temperature", temperature)
    _set(defaults, "max_tokens", _default_max_tokens(ask, answers, defaults) or None)
    chosen = answers.max_tokens is not None or "max_tokens" in (entry.get("defaults") or {})
    if not chosen and defaults.get("max_tokens") == DEFAULT_MAX_TOKENS:
        ask.proposed_max_tokens.append(name)
    _set(entry, "defaults", defaults or None)
    return entry


def _default_max_tokens(ask: _Asker, answers: SetupAnswers, defaults: dict[str, Any]) -> int:
    """The model's ``defaults.max_tokens``; 0 for none.

    A model with no token limit among its defaults is proposed
    :data:`DEFAULT_MAX_TOKENS` (taken as is without a terminal; setup says so
    once the file is written), so a node never silently lets a prompt without
    ``max_tokens`` fill the model's context.
    """
    current = defaults.get("max_tokens")
    if answers.max_tokens is None and current is None and "max_completion_tokens" in defaults:
        return 0  # the model already has a default limit, under its newer name
    value: int = ask.value(
        answers.max_tokens,
        "Default max_tokens when a job sets none (0 for no default)",
        "--max-tokens",
        current=current,
        fallback=DEFAULT_MAX_TOKENS,
        kind=click.IntRange(min=0),
    )
    return value


def _pick_backend_model(api_base: str, current: str | None) -> str | None:
    """Offer the models the backend at ``api_base`` lists; the LiteLLM model picked, or None.

    The provider is guessed from what answers: Ollama's ``/api/tags``
    (``ollama_chat/``), else an OpenAI-compatible ``/models`` (``openai/``).
    """
    found = asyncio.run(_backend_models(api_base))
    if found is None:
        click.echo(f"(no model list from {api_base}: type the LiteLLM model)", err=True)
        return None
    prefix, names = found
    if not names:
        return None
    click.echo(f"Models at {api_base}:")
    for number, listed in enumerate(names, 1):
        click.echo(f"  {number}. {listed}")
    choice = click.prompt(
        "Pick one by number (Enter to type it yourself)",
        default="",
        show_default=False,
        type=click.Choice(["", *(str(n) for n in range(1, len(names) + 1))]),
        show_choices=False,
    )
    if not choice:
        return current
    return f"{prefix}/{names[int(choice) - 1]}"


async def _backend_models(api_base: str) -> tuple[str, list[str]] | None:
    """(LiteLLM prefix, listed models) of the first kind of backend that lists any.

    As long as the checks wait (5 s to connect, 30 s to answer): a busy local
    server may be slow to list its models.
    """
    session = open_check_session()
    try:
        for prefix in ("ollama_chat", "openai"):
            backend = Backend("?", f"{prefix}/?", api_base)
            try:
                answer = await list_models(session, backend)
            except BackendUnreachableError:
                return None
            if answer.models is not None:
                return prefix, answer.models
        return None
    finally:
        await session.close()


def _set(table: dict[str, Any], key: str, value: Any) -> None:
    if value is None or value == "":
        table.pop(key, None)
    else:
        table[key] = value


def _has_model_flags(answers: SetupAnswers) -> bool:
    model_fields = (
        answers.model,
        answers.litellm_model,
        answers.api_base,
        answers.api_key_env,
        answers.model_api_key,
        answers.request_timeout,
        answers.model_concurrency,
        answers.temperature,
        answers.max_tokens,
    )
    return any(value is not None for value in model_fields) or bool(answers.defaults)


def build_config(
    path: Path,
    answers: SetupAnswers,
    interactive: bool,
    proposed_max_tokens: list[str] | None = None,
) -> NodeConfig:
    """The config setup would write: flags, then answers, then the current file.

    Without ``interactive``, raises MissingWithoutTerminal naming every
    required value that neither a flag nor the current file gives. The names
    of models given the proposed ``max_tokens`` default are appended to
    ``proposed_max_tokens``.
    """
    current: dict[str, Any] = read_toml(path) if path.exists() else {}
    ask = _Asker(interactive)
    data = dict(current)
    # One URL or several (replicas), comma-separated; the config splits them.
    current_urls = current.get("server_urls")
    data.pop("server_urls", None)
    data["server_url"] = ask.value(
        answers.server_url,
        "Queue server URL",
        "--server-url",
        current=",".join(current_urls)
        if isinstance(current_urls, list)
        else current.get("server_url"),
        fallback=DEFAULT_SERVER_URL if interactive else None,
    )
    data["api_key"] = ask.value(
        answers.api_key,
        "Node API key (NODE or ADMIN role)",
        "--api-key",
        current=current.get("api_key"),
        secret=True,
    )
    data["node_id"] = ask.value(
        answers.node_id,
        "Node id",
        "--node-id",
        current=current.get("node_id"),
        fallback=default_node_id(),
    )
    data["concurrency"] = ask.value(
        answers.concurrency,
        "Jobs to run at once",
        "--concurrency",
        current=current.get("concurrency"),
        fallback=DEFAULT_CONCURRENCY,
        kind=click.IntRange(1, 256),
    )
    if answers.prefetch is not None:
        # A flag only, never a question: the default suits most setups (docs/node.md).
        data["prefetch"] = answers.prefetch
    models: list[dict[str, Any]] = [dict(m) for m in current.get("models") or []]
    if interactive or not models or _has_model_flags(answers):
        pending, suggest = answers, True
        while True:
            entry = _model_entry(ask, pending, models, suggest)
            names = [m.get("name") for m in models]
            if entry["name"] in names:
                models[names.index(entry["name"])] = entry
            else:
                models.append(entry)
            if not ask.another():
                break
            pending, suggest = SetupAnswers(), False
    data["models"] = models
    if ask.missing:
        raise MissingWithoutTerminal(ask.missing)
    if proposed_max_tokens is not None:
        proposed_max_tokens.extend(ask.proposed_max_tokens)
    return parse_config(data, str(path))


@click.command("setup")
@config_option
@click.option("--non-interactive", is_flag=True, help="Never prompt; missing values are errors.")
@click.option(
    "--server-url",
    "server_urls",
    multiple=True,
    help="Queue server URL, e.g. http://127.0.0.1:8000; repeat it (or separate with commas) "
    "to give several replicas, in order of preference.",
)
@click.option("--api-key", help="API key with the NODE (or ADMIN) role.")
@click.option("--node-id", help="This node's name (default: the host name).")
@click.option("--concurrency", type=click.IntRange(1, 256), help="Jobs to run at once.")
@click.option(
    "--prefetch",
    type=click.IntRange(0, 256),
    help="Most leases held beyond --concurrency, waiting for a slot (default: as many).",
)
@click.option("--model", help="Model name clients ask for (added or replaced).")
@click.option("--litellm-model", help="What LiteLLM is called with, e.g. ollama_chat/llama3.")
@click.option("--api-base", help="URL of the model server, e.g. http://localhost:11434.")
@click.option("--api-key-env", help="Environment variable holding the provider's API key.")
@click.option("--model-api-key", help="The provider's API key (stored in the config file).")
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds one LLM call may take (default 600).",
)
@click.option(
    "--model-concurrency",
    type=click.IntRange(1, 256),
    help="Most jobs of this model held at once (default: only --concurrency bounds it).",
)
@click.option(
    "--no-check",
    is_flag=True,
    help="Write the config without checking the server, the key and the backends.",
)
@click.option("--temperature", type=click.FloatRange(0, 2), help="Default temperature.")
@click.option(
    "--max-tokens",
    type=click.IntRange(min=0),
    help=f"Default max_tokens for jobs that set none (default {DEFAULT_MAX_TOKENS}; 0 for none).",
)
@click.option(
    "--default",
    "defaults",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another default generation parameter (VALUE as JSON), repeatable.",
)
def setup_command(
    config_path: Path | None,
    non_interactive: bool,
    no_check: bool,
    defaults: tuple[str, ...],
    **values: Any,
) -> None:
    """Create or update node_config.toml (wizard on a terminal, flags otherwise)."""
    path = config_path or default_config_path()
    server_url = ",".join(values.pop("server_urls")) or None
    answers = SetupAnswers(
        **values, server_url=server_url, defaults=dict(parse_default(d) for d in defaults)
    )
    interactive = is_interactive(non_interactive)
    proposed: list[str] = []
    try:
        config = build_config(path, answers, interactive, proposed)
        if not no_check:
            _check_before_writing(config, interactive)
        write_config(config, path)
    except ConfigError as exc:
        raise CommandError.from_error(exc) from None
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"Node config written to {path} (mode 0600).")
    if no_check:
        click.echo("  not checked (--no-check): run `openbeepboop-node check` later")
    click.echo(f"  server: {', '.join(config.all_server_urls())}")
    click.echo(
        f"  node id: {config.node_id}, concurrency {config.concurrency}, "
        f"prefetch up to {config.prefetch_leases()}"
    )
    for model in config.models:
        where = f" @ {model.api_base}" if model.api_base else ""
        click.echo(f"  model {model.name} -> {model.litellm_model}{where}")
        if model.name in proposed:
            click.echo(
                f"    jobs that set no max_tokens get max_tokens = {DEFAULT_MAX_TOKENS}, "
                "the proposed default (--max-tokens N to change it, 0 for none)"
            )
    click.echo(
        "Start it with: openbeepboop-node run" + (f" --config {path}" if config_path else "")
    )


def _check_before_writing(config: NodeConfig, interactive: bool) -> None:
    """Run the checks; a failure ends setup (nothing written) unless confirmed on a terminal."""
    from openbeepboop_node import __version__

    results = asyncio.run(run_checks(config, version=__version__))
    status = failed_status(results)
    if not status:
        for result in results:
            click.echo(result.line())
        return
    failed = [result for result in results if not result.ok]
    if interactive:
        for result in results:
            click.echo(result.line(), err=not result.ok)
        if click.confirm("Write the config anyway?", default=False):
            return
    raise CommandError(
        "; ".join(f"{r.name}: {r.detail}" for r in failed)
        + " (nothing written; --no-check writes it without checking)",
        status,
    )
