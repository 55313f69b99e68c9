"""Storage benchmark: ingest throughput and SQL view latency at scale, on SQLite and PostgreSQL.

For each backend, through the real `Store.ingest_episode` path (journal, clip files, one transaction):
  1. realistic ingest: episodes whose clips carry every clip_format key (actors, plans, lights, BEV
     features) with durable settings (fsync'ed clip files; SQLite synchronous=FULL; PostgreSQL fsync on),
     giving frames/s and clip MB/s;
  2. fill: more episodes (clips with the frame keys and ego pose only) until the database holds
     --frames frames and --takeovers takeover events, giving frames/s when rows dominate;
  3. latency (median and max of --repeats runs, all rows fetched) of the documented views and of
     typical user queries over them, plus one full scan of the frames table.
The PostgreSQL server is a private durable cluster started here (storage.local_postgres), or --pg-url.

    python benchmarks/storage_queries.py                       # 1,000,000 frames, 10,000 takeovers, both backends
    python benchmarks/storage_queries.py --frames 100000 --takeovers 1000 --backends sqlite --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from storage.config import StorageConfig  # noqa: E402
from storage.local_postgres import start_local_postgres  # noqa: E402
from storage.records import ClipRecord, EpisodeRecord, RouteRecord, TakeoverRecord  # noqa: E402
from storage.store import Store  # noqa: E402

TICK_S = 0.05  # 20 Hz simulator
TAKEOVERS_PER_EPISODE = 4
REALISTIC_EPISODES = 16
REALISTIC_CLIP_FRAMES = 40  # 2 s windows: pre-takeover and takeover, per takeover
N_ACTORS = 32
N_PLAN_POINTS = 8
N_ROUTE_POINTS = 200
BEV_FEATURE_SHAPE = (8, 16, 16)  # per-frame float16 features a policy might keep
N_ROUTES = 60
TOWNS = ("Town01", "Town02", "Town04", "Town06", "Town07", "Town10HD")
SCENARIO_TYPES = (
    "Accident", "ParkingExit", "SignalizedJunctionLeftTurn", "PedestrianCrossing", "HazardAtSideLane",
    "DynamicObjectCrossing", "VehicleTurningRoute", "OppositeVehicleRunningRedLight", "ControlLoss",
    "NonSignalizedJunctionRightTurn", "ConstructionObstacle", "HardBreakRoute", "StaticCutIn",
)  # fmt: skip
REASONS = ("predicted_collision", "red_light", "stop_sign", "off_route", "stuck")
N_ITERATIONS = 4
QUERIES = {
    "view disengagements (all rows)": "SELECT * FROM disengagements",
    "red-light takeovers > 30 km/h": (
        "SELECT takeover_id, town, scenario_type, speed_kmh, x_m, y_m FROM disengagements "
        "WHERE reason = 'red_light' AND speed_kmh > 30"
    ),
    "view disengagement_rates (all rows)": "SELECT * FROM disengagement_rates",
    "top scenario types per km, iteration 2": (
        "SELECT scenario_type, SUM(takeovers) AS n, SUM(takeovers_per_km) AS per_km FROM disengagement_rates "
        "WHERE iteration = 2 GROUP BY scenario_type ORDER BY per_km DESC"
    ),
    "view scenario_rates (all rows)": "SELECT * FROM scenario_rates",
    "frames scan: expert-driven share": "SELECT AVG(driver), COUNT(*) FROM frames",
}


@dataclass
class Row:
    backend: str
    measure: str
    value: float
    unit: str
    note: str = ""


def _route(index: int) -> RouteRecord:
    return RouteRecord(
        route_id=str(1000 + index),
        town=TOWNS[index % len(TOWNS)],
        route_set="bench",
        scenario_types=(SCENARIO_TYPES[index % len(SCENARIO_TYPES)],),
        length_m=150.0,
    )


def _clip_arrays(rng: np.random.Generator, start: int, n: int, expert_from: int, rich: bool) -> dict:
    speed = rng.uniform(0.0, 15.0, n)
    x = np.cumsum(speed) * TICK_S + rng.uniform(-200, 200)
    pose = np.stack([x, np.full(n, rng.uniform(-200, 200)), np.zeros(n), np.zeros(n)], axis=1)
    arrays = {
        "time_s": (np.arange(start, start + n) * TICK_S),
        "ego_speed": speed,
        "driver": (np.arange(n) >= expert_from).astype(np.int8),
        "ego_pose": pose,
    }
    if rich:
        arrays.update(
            ego_extent=np.tile([2.45, 1.06, 0.75], (n, 1)),
            actor_pose=rng.normal(0, 30, (n, N_ACTORS, 4)),
            actor_extent=np.tile([2.0, 0.9, 0.8], (n, N_ACTORS, 1)),
            actor_kind=rng.integers(0, 4, (n, N_ACTORS)).astype(np.int8),
            actor_valid=rng.random((n, N_ACTORS)) < 0.8,
            route_xy=rng.normal(0, 100, (N_ROUTE_POINTS, 2)),
            policy_plan=rng.normal(0, 10, (n, N_PLAN_POINTS, 2)),
            expert_plan=rng.normal(0, 10, (n, N_PLAN_POINTS, 2)),
            light_xy_state=np.tile([[10.0, 5.0, 0.0]], (n, 2, 1)),
            bev_features=rng.normal(0, 1, (n, *BEV_FEATURE_SHAPE)).astype(np.float16),
        )
    return arrays


def _episode(index: int, clip_frames: int, clips_per_takeover: int, rich: bool) -> tuple:
    rng = np.random.default_rng(index)
    n_frames = (TAKEOVERS_PER_EPISODE + 1) * (clips_per_takeover + 1) * clip_frames
    episode = EpisodeRecord(
        run="bench", route=_route(index % N_ROUTES), backend="embedded", seed=index, iteration=index % N_ITERATIONS,
        distance_m=float(rng.uniform(100, 400)), duration_s=n_frames * TICK_S, n_frames=n_frames,
        driving_score=float(rng.uniform(0, 100)), route_completion=float(rng.uniform(50, 100)),
    )  # fmt: skip
    takeovers, clips = [], []
    spacing = n_frames // (TAKEOVERS_PER_EPISODE + 1)
    for k in range(TAKEOVERS_PER_EPISODE):
        frame = spacing * (k + 1)
        plan = rng.normal(0, 5, (N_PLAN_POINTS, 3))
        takeovers.append(
            TakeoverRecord(
                frame=frame, time_s=frame * TICK_S, x_m=float(rng.uniform(-300, 300)),
                y_m=float(rng.uniform(-300, 300)), speed_mps=float(rng.uniform(0, 15)),
                reason=REASONS[int(rng.integers(len(REASONS)))], severity={"ttc_s": float(rng.uniform(0.2, 3))},
                policy_plan=plan, expert_plan=plan * 0.5,
            )
        )  # fmt: skip
        if clips_per_takeover == 2:
            clips.append(
                ClipRecord("pre_takeover", frame - clip_frames,
                           _clip_arrays(rng, frame - clip_frames, clip_frames, clip_frames, rich), k)
            )  # fmt: skip
        clips.append(ClipRecord("takeover", frame, _clip_arrays(rng, frame, clip_frames, 0, rich), k))
    return episode, takeovers, clips


def _ingest(
    store: Store, first: int, count: int, clip_frames: int, clips_per_takeover: int, rich: bool
) -> dict:
    batches = [_episode(first + i, clip_frames, clips_per_takeover, rich) for i in range(count)]
    frames = sum(len(c.arrays["time_s"]) for _, _, clips in batches for c in clips)
    raw_bytes = sum(a.nbytes for _, _, clips in batches for c in clips for a in c.arrays.values())
    started = time.perf_counter()
    for records in batches:
        store.ingest_episode(*records)
    elapsed = time.perf_counter() - started
    return {"frames": frames, "episodes": count, "seconds": elapsed, "raw_bytes": raw_bytes}


def _latency(store: Store, sql: str, repeats: int) -> tuple[float, float, int]:
    times, n_rows = [], 0
    for _ in range(repeats):
        with store.engine.connect() as conn:
            started = time.perf_counter()
            n_rows = len(conn.execute(text(sql)).fetchall())
            times.append(time.perf_counter() - started)
    return statistics.median(times), max(times), n_rows


def bench_backend(name: str, url: URL, clip_root: Path, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    durable = StorageConfig(fsync_clips=True)
    with Store(url, str(clip_root), durable) as store:
        real = _ingest(store, 0, args.realistic_episodes, REALISTIC_CLIP_FRAMES, 2, rich=True)
        clip_mb = store.stats().clip_bytes / 1e6
        rows += [
            Row(name, "realistic ingest", real["frames"] / real["seconds"], "frames/s",
                f"{real['episodes']} episodes, {N_ACTORS} actors, BEV features, fsync"),
            Row(name, "realistic ingest", real["episodes"] / real["seconds"], "episodes/s",
                f"{real['frames'] // real['episodes']} frames in 8 clips per episode"),
            Row(name, "realistic ingest", real["raw_bytes"] / 1e6 / real["seconds"], "MB/s raw arrays",
                f"{clip_mb:.1f} MB of clips on disk"),
        ]  # fmt: skip
    fill_config = StorageConfig(fsync_clips=False)
    frames_per_episode = TAKEOVERS_PER_EPISODE * args.fill_clip_frames
    need = max(0, args.frames - real["frames"])
    n_fill = max(
        -(-need // frames_per_episode), -(-(args.takeovers - real["episodes"] * 4) // TAKEOVERS_PER_EPISODE)
    )
    with Store(url, str(clip_root), fill_config) as store:
        print(f"[{name}] filling {n_fill} episodes ...", file=sys.stderr, flush=True)
        fill = _ingest(store, 10_000, n_fill, args.fill_clip_frames, 1, rich=False)
        rows.append(Row(name, "bulk ingest (fill)", fill["frames"] / fill["seconds"], "frames/s",
                        f"{n_fill} episodes x {frames_per_episode} frames, pose-only clips"))  # fmt: skip
        counts = store.stats().rows
        rows.append(Row(name, "database size", counts["frames"], "frames", f"{counts['takeovers']} takeovers, "
                        f"{counts['episodes']} episodes, {counts['clips']} clips"))  # fmt: skip
        if store.engine.dialect.name == "postgresql":
            with store.engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
        for label, sql in QUERIES.items():
            median_s, max_s, n = _latency(store, sql, args.repeats)
            rows.append(
                Row(name, label, median_s * 1000, "ms median", f"max {max_s * 1000:.1f} ms, {n} rows")
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--takeovers", type=int, default=10_000)
    parser.add_argument("--realistic-episodes", type=int, default=REALISTIC_EPISODES)
    parser.add_argument("--fill-clip-frames", type=int, default=100, help="frames per clip while filling")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pg-url", help="use this PostgreSQL database instead of a private cluster")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="takeover-storage-bench-"))
    rows: list[Row] = []
    server = None
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = make_url(f"sqlite:///{work / 'bench.db'}")
            elif args.pg_url:
                url = make_url(args.pg_url)
            else:
                server = start_local_postgres(fast=False)  # durable: fsync on, like a real server
                url = server.create_database("bench")
            started = time.perf_counter()
            rows += bench_backend(backend, url, work / f"clips-{backend}", args)
            print(f"[{backend}] done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    width = max(len(r.measure) for r in rows)
    print(f"{'backend':<11} {'measure':<{width}} {'value':>12} {'unit':<16} note")
    for r in rows:
        print(f"{r.backend:<11} {r.measure:<{width}} {r.value:>12,.1f} {r.unit:<16} {r.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
