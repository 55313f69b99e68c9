"""`takeover iterate` (the post-optimization loop) and `takeover evaluate` (one checkpoint, closed loop).

    takeover iterate --run town01 --iterations 3 --seeds 0 1 2
    takeover iterate --run town01-dagger --from-run town01 --iterations 3 --seeds 0 1 2 --no-dpo \\
        --compare town01 --plot runs/ablation.png
    takeover iterate --run town01-s1 --from-run town01 --iterations 3 --set 'collect_seeds=[1]' \\
        --train-set dagger.loop.seed=1 --train-set dpo.loop.seed=1 --replicates town01 --plot runs/replicates.png
    takeover iterate --run town01-kf --from-run town01 --iterations 3 --recipe keyframe   # conf/recipes/
    takeover iterate --run town01-kf --iterations 5 --resume      # go on with the settings it started with
    takeover evaluate --checkpoint runs/town01/ckpt/dagger-1.pt --routes builtin:eval --seeds 0 1 2

`iterate` runs the bootstrap (demonstrations + BC = v0, evaluated) when the run has none, then
iterations 1..N (collect takeovers -> DAgger -> DPO -> evaluate -> promote); an interrupted run
resumes at its first unfinished step. Settings: the `iterate` section of conf/loop.yaml (`--set
KEY=VALUE`, keys relative to it, over a `--recipe`'s), training rounds conf/train.yaml (`--train-set
bc.loop.epochs=5`, appended to the recipe's train_overrides).
The database and clip store resolve as for `takeover db` (--db-url, $TAKEOVER_DB_URL, conf/storage.yaml).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from carla_bridge.config import load_config
from carla_bridge.route_sets import load_route_set
from storage.config import StorageConfig
from storage.store import Store
from storage.url import resolve_clip_root, resolve_db_url
from takeover.evaluate import CarlaRun, EvalConfig, evaluate_checkpoint, single_route_file
from takeover.iteration import (
    IterationConfig,
    IterationResult,
    LoopResult,
    configure,
    load_iteration_config,
    load_run_config,
    read_loop,
    run_loop,
)
from takeover.paired import comparison_json
from takeover.report import (
    ReplicateSummary,
    Spread,
    ablation_table,
    before_after,
    before_after_table,
    eval_table,
    iteration_json,
    iteration_table,
    plot_iterations,
    plot_replicates,
    replicate_summary,
    replicate_table,
)
from takeover.text import fmt

PIPED_WIDTH_CHARS = 200
STORAGE_CONFIG = "storage"


def console() -> Console:
    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH_CHARS)


def open_store(db_url: str | None, clip_root: str | None) -> Store:
    config = load_config(StorageConfig, STORAGE_CONFIG)
    return Store(
        resolve_db_url(config.db_url, db_url), resolve_clip_root(config.clip_root, clip_root), config
    )


def iteration_config(args: argparse.Namespace, store: Store | None = None) -> IterationConfig:
    """conf/loop.yaml's `iterate` <- --recipe <- --set <- the dedicated flags; with --resume the run's
    stored settings (read from `store`) replace the first two layers."""
    base = load_run_config(store, args.run, list(args.set or []), args.recipe, resume=args.resume)
    return configure(
        base,
        seeds=args.seeds or None,
        use_dpo=False if args.no_dpo else None,
        select_candidate=True if args.select_candidate else None,
        base_run=args.from_run,
        train_overrides=args.train_set,
    )


def _progress_line(result: IterationResult, out: Console) -> None:
    ev = result.evaluation
    score = fmt(ev.driving_score if ev else None)
    dpk = fmt(ev.disengagements_per_km if ev else None, ".2f")
    if ev is not None and ev.expert_share is not None:
        dpk += f" (expert drove {100.0 * ev.expert_share:.0f} % of the time"
        if ev.disengagements_per_policy_km is not None:
            dpk += f"; {ev.disengagements_per_policy_km:.2f} per km the policy drove"
        dpk += ")"
    resumed = f", resumed past {', '.join(result.steps_resumed)}" if result.steps_resumed else ""
    out.print(
        f"iteration {result.iteration}: candidate DS {score}, disengagements/km {dpk}, "
        f"{'promoted' if result.promoted else 'not promoted'} ({result.reason}){resumed}"
    )


def cmd_iterate(args: argparse.Namespace) -> int:
    out = console()
    config = None if args.resume else iteration_config(args)  # a bad flag fails before the database opens
    with open_store(args.db_url, args.clip_root) as store:
        if config is None:  # --resume: the run's stored settings
            config = iteration_config(args, store)
        loop = run_loop(
            args.run, args.iterations, config, store, progress=not args.no_progress,
            on_iteration=None if args.json else (lambda r: _progress_line(r, out)),
        )  # fmt: skip
        others = [read_loop(store, name) for name in args.compare or []]
        replicates = [read_loop(store, name) for name in args.replicates or []]
    summary = replicate_summary([loop, *replicates]) if replicates else None
    if args.plot:
        if summary is not None:
            plot_replicates(summary, args.plot)
        else:
            plot_iterations(loop, args.plot, others)
    if args.json:
        print(json.dumps({**loop_json(loop), **({"replicates": replicate_json(summary)} if summary else {})},
                         indent=2))  # fmt: skip
        return 0
    out.print(iteration_table(loop))
    out.print(before_after_table(loop))
    if others:
        out.print(ablation_table([loop, *others]))
    if summary is not None:
        out.print(replicate_table(summary))
    if args.plot:
        out.print(f"plot: {args.plot}")
    return 0


def loop_json(loop: LoopResult) -> dict[str, object]:
    ba = before_after(loop)
    return {
        "run": loop.run,
        "iterations": [iteration_json(r) for r in loop.iterations],
        "ds_change_pct": ba.ds_change_pct,
        "disengagements_per_km_ratio": ba.dpk_ratio,
        "paired": comparison_json(ba.paired()),  # v0 vs the final incumbent, pair by pair
    }


def replicate_json(summary: ReplicateSummary) -> dict[str, object]:
    def values(spread: Spread | None) -> list[float]:
        return list(spread.values) if spread else []

    return {
        "runs": list(summary.runs),
        "iterations": [
            {
                "iteration": row.iteration,
                "driving_score": values(row.driving_score),
                "disengagements_per_km": values(row.disengagements_per_km),
                "disengagements_per_policy_km": values(row.disengagements_per_policy_km),
                "expert_share_pct": values(row.expert_share),
                "promoted": row.promoted,
            }
            for row in summary.rows
        ],
        "ds_change_pct": values(summary.ds_change_pct),
        "disengagements_per_km_ratio": values(summary.dpk_ratio),
        "disengagements_per_policy_km_ratio": values(summary.policy_dpk_ratio),
    }


def cmd_evaluate(args: argparse.Namespace) -> int:
    config: EvalConfig = load_iteration_config().eval  # conf/loop.yaml's protocol, then the flags
    config.routes = args.routes
    config.route_ids = list(args.route_ids or [])
    if args.seeds:
        config.seeds = list(args.seeds)
    if args.no_takeovers:
        config.with_takeovers = False
    routes = load_route_set(config.routes, config.route_ids or None)
    carla = (
        CarlaRun(str(single_route_file(args.routes)), tuple(args.carla_set or ()))
        if args.backend == "carla"
        else None
    )
    with open_store(args.db_url, args.clip_root) as store:
        result = evaluate_checkpoint(
            args.checkpoint, routes, config.seeds, store, args.run, args.iteration, config=config,
            route_set=config.routes, maps_dirs=[str(m) for m in args.maps or []], backend=args.backend,
            carla=carla, progress=not args.no_progress,
        )  # fmt: skip
    if args.json:
        print(json.dumps({"metrics": result.metrics(), **result.to_json()}, indent=2))
        return 0
    out = console()
    out.print(eval_table(result))
    reasons = ", ".join(f"{k} {v}" for k, v in result.takeovers_by_reason.items()) or "none"
    out.print(f"disengagements by reason: {reasons}")
    for failure in result.failures:
        out.print(
            f"[red]failed[/red] route {failure.route_id} seed {failure.seed} ({failure.phase}): {failure.error}"
        )
    return 0


def add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db-url", help="SQLAlchemy URL (default: $TAKEOVER_DB_URL, then conf/storage.yaml)")
    p.add_argument("--clip-root", help="clip store folder or fsspec URL (default: $TAKEOVER_CLIP_ROOT)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "iterate", help="post-optimize a policy: v0, then takeovers -> DAgger -> DPO -> evaluate -> promote"
    )
    p.add_argument("--run", required=True, help="experiment name (episodes, rounds, runs/<run>/ckpt)")
    p.add_argument("--iterations", type=int, default=3, help="post-optimization iterations after v0")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds of demonstrations, rollouts and evaluation")
    p.add_argument("--no-dpo", action="store_true", help="the DAgger-only ablation (use_dpo=false)")
    p.add_argument(
        "--select-candidate", action="store_true",
        help="also evaluate DAgger's checkpoint; it is the candidate when it beats DAgger + DPO's (x2 evaluation)",
    )  # fmt: skip
    p.add_argument("--from-run", metavar="RUN", help="share RUN's demonstrations, v0 and v0's evaluation")
    p.add_argument("--compare", nargs="+", metavar="RUN", help="also tabulate these runs (the ablation)")
    p.add_argument(
        "--replicates", nargs="+", metavar="RUN",
        help="runs of the same recipe with other seeds: also print the mean ± sd per iteration (--plot draws it)",
    )  # fmt: skip
    p.add_argument("--plot", type=Path, help="save the DS and disengagement-rate plot here (PNG)")
    p.add_argument(
        "--recipe", metavar="NAME|YAML",
        help="a recipe: conf/recipes/NAME.yaml or a YAML file of iterate keys, merged before --set",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override conf/loop.yaml's iterate section"
    )
    p.add_argument("--train-set", action="append", metavar="KEY=VALUE", help="override conf/train.yaml")
    p.add_argument(
        "--resume", action="store_true",
        help="go on with the settings the run was started with (recipe, --set, --train-set, --from-run "
        "included; the latest iteration's) instead of conf/loop.yaml; --set / --train-set still apply on top",
    )  # fmt: skip
    add_storage_args(p)
    p.set_defaults(func=cmd_iterate)

    p = subparsers.add_parser("evaluate", help="closed-loop evaluation of a checkpoint on held-out routes")
    p.add_argument("--checkpoint", required=True, help="the policy checkpoint (.pt)")
    p.add_argument("--routes", default="builtin:eval", help="builtin:eval or a route XML (held-out routes)")
    p.add_argument("--route-ids", nargs="+", metavar="ID", help="only these route ids")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: conf/loop.yaml iterate.eval.seeds)")
    p.add_argument("--run", default="default", help="experiment name recorded with the episodes")
    p.add_argument("--iteration", type=int, help="iteration number recorded with the episodes")
    p.add_argument("--no-takeovers", action="store_true", help="skip the pass with takeovers enabled")
    p.add_argument("--maps", nargs="+", type=Path, help="folders searched first for <Town>.xodr")
    p.add_argument("--backend", choices=["embedded", "carla"], default="embedded")
    p.add_argument("--carla-set", nargs="+", metavar="KEY=VALUE", help="conf/carla.yaml overrides (carla)")
    add_storage_args(p)
    p.set_defaults(func=cmd_evaluate)


__all__ = [
    "add_storage_args",
    "cmd_evaluate",
    "cmd_iterate",
    "console",
    "iteration_config",
    "loop_json",
    "open_store",
    "register",
]
