"""Schema migrations (Alembic) driven from code: head, current, upgrade, downgrade, ensure_schema.

Two processes upgrading at once queue: PostgreSQL takes a transaction-level advisory lock, SQLite the
write lock (`BEGIN IMMEDIATE`), before Alembic reads the current revision, so the second one finds
the schema already at head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from storage.engine import unreachable, writer
from storage.errors import SchemaError
from storage.url import mask_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Arbitrary but fixed 64-bit key of the PostgreSQL advisory lock that serialises migrations.
MIGRATION_LOCK_KEY = 0x74616B656F766572  # "takeover" in ASCII


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: no takeover schema yet
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "storage/migrations/versions holds no migration"
    return head


def lock_for_migration(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")


def schema_state(engine: Engine) -> SchemaState:
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except DBAPIError as exc:
        raise unreachable(engine.url, exc) from None
    return SchemaState(current=current, head=head_revision())


def _run(engine: Engine, direction: str, revision: str) -> None:
    cfg = alembic_config()
    try:
        with writer(engine).begin() as conn:
            lock_for_migration(conn)
            cfg.attributes["connection"] = conn
            if direction == "upgrade":
                command.upgrade(cfg, revision)
            else:
                command.downgrade(cfg, revision)
    except CommandError as exc:
        raise SchemaError(f"cannot {direction} {mask_url(engine.url)} to {revision!r}: {exc}") from None
    except DBAPIError as exc:
        if exc.connection_invalidated or "connect" in str(exc.orig).lower():
            raise unreachable(engine.url, exc) from None
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        raise SchemaError(
            f"{direction} of {mask_url(engine.url)} failed: {first}; the database may hold tables that "
            "are not the takeover schema; use an empty database"
        ) from None


def upgrade(engine: Engine, revision: str = "head") -> SchemaState:
    """Bring the database to `revision` (default: head); a no-op when it is there already."""
    _run(engine, "upgrade", revision)
    return schema_state(engine)


def downgrade(engine: Engine, revision: str) -> SchemaState:
    """Take the schema back to `revision` ("base" drops everything the migrations created)."""
    _run(engine, "downgrade", revision)
    return schema_state(engine)


def ensure_schema(engine: Engine, auto_upgrade: bool) -> SchemaState:
    """Make sure the database is at head: upgrade it when allowed, else one clear SchemaError."""
    state = schema_state(engine)
    if state.at_head:
        return state
    if state.current is not None:
        try:
            script_directory().get_revision(state.current)
        except CommandError:
            raise SchemaError(
                f"database {mask_url(engine.url)} is at migration {state.current}, which this code does "
                f"not know (head here is {state.head}): it was written by a newer version; upgrade the "
                "takeover package"
            ) from None
    if not auto_upgrade:
        have = f"is at migration {state.current}" if state.current else "has no takeover schema yet"
        raise SchemaError(
            f"database {mask_url(engine.url)} {have}, this code needs migration {state.head}; "
            "run `takeover db upgrade`"
        )
    return upgrade(engine)
