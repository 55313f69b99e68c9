"""Schema, migrations, URLs and connection errors of the takeover database, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from postgres import *  # noqa: F403  (fixtures: db_url, empty_db_url, pg_server, store, ...)
from postgres import count_rows, fast_config, make_episode
from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, make_url

from storage.config import StorageConfig
from storage.engine import make_engine
from storage.errors import ConfigError, DatabaseUnreachableError, SchemaError
from storage.local_postgres import LocalPostgres
from storage.migrate import downgrade, head_revision, schema_state, upgrade
from storage.models import Base
from storage.store import Store
from storage.url import CLIP_ROOT_ENV, DB_URL_ENV, mask_url, resolve_clip_root, resolve_db_url
from storage.views import CURRENT_VIEWS

TABLES = {
    "iterations",
    "checkpoints",
    "routes",
    "episodes",
    "takeovers",
    "clips",
    "frames",
    "preference_pairs",
    "training_rounds",
    "training_metrics",
    "ingest_attempts",
}
QUERY_INDEXES = {
    "takeovers": {"ix_takeovers_reason_speed", "ix_takeovers_episode_id"},
    "episodes": {"ix_episodes_iteration_id", "ix_episodes_route_pk", "ix_episodes_checkpoint_id"},
    "routes": {"ix_routes_scenario_type", "ix_routes_town"},
    "clips": {"ix_clips_episode_id", "ix_clips_takeover_id", "ix_clips_kind"},
}


def test_upgrade_from_empty_creates_every_table_view_and_index(empty_db_url: URL) -> None:
    # given an empty database
    engine = make_engine(empty_db_url)
    assert schema_state(engine).current is None
    # when it is upgraded to head
    state = upgrade(engine)
    # then it is at head with all tables, the documented views and the query indexes
    assert state.at_head and state.current == head_revision()
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) >= TABLES
    assert {view.name for view in CURRENT_VIEWS} <= set(inspector.get_view_names())
    for table, indexes in QUERY_INDEXES.items():
        assert indexes <= {ix["name"] for ix in inspector.get_indexes(table)}, table
    engine.dispose()


def test_migrations_produce_exactly_the_models(db_url: URL) -> None:
    # given a database migrated to head
    engine = make_engine(db_url)
    # when alembic compares it with the ORM models
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    # then there is nothing to migrate: models and migrations agree
    assert diff == []


def test_downgrade_to_base_and_upgrade_again(db_url: URL) -> None:
    engine = make_engine(db_url)
    # when the schema is taken back to base
    assert downgrade(engine, "base").current is None
    # then no table or view of ours is left
    inspector = inspect(engine)
    assert not (TABLES & set(inspector.get_table_names()))
    assert not ({v.name for v in CURRENT_VIEWS} & set(inspector.get_view_names()))
    # and upgrading again gives a working schema
    assert upgrade(engine).at_head
    engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url: URL, clip_root: Path) -> None:
    with Store(db_url, str(clip_root), fast_config()) as store:
        store.ingest_episode(*make_episode(1))
    engine = make_engine(db_url)
    assert upgrade(engine).at_head
    engine.dispose()
    assert count_rows(db_url, "episodes") == 1


def test_views_have_exactly_the_documented_columns(db_url: URL) -> None:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        for view in CURRENT_VIEWS:
            columns = list(conn.execute(text(f"SELECT * FROM {view.name} WHERE 1 = 0")).keys())
            assert columns == list(view.columns), view.name
    engine.dispose()


def test_store_without_auto_upgrade_refuses_an_empty_database(empty_db_url: URL, clip_root: Path) -> None:
    with pytest.raises(SchemaError, match="takeover db upgrade"):
        Store(empty_db_url, str(clip_root), fast_config(), auto_upgrade=False)


def test_store_auto_upgrades_an_empty_database(empty_db_url: URL, clip_root: Path) -> None:
    with Store(empty_db_url, str(clip_root), fast_config()) as store:
        assert store.schema.at_head
        assert store.ingest_episode(*make_episode(3)) == 1


def test_database_from_a_newer_version_is_refused(db_url: URL, clip_root: Path) -> None:
    # given a database stamped with a migration this code does not know
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dcafe9999'"))
    engine.dispose()
    # when a Store opens it, then one clear error says the code is too old
    with pytest.raises(SchemaError, match="newer version"):
        Store(db_url, str(clip_root), fast_config())


def test_sqlite_file_is_created_with_its_folder(tmp_path: Path) -> None:
    url = make_url(f"sqlite:///{tmp_path / 'deep' / 'er' / 'takeover.db'}")
    with Store(url, str(tmp_path / "clips"), fast_config()) as store:
        assert store.schema.at_head
    assert (tmp_path / "deep" / "er" / "takeover.db").exists()


def test_unwritable_sqlite_location_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseUnreachableError, match="writable sqlite"):
        Store(
            make_url(f"sqlite:///{blocker / 'sub' / 'takeover.db'}"), str(tmp_path / "clips"), fast_config()
        )


@pytest.mark.postgres
def test_unreachable_postgres_is_one_clear_error_with_the_password_masked(
    pg_server: LocalPostgres, clip_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a URL with a password to a port where no server listens
    closed = pg_server.url("takeover").set(port=1)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    # when a Store opens it
    with pytest.raises(DatabaseUnreachableError) as info:
        Store(closed, str(clip_root), fast_config())
    # then the error names the server, masks the password and comes quickly
    message = str(info.value)
    assert "127.0.0.1:1" in message and "***" in message
    assert pg_server.password not in message
    assert pg_server.password not in caplog.text
    assert time.monotonic() - started < 10


@pytest.mark.postgres
def test_wrong_password_is_reported_without_the_password(pg_server: LocalPostgres, clip_root: Path) -> None:
    wrong = pg_server.url("postgres").set(password="not-the-password-xyz")
    with pytest.raises(DatabaseUnreachableError, match="password authentication failed") as info:
        Store(wrong, str(clip_root), fast_config())
    assert "not-the-password-xyz" not in str(info.value)


def test_no_log_line_holds_the_password(
    db_url: URL, clip_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given any backend (PostgreSQL URLs of the test server carry a random password)
    caplog.set_level(logging.DEBUG)
    # when a store is opened, upgraded and written to
    with Store(db_url, str(clip_root), fast_config()) as store:
        store.ingest_episode(*make_episode(5))
        rendered = store.masked_url
    # then neither the logs nor the store's own description reveal the password
    if db_url.password:
        assert db_url.password not in caplog.text
        assert db_url.password not in rendered and "***" in rendered


def test_password_in_the_config_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    with pytest.raises(ConfigError, match="password") as info:
        resolve_db_url("postgresql://bob:hunter2@db:5432/takeover")
    assert "hunter2" not in str(info.value)


def test_url_precedence_explicit_then_environment_then_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    assert resolve_db_url("sqlite:///a.db").database == "a.db"
    monkeypatch.setenv(DB_URL_ENV, "postgresql://bob:s3cret@db:5432/prod")
    from_env = resolve_db_url("sqlite:///a.db")
    assert from_env.drivername == "postgresql+psycopg" and from_env.password == "s3cret"
    assert resolve_db_url("sqlite:///a.db", "sqlite:///b.db").database == "b.db"
    assert mask_url(from_env) == "postgresql+psycopg://bob:***@db:5432/prod"


def test_clip_root_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CLIP_ROOT_ENV, raising=False)
    assert resolve_clip_root("runs/clips") == "runs/clips"
    monkeypatch.setenv(CLIP_ROOT_ENV, "memory://clips")
    assert resolve_clip_root("runs/clips") == "memory://clips"
    assert resolve_clip_root("runs/clips", "/data/clips") == "/data/clips"


def test_bad_urls_are_config_errors_that_do_not_echo_secrets() -> None:
    with pytest.raises(ConfigError, match="not supported"):
        resolve_db_url("mysql://u@h/db", "mysql://u@h/db")
    with pytest.raises(ConfigError, match="value hidden") as info:
        resolve_db_url("x", "garbage-with-secret-token")
    assert "secret-token" not in str(info.value)
    assert resolve_db_url("x", "postgres://u@h/db").drivername == "postgresql+psycopg"


def test_default_config_matches_conf_yaml() -> None:
    from carla_bridge.config import load_config

    assert load_config(StorageConfig, "storage") == StorageConfig()
