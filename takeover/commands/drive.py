"""`takeover drive`: run routes with one agent, print the leaderboard table, write Bench2Drive JSON."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from carla_bridge.config import load_config
from carla_bridge.embedded import SimConfig
from carla_bridge.maps import MapLibrary
from carla_bridge.route_sets import load_route_set
from carla_bridge.scoring import summarise, write_results
from takeover.agents import AGENT_NAMES, make_agent
from takeover.drive import DriveOutcome, drive_routes
from takeover.text import fmt

TABLE_WIDTH_CHARS = 180


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("drive", help="drive routes in the embedded simulator and score them")
    p.add_argument(
        "--routes", default="builtin", help="route XML file, or builtin | builtin:train | builtin:eval"
    )
    p.add_argument("--route-ids", nargs="*", help="only these route ids")
    p.add_argument(
        "--maps", action="append", type=Path, default=[], help="extra folder of OpenDRIVE towns (repeatable)"
    )
    p.add_argument("--agent", default="autopilot", help=f"one of {', '.join(AGENT_NAMES)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="one repetition per seed")
    p.add_argument("--out", type=Path, help="write Bench2Drive merged results JSON here")
    p.add_argument("--video", type=Path, help="write a top-down mp4 per route into this folder")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="simulator config override, e.g. traffic.density=0.5",
    )
    p.set_defaults(func=run)


def outcome_table(outcomes: Sequence[DriveOutcome], title: str) -> Table:
    table = Table(title=title)
    for col in (
        "route",
        "town",
        "scenario",
        "seed",
        "status",
        "RC %",
        "penalty",
        "DS",
        "comfort",
        "infractions",
    ):
        table.add_column(
            col, justify="right" if col in ("RC %", "penalty", "DS", "comfort", "seed") else "left"
        )
    for o in outcomes:
        r = o.record
        infr = ", ".join(f"{k}:{len(v)}" for k, v in r.infractions.items() if v)
        scenario = ",".join(s.type for s in o.route.scenarios) or "-"
        comfort = fmt(r.comfort, ".2f")
        table.add_row(
            o.route.id,
            o.route.town,
            scenario,
            str(o.seed),
            r.status,
            f"{r.scores.score_route:.1f}",
            f"{r.scores.score_penalty:.2f}",
            f"{r.scores.score_composed:.1f}",
            comfort,
            infr or "-",
        )
    return table


def summary_table(outcomes: Sequence[DriveOutcome]) -> Table:
    g = summarise(
        [o.record for o in outcomes],
        route_types={o.record.route_id: [s.type for s in o.route.scenarios] for o in outcomes},
    )
    table = Table(title="summary")
    for col in ("routes", "DS", "SR %", "RC %", "penalty", "efficiency", "comfort", "ability mean"):
        table.add_column(col, justify="right")
    table.add_row(
        str(g.total_routes),
        fmt(g.driving_score),
        fmt(100 * g.success_rate),
        fmt(g.scores_mean.score_route),
        fmt(g.scores_mean.score_penalty, ".3f"),
        fmt(g.efficiency),
        fmt(g.comfort, ".2f"),
        fmt(None if g.ability_mean is None else 100 * g.ability_mean),
    )
    return table


def wide_console() -> Console:
    """A console wide enough for the score tables even when stdout is a pipe (rich defaults to 80)."""
    console = Console()
    return console if console.is_terminal else Console(width=TABLE_WIDTH_CHARS)


def run(args: argparse.Namespace) -> int:
    maps = MapLibrary(extra_dirs=args.maps)
    routes = load_route_set(args.routes, args.route_ids)
    sim_config = load_config(SimConfig, "sim", args.overrides)
    outcomes = drive_routes(routes, lambda: make_agent(args.agent), maps, sim_config, args.seeds, args.video)
    console = wide_console()
    console.print(outcome_table(outcomes, f"{args.agent} on {args.routes}"))
    console.print(summary_table(outcomes))
    if args.out:
        write_results(args.out, [o.record for o in outcomes])
        console.print(f"results written to {args.out}")
    if args.video:
        console.print(f"videos written to {args.video}/")
    return 0
