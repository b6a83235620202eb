"""`baton prune`: one pruning sweep from the command line."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from baton_dramatiq.cli import cli

ENV = {"BATON_DATABASE_URL": None, "BATON_REDIS_URL": None, "BATON_DEBUG": None, "COLUMNS": "200"}


def test_prune_deletes_finished_workflows_older_than_max_age_and_reports_counts(
    tmp_path: Path,
) -> None:
    runner = CliRunner(env=ENV)
    url = f"sqlite:///{tmp_path / 'baton.db'}"
    assert (
        runner.invoke(cli, ["demo", "--database-url", url, "--step-seconds", "0.01"]).exit_code == 0
    )

    kept = runner.invoke(cli, ["prune", "--database-url", url])  # default: a day
    assert kept.exit_code == 0 and "pruned 0 workflows (0 rows)" in kept.output
    assert "research:" in runner.invoke(cli, ["list", "--database-url", url]).output

    pruned = runner.invoke(cli, ["prune", "--database-url", url, "--max-age", "0.001"])
    assert pruned.exit_code == 0, pruned.output
    assert "pruned 1 workflows (5 rows)" in pruned.output
    assert "No workflows." in runner.invoke(cli, ["list", "--database-url", url]).output


def test_prune_rejects_a_max_age_that_is_not_positive(tmp_path: Path) -> None:
    result = CliRunner(env=ENV).invoke(
        cli, ["prune", "--database-url", f"sqlite:///{tmp_path / 'x.db'}", "--max-age", "0"]
    )
    assert result.exit_code == 2
    assert "'--max-age': 0.0 is not in the range x>0" in result.stderr
