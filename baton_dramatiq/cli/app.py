"""The `baton` click group: every expected error ends as one line on stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click
import redis
import sqlalchemy as sa

import baton_dramatiq as baton

from . import commands, live, maintenance, spend


class BatonGroup(click.Group):
    """A click group that reports every expected error as one line on stderr."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            # standalone_mode=False: click hands us its errors instead of printing usage
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("Interrupted.", err=True)
            code = 130
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            code = _fail(exc.format_message() + hint, exc.exit_code)
        except click.ClickException as exc:
            code = _fail(exc.format_message(), exc.exit_code)
        except (baton.BatonError, redis.RedisError, sa.exc.SQLAlchemyError) as exc:
            code = _fail(str(exc) or type(exc).__name__, 1)
        except Exception as exc:
            if os.environ.get("BATON_DEBUG"):
                raise
            code = _fail(f"{type(exc).__name__}: {exc} (BATON_DEBUG=1 shows the traceback)", 1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> int:
    click.echo("Error: " + " ".join(message.split()), err=True)  # one line, always
    return code


#: every subcommand; `baton --help` lists them sorted by name
COMMANDS: tuple[click.Command, ...] = (
    commands.migrate,
    commands.schema_sql,
    live.demo,
    commands.list_,
    commands.status,
    live.watch,
    commands.cancel,
    spend.cost,
    spend.replay,
    maintenance.prune,
)


@click.group(
    cls=BatonGroup,
    commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(baton.__version__, prog_name="baton")
def cli() -> None:
    """Run, inspect and watch baton_dramatiq workflows."""


def main(argv: Sequence[str] | None = None) -> None:
    """The `baton` console script."""
    cli.main(args=argv, prog_name="baton")
