"""OpenBeepBoop's unpublished test kit: stand-in LLM, process helpers, llama.cpp fixture.

Import the submodules you need (``openbeepboop_testkit.standin``,
``openbeepboop_testkit.processes``); nothing heavy happens on import.
"""

from __future__ import annotations

__all__: list[str] = []
