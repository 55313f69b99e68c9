"""Helpers for the storage tests: both backends (SQLite file, real PostgreSQL server), synthetic episodes.

Test modules do `from postgres import *` to get the fixtures. `db_url` is parametrised over SQLite and
PostgreSQL; the PostgreSQL server is one throw-away cluster per test session (started on first use by
storage.local_postgres, skipped with the reason when the binaries are missing), and every test gets a
fresh database cloned from a template that is migrated once.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from storage.config import StorageConfig
from storage.engine import make_engine
from storage.local_postgres import LocalPostgres, PostgresUnavailableError, start_local_postgres
from storage.migrate import upgrade
from storage.records import EXPERT_DISTANCE_KEY, ClipRecord, EpisodeRecord, RouteRecord, TakeoverRecord
from storage.store import Store

__all__ = [
    "BACKENDS",
    "clip_root",
    "count_rows",
    "db_url",
    "empty_db_url",
    "fast_config",
    "make_clip_arrays",
    "make_episode",
    "pg_server",
    "store",
]

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]
TEMPLATE_DB = "takeover_template_head"
TICK_S = 0.05  # 20 Hz
N_ACTORS = 6
N_PLAN_POINTS = 8

_server: LocalPostgres | None = None
_server_error: str | None = None
_template_ready = False
_sqlite_template: Path | None = None


def _get_server() -> LocalPostgres:
    global _server, _server_error
    if _server is None and _server_error is None:
        try:
            _server = start_local_postgres(fast=True)
        except PostgresUnavailableError as exc:
            _server_error = str(exc)
    if _server is None:
        pytest.skip(f"PostgreSQL tests skipped: {_server_error}")
    return _server


@pytest.fixture(scope="session")
def pg_server() -> LocalPostgres:
    """The session's PostgreSQL cluster (one per test process, stopped at exit)."""
    return _get_server()


def _pg_database(server: LocalPostgres, migrated: bool) -> URL:
    global _template_ready
    if migrated and not _template_ready:
        server.drop_database(TEMPLATE_DB)
        engine = make_engine(server.create_database(TEMPLATE_DB))
        upgrade(engine)
        engine.dispose()
        _template_ready = True
    name = f"t_{uuid.uuid4().hex[:16]}"
    return server.create_database(name, template=TEMPLATE_DB if migrated else None)


def _sqlite_database(tmp_path: Path, tmp_root: Path, migrated: bool) -> URL:
    global _sqlite_template
    path = tmp_path / "takeover.db"
    if migrated:
        if _sqlite_template is None:
            _sqlite_template = tmp_root / "template-head.db"
            engine = make_engine(make_url(f"sqlite:///{_sqlite_template}"))
            upgrade(engine)
            engine.dispose()  # closing the last connection folds the WAL into the file
        shutil.copyfile(_sqlite_template, path)
    return make_url(f"sqlite:///{path}")


def _database(request: pytest.FixtureRequest, tmp_path: Path, migrated: bool) -> Iterator[URL]:
    if request.param == "sqlite":
        base = request.getfixturevalue("tmp_path_factory").getbasetemp()
        yield _sqlite_database(tmp_path, base, migrated)
        return
    server = _get_server()
    url = _pg_database(server, migrated)
    yield url
    server.drop_database(str(url.database))


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """A fresh database at the head migration, on each backend."""
    yield from _database(request, tmp_path, migrated=True)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """A fresh database with no schema, on each backend."""
    yield from _database(request, tmp_path, migrated=False)


@pytest.fixture
def clip_root(tmp_path: Path) -> Path:
    return tmp_path / "clips"


def fast_config() -> StorageConfig:
    # Tests throw the files away: skip fsync, and fail fast when something waits on a lock.
    return StorageConfig(fsync_clips=False, sqlite_busy_timeout_s=20.0, connect_timeout_s=3)


@pytest.fixture
def store(db_url: URL, clip_root: Path) -> Iterator[Store]:
    with Store(db_url, str(clip_root), fast_config()) as opened:
        yield opened


def count_rows(store_or_url: Store | URL, table: str) -> int:
    engine = store_or_url.engine if isinstance(store_or_url, Store) else make_engine(store_or_url)
    with engine.connect() as conn:
        value = int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
    if not isinstance(store_or_url, Store):
        engine.dispose()
    return value


