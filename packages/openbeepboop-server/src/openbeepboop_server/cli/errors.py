"""Expected failures as one line on stderr: the top-level group's error mapping.

Every expected failure (bad config, database behind, key name taken, port
busy, ...) ends with one human line (``Error: ...``) and exit status 1, never
a traceback; ``-v`` lets an unexpected one through with its traceback.
"""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from openbeepboop_server.db.database import SqliteLocationError
from openbeepboop_server.errors import ServerError


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class OneLineErrors(click.Group):
    """A group that turns expected exceptions into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ServerError as exc:
            raise click.ClickException(first_line(exc)) from None
        except SQLAlchemyError as exc:
            # Driver messages can hold the URL; SQLAlchemy hides passwords in
            # its own rendering, and only the first line is shown.
            orig = getattr(exc, "orig", None)
            if isinstance(orig, SqliteLocationError):  # names the file and the reason itself
                raise click.ClickException(first_line(orig)) from None
            raise click.ClickException(
                f"database error: {first_line(orig if orig is not None else exc)}"
            ) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or first_line(exc)}{where}") from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if ctx.find_root().meta.get("verbosity", 0) > 0:
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {first_line(exc)} (run with -v for details)"
            ) from None
