"""`baton`: the command line — migrate, run the demo, list, inspect, watch and cancel.

Every subcommand takes ``--database-url`` (``BATON_DATABASE_URL``, else
``sqlite:///baton.db``) and ``--redis-url`` (``BATON_REDIS_URL``). Bad input ends with
one line on stderr and a non-zero exit, never a traceback (``BATON_DEBUG=1`` shows it).
The core never imports this package.

    app.py       the `baton` group, its one-line error handling, `main`
    connect.py   the shared options; opening the store, the bus and a client broker
    render.py    rich output: tables' cells and the live progress lines
    commands.py  migrate, schema-sql, list, status, cancel
    live.py      demo and watch, which follow a workflow as it runs
    spend.py     cost and replay: what LLM calls cost, and running them again
"""

from .app import cli, main

__all__ = ["cli", "main"]
