"""OpenBeepBoop node: pulls LLM jobs from a queue server and runs them through LiteLLM.

Importing this package is cheap: LiteLLM is only imported when a node starts
working (:mod:`openbeepboop_node.inference`).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from openbeepboop_node.config import ModelConfig, NodeConfig, load_config, write_config
from openbeepboop_node.exceptions import (
    ConfigError,
    InferenceError,
    KeyRejectedError,
    OpenBeepBoopNodeError,
    ServerRequestError,
    ServerUnavailableError,
)
from openbeepboop_node.worker import Node, RunSummary

try:
    __version__ = version("openbeepboop-node")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ConfigError",
    "InferenceError",
    "KeyRejectedError",
    "ModelConfig",
    "Node",
    "NodeConfig",
    "OpenBeepBoopNodeError",
    "RunSummary",
    "ServerRequestError",
    "ServerUnavailableError",
    "__version__",
    "load_config",
    "write_config",
]
