"""The resources a client exposes as attributes: ``chat``, ``jobs``, ``models``, ``pool``."""

from __future__ import annotations

from openbeepboop._resources.chat import AsyncChat, AsyncCompletions, Chat, Completions
from openbeepboop._resources.jobs import AsyncJobs, Jobs
from openbeepboop._resources.models import AsyncModels, Models
from openbeepboop._resources.pool import AsyncPool, Pool

__all__ = [
    "AsyncChat",
    "AsyncCompletions",
    "AsyncJobs",
    "AsyncModels",
    "AsyncPool",
    "Chat",
    "Completions",
    "Jobs",
    "Models",
    "Pool",
]
