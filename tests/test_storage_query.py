"""`takeover db query` runs read-only: the database itself refuses writes, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from postgres import *  # noqa: F403  (fixtures: db_url, store, clip_root, ...)
from postgres import count_rows, make_episode
from sqlalchemy.engine import URL

from storage.errors import QueryRefusedError
from storage.query import run_read_only_query
from storage.store import Store

WRITES = [
    "DELETE FROM episodes",
    "UPDATE takeovers SET reason = 'x'",
    "INSERT INTO routes (route_set, route_id, town, scenario_type, scenario_types) VALUES ('a', 'b', 'c', 'd', '[]')",
    "DROP TABLE frames",
    "DROP VIEW disengagements",
    "CREATE TABLE sneaky (a INTEGER)",
    "ALTER TABLE episodes ADD COLUMN sneaky INTEGER",
    "SELECT 1; DELETE FROM episodes",
    "WITH gone AS (DELETE FROM frames RETURNING clip_id) SELECT COUNT(*) FROM gone",
    "SET TRANSACTION READ WRITE",
    "PRAGMA query_only = 0",
    "ATTACH DATABASE 'elsewhere.db' AS other",
    "SELECT nextval('episodes_id_seq')",
    "VACUUM",
    "BEGIN",
]


@pytest.fixture
def filled(store: Store) -> Store:
    store.ingest_episode(*make_episode(1))
    return store


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_and_change_nothing(filled: Store, db_url: URL, sql: str) -> None:
    before = {t: count_rows(filled, t) for t in ("episodes", "takeovers", "frames", "routes")}
    with pytest.raises(QueryRefusedError):
        run_read_only_query(db_url, sql)
    assert {t: count_rows(filled, t) for t in before} == before
    assert run_read_only_query(db_url, "SELECT COUNT(*) FROM disengagements").rows == [(2,)]


def test_reads_return_columns_and_rows(filled: Store, db_url: URL) -> None:
    result = run_read_only_query(
        db_url, "SELECT reason, COUNT(*) AS n FROM disengagements WHERE reason LIKE '%light%' GROUP BY reason"
    )
    assert result.columns == ["reason", "n"] and result.rows == [("red_light", 1)]
    recursive = run_read_only_query(
        db_url, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) SELECT x FROM c"
    )
    assert recursive.rows == [(1,), (2,), (3,)]


def test_sql_errors_and_runaway_queries_are_reported(filled: Store, db_url: URL) -> None:
    with pytest.raises(QueryRefusedError, match="query failed"):
        run_read_only_query(db_url, "SELECT * FROM no_such_table")
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    with pytest.raises(QueryRefusedError, match=r"longer than|cancel"):
        run_read_only_query(db_url, endless, timeout_s=0.3)
    with pytest.raises(QueryRefusedError, match="empty"):
        run_read_only_query(db_url, "   ")