def make_clip_arrays(start_frame: int, n_frames: int, expert_from: int, seed: int) -> dict[str, np.ndarray]:
    """Arrays with every documented clip_format key: an ego driving along x, actors around it."""
    rng = np.random.default_rng(seed)
    ticks = np.arange(start_frame, start_frame + n_frames)
    speed = 8.0 + rng.normal(0.0, 0.5, n_frames)
    x = 100.0 + np.cumsum(speed) * TICK_S
    ego_pose = np.stack([x, np.full(n_frames, 50.0), np.zeros(n_frames), np.zeros(n_frames)], axis=1)
    actor_pose = np.zeros((n_frames, N_ACTORS, 4))
    actor_pose[:, :, 0] = x[:, None] + rng.uniform(-30, 30, N_ACTORS)
    actor_pose[:, :, 1] = 50.0 + rng.uniform(-8, 8, N_ACTORS)
    plan_offsets = np.linspace(1.0, 16.0, N_PLAN_POINTS)
    policy_plan = np.stack(np.broadcast_arrays(x[:, None] + plan_offsets, 50.0), axis=2)
    expert_plan = policy_plan + np.array([0.0, 0.5])
    return {
        "time_s": ticks * TICK_S,
        "ego_speed": speed,
        "driver": (np.arange(n_frames) >= expert_from).astype(np.int8),
        "ego_pose": ego_pose,
        "ego_extent": np.tile([2.45, 1.06, 0.75], (n_frames, 1)),
        "actor_pose": actor_pose,
        "actor_extent": np.tile([2.0, 0.9, 0.8], (n_frames, N_ACTORS, 1)),
        "actor_kind": np.tile(np.arange(N_ACTORS) % 4, (n_frames, 1)).astype(np.int8),
        "actor_valid": np.ones((n_frames, N_ACTORS), dtype=bool),
        "route_xy": np.stack([np.linspace(90, 200, 60), np.full(60, 50.0)], axis=1),
        "policy_plan": policy_plan,
        "expert_plan": expert_plan,
        "light_xy_state": np.tile([[x[0] + 40.0, 46.0, 0.0]], (n_frames, 1, 1)),
        "bev_features": rng.normal(size=(n_frames, 4, 8, 8)).astype(np.float32),
    }


def make_episode(
    seed: int,
    *,
    run: str = "run-a",
    iteration: int | None = 0,
    n_takeovers: int = 2,
    clip_frames: int = 20,
    route: RouteRecord | None = None,
    checkpoint_sha256: str | None = None,
    distance_m: float = 250.0,
    reasons: tuple[str, ...] = ("predicted_collision", "red_light"),
    speeds_mps: tuple[float, ...] | None = None,
    phase: str = "rollout",
    expert_distance_m: float | None = None,
) -> tuple[EpisodeRecord, list[TakeoverRecord], list[ClipRecord]]:
    """An episode with takeovers evenly spread and one pre-takeover + one takeover clip per takeover
    (`expert_distance_m`: the metres the expert drove, in its scores, as episodes since session 14 store)."""
    n_frames = max(400, (n_takeovers + 1) * 3 * clip_frames)
    route = route or RouteRecord("1711", "Town01", "routes_dev", ("SignalizedJunctionLeftTurn",), 180.0)
    episode = EpisodeRecord(
        run=run,
        route=route,
        backend="embedded",
        seed=seed,
        distance_m=distance_m,
        duration_s=n_frames * TICK_S,
        n_frames=n_frames,
        iteration=iteration,
        checkpoint_sha256=checkpoint_sha256,
        phase=phase,
        driving_score=60.0 + seed % 10,
        route_completion=90.0,
        infraction_penalty=0.7,
        success=False,
        scores={"efficiency": 80.0}
        if expert_distance_m is None
        else {"efficiency": 80.0, EXPERT_DISTANCE_KEY: expert_distance_m},
        infractions=[{"kind": "red_light", "frame": 10}],
    )
    takeovers, clips = [], []
    spacing = n_frames // (n_takeovers + 1)
    for k in range(n_takeovers):
        frame = spacing * (k + 1)
        speed = speeds_mps[k] if speeds_mps is not None else 5.0 + k
        takeovers.append(
            TakeoverRecord(
                frame=frame,
                time_s=frame * TICK_S,
                x_m=100.0 + frame,
                y_m=50.0,
                speed_mps=speed,
                reason=reasons[k % len(reasons)],
                severity={"ttc_s": 1.0 + 0.1 * k},
                policy_plan=[[1.0, 0.0, speed], [2.0, 0.1, speed]],
                expert_plan=[[1.0, 0.0, 0.0], [1.5, 0.0, 0.0]],
                handback_frame=frame + clip_frames,
                handback_time_s=(frame + clip_frames) * TICK_S,
            )
        )
        pre_start = frame - clip_frames
        clips.append(
            ClipRecord(
                "pre_takeover", pre_start, make_clip_arrays(pre_start, clip_frames, clip_frames, seed + k), k
            )
        )
        clips.append(
            ClipRecord("takeover", frame, make_clip_arrays(frame, clip_frames, 0, seed + k + 100), k)
        )
    return episode, takeovers, clips
