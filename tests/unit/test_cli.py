"""The `baton` command line, embedded (SQLite, Dramatiq's StubBroker): no services needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import dramatiq.broker
import pytest
from click.testing import CliRunner, Result

import baton_dramatiq as baton
from baton_dramatiq import demo
from baton_dramatiq.cli import cli
from baton_dramatiq.testing import embedded

STEPS = ("fetch_sources", "summarize", "keywords", "credibility", "compile_brief")
#: the environment the tests run the CLI in: no configured services, wide output
ENV = {"BATON_DATABASE_URL": None, "BATON_REDIS_URL": None, "BATON_DEBUG": None, "COLUMNS": "200"}


@pytest.fixture(autouse=True)
def _restore_global_broker() -> Iterator[None]:
    # the demo sets the global broker, as a Dramatiq application would
    before = dramatiq.broker.global_broker
    yield
    dramatiq.broker.global_broker = before


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=ENV)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'baton.db'}"


def run(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(cli, list(args), catch_exceptions=False)


def assert_one_line_error(result: Result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


def insert_unstarted_demo(db_url: str) -> str:
    """A demo workflow in the store at `db_url`, with no worker to run it."""
    setup = embedded(db_url)
    actors = demo.declare_actors(setup.broker)
    run_ = demo.build_workflow(actors, "tides", 0.0).insert(broker=setup.broker, store=setup.store)
    setup.store.dispose()
    return run_.id


def test_demo_runs_the_diamond_and_shows_each_step_completing_then_the_brief(
    runner: CliRunner,
) -> None:
    # When the embedded demo runs
    result = run(runner, "demo", "--step-seconds", "0.02", "--topic", "tidal power")

    # Then it succeeds, each step is shown executing then completed, in dependency order
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()

    def index(step: str, state: str) -> int:
        pattern = re.compile(rf"\b{step}\s+{state}\s+attempt 1")
        matches = [i for i, line in enumerate(lines) if pattern.search(line)]
        assert len(matches) == 1, f"{step} {state}:\n{result.output}"
        return matches[0]

    for step in STEPS:
        assert index(step, "executing") < index(step, "completed")
    for analysis in ("summarize", "keywords", "credibility"):
        assert index("fetch_sources", "completed") < index(analysis, "executing")
        assert index(analysis, "completed") < index("compile_brief", "executing")
    assert re.search(r"workflow\s+completed", result.output)
    # and compile_brief's result, built from the three analyses
    assert '"title": "Research brief: tidal power"' in result.output
    built_from = re.search(r'"built_from": \[([^\]]*)\]', result.output)
    assert built_from is not None
    assert re.findall(r'"(\w+)"', built_from.group(1)) == ["credibility", "keywords", "summarize"]


def test_demo_exits_1_when_a_step_fails_and_shows_why_without_a_traceback(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a keywords step that always fails
    def keywords(seconds: float) -> dict[str, object]:
        raise RuntimeError("keyword service is down")

    steps = tuple(keywords if fn.__name__ == "keywords" else fn for fn in demo.STEPS)
    monkeypatch.setattr(demo, "STEPS", steps)

    # When the demo runs
    result = run(runner, "demo", "--step-seconds", "0.01")

    # Then the step is retried, then discarded with its error; its dependent is cancelled
    assert result.exit_code == 1, result.output
    attempts = demo.RETRIES["max_retries"] + 1
    discarded = (
        rf"keywords\s+discarded\s+attempt {attempts}\s+" r"RuntimeError: keyword service is down"
    )
    assert re.search(discarded, result.output)
    assert re.search(r"compile_brief\s+cancelled", result.output)
    assert re.search(r"workflow\s+failed\s+failed steps: keywords", result.output)
    assert "Traceback" not in result.output


def test_migrate_creates_the_schema_then_status_of_an_unknown_id_is_one_line(
    runner: CliRunner, db_url: str
) -> None:
    # When a new SQLite file is migrated
    result = run(runner, "migrate", "--database-url", db_url)

    # Then the schema is at the head revision, and saying so is what migrate prints
    assert result.exit_code == 0, result.output
    assert baton.migrations.HEAD_REVISION in result.output
    assert baton.migrations.current(baton.Store(db_url)) == baton.migrations.HEAD_REVISION
    assert "up to date" in run(runner, "migrate", "--database-url", db_url).output

    # When the status of an id no workflow has is asked for
    result = run(runner, "status", "no-such-id", "--database-url", db_url)

    # Then one line says so, with a non-zero exit
    assert "No workflow with id 'no-such-id'" in assert_one_line_error(result)


def test_a_missing_or_unmigrated_database_is_one_line_that_says_to_migrate(
    runner: CliRunner, tmp_path: Path
) -> None:
    # Given no database file
    missing = tmp_path / "missing.db"
    result = run(runner, "list", "--database-url", f"sqlite:///{missing}")
    # Then one line says to migrate, and no empty database is left behind
    assert "baton migrate" in assert_one_line_error(result)
    assert not missing.exists()

    # Given a database file that was never migrated
    empty = tmp_path / "empty.db"
    empty.touch()
    result = run(runner, "status", "some-id", "--database-url", f"sqlite:///{empty}")
    line = assert_one_line_error(result)
    assert "never migrated" in line and "baton migrate" in line


def test_list_and_status_show_the_workflow_the_demo_stored(runner: CliRunner, db_url: str) -> None:
    # Given the demo run on a SQLite file
    result = run(runner, "demo", "--step-seconds", "0.01", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    [view] = baton.query.list_workflows(store=baton.Store(db_url))
    assert f"baton status {view.id}" in result.output

    # When the workflows are listed
    listed = run(runner, "list", "--database-url", db_url)
    # Then it is there, completed
    assert listed.exit_code == 0, listed.output
    assert re.search(rf"{view.id}\s+research:solid-state batteries\s+completed", listed.output)
    assert run(runner, "list", "--state", "running", "--database-url", db_url).output.strip() == (
        "No workflows."
    )

    # When its status is asked for
    status = run(runner, "status", view.id, "--database-url", db_url)
    # Then every step shows completed, compile_brief after its three dependencies
    assert status.exit_code == 0, status.output
    for step in STEPS:
        assert re.search(rf"^{step}\s+completed\s+1\b", status.output, re.MULTILINE), status.output
    assert re.search(r"compile_brief .*summarize, keywords, credibility", status.output)


def test_watch_follows_the_store_until_the_workflow_is_cancelled(
    runner: CliRunner, db_url: str
) -> None:
    # Given a workflow that no worker runs, cancelled from elsewhere in a moment
    workflow_id = insert_unstarted_demo(db_url)
    store = baton.Store(db_url)
    canceller = threading.Timer(
        0.5, lambda: baton.WorkflowRun.get(workflow_id, store=store).cancel()
    )
    canceller.start()

    # When it is watched without Redis (following the store)
    try:
        result = run(runner, "watch", workflow_id, "--database-url", db_url, "--timeout", "10")
    finally:
        canceller.join()

    # Then every step shows cancelled, the watch ends with the workflow, exit 1 (not completed)
    assert result.exit_code == 1, result.output
    for step in STEPS:
        assert re.search(rf"{step}\s+cancelled", result.output), result.output
    assert re.search(r"workflow\s+cancelled", result.output)


def test_cancel_cancels_a_running_workflow_and_leaves_a_finished_one(
    runner: CliRunner, db_url: str
) -> None:
    # Given a workflow that no worker runs
    workflow_id = insert_unstarted_demo(db_url)

    # When it is cancelled
    result = run(runner, "cancel", workflow_id, "--database-url", db_url)

    # Then it is, with every step
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("cancelled")
    steps = baton.query.get_workflow_steps(workflow_id, store=baton.Store(db_url))
    assert {step.state for step in steps} == {"cancelled"}
    # and cancelling it again changes nothing and says so
    again = run(runner, "cancel", workflow_id, "--database-url", db_url)
    assert again.exit_code == 0 and "already finished" in again.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status"], "Missing argument 'ID'"),
        (["stauts", "x"], "Did you mean 'status'"),
        (["list", "--database-url", "mysql://db/app"], "PostgreSQL or SQLite"),
        (["list", "--database-url", "not a url"], "Not a database URL"),
        (["list", "--state", "bogus"], "'--state'"),
        (["demo", "--step-seconds", "-1"], "'--step-seconds'"),
        (["watch", "x", "--redis-url", "http://example.com"], "'--redis-url'"),
        (["watch", "x", "--redis-url", "redis://127.0.0.1:1/0"], "Cannot reach Redis"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_a_non_zero_exit(
    runner: CliRunner, db_url: str, args: list[str], expected: str
) -> None:
    run(runner, "migrate", "--database-url", db_url)
    result = runner.invoke(cli, args, env={**ENV, "BATON_DATABASE_URL": db_url})
    assert expected in assert_one_line_error(result)
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_schema_sql_prints_the_migrations_for_the_dialect_asked(runner: CliRunner) -> None:
    result = run(runner, "schema-sql", "--dialect", "sqlite")
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE workflow_nodes" in result.output
    assert "JSONB" not in result.output
    assert "JSONB" in run(runner, "schema-sql").output  # PostgreSQL by default


def test_python_dash_m_baton_dramatiq_runs_the_demo(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    done = subprocess.run(
        [sys.executable, "-m", "baton_dramatiq", "demo", "--step-seconds", "0.05"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"compile_brief\s+completed", done.stdout)
    assert "Research brief: solid-state batteries" in done.stdout
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # embedded: no database file left behind
