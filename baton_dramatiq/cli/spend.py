"""The LLM commands: what a workflow's calls cost, and replaying one step's calls."""

from __future__ import annotations

import click
from rich import box
from rich.table import Table

import baton_dramatiq as baton

from .connect import client_broker, connection_options, open_store
from .render import console


def money(usd: float) -> str:
    """US dollars, with enough digits for the fractions of a cent LLM calls cost."""
    return f"${usd:,.6f}"


def cost_table(title: str, lines: dict[str, baton.stats.CostLine]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column(title.split()[-1].capitalize(), overflow="fold")
    for name in ("Calls", "Cached", "Prompt tokens", "Completion tokens", "Cost (USD)"):
        table.add_column(name, justify="right", no_wrap=True)
    for name, line in lines.items():
        table.add_row(
            name,
            str(line.calls),
            str(line.cached_calls),
            f"{line.prompt_tokens:,}",
            f"{line.completion_tokens:,}",
            money(line.total_cost_usd),
        )
    return table


def print_cost(report: baton.stats.CostReport) -> None:
    """The report as two tables (by step, by model) and a total line."""
    out = console()
    if report.calls == 0 and report.cached_calls == 0:
        out.print("No LLM calls.")
    else:
        out.print(cost_table("Cost by step", report.by_step))
        out.print()
        out.print(cost_table("Cost by model", report.by_model))
        out.print()
    total = (
        f"Total {money(report.total_cost_usd)}: {report.calls} paid "
        f"call{'s' * (report.calls != 1)}, {report.cached_calls} cached, "
        f"{report.prompt_tokens:,} prompt + {report.completion_tokens:,} completion tokens"
    )
    if report.max_cost_usd is not None:
        total += f"; budget {money(report.max_cost_usd)}"
    out.print(total, soft_wrap=True)


@click.command()
@connection_options()
@click.argument("workflow_id", metavar="ID")
def cost(database_url: str, redis_url: str | None, workflow_id: str) -> None:
    """Show what a workflow's LLM calls cost, by step and by model."""
    store = open_store(database_url)
    report = baton.stats.workflow_cost(workflow_id, store=store, broker=client_broker(store))
    print_cost(report)


@click.command()
@connection_options()
@click.argument("workflow_id", metavar="RUN_ID")
@click.argument("step_name", metavar="STEP")
@click.option("--model", default=None, help="Send the calls to this litellm model instead.")
def replay(
    database_url: str, redis_url: str | None, workflow_id: str, step_name: str, model: str | None
) -> None:
    """Re-run one step's LLM calls from their captured context, as a new paid attempt.

    The step's code and the steps upstream do not run again; the workflow is left as it
    is. Credentials come from the environment (e.g. OPENAI_API_KEY).
    """
    from ..llm import replay as replay_step  # litellm itself loads on the first call

    store = open_store(database_url)
    done = replay_step(
        workflow_id, step_name, model=model, store=store, broker=client_broker(store)
    )
    out = console()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("Model", overflow="fold")
    for name in ("Prompt tokens", "Completion tokens", "Cost (USD)"):
        table.add_column(name, justify="right", no_wrap=True)
    for position, response in enumerate(done.responses):
        table.add_row(
            str(position),
            response.model,
            f"{response.prompt_tokens:,}",
            f"{response.completion_tokens:,}",
            money(response.cost_usd),
        )
    out.print(table)
    out.print(
        f"Replayed {len(done.responses)} call{'s' * (len(done.responses) != 1)} of step "
        f"{step_name!r} as attempt {done.attempt}: {money(done.cost_usd)}",
        soft_wrap=True,
    )
    out.print("\nLast answer:", style="bold")
    out.print(done.text, soft_wrap=True, markup=False)
