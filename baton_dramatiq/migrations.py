"""Versioned, reversible schema migrations (Alembic), recorded in the database.

    baton.migrations.upgrade(store)     # create or bring up to date; safe to run again
    baton.migrations.downgrade(store)   # remove every table and index upgrade created

The revision lives in ``baton_schema_version``, apart from an application's own
``alembic_version``. An application that runs its own Alembic can call
``upgrade(store)`` from one of its revisions.
"""

from __future__ import annotations

import io
from pathlib import Path

import sqlalchemy as sa

from .errors import SchemaOutOfDate
from .store import Store
from .store.tables import HEAD_REVISION, VERSION_TABLE

__all__ = ["HEAD_REVISION", "check", "current", "downgrade", "script_location", "sql", "upgrade"]


def script_location() -> Path:
    """Where the migration scripts are: inside the wheel, or ``migrations/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("baton_dramatiq's migration scripts are missing from the install")


def _config(store: Store | None = None, **attributes: object):  # type: ignore[no-untyped-def]
    from alembic.config import Config  # imported lazily: workers that only check need none

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.attributes["schema"] = store.schema if store else attributes.get("schema")
    cfg.attributes.update(attributes)
    return cfg


def upgrade(store: Store, revision: str = "head") -> None:
    """Create the schema if missing and apply every migration up to `revision`."""
    from alembic import command

    with store.connect() as conn:
        if store.schema and store.dialect == "postgresql":
            conn.execute(sa.schema.CreateSchema(store.schema, if_not_exists=True))
        cfg = _config(store, connection=conn)
        command.upgrade(cfg, revision)


def downgrade(store: Store, revision: str = "base") -> None:
    """Undo migrations down to `revision`; at ``base`` nothing baton created is left."""
    from alembic import command

    with store.connect() as conn:
        cfg = _config(store, connection=conn)
        command.downgrade(cfg, revision)
        if revision == "base":
            version = sa.table(VERSION_TABLE, schema=store.schema)
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {_qualified(conn, version)}"))


def current(store: Store) -> str | None:
    """The revision the database is at; None if it was never migrated."""
    return store.schema_revision()


def check(store: Store) -> None:
    """Raise SchemaOutOfDate unless the database is at the revision this code needs."""
    revision = current(store)
    if revision == HEAD_REVISION:
        return
    where = store.engine.url.render_as_string(hide_password=True)
    found = "was never migrated" if revision is None else f"is at revision {revision}"
    raise SchemaOutOfDate(
        f"The baton database {where} {found}; this code needs {HEAD_REVISION}. "
        f"Run `baton migrate --database-url {where}` (or baton.migrations.upgrade(store))."
    )


def sql(dialect: str = "postgresql", schema: str | None = None) -> str:
    """The plain SQL of every migration, for review or for a DBA to apply."""
    from alembic import command

    out = io.StringIO()
    cfg = _config(schema=schema, url=f"{dialect}://")
    cfg.output_buffer = out
    command.upgrade(cfg, "head", sql=True)
    return out.getvalue()


def _qualified(conn: sa.Connection, table: sa.TableClause) -> str:
    prep = conn.dialect.identifier_preparer
    return prep.format_table(table)
