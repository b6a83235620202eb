"""`baton cost`, `baton replay` and `baton cancel` on workflows with LLM steps."""

from __future__ import annotations

from pathlib import Path

import dramatiq.broker
import pytest
from click.testing import CliRunner, Result

import baton_dramatiq as baton
from baton_dramatiq.cli import cli
from baton_dramatiq.llm.testing import FakeProvider
from tests.llm.conftest import actors
from tests.support.cluster import Cluster, wait_for

TIMEOUT = 30
ENV = {"BATON_DATABASE_URL": None, "BATON_REDIS_URL": None, "BATON_DEBUG": None, "COLUMNS": "200"}


def baton_cli(cluster: Cluster, *args: str, **env: str) -> Result:
    url = str(cluster.store.engine.url)
    before = dramatiq.broker.global_broker
    try:
        runner = CliRunner(env={**ENV, **env})
        return runner.invoke(cli, [*args, "--database-url", url], catch_exceptions=False)
    finally:
        dramatiq.broker.global_broker = before


def test_baton_cost_prints_the_spend_by_step_and_by_model(
    embedded: Cluster, provider: FakeProvider
) -> None:
    provider.respond("ok", prompt_tokens=1000, completion_tokens=200)
    chat = actors(embedded).chat
    run = (
        baton.Workflow(name="costly", max_cost_usd=0.5)
        .add("first", chat.message(["a", "b"], provider.url))
        .add("second", chat.message(["c"], provider.url, model="openai/gpt-4o"), deps=["first"])
        .insert()
    )
    assert run.wait(timeout=TIMEOUT) == "completed"
    report = baton.stats.workflow_cost(run.id)

    result = baton_cli(embedded, "cost", run.id)

    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    first = report.by_step["first"]
    assert f"first 2 0 2,000 400 ${first.total_cost_usd:,.6f}" in lines
    gpt4o = report.by_model["openai/gpt-4o"]
    assert f"openai/gpt-4o 1 0 1,000 200 ${gpt4o.total_cost_usd:,.6f}" in lines
    assert lines[-1] == (
        f"Total ${report.total_cost_usd:,.6f}: 3 paid calls, 0 cached, 3,000 prompt + 600 "
        "completion tokens; budget $0.500000"
    )


def test_baton_cost_of_an_unknown_workflow_is_one_line(embedded: Cluster) -> None:
    result = baton_cli(embedded, "cost", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: No workflow with id 'nope'"


def test_baton_replay_reruns_a_step_on_another_model(
    embedded: Cluster, provider: FakeProvider
) -> None:
    provider.respond(lambda request: f"{request.model} says hi")
    wf = baton.Workflow(name="cli-replay")
    run = wf.add("chat", actors(embedded).chat.message(["hello"], provider.url)).insert()
    assert run.wait(timeout=TIMEOUT) == "completed"

    result = baton_cli(
        embedded, "replay", run.id, "chat", "--model", "openai/gpt-4o", OPENAI_API_KEY="sk-x"
    )

    assert result.exit_code == 0, result.output
    assert "Replayed 1 call of step 'chat' as attempt 2: $" in result.output
    assert result.output.rstrip().endswith("Last answer:\ngpt-4o says hi")
    assert provider.requests[-1].model == "gpt-4o"
    assert baton.stats.workflow_cost(run.id).by_model["openai/gpt-4o"].calls == 1


def test_baton_replay_of_a_running_workflow_is_one_line(embedded: Cluster) -> None:
    run = baton.Workflow(name="busy").add("nap", embedded.actors.sleeper.message(0.5)).insert()
    result = baton_cli(embedded, "replay", run.id, "nap")
    run.cancel()
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: Workflow {run.id} is still running")


def test_baton_cancel_reports_what_was_spent(
    embedded: Cluster, provider: FakeProvider, tmp_path: Path
) -> None:
    gate = str(tmp_path / "gate")
    message = actors(embedded).chat_until_cancelled.message(provider.url, gate)
    run = baton.Workflow(name="cli-cancel").add("chat", message).insert()
    wait_for(lambda: baton.stats.workflow_cost(run.id).calls == 1)

    result = baton_cli(embedded, "cancel", run.id)
    Path(gate).write_text("go")

    assert result.exit_code == 0, result.output
    spent = baton.stats.workflow_cost(run.id).total_cost_usd
    assert result.output.splitlines()[-1] == (
        f"LLM calls so far: ${spent:,.6f} for 1 paid call (see `baton cost {run.id}`)"
    )
    after = baton_cli(embedded, "cost", run.id)
    assert f"Total ${spent:,.6f}: 1 paid call, 0 cached" in after.output
    assert run.status() == "cancelled"


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
