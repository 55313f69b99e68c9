"""Benchmark: cost of RouteCriteria.update per tick on a Town01 lane .

Run: python benchmarks/scoring_update.py [--maps ../shared/carla_maps] [--ticks 2000]
Prints one row per load: actors, lights, stop signs -> mean and p99 microseconds per update.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import carla
import numpy as np

from carla_bridge.route import DenseRoute, Route
from carla_bridge.scoring import RouteCriteria, load_scoring_config
from carla_bridge.snapshot import (
    ActorTable,
    Control,
    EgoState,
    Pose,
    RouteProgress,
    StopLine,
    StopSign,
    TrafficLight,
    TrafficLightState,
    WorldSnapshot,
)


def lane_run(cmap: carla.Map, count: int) -> list[carla.Waypoint]:
    for w in cmap.generate_waypoints(5.0):
        run = [w]
        while len(run) < count:
            nxt = run[-1].next(1.0)
            if not nxt:
                break
            run.append(nxt[0])
        if len(run) == count:
            return run
    raise SystemExit("no lane run long enough")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--maps", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "carla_maps")
    )
    ap.add_argument("--ticks", type=int, default=2000)
    args = ap.parse_args()
    cmap = carla.Map("Town01", (Path(args.maps) / "Town01.xodr").read_text())
    wps = lane_run(cmap, args.ticks // 4 + 10)
    xyz = np.array([[w.transform.location.x, w.transform.location.y, 0.0] for w in wps])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xyz[:, :2], axis=0), axis=1))])
    yaw = np.deg2rad([w.transform.rotation.yaw for w in wps])
    n = len(wps)
    dense = DenseRoute(
        xyz,
        yaw,
        np.full(n, 4, np.int8),
        s,
        np.array([w.road_id for w in wps], np.int32),
        np.array([w.lane_id for w in wps], np.int32),
        np.array([w.is_junction for w in wps]),
        np.full(n, 8.333, np.float32),
    )
    route = Route("bench", "Town01", xyz[[0, -1]], dense=dense)
    rng = np.random.default_rng(0)
    print(f"{'actors':>7} {'lights':>7} {'stops':>6} {'ticks':>6} {'mean_us':>9} {'p99_us':>9}")
    for n_actors, n_lights, n_stops in [(0, 0, 0), (50, 0, 0), (50, 4, 2), (200, 8, 4)]:
        config = load_scoring_config(["route_end.max_ticks=1000000"])
        criteria = RouteCriteria(route, cmap, config)
        times = []
        for k in range(args.ticks):
            i = min(k // 4, n - 2)
            frac = (k % 4) / 4.0
            p = xyz[i, :2] * (1 - frac) + xyz[i + 1, :2] * frac
            ax = p + rng.uniform(-60, 60, size=(n_actors, 2))
            actors = ActorTable(
                np.arange(n_actors, dtype=np.int64) + 100,
                np.zeros(n_actors, np.int8),
                np.zeros(n_actors, np.int8),
                np.c_[ax, np.zeros(n_actors)],
                rng.uniform(-3, 3, n_actors),
                rng.normal(0, 5, (n_actors, 2)),
                np.full(n_actors, 5.0),
                np.tile([2.2, 0.9, 0.7], (n_actors, 1)),
                np.full((n_actors, 3), np.nan, np.float32),
            )
            line = StopLine(float(p[0] + 8), float(p[1]), float(yaw[i]), wps[i].road_id, wps[i].lane_id, 3.5)
            lights = tuple(
                TrafficLight(j, TrafficLightState.RED, Pose(0, 0, 0, 0), (line,)) for j in range(n_lights)
            )
            stops = tuple(StopSign(50 + j, Pose(0, 0, 0, 0), (line,)) for j in range(n_stops))
            snap = WorldSnapshot(
                k,
                k * 0.05,
                "Town01",
                EgoState(
                    Pose(float(p[0]), float(p[1]), 0.0, float(yaw[i])),
                    np.array([5 * math.cos(yaw[i]), 5 * math.sin(yaw[i])]),
                    5.0,
                    np.zeros(2),
                    0.0,
                    np.array([2.45, 1.0, 0.75]),
                    Control(),
                ),
                actors,
                lights,
                stops,
                RouteProgress(i, float(s[i]), float(s[-1]), 0.0, 4),
            )
            t = time.perf_counter()
            criteria.update(snap)
            times.append(time.perf_counter() - t)
            if criteria.done:
                break
        us = np.array(times) * 1e6
        print(
            f"{n_actors:>7} {n_lights:>7} {n_stops:>6} {len(us):>6} {us.mean():>9.1f} {np.percentile(us, 99):>9.1f}"
        )
    t = time.perf_counter()
    criteria.record()
    print(
        f"record(): {1e3 * (time.perf_counter() - t):.2f} ms for {len(times)} ticks (comfort filter included)"
    )


if __name__ == "__main__":
    main()
