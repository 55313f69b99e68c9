"""`takeover collect demos|takeovers`: run episodes in the embedded simulator and store them.

    takeover collect demos --routes builtin:train --seeds 0 1 --db sqlite:///runs/t.db --clips runs/clips
    takeover collect takeovers --checkpoint runs/bc.pt --routes builtin:train --seeds 0 --iteration 0

`--set SECTION.KEY=VALUE` overrides one value of conf/episode.yaml, monitor.yaml, sim.yaml,
expert.yaml or policy.yaml (e.g. `--set monitor.stuck_time_s=5 sim.traffic.count=10`). The database
and clip store are `--db` / `--clips`, else $TAKEOVER_DB_URL / $TAKEOVER_CLIP_ROOT, else conf/storage.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys

from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from carla_bridge.config import load_config
from carla_bridge.maps import MapLibrary
from carla_bridge.route_sets import load_route_set
from storage.config import StorageConfig
from storage.store import Store
from storage.url import resolve_clip_root, resolve_db_url
from takeover.collect import (
    OVERRIDE_SECTIONS,
    CollectError,
    CollectSummary,
    collect_demos,
    collect_takeovers,
    make_setup,
    route_set_name,
)
from takeover.episode import EpisodeMode
from takeover.text import fmt

STORAGE_CONFIG = "storage"
PIPED_WIDTH_CHARS = 10_000


def parse_overrides(items: list[str] | None) -> dict[str, list[str]]:
    """["monitor.stuck_time_s=5", ...] -> {"monitor": ["stuck_time_s=5"], ...}."""
    sections: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, _ = item.partition("=")
        section, dot, rest = key.partition(".")
        if not sep or not dot or not rest:
            raise CollectError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. monitor.stuck_time_s=5")
        if section not in OVERRIDE_SECTIONS:
            raise CollectError(
                f"--set {item!r}: unknown section {section!r}; use one of {list(OVERRIDE_SECTIONS)}"
            )
        sections.setdefault(section, []).append(item[len(section) + 1 :])
    return sections


def _print_summary(summary: CollectSummary, console: Console) -> None:
    table = Table(title=f"{summary.mode} episodes")
    for column in ("route", "seed", "episode", "status", "DS", "RC %", "km", "sim s", "x realtime", "expert %",
                   "takeovers", "clips"):  # fmt: skip
        table.add_column(column)
    for e in summary.episodes:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(e.takeovers.items())) or "-"
        table.add_row(
            e.route_id, str(e.seed), str(e.episode_id), e.status, f"{e.driving_score:.1f}",
            f"{e.route_completion:.1f}", f"{e.distance_m / 1000.0:.3f}", f"{e.sim_time_s:.1f}",
            f"{e.realtime_factor:.1f}", f"{100.0 * e.expert_share:.0f}", reasons, str(e.clips),
        )  # fmt: skip
    console.print(table)
    totals = Table(title="takeovers by reason")
    totals.add_column("reason")
    totals.add_column("count")
    for reason, count in summary.takeovers_by_reason.items():
        totals.add_row(reason, str(count))
    per_km = summary.takeovers_per_km
    mean_ds = summary.mean_driving_score
    totals.add_row("all", str(summary.total_takeovers))
    console.print(totals)
    console.print(
        f"{len(summary.episodes)} episode(s), {summary.distance_km:.3f} km, "
        f"{fmt(per_km, '.2f')} takeovers/km, "
        f"mean DS {fmt(mean_ds)}"
    )


def cmd_collect(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.set)
    if args.threads is not None:
        if args.threads < 1:
            raise CollectError(f"--threads {args.threads}: give at least 1 thread")
        import torch

        torch.set_num_threads(args.threads)
    mode = EpisodeMode.EXPERT if args.collect_command == "demos" else EpisodeMode.TAKEOVER
    storage = load_config(StorageConfig, STORAGE_CONFIG)
    maps = MapLibrary.from_config(extra_dirs=args.maps or ())
    try:
        setup = make_setup(mode, checkpoint=getattr(args, "checkpoint", None), maps=maps, overrides=overrides)
    except OmegaConfBaseException as exc:
        raise CollectError(f"bad --set value: {exc}".splitlines()[0]) from None
    routes = load_route_set(args.routes, args.route_ids)
    store = Store(
        resolve_db_url(storage.db_url, args.db), resolve_clip_root(storage.clip_root, args.clips), storage
    )
    try:
        common = {"route_set": route_set_name(args.routes), "setup": setup, "progress": not args.no_progress}
        if mode is EpisodeMode.EXPERT:
            summary = collect_demos(routes, args.seeds, store, args.run, iteration=args.iteration, **common)
        else:
            summary = collect_takeovers(
                routes, args.seeds, args.checkpoint, store, args.run, args.iteration, **common
            )
    finally:
        store.close()
    if args.json:
        print(json.dumps({
            "mode": summary.mode,
            "episodes": [e.__dict__ for e in summary.episodes],
            "takeovers_by_reason": summary.takeovers_by_reason,
            "distance_km": summary.distance_km,
            "takeovers_per_km": summary.takeovers_per_km,
            "mean_driving_score": summary.mean_driving_score,
        }, indent=2))  # fmt: skip
    else:
        _print_summary(summary, Console(width=None if sys.stdout.isatty() else PIPED_WIDTH_CHARS))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--routes", default="builtin:train", help="builtin, builtin:train, builtin:eval or a route XML"
    )
    common.add_argument("--route-ids", nargs="+", metavar="ID", help="only these route ids (or a-b ranges)")
    common.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="episode seeds (each route runs once per seed)"
    )
    common.add_argument("--run", default="default", help="experiment name recorded with every episode")
    common.add_argument("--iteration", type=int, help="iteration number within the run")
    common.add_argument(
        "--db", "--db-url", dest="db", help="SQLAlchemy URL (default $TAKEOVER_DB_URL, conf/storage.yaml)"
    )
    common.add_argument("--clips", "--clip-root", dest="clips", help="clip store folder or fsspec URL")
    common.add_argument("--maps", nargs="+", metavar="DIR", help="folders searched first for <Town>.xodr")
    common.add_argument("--set", nargs="+", action="extend", metavar="SECTION.KEY=VALUE",
                        help=f"config override; sections: {', '.join(OVERRIDE_SECTIONS)}")  # fmt: skip
    common.add_argument(
        "--threads", type=int, help="torch intra-op threads for the policy (default: torch's)"
    )
    common.add_argument("--json", action="store_true", help="print the summary as JSON")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")

    collect = subparsers.add_parser("collect", help="run episodes and store demonstrations or takeovers")
    commands = collect.add_subparsers(dest="collect_command", required=True)
    p = commands.add_parser(
        "demos", parents=[common], help="the expert drives: demonstrations for behaviour cloning"
    )
    p.set_defaults(func=cmd_collect)
    p = commands.add_parser(
        "takeovers", parents=[common], help="a policy drives, the shadow expert takes over"
    )
    p.add_argument("--checkpoint", required=True, help="the policy checkpoint (.pt) that drives")
    p.set_defaults(func=cmd_collect)
