"""`takeover compare`: two stored evaluations side by side, with paired bootstrap intervals.

    takeover compare kfv0:0 kfkf:3                        # v0 vs a run's iteration-3 candidate
    takeover compare kfkf:3@dagger-3 kfkf:3@dpo-3         # DAgger's vs DAgger + DPO's checkpoint (--select-candidate)
    takeover compare pkm-kfv0:0 pkm-kfkf3:0 --confidence 0.8 --json

Each side is RUN:ITERATION[@CHECKPOINT]: the evaluation stored by `takeover iterate` or `takeover
evaluate --run RUN --iteration ITERATION`, on `--routes` (builtin:eval). CHECKPOINT (file name stem or
sha256 prefix) picks one when the iteration evaluated several. Both sides must share (route, seed)
episodes: the intervals are computed pair by pair (takeover/paired.py, conf/paired.yaml).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from storage.store import Store
from takeover.collect import route_set_name
from takeover.commands.iterate import add_storage_args, console, open_store
from takeover.evaluate import EvalResult, EvaluationError, stored_evaluation
from takeover.iteration import evaluation_phase_pairs
from takeover.paired import METHODS, PairedConfig, compare_evaluations, comparison_json, load_paired_config
from takeover.report import comparison_table


@dataclass(frozen=True)
class Side:
    """One side of a comparison: RUN:ITERATION[@CHECKPOINT]."""

    run: str
    iteration: int
    checkpoint: str | None

    @classmethod
    def parse(cls, spec: str) -> Side:
        head, _, checkpoint = spec.partition("@")
        run, sep, number = head.rpartition(":")
        if not sep or not run or not number.lstrip("-").isdigit():
            raise EvaluationError(
                f"{spec!r} is not RUN:ITERATION[@CHECKPOINT]; e.g. kfkf:3 or kfkf:3@dagger-3 (0 is v0)"
            )
        return cls(run, int(number), checkpoint or None)

    def evaluation(self, store: Store, route_set: str) -> EvalResult:
        """This side's stored evaluation on `route_set` (a selected iteration's DAgger phases too)."""
        return stored_evaluation(
            store, self.run, self.iteration, route_set, evaluation_phase_pairs(), self.checkpoint
        )

    def label(self, result: EvalResult) -> str:
        return f"{self.run}:{self.iteration} ({result.checkpoint_path.rsplit('/', 1)[-1]})"


def paired_config_of(args: argparse.Namespace) -> PairedConfig:
    """conf/paired.yaml with `--confidence` and `--interval` (add_confidence_arg) on top."""
    overrides = [f"confidence={args.confidence}"] if args.confidence is not None else []
    if getattr(args, "interval", None):
        overrides.append(f"method={args.interval}")
    return load_paired_config(overrides)


def add_confidence_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--confidence", type=float, help="the intervals' coverage (default conf/paired.yaml)")
    p.add_argument("--interval", choices=METHODS,
                   help="bootstrap interval: percentile or bca (bias-corrected, accelerated; default conf/paired.yaml)")  # fmt: skip


def cmd_compare(args: argparse.Namespace) -> int:
    before_side, after_side = Side.parse(args.before), Side.parse(args.after)
    paired = paired_config_of(args)
    route_set = route_set_name(args.routes)
    with open_store(args.db_url, args.clip_root) as store:
        before, after = (side.evaluation(store, route_set) for side in (before_side, after_side))
    comparison = compare_evaluations(before, after, paired)
    if args.json:
        print(json.dumps({
            "before": {"run": before.run, "iteration": before.iteration, "checkpoint": before.checkpoint_path,
                       "metrics": before.metrics()},
            "after": {"run": after.run, "iteration": after.iteration, "checkpoint": after.checkpoint_path,
                      "metrics": after.metrics()},
            "paired": comparison_json(comparison),
        }, indent=2))  # fmt: skip
        return 0
    labels = (before_side.label(before), after_side.label(after))
    title = f"{labels[0]} vs {labels[1]} on {route_set}"
    pairs = comparison.ds_change_pct.pairs if comparison.ds_change_pct else 0
    out = console()
    out.print(comparison_table(before, after, title, labels, paired, comparison))
    out.print(f"{pairs} (route, seed) episode pairs; {paired.resamples} bootstrap draws, seed {paired.seed}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="two stored evaluations side by side, with paired bootstrap intervals"
    )
    p.add_argument("before", help="RUN:ITERATION[@CHECKPOINT], e.g. kfv0:0")
    p.add_argument("after", help="RUN:ITERATION[@CHECKPOINT], e.g. kfkf:3")
    p.add_argument("--routes", default="builtin:eval", help="the route set both were evaluated on")
    add_confidence_arg(p)
    add_storage_args(p)
    p.set_defaults(func=cmd_compare)
