"""The resources a client exposes as attributes: ``chat``, ``jobs``, ``models``."""

from __future__ import annotations

from openbeepboop._resources.chat import AsyncChat, AsyncCompletions, Chat, Completions
from openbeepboop._resources.jobs import AsyncJobs, Jobs
from openbeepboop._resources.models import AsyncModels, Models

__all__ = [
    "AsyncChat",
    "AsyncCompletions",
    "AsyncJobs",
    "AsyncModels",
    "Chat",
    "Completions",
    "Jobs",
    "Models",
]
