"""`takeover counterfactual`: which disengagements of an evaluation were necessary?

    takeover counterfactual kfv0:0                          # every takeover of v0's evaluation, replayed
    takeover counterfactual kfv0:0 kfkf:3                   # both, and the necessary-rate ratio pair by pair
    takeover counterfactual kfkf:3 --set horizon_s=5 --json

Each takeover of the evaluation's takeover episodes is replayed on the embedded simulator with that
takeover refused; it was necessary when the policy then commits a counted infraction within the
horizon (takeover/counterfactual.py, conf/counterfactual.yaml). Verdicts are stored per takeover and
setting, so a second call reads them back and an interrupted one resumes. Sides are RUN:ITERATION[@CHECKPOINT]
as in `takeover compare`.
"""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from takeover.commands.compare import Side, add_confidence_arg, paired_config_of
from takeover.commands.iterate import add_storage_args, console, open_store
from takeover.counterfactual import (
    REASON_COLUMNS,
    SCENARIO_COLUMNS,
    Counterfactuals,
    counterfactuals_json,
    load_counterfactual_config,
    necessary_ratio,
    ratio_text,
    reason_cells,
    scenario_cells,
)
from takeover.iteration import analyse_run
from takeover.text import fmt


def counterfactual_table(found: Counterfactuals, label: str) -> Table:
    """The verdicts per reason, then all together; `label` names the evaluation."""
    table = Table(
        title=f"{label}: takeovers replayed without the takeover, {found.config.horizon_s:g} s horizon"
    )
    for name in REASON_COLUMNS:
        table.add_column(name, justify="left" if name == "reason" else "right")
    for row in found.by_reason():
        table.add_row(*reason_cells(row))
    table.add_row(*reason_cells(found.overall()), end_section=True)
    return table


def scenario_table(found: Counterfactuals, label: str) -> Table:
    """The necessary takeovers per scenario type of the routes, most first."""
    table = Table(title=f"{label}: necessary takeovers by scenario type")
    for name in SCENARIO_COLUMNS:
        table.add_column(name, justify="left" if name in ("scenario", SCENARIO_COLUMNS[-1]) else "right")
    for row in found.by_scenario():
        table.add_row(*scenario_cells(row))
    return table


def cmd_counterfactual(args: argparse.Namespace) -> int:
    sides = [Side.parse(spec) for spec in args.evaluations]
    config = load_counterfactual_config(args.set)
    paired = paired_config_of(args)
    with open_store(args.db_url, args.clip_root) as store:
        found = [
            analyse_run(store, side.run, side.iteration, checkpoint=side.checkpoint, routes=args.routes,
                        config=config, progress=not args.no_progress)
            for side in sides
        ]  # fmt: skip
    ratio = necessary_ratio(found[0], found[-1], paired) if len(found) == 2 else None
    if args.json:
        print(json.dumps(counterfactuals_json(found, ratio), indent=2))
        return 0
    out = console()
    for side, f in zip(sides, found, strict=True):
        out.print(counterfactual_table(f, side.label(f.result)))
        out.print(scenario_table(f, side.label(f.result)))
        out.print(
            f"disengagements/km {fmt(f.result.disengagements_per_km, '.2f')}, necessary/km "
            f"{fmt(f.necessary_per_km, '.2f')} over {f.distance_km:.2f} km; outcomes {f.outcomes()}; "
            f"{f.replayed} replayed now, {len(f.takeovers) - f.replayed} read back"
        )
    if len(found) == 2:
        out.print(f"necessary disengagements/km, after over before, pair by pair: {ratio_text(ratio)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "counterfactual", help="replay each takeover of an evaluation without it: was it necessary?"
    )
    p.add_argument(
        "evaluations", nargs="+", metavar="RUN:ITERATION", help="one or two (before, after) evaluations"
    )
    p.add_argument("--routes", default="builtin:eval", help="the route set they were evaluated on")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="conf/counterfactual.yaml override"
    )
    add_confidence_arg(p)
    add_storage_args(p)
    p.set_defaults(func=cmd_counterfactual)
