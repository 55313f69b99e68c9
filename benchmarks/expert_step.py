"""Time one expert planning step (`PDMLiteExpert.plan`) with many actors nearby; prints a table.

The scenes are built on real CARLA towns: the ego drives its lane at 8 m/s while N vehicles move
along the lanes within 40 m of it (kinematically, at 4-10 m/s) and walkers walk the sidewalk edge;
every tick the expert plans on a fresh snapshot (so its per-actor memory and forecasts work as in a
run). Requirement (issue 3): median <= 5 ms with 30 vehicles nearby.

    python benchmarks/expert_step.py [--maps DIR] [--ticks 400] [--vehicles 30] [--walkers 10]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import carla
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from carla_bridge.maps import MapLibrary
from carla_bridge.snapshot import ActorKind
from experts.config import load_expert_config
from experts.expert import PDMLiteExpert
from experts.synthetic import WALKER_EXTENT, ActorSpec, lane_route, point_on_route, snapshot

DT = 0.05
EGO_SPEED_MPS = 8.0
NEARBY_M = 40.0
# (town, ego lane start x, y): a multi-lane road, a town grid, a winding town road
SCENES = (("Town04", -60.0, 30.37), ("Town01", 392.38, 20.0), ("Town10HD", -40.0, 28.2))


class LaneTraffic:
    """Vehicles following their lanes; one that falls more than NEARBY_M behind or ahead of the ego is
    re-spawned (with a new id) on a free lane point within NEARBY_M, so the count nearby stays put."""

    def __init__(self, cmap: carla.Map, route_xy: np.ndarray, count: int, rng: np.random.Generator) -> None:
        self.rng = rng
        lo, hi = route_xy.min(axis=0) - NEARBY_M, route_xy.max(axis=0) + NEARBY_M
        self.points = [
            w for w in cmap.generate_waypoints(3.0)
            if lo[0] < w.transform.location.x < hi[0] and lo[1] < w.transform.location.y < hi[1]
        ]  # fmt: skip
        self.xy = np.array([[w.transform.location.x, w.transform.location.y] for w in self.points])
        self.vehicles: list[dict] = []
        self.next_id = 100
        self.count = count

    def _spawn(self, centre: np.ndarray) -> None:
        d = np.hypot(*(self.xy - centre).T)
        taken = np.array(
            [[v["wp"].transform.location.x, v["wp"].transform.location.y] for v in self.vehicles]
        ).reshape(-1, 2)
        ok = (d < NEARBY_M) & (d > 8.0)
        if len(taken):
            ok &= (
                np.min(
                    np.hypot(
                        self.xy[:, None, 0] - taken[None, :, 0], self.xy[:, None, 1] - taken[None, :, 1]
                    ),
                    axis=1,
                )
                > 7.0
            )
        idx = np.flatnonzero(ok)
        if not len(idx):
            return
        w = self.points[int(self.rng.choice(idx))]
        self.vehicles.append({"wp": w, "speed": float(self.rng.uniform(4.0, 10.0)), "id": self.next_id})
        self.next_id += 1

    def step(self, centre: np.ndarray) -> list[ActorSpec]:
        keep = []
        for v in self.vehicles:
            loc = v["wp"].transform.location
            if np.hypot(loc.x - centre[0], loc.y - centre[1]) < NEARBY_M + 5.0:
                keep.append(v)
        self.vehicles = keep
        for _ in range(self.count - len(self.vehicles)):
            self._spawn(centre)
        specs = []
        for v in self.vehicles:
            t = v["wp"].transform
            specs.append(
                ActorSpec(
                    v["id"],
                    ActorKind.VEHICLE,
                    t.location.x,
                    t.location.y,
                    math.radians(t.rotation.yaw),
                    v["speed"],
                    z=t.location.z,
                )
            )
            nxt = v["wp"].next(max(v["speed"] * DT, 0.01))
            if nxt:
                v["wp"] = nxt[0]
        return specs


def run_scene(
    maps: MapLibrary, town: str, x: float, y: float, ticks: int, vehicles: int, walkers: int
) -> dict:
    cmap = maps.load(town)
    route = lane_route(cmap, x, y, EGO_SPEED_MPS * ticks * DT + 60.0)
    expert = PDMLiteExpert(load_expert_config())
    expert.reset(route, cmap)
    rng = np.random.default_rng(0)
    traffic = LaneTraffic(cmap, route.dense.xyz[:, :2], vehicles, rng)
    walker_state = []
    for k in range(walkers):
        wx, wy, wyaw = point_on_route(route, 10.0 + 6.0 * k, lateral_m=float(rng.choice([-6.0, 6.0])))
        walker_state.append([wx, wy, wyaw + float(rng.uniform(-0.5, 0.5)), 1.3])
    times: list[float] = []
    cpu: list[float] = []
    nearby: list[int] = []
    for k in range(ticks):
        s = 10.0 + EGO_SPEED_MPS * k * DT
        px, py, pyaw = point_on_route(route, s)
        pz = float(route.dense.xyz[min(int(s), len(route.dense) - 1), 2])
        specs = traffic.step(np.array([px, py]))
        for i, w in enumerate(walker_state):
            specs.append(
                ActorSpec(500 + i, ActorKind.WALKER, w[0], w[1], w[2], w[3], extent=WALKER_EXTENT, z=pz)
            )
            w[0] += w[3] * math.cos(w[2]) * DT
            w[1] += w[3] * math.sin(w[2]) * DT
        snap = snapshot(px, py, pyaw, EGO_SPEED_MPS, specs, time_s=k * DT, frame=k, route_index=int(s), z=pz)
        d = np.hypot(snap.actors.xyz[:, 0] - px, snap.actors.xyz[:, 1] - py)
        nearby.append(int(((d < 50.0) & (snap.actors.kind == ActorKind.VEHICLE)).sum()))
        t0, c0 = time.perf_counter(), time.thread_time()
        expert.plan(snap)
        times.append(1000.0 * (time.perf_counter() - t0))
        cpu.append(1000.0 * (time.thread_time() - c0))
    times.sort()
    return {
        "town": town,
        "vehicles": statistics.median(nearby),
        "walkers": walkers,
        "median": statistics.median(times),
        "cpu_median": statistics.median(cpu),
        "p95": times[int(0.95 * (len(times) - 1))],
        "max": times[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--maps", default=None, help="folder with CARLA town .xodr files (default: ../shared/carla_maps)"
    )
    parser.add_argument("--ticks", type=int, default=400)
    parser.add_argument("--vehicles", type=int, default=30)
    parser.add_argument("--walkers", type=int, default=10)
    args = parser.parse_args(argv)
    maps_dir = Path(args.maps) if args.maps else Path(__file__).resolve().parents[2] / "shared" / "carla_maps"
    maps = MapLibrary([maps_dir])
    print(
        f"{'town':<10} {'vehicles<50m':>12} {'walkers':>7} {'median ms':>9} {'p95 ms':>7} {'max ms':>7}"
        f" {'CPU median ms':>13}"
    )
    rows = []
    for town, x, y in SCENES:
        try:
            maps.find(town)
        except Exception:
            print(f"{town:<10} (not found in {maps_dir}; skipped)")
            continue
        r = run_scene(maps, town, x, y, args.ticks, args.vehicles, args.walkers)
        rows.append(r)
        print(
            f"{r['town']:<10} {r['vehicles']:>12.0f} {r['walkers']:>7d} {r['median']:>9.2f} {r['p95']:>7.2f}"
            f" {r['max']:>7.2f} {r['cpu_median']:>13.2f}"
        )
    if rows:
        worst = max(r["median"] for r in rows)
        worst_cpu = max(r["cpu_median"] for r in rows)
        print(f"worst median {worst:.2f} ms wall, {worst_cpu:.2f} ms CPU (this thread's own time: the wall")
        print("figure grows when other work shares the cores, the CPU one does not)")
        print(f"requirement <= 5 ms (judged on CPU time): {'OK' if worst_cpu <= 5.0 else 'TOO SLOW'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
