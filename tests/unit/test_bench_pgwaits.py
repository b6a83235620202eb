"""The profile's filing of PostgreSQL's backends by statement and wait (no server here)."""

from __future__ import annotations

from baton_dramatiq.store.hot import HotStatements
from bench.pgwaits import WAIT_CLASSES, PgWaits, statement_kind, wait_class
from bench.report import pg_waits


def test_each_hot_statement_is_filed_under_its_own_kind() -> None:
    hot = HotStatements("workflow_nodes", "workflows", "workflow_completions", ("state",))
    workflow = {"id": "w", "name": "n"}
    # as pg_stat_activity shows them: the text as sent, cut short
    assert statement_kind(hot.claim[:40]) == "claim"
    for completion in (hot.complete, hot.complete_one, hot.complete_sink):
        assert statement_kind(completion[:40]) == "completion"
    assert statement_kind(hot.insert(workflow)[:40]) == "insert"
    assert statement_kind(hot.finish[:40]) == "other"


def test_waits_fall_into_a_few_classes() -> None:
    cases = {
        (None, None): "running",
        ("Lock", "transactionid"): "row lock",
        ("Lock", "tuple"): "row lock",
        ("Lock", "relation"): "other",
        ("IO", "WALSync"): "WAL",
        ("IO", "WALInitWrite"): "WAL",
        ("IO", "DataFileRead"): "other",
        ("Client", "ClientRead"): "Client",
        ("LWLock", "BufferContent"): "LWLock",
    }
    for (wait_type, wait_event), expected in cases.items():
        assert wait_class(wait_type, wait_event) == expected
        assert expected in WAIT_CLASSES  # a column of the report


def test_shares_are_per_statement_and_the_report_shows_them() -> None:
    # Given 10 samples: completions seen 4 times (3 running, 1 on a row lock), a claim once
    waits = PgWaits("postgresql://unused", "db")
    waits.samples = 10
    waits.counts.update({("completion", "running"): 3, ("completion", "row lock"): 1})
    waits.counts.update({("claim", "running"): 1})

    shares = waits.shares()

    assert shares["mean_active_backends"] == 0.5
    completion = shares["statements"]["completion"]
    assert completion["samples"] == 4
    assert completion["shares"]["running"] == 0.75
    assert completion["shares"]["row lock"] == 0.25
    assert list(shares["statements"]) == ["completion", "claim"]  # most seen first
    table = pg_waits({"steps": 2002, "seconds": 2.0, **shares})
    assert "| completion | 4 | 75 % | 25 % | 0 % |" in table
    assert "1 → 2,000 → 1 workflow (1,001 steps/s" in table
