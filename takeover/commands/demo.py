"""`takeover demo`: the main job on embedded defaults (what `make demo` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from carla_bridge.config import load_config
from carla_bridge.embedded import SimConfig
from carla_bridge.maps import MapLibrary
from carla_bridge.route_sets import load_route_set
from carla_bridge.scoring import write_results
from takeover.agents import make_agent
from takeover.commands.drive import outcome_table, summary_table, wide_console
from takeover.drive import drive_routes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="drive the built-in routes on embedded defaults and print the scores")
    p.add_argument("--out-dir", type=Path, default=Path("runs/demo"), help="results JSON and videos go here")
    p.add_argument("--agent", default="expert", help="driver of the demo (autopilot | expert | policy:PATH)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = wide_console()
    routes = load_route_set("builtin")
    console.print(f"driving {len(routes)} built-in routes with the {args.agent} (embedded simulator, seed 0)")
    outcomes = drive_routes(routes, lambda: make_agent(args.agent), MapLibrary(), load_config(SimConfig, "sim"))
    console.print(outcome_table(outcomes, f"{args.agent} on the built-in routes"))
    console.print(summary_table(outcomes))
    path = write_results(args.out_dir / f"results_{args.agent}.json", [o.record for o in outcomes])
    console.print(f"Bench2Drive results JSON: {path}")
    return 0
