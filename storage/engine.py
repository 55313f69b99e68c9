"""Engines for the takeover database: SQLite (default, zero set-up) or PostgreSQL, writable or read-only.

SQLite runs in WAL mode with foreign keys on and a busy timeout. Its write transactions start with
`BEGIN IMMEDIATE` so two writers queue on the database lock instead of failing when a reader upgrades
to a writer; read transactions use a plain deferred `BEGIN`. Read-only engines open SQLite files with
`mode=ro` and PostgreSQL sessions with `default_transaction_read_only`, so writes fail in the database
itself, not only in our code.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool, StaticPool

from storage.errors import DatabaseUnreachableError, StorageError
from storage.url import DB_URL_ENV, mask_url, redact, sqlite_path

log = logging.getLogger(__name__)

# Execution option that makes a SQLite transaction take the write lock at BEGIN.
SQLITE_WRITE_OPTION = "takeover_sqlite_write"
MS_PER_S = 1000.0
# Words in driver messages that mean the connection, not the statement, failed.
CONNECTION_WORDS = ("connection", "connect to", "server closed", "unable to open database", "terminating")


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _sqlite_read_only_url(url: URL) -> URL:
    path = sqlite_path(url)
    if path is None:
        return url  # an in-memory database is private to its connection; nothing to protect
    if not path.exists():
        raise DatabaseUnreachableError(
            f"database file {path} does not exist; run `takeover db upgrade` to create it"
        )
    return url.set(database=f"file:{path.resolve()}?mode=ro", query={"uri": "true"})


def make_engine(
    url: URL,
    *,
    read_only: bool = False,
    connect_timeout_s: float = 5.0,
    sqlite_busy_timeout_s: float = 60.0,
    statement_timeout_s: float | None = None,
    check: bool = True,
) -> Engine:
    """An Engine for `url`; with `check`, one round trip proves the database answers.

    Raises DatabaseUnreachableError (password masked) when it does not.
    """
    kwargs: dict[str, Any] = {}
    if is_sqlite(url):
        path = sqlite_path(url)
        if read_only:
            url = _sqlite_read_only_url(url)
        elif path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnreachableError(
                    f"cannot create the folder of database file {path}: {exc.strerror}; "
                    "choose a writable sqlite:/// path"
                ) from None
        kwargs["connect_args"] = {"timeout": sqlite_busy_timeout_s}
        if path is None:
            # An in-memory database lives in its one connection: share it (tests, notebooks).
            kwargs["connect_args"]["check_same_thread"] = False
            kwargs["poolclass"] = StaticPool
        else:
            # Connections are cheap for SQLite; a pool would keep file handles and locks around in forks.
            kwargs["poolclass"] = NullPool
    else:
        options = []
        if read_only:
            options.append("-c default_transaction_read_only=on")
        if statement_timeout_s is not None:
            options.append(f"-c statement_timeout={int(statement_timeout_s * MS_PER_S)}")
        connect_args: dict[str, Any] = {"connect_timeout": int(max(1, connect_timeout_s))}
        if options:
            connect_args["options"] = " ".join(options)
        kwargs["connect_args"] = connect_args
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if is_sqlite(url):
        _install_sqlite_hooks(engine, read_only=read_only, busy_timeout_s=sqlite_busy_timeout_s)
    if check:
        check_connection(engine)
    return engine


def _install_sqlite_hooks(engine: Engine, *, read_only: bool, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred only).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * MS_PER_S)}")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        else:
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before ingest returns, so rows never outlive a power cut's files.
            cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(SQLITE_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write and not read_only else "BEGIN")


def writer(engine: Engine) -> Engine:
    """The same engine whose transactions take SQLite's write lock at BEGIN (no-op on PostgreSQL)."""
    return engine.execution_options(**{SQLITE_WRITE_OPTION: True})


def unreachable(url: URL, exc: BaseException) -> DatabaseUnreachableError:
    """One clear error for a database that cannot be opened, with the password masked."""
    orig = getattr(exc, "orig", None) or exc
    reason = redact(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__, url)
    if is_sqlite(url):
        fix = "check that the folder exists and is writable, or set a different sqlite:/// path"
    else:
        fix = f"check that the server is running and {DB_URL_ENV} (host, port, user, database) is right"
    return DatabaseUnreachableError(f"cannot open database {mask_url(url)}: {reason}; {fix}")


def db_error(url: URL, exc: DBAPIError, doing: str) -> StorageError:
    """A driver error as one StorageError: unreachable server, busy SQLite, or a failed statement."""
    orig = exc.orig if exc.orig is not None else exc
    text = str(orig).strip()
    first = redact(text.splitlines()[0] if text else type(orig).__name__, url)
    if is_sqlite(url) and "locked" in first:
        return StorageError(
            f"{doing}: database {mask_url(url)} stayed locked by another writer longer than "
            "storage.sqlite_busy_timeout_s; raise it, or use PostgreSQL for many writers"
        )
    if exc.connection_invalidated or any(word in first.lower() for word in CONNECTION_WORDS):
        return unreachable(url, exc)
    return StorageError(f"{doing} failed on {mask_url(url)}: {first}")


def check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            conn.rollback()
    except (OperationalError, DBAPIError) as exc:
        engine.dispose()
        raise unreachable(engine.url, exc) from None
