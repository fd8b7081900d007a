"""OpenBeepBoop queue server: a durable LLM job queue over HTTP.

Build the app with :func:`openbeepboop_server.app.create_app` from
:class:`openbeepboop_server.config.Settings`; run it with the
``openbeepboop-server`` command. Importing this package opens nothing.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("openbeepboop-server")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
