"""What ``submit --wait`` prints for a person: the answer's text, not the JSON around it.

A finished job's poll entry is ~50 lines of JSON with the answer buried in
``result.choices[0].message.content``. On a terminal (or with ``--text``)
``submit --wait`` prints just that text on stdout, and says on stderr what a
reader must not miss: that the answer was cut short (``finish_reason:
length``), or that there is no answer at all (the job failed or was
cancelled: an ``Error:`` line and exit 1). stdout holds nothing but the
answer, so ``answer=$(openbeepboop-client submit --text ... --wait)`` works.
"""

from __future__ import annotations

import click
from openbeepboop_schemas import ChatCompletion, JobStatus, PollEntry, escape_control

#: ``finish_reason`` of a choice that stopped at the token limit, not where the model chose to.
TRUNCATED = "length"


def _choice_texts(completion: ChatCompletion) -> list[str]:
    """The text of each choice; one without text (tool calls) says so in words."""
    texts = []
    for choice in completion.choices:
        message = choice.message
        if message.content is not None:
            texts.append(message.content)
        elif message.tool_calls:
            texts.append(f"({len(message.tool_calls)} tool call(s) and no text; --json shows them)")
        else:
            texts.append("(no text)")
    return texts


def truncation_note(completion: ChatCompletion) -> str | None:
    """The stderr line marking an answer cut at the token limit, or None if it is whole."""
    cut = [choice.index for choice in completion.choices if choice.finish_reason == TRUNCATED]
    if not cut:
        return None
    tokens = completion.usage.completion_tokens if completion.usage else 0
    after = f" after {tokens} tokens" if tokens else ""
    which = "" if len(completion.choices) == 1 else f" (choice {', '.join(map(str, cut))})"
    return (
        f"Note: the answer{which} is truncated: it stopped at the token limit{after} "
        f"(finish_reason: length); ask again with a larger --max-tokens for all of it."
    )


def _no_answer(entry: PollEntry) -> str:
    """Why a finished job has no answer, in one line (without the ``Error:``)."""
    if entry.status == JobStatus.FAILED.value:
        attempts = f" after {entry.attempts} attempt{'s' if entry.attempts != 1 else ''}"
        # A backend wrote the message: escaped, it stays one inert line.
        why = f": {escape_control(entry.error.message)}" if entry.error else ""
        return f"job {entry.id} FAILED{attempts if entry.attempts else ''}{why}"
    if entry.status == JobStatus.CANCELLED.value:
        return f"job {entry.id} was CANCELLED before it finished; it has no answer"
    if entry.status == JobStatus.COMPLETED.value:
        return (
            f"job {entry.id} is COMPLETED but its result was not sent; "
            f"see it with: openbeepboop-client poll {entry.id}"
        )
    return f"job {entry.id} is {entry.status}; it has no answer"


def echo_answer(entry: PollEntry) -> None:
    """Print a finished job's answer text; raise a one-line error when it has none.

    Raises :class:`click.ClickException` (exit 1) for a job that FAILED or
    was CANCELLED: scripts reading ``--text`` must not take an empty stdout
    for an empty answer.
    """
    if entry.status != JobStatus.COMPLETED.value or entry.result is None:
        raise click.ClickException(_no_answer(entry))
    texts = _choice_texts(entry.result)
    if not texts:
        # A result an older server stored with ``choices: []``: no answer, not an empty one.
        raise click.ClickException(
            f"job {entry.id} is COMPLETED but its result holds no choice; "
            f"see it with: openbeepboop-client poll {entry.id}"
        )
    for index, text in enumerate(texts):
        if len(texts) > 1:
            click.echo(f"--- choice {index} ---")
        click.echo(text)
    note = truncation_note(entry.result)
    if note:
        click.echo(note, err=True)
