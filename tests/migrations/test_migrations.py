"""Migrations: from empty they build exactly the declared schema, and undo it whole."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import baton_dramatiq as baton
from baton_dramatiq.store.tables import HEAD_REVISION, TABLE_NAMES, VERSION_TABLE
from tests.support import services

ROOT = Path(__file__).resolve().parents[2]


def schema_objects(store: baton.Store) -> set[str]:
    """Every table, index and type in the store's schema."""
    with store.connect() as conn:
        inspector = sa.inspect(conn)
        names = set(inspector.get_table_names(schema=store.schema))
        for table in list(names):
            names |= {
                f"index:{i['name']}" for i in inspector.get_indexes(table, schema=store.schema)
            }
        if store.dialect == "postgresql":
            types = conn.execute(
                sa.text(
                    "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                    "WHERE n.nspname = :schema AND t.typtype IN ('e', 'c', 'd') "
                    "AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)"
                ),
                {"schema": store.schema or "public"},
            ).scalars()
            names |= {f"type:{t}" for t in types}
    return names


def test_upgrade_from_empty_builds_exactly_the_declared_schema(empty_store: baton.Store) -> None:
    assert baton.migrations.current(empty_store) is None
    baton.migrations.upgrade(empty_store)
    assert baton.migrations.current(empty_store) == HEAD_REVISION
    with empty_store.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": False,
                "include_schemas": bool(empty_store.schema),
                "include_name": lambda name, kind, _: kind != "table" or name != VERSION_TABLE,
            },
        )
        diff = compare_metadata(context, empty_store.metadata)
    assert diff == []
    tables = {t for t in schema_objects(empty_store) if ":" not in t}
    assert tables == {*TABLE_NAMES, VERSION_TABLE}


def test_upgrade_runs_again_without_harm(empty_store: baton.Store) -> None:
    baton.migrations.upgrade(empty_store)
    before = schema_objects(empty_store)
    baton.migrations.upgrade(empty_store)
    assert schema_objects(empty_store) == before
    assert baton.migrations.current(empty_store) == HEAD_REVISION


def test_downgrade_removes_everything_upgrade_created(empty_store: baton.Store) -> None:
    baseline = schema_objects(empty_store)
    baton.migrations.upgrade(empty_store)
    assert len(schema_objects(empty_store)) > len(baseline) + len(TABLE_NAMES)
    baton.migrations.downgrade(empty_store)
    assert schema_objects(empty_store) == baseline
    assert baton.migrations.current(empty_store) is None
    baton.migrations.upgrade(empty_store)  # and it can come back
    assert baton.migrations.current(empty_store) == HEAD_REVISION


def test_check_names_the_fix_when_the_schema_is_missing(empty_store: baton.Store) -> None:
    with pytest.raises(
        baton.SchemaOutOfDate, match=r"never migrated.*baton migrate --database-url"
    ):
        baton.migrations.check(empty_store)
    baton.migrations.upgrade(empty_store)
    baton.migrations.check(empty_store)


def test_the_code_head_is_the_last_migration_script() -> None:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(baton.migrations.script_location()))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


def test_plain_sql_of_the_migrations_is_printable() -> None:
    text = baton.migrations.sql("postgresql")
    assert "CREATE TABLE workflow_nodes" in text
    assert f"INSERT INTO {VERSION_TABLE}" in text
    assert "CREATE TABLE workflow_completions" in baton.migrations.sql("sqlite")


def test_a_worker_process_refuses_to_start_on_an_unmigrated_database(pg_template: str) -> None:
    name = services.create_database(migrated=False)
    try:
        env = dict(
            os.environ,
            BATON_TEST_DATABASE_URL=services.db_url(name),
            BATON_TEST_REDIS_URL=services.REDIS_URL,
            BATON_TEST_NAMESPACE=services.new_namespace(),
        )
        proc = subprocess.run(
            [sys.executable, "-m", "dramatiq", "tests.support.worker_app", "-p", "1", "-t", "1"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0
        lines = [line for line in proc.stderr.splitlines() if line.startswith("baton_dramatiq:")]
        assert len(lines) == 1 and "never migrated" in lines[0] and "baton migrate" in lines[0]
        assert "Traceback" not in proc.stderr
    finally:
        services.drop_database(name)


def test_an_in_process_worker_refuses_to_start_on_an_unmigrated_database(tmp_path: Path) -> None:
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    store = baton.Store(f"sqlite:///{tmp_path / 'old.db'}")
    broker = StubBroker()
    broker.add_middleware(baton.WorkflowMiddleware(store))
    worker = dramatiq.Worker(broker, worker_threads=1)
    with pytest.raises(baton.SchemaOutOfDate):
        worker.start()
    worker.stop()


def test_the_wheel_ships_the_migrations(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "baton_dramatiq/_migrations/env.py" in names
    assert "baton_dramatiq/_migrations/versions/0001_initial.py" in names
    assert "baton_dramatiq/_migrations/versions/0002_llm.py" in names
    assert "baton_dramatiq/_migrations/versions/0003_not_completed.py" in names
