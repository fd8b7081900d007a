"""What ``setup`` learns from the server: the models it serves, and a "Try it" line that works.

A new user does not know which model names the pool serves; the wizard asks
the server (``GET /v1/models``, with the URL and key just entered) and offers
them as the default model. The same answer makes the closing "Try it" line
runnable as printed: it names ``--config`` when the file is not the default
one, and ``--model`` when no default model was set. If the server cannot be
asked (down, wrong URL, rejected key) setup still writes the file and says
why on stderr: the file is right to keep, and the reason is the next thing to
fix.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from openbeepboop._client import Client
from openbeepboop._exceptions import OpenBeepBoopError
from openbeepboop.cli.errors import describe

#: Seconds setup waits for the server's model list: it is a hint, not worth a long hang.
MODELS_TIMEOUT_SECONDS = 5.0
#: The prompt of the "Try it" line.
TRY_PROMPT = "Say hello"


@dataclass
class ServedModels:
    """The models the server's nodes serve now (most nodes first), or why it is not known."""

    names: list[str] = field(default_factory=list)
    problem: str | None = None


def ask_served_models(server_url: str, api_key: str) -> ServedModels:
    """``GET /v1/models`` with the values setup is about to write; never raises."""
    try:
        with Client(
            base_url=server_url,
            api_key=api_key,
            timeout=MODELS_TIMEOUT_SECONDS,
            max_retries=0,
        ) as client:
            listed = client.models.list()
    except (OpenBeepBoopError, OSError) as exc:
        return ServedModels(problem=describe(exc))
    # Most nodes first: the model offered (and tried) is the likeliest to be answered.
    cards = sorted(listed.data, key=lambda card: -card.nodes)
    return ServedModels(names=[card.id for card in cards])


def try_it_line(config_path: Path | None, default_model: str | None, served: list[str]) -> str:
    """The command to run next, exactly as it will work with what setup wrote."""
    config = f" --config {shlex.quote(str(config_path))}" if config_path is not None else ""
    command = f'openbeepboop-client submit "{TRY_PROMPT}"{config}'
    if default_model:
        return f"Try it: {command} --wait"
    if served:
        return f"Try it: {command} --model {shlex.quote(served[0])} --wait"
    return (
        "No node serves a model yet (or the server could not be asked). Once one does, "
        f"`openbeepboop-client models{config}` names it; then try: "
        f"{command} --model NAME --wait"
    )
