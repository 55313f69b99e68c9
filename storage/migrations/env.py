"""Alembic environment: runs migrations on the connection `storage.migrate` hands over, or on the
configured database when invoked from the `alembic` command line. Logs never carry the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from storage.models import Base

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables for later migrations.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_standalone() -> None:
    from storage.config import StorageConfig
    from storage.engine import make_engine, writer
    from storage.migrate import lock_for_migration
    from storage.url import resolve_db_url

    engine = make_engine(resolve_db_url(StorageConfig().db_url))
    try:
        with writer(engine).begin() as connection:
            lock_for_migration(connection)
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
connection = config.attributes.get("connection")
if connection is None:
    _run_standalone()
else:
    _run(connection)
