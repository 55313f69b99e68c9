"""Embedded simulator speed: simulated seconds per wall-clock second (x real time).

Runs the simulator on the built-in town (carla_bridge/assets/maps/Takeover01.xodr, Town01 when it is
missing) and on Town04 with 0, 20 and 50 background vehicles, in three modes:

    physics          fixed control (the ego brakes), traffic + signals + snapshot, no scoring
    driver           the `autopilot` agent (carla_bridge.autopilot) drives, no scoring
    driver+scoring   the same with carla_bridge.scoring's RouteCriteria every tick

Each cell is the best of `--repeats` runs of `--ticks` ticks after a warm-up ("present" is the mean
number of actors actually around the ego: a small town may hold fewer than asked). Prints a table
and optionally writes --json FILE. One core: run it while the machine is otherwise quiet.
`--backend numpy` measures the pure-numpy traffic tick (what runs without numba).

    python benchmarks/sim_speed.py --maps ../shared/carla_maps --json sim_speed.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from carla_bridge.autopilot import Autopilot
from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.embedded.lane_routes import route_along_lanes
from carla_bridge.maps import MapLibrary
from carla_bridge.simulator import FIXED_DELTA_S
from carla_bridge.snapshot import Control

BUILTIN_TOWN = "Takeover01"
FALLBACK_TOWN = "Town01"
ROUTE_LENGTH_M = 3000.0
SPAWN_RADIUS_M = 120.0  # wider than the default so that 50 vehicles fit on a small town
WARMUP_TICKS = 100


def busiest_start(graph: LaneGraph, radius_m: float, samples: int = 300) -> int:
    """A lane node (outside junctions) with the most lane length around it, so that the asked-for
    number of vehicles fits within the spawn radius (deterministic sample)."""
    rng = np.random.default_rng(0)
    nodes = np.flatnonzero(graph.junction_id < 0)
    best, best_count = int(nodes[0]), -1
    for node in rng.choice(nodes, min(samples, nodes.size), replace=False).tolist():
        count = graph.nodes_near(graph.xy[node], radius_m).size
        if count > best_count:
            best, best_count = int(node), count
    return best


def run_case(
    maps: MapLibrary, town: str, vehicles: int, mode: str, ticks: int, seed: int, backend: str
) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, mean number of actors) for `ticks` ticks after the warm-up."""
    cfg = SimConfig()
    cfg.traffic.backend = backend
    cfg.scoring = mode == "driver+scoring"
    cfg.traffic.count = vehicles
    cfg.traffic.enabled = vehicles > 0
    cfg.walkers.enabled = False
    sim = EmbeddedSimulator(cfg, maps)
    graph = LaneGraph.for_map(maps.load(town), cfg.lane_graph)
    rng = np.random.default_rng(seed)
    cfg.traffic.spawn_radius_m = SPAWN_RADIUS_M
    cfg.traffic.despawn_radius_m = SPAWN_RADIUS_M + 20.0
    start = busiest_start(graph, cfg.traffic.spawn_radius_m)
    route = route_along_lanes(graph, town, start, ROUTE_LENGTH_M, choose=lambda succ: int(rng.choice(succ)))
    snap = sim.reset(route, seed)
    autopilot = Autopilot()
    autopilot.reset(route, sim.map)
    driving = mode != "physics"
    brake = Control(brake=1.0)
    for _ in range(WARMUP_TICKS):
        snap = sim.step(autopilot.run_step(snap) if driving else brake)
    count = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(ticks):
        snap = sim.step(autopilot.run_step(snap) if driving else brake)
        count += len(snap.actors)
    return time.perf_counter() - t0, time.process_time() - c0, count / ticks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--maps", type=Path, action="append", default=[], help="extra folder with .xodr towns")
    ap.add_argument(
        "--towns", nargs="*", default=None, help=f"default: {BUILTIN_TOWN} (or {FALLBACK_TOWN}) Town04"
    )
    ap.add_argument("--vehicles", nargs="*", type=int, default=[0, 20, 50])
    ap.add_argument("--modes", nargs="*", default=["physics", "driver", "driver+scoring"])
    ap.add_argument("--ticks", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--backend", default="auto", choices=["auto", "numba", "numpy"], help="traffic tick backend"
    )
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)

    default_maps = Path(__file__).resolve().parents[2] / "shared" / "carla_maps"
    dirs = [*args.maps, *([default_maps] if default_maps.is_dir() else [])]
    maps = MapLibrary(dirs)
    towns = args.towns or [BUILTIN_TOWN if BUILTIN_TOWN in maps.towns() else FALLBACK_TOWN, "Town04"]
    rows = []
    header = (
        f"{'town':12s} {'mode':15s} {'vehicles':>8s} {'present':>8s} {'us/tick':>9s} {'x real time':>12s}"
        f" {'cpu us/tick':>12s}"
    )
    print(header)
    print("-" * len(header))
    for town in towns:
        for mode in args.modes:
            for n in args.vehicles:
                runs = [
                    run_case(maps, town, n, mode, args.ticks, args.seed, args.backend)
                    for _ in range(args.repeats)
                ]
                wall = min(r[0] for r in runs) / args.ticks
                cpu = min(r[1] for r in runs) / args.ticks
                present = runs[0][2]
                ratio = FIXED_DELTA_S / wall
                rows.append(
                    {"town": town, "mode": mode, "vehicles": n, "present": present, "us_per_tick": wall * 1e6,
                     "x_real_time": ratio, "cpu_us_per_tick": cpu * 1e6, "ticks": args.ticks,
                     "repeats": args.repeats, "backend": args.backend}
                )  # fmt: skip
                print(
                    f"{town:12s} {mode:15s} {n:8d} {present:8.1f} {wall * 1e6:9.0f} {ratio:12.0f} {cpu * 1e6:12.0f}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps({"results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
