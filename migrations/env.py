"""Alembic environment for baton_dramatiq's own tables.

Run through `baton_dramatiq.migrations` (or `baton migrate`), which passes the
connection and the schema in ``config.attributes``. The revision is recorded in the
``baton_schema_version`` table, so it never collides with an application's own
``alembic_version``.
"""

from alembic import context

from baton_dramatiq.store.tables import VERSION_TABLE

config = context.config
schema = config.attributes.get("schema")


def run() -> None:
    opts = {
        "version_table": VERSION_TABLE,
        "version_table_schema": schema,
        "transactional_ddl": True,
    }
    if context.is_offline_mode():
        context.configure(url=config.attributes["url"], literal_binds=True, **opts)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes["connection"]
    context.configure(connection=connection, **opts)
    with context.begin_transaction():
        context.run_migrations()


run()
