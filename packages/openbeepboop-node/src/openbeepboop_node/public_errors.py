"""What a job's submitter sees of a failure: the error's class and message, not the node.

A job's error message is stored by the server and shown to whoever
submitted the job. Some LiteLLM errors carry a whole Python traceback in
their message (``APIConnectionError`` wrapping a local exception does), with
the node's file paths, its Python version and its virtualenv in it; an
unexpected exception's text can hold paths too. None of that is the
user's business, and all of it stays in the node's log. What the user gets:
the message up to the traceback (or the traceback's last line, the
exception itself, when nothing came before it), with absolute file paths
replaced by ``<path>``, and the operator's secrets and endpoint masked.
URLs (a provider's documentation link) and model names (``openai/gpt-4o``)
are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from openbeepboop_schemas import MAX_ERROR_MESSAGE_CHARS

TRACEBACK_HEADER = "Traceback (most recent call last)"
#: Placeholders for what is masked.
PATH_MASK = "<path>"
SECRET_MASK = "***"  # noqa: S105 - what replaces a secret, not one
ENDPOINT_MASK = "<api_base>"

# An absolute POSIX path (``/home/me/x.py``, ``/usr/lib/python3.11``) where it
# starts a word: not the path part of a URL (``host/v1``, ``//host``) nor a
# model name (``openai/gpt-4o``). A drive or UNC path on Windows.
_POSIX_PATH = re.compile(r"(?<![\w:/.\-~<>])/(?:[\w.\-~+@]+/)*[\w.\-~+@]+/?")
_WINDOWS_PATH = re.compile(
    r"(?<![\w])(?:[A-Za-z]:|\\\\[\w.\-]+)\\(?:[^\s\\'\"<>|]+\\)*[^\s\\'\"<>|]*"
)
_FILE_LINE = re.compile(r'^\s*File "[^"]*", line \d+.*$', re.MULTILINE)


def _without_traceback(message: str) -> str:
    start = message.find(TRACEBACK_HEADER)
    if start < 0:
        return _FILE_LINE.sub("", message)
    before = message[:start].strip()
    if before:
        return before
    # Only a traceback: its last non-empty line is the exception ("KeyError: 'x'").
    lines = [line.strip() for line in message[start:].splitlines() if line.strip()]
    return lines[-1] if lines else ""


def public_message(
    message: str,
    *,
    secrets: Iterable[str | None] = (),
    endpoints: Iterable[str | None] = (),
    fallback: str = "error",
) -> str:
    """``message`` fit for the job's submitter (see the module docstring)."""
    text = _without_traceback(message)
    for secret in secrets:
        if secret:
            text = text.replace(secret, SECRET_MASK)
    for endpoint in endpoints:
        if endpoint:
            text = text.replace(endpoint.rstrip("/"), ENDPOINT_MASK)
    text = _WINDOWS_PATH.sub(PATH_MASK, text)
    text = _POSIX_PATH.sub(PATH_MASK, text)
    text = text.strip() or fallback
    return text[:MAX_ERROR_MESSAGE_CHARS]
