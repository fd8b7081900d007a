"""``openbeepboop-server``: setup, start, migrate, keys, nodes.

Every expected failure (bad config, database behind, key name taken, port
busy, ...) ends with one human line on stderr and exit status 1, never a
traceback; ``-v`` adds the traceback of an unexpected one. Only this package
configures logging.
"""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from openbeepboop_server import __version__
from openbeepboop_server.cli.admin import keys, migrate, nodes
from openbeepboop_server.cli.serve import start
from openbeepboop_server.cli.wizard import setup
from openbeepboop_server.errors import ServerError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class _Cli(click.Group):
    """A group that turns expected exceptions into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ServerError as exc:
            raise click.ClickException(_first_line(exc)) from None
        except SQLAlchemyError as exc:
            # Driver messages can hold the URL; SQLAlchemy hides passwords in
            # its own rendering, and only the first line is shown.
            orig = getattr(exc, "orig", None)
            raise click.ClickException(
                f"database error: {_first_line(orig if orig is not None else exc)}"
            ) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or _first_line(exc)}{where}") from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if ctx.find_root().meta.get("verbosity", 0) > 0:
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {_first_line(exc)} (run with -v for details)"
            ) from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(__version__, prog_name="openbeepboop-server")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """OpenBeepBoop queue server: a durable queue of LLM jobs over HTTP."""
    ctx.meta["verbosity"] = -1 if quiet else verbose


main.add_command(setup)
main.add_command(start)
main.add_command(migrate)
main.add_command(keys)
main.add_command(nodes)

__all__ = ["main"]
