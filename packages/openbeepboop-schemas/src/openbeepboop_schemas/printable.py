"""Text bound for a terminal or a log: control characters refused on the wire, escaped when shown.

A model name is chosen by whoever submits a job or declares a node, and it is
printed by ``status``, ``nodes`` and ``models`` and logged by the node; an
ANSI sequence in it would recolour, clear or retitle an operator's terminal
and a newline would forge a table row or a log line. The wire refuses C0 and
C1 control characters and DEL in model names and node versions
(:data:`ModelName`, :data:`NodeVersion`); :func:`escape_control` is the one
rendering for text that may still hold them (a name stored by an older
version, an error message a backend wrote).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

#: C0 controls, DEL and C1 controls (Unicode category ``Cc``): what a terminal
#: or a log reader may act on instead of showing.
_CONTROL = "\x00-\x1f\x7f-\x9f"
#: What :func:`escape_control` escapes: the controls, and the Unicode line and
#: paragraph separators that some viewers break lines at.
_SHOWN_ESCAPED = re.compile(f"[{_CONTROL}\u2028\u2029]")
#: The rule as JSON Schema has it (ECMA-262 regex), for the published contract.
_NO_CONTROL_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_HAS_CONTROL = re.compile(f"[{_CONTROL}]")


def _no_control_characters(value: str) -> str:
    if _HAS_CONTROL.search(value):
        raise ValueError("must not hold control characters (C0, C1 or DEL)")
    return value


#: A model name as a job or a node names it: 1-256 characters, none a control.
ModelName = Annotated[
    str,
    Field(min_length=1, max_length=256, json_schema_extra={"pattern": _NO_CONTROL_PATTERN}),
    AfterValidator(_no_control_characters),
]

#: The software version a node reports: up to 64 characters, none a control.
NodeVersion = Annotated[
    str,
    Field(max_length=64, json_schema_extra={"pattern": _NO_CONTROL_PATTERN}),
    AfterValidator(_no_control_characters),
]


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with each control character shown as ``\\xNN`` (``\\u2028`` for separators).

    For any text printed for a human or logged that a user, a node or a
    backend chose: it then reads as one inert line whatever it held.
    """
    return _SHOWN_ESCAPED.sub(_escaped, text)
