"""Closed-loop evaluation of the PDM-Lite-style expert in the embedded simulator; prints the per-route table.

Every route of a route set runs once per seed; the leaderboard criteria (carla_bridge.scoring) score
each run. The table gives, per route, the mean and worst driving score over the seeds, route
completion, infraction penalty, comfortness, ticks, the median planning time and every infraction.

    python benchmarks/expert_routes.py --routes ../shared/bench2drive/routes_dev.xml --maps ../shared/carla_maps
    python benchmarks/expert_routes.py --routes builtin --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from carla_bridge.config import load_config
from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.maps import MapLibrary
from carla_bridge.route_planner import prepare_routes
from carla_bridge.route_sets import load_route_set
from experts.config import load_expert_config
from experts.evaluate import RouteRun, evaluate, format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--routes", default="builtin", help="builtin | builtin:train | builtin:eval | route XML path"
    )
    parser.add_argument("--ids", default=None, help="comma-separated route ids (default: all)")
    parser.add_argument("--maps", action="append", default=[], help="extra folder with town .xodr files")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument(
        "--set", action="append", default=[], help="expert config override, e.g. idm.max_accel_mps2=1.5"
    )
    parser.add_argument("--quiet", action="store_true", help="only the final table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    maps = MapLibrary(args.maps)
    routes = load_route_set(args.routes, args.ids.split(",") if args.ids else None)
    prepare_routes(routes, maps)
    seeds = [int(s) for s in args.seeds.split(",")]
    sim_config = load_config(SimConfig, "sim", ["scoring=false"])  # the runner scores each route itself

    def progress(run: RouteRun) -> None:
        if not args.quiet:
            s = run.record.scores
            print(
                f"route {run.route_id:>6} seed {run.seed}: DS {s.score_composed:6.2f} RC {s.score_route:6.2f} "
                f"penalty {s.score_penalty:.3f} comfort {run.record.comfort if run.record.comfort is not None else float('nan'):.2f} "
                f"{run.record.status}  {run.infraction_summary}{'  ' + run.error if run.error else ''}",
                flush=True,
            )

    runs = evaluate(
        lambda: EmbeddedSimulator(sim_config, maps), routes, seeds, load_expert_config(args.set), progress
    )
    print(format_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
