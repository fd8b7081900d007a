"""The resources a client exposes as attributes: ``chat``, ``jobs``, ``models``, ``pool``,
``usage``."""

from __future__ import annotations

from openbeepboop._resources.chat import AsyncChat, AsyncCompletions, Chat, Completions
from openbeepboop._resources.jobs import AsyncJobs, Jobs
from openbeepboop._resources.models import AsyncModels, Models
from openbeepboop._resources.pool import AsyncPool, Pool
from openbeepboop._resources.usage import AsyncUsage, Usage

__all__ = [
    "AsyncChat",
    "AsyncCompletions",
    "AsyncJobs",
    "AsyncModels",
    "AsyncPool",
    "AsyncUsage",
    "Chat",
    "Completions",
    "Jobs",
    "Models",
    "Pool",
    "Usage",
]
