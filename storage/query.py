"""Read-only SQL for users (`takeover db query`): writes fail inside the database, not in a keyword filter.

SQLite: the file is opened with `mode=ro` and `PRAGMA query_only`, and an authorizer allows only
reading (SELECT, table reads, functions, recursive CTEs): INSERT, UPDATE, DELETE, DDL, PRAGMA, ATTACH
and transaction control are denied while the statement compiles. The driver runs one statement only.
PostgreSQL: the session defaults to read-only transactions, the transaction is set READ ONLY and
takes its snapshot before the user's statement (so it cannot be switched back to read-write), the
statement goes through the extended protocol (exactly one statement), and the transaction is
always rolled back. A statement that returns no rows (SET, BEGIN, COMMIT, ...) is refused too.
Both honour a statement timeout.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from storage.engine import db_error, is_sqlite, make_engine
from storage.errors import QueryRefusedError

READ_ONLY_HINT = "`takeover db query` is read-only: only SELECT (and WITH ... SELECT) statements run"
# Actions a read-only statement needs while SQLite compiles it; everything else is denied.
SQLITE_ALLOWED_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
SQLITE_REFUSAL_WORDS = ("not authorized", "authorization denied", "readonly", "read-only")
SQLITE_PROGRESS_OPS = 10_000  # virtual-machine steps between two timeout checks
PG_READ_ONLY_SQLSTATES = ("25006", "42501")  # read_only_sql_transaction, insufficient_privilege


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def _sqlite_authorizer(action: int, *_args: object) -> int:
    return sqlite3.SQLITE_OK if action in SQLITE_ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def run_read_only_query(
    url: URL, sql: str, *, timeout_s: float = 60.0, connect_timeout_s: float = 5.0
) -> QueryResult:
    """Run one read-only statement and return every row; QueryRefusedError for writes or SQL errors."""
    if not sql.strip():
        raise QueryRefusedError("empty query; give a SELECT statement")
    engine = make_engine(
        url, read_only=True, connect_timeout_s=connect_timeout_s, statement_timeout_s=timeout_s
    )
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            if is_sqlite(url):
                return _run_sqlite(raw, sql, timeout_s)
            return _run_postgres(raw, sql)
    except DBAPIError as exc:
        raise db_error(url, exc, "query") from None
    finally:
        engine.dispose()


def _run_sqlite(raw: sqlite3.Connection, sql: str, timeout_s: float) -> QueryResult:
    deadline = time.monotonic() + timeout_s
    raw.set_authorizer(_sqlite_authorizer)
    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), SQLITE_PROGRESS_OPS)
    try:
        cursor = raw.execute(sql)
        if cursor.description is None:
            raise QueryRefusedError(f"statement returned no rows, so it is not a query; {READ_ONLY_HINT}")
        columns = [d[0] for d in cursor.description]
        return QueryResult(columns, [tuple(r) for r in cursor.fetchall()])
    except sqlite3.ProgrammingError as exc:  # e.g. more than one statement
        raise QueryRefusedError(f"query refused: {exc}; {READ_ONLY_HINT}") from None
    except sqlite3.DatabaseError as exc:
        message = str(exc)
        if any(word in message for word in SQLITE_REFUSAL_WORDS):
            raise QueryRefusedError(f"statement refused ({message}); {READ_ONLY_HINT}") from None
        if "interrupted" in message:
            raise QueryRefusedError(
                f"query ran longer than {timeout_s:g} s (storage.query_timeout_s)"
            ) from None
        raise QueryRefusedError(f"query failed: {message}") from None
    except sqlite3.Warning as exc:  # sqlite3 raises Warning for several statements on older Pythons
        raise QueryRefusedError(f"query refused: {exc}; {READ_ONLY_HINT}") from None
    finally:
        raw.set_authorizer(None)
        raw.set_progress_handler(None, 0)


def _run_postgres(raw: Any, sql: str) -> QueryResult:
    import psycopg

    try:
        with raw.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute("SELECT 1")  # takes the snapshot: the transaction can no longer turn read-write
            cursor.execute(sql, prepare=True)  # extended protocol: exactly one statement
            if cursor.description is None:
                raise QueryRefusedError(f"statement returned no rows, so it is not a query; {READ_ONLY_HINT}")
            columns = [d.name for d in cursor.description]
            rows = [tuple(r) for r in cursor.fetchall()]
        return QueryResult(columns, rows)
    except psycopg.Error as exc:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if exc.sqlstate in PG_READ_ONLY_SQLSTATES or "multiple commands" in message:
            raise QueryRefusedError(f"statement refused ({message}); {READ_ONLY_HINT}") from None
        if exc.sqlstate == "57014":  # query_canceled: statement_timeout
            raise QueryRefusedError(f"query cancelled: {message} (storage.query_timeout_s)") from None
        raise QueryRefusedError(f"query failed: {message}") from None
    finally:
        raw.rollback()
