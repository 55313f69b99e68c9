"""`takeover agreement`: how far the policy's plan is from the expert's in a run's stored clips.

    takeover agreement --run i9-dpo --iteration 3                      # held-out episodes with takeovers
    takeover agreement --run i9-dpo --iteration 4 --phases rollout     # the incumbent's training rollouts

Per driver (policy / expert): median and 75th-percentile ADE and FDE between the plans, the median lead
of the policy's final waypoint, and the share of ticks within the monitor's hand-back thresholds and
beyond its plan_deviation thresholds (conf/monitor.yaml; `--monitor-set` overrides). The table explains
the expert's share of the driving: the expert keeps the wheel until the plans agree. A line below it
counts the hand-backs: made while the expert's own plan stood, and retaken within `--retake-s`. A last
line says how early before each trigger the plans parted, and how often that lies before the stored
pre-takeover window (then DAgger never sees where the policy first went its own way).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from rich.table import Table

from takeover.agreement import (
    AgreementRow,
    HandbackSummary,
    OnsetSummary,
    handback_summary,
    onset_summary,
    stored_ticks,
    summarize,
    takeover_onsets,
)
from takeover.commands.iterate import add_storage_args, console, open_store
from takeover.monitor import load_monitor_config

DEFAULT_RETAKE_S = 2.0  # s: a takeover this soon after a hand-back is the same hazard, not a new one


def agreement_table(title: str, rows: list[AgreementRow]) -> Table:
    table = Table(title=title)
    for column in ("driver", "ticks", "ADE median m", "ADE p75 m", "FDE median m", "FDE p75 m",
                   "policy lead m", "agree %", "deviate %"):  # fmt: skip
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.driver, str(r.ticks), f"{r.ade_median_m:.2f}", f"{r.ade_p75_m:.2f}", f"{r.fde_median_m:.2f}",
            f"{r.fde_p75_m:.2f}", f"{r.lead_median_m:+.2f}", f"{100 * r.agree_share:.0f}",
            f"{100 * r.deviate_share:.0f}",
        )  # fmt: skip
    return table


def handback_line(h: HandbackSummary) -> str:
    return (
        f"hand-backs: {h.handed_back} of {h.takeovers} takeovers; {h.standing} while the expert's plan stood, "
        f"{h.retaken} retaken within {h.retake_s:g} s ({h.standing_retaken} both)"
    )


def onset_line(o: OnsetSummary) -> str:
    if not o.takeovers:
        return "divergence onset: no takeover has the policy's tick before its trigger stored"
    hint = " (lengthen episode.pre_window_s)" if o.before_window else ""
    return (
        f"divergence onset: of {o.takeovers} takeovers, the plans last agreed {o.lead_median_s:.1f} s before "
        f"the trigger (median; p75 {o.lead_p75_s:.1f} s) within {o.window_median_s:.1f} s of stored policy "
        f"driving; {o.in_window} within the window, {o.since_wheel} never agreed since the policy got the "
        f"wheel, {o.before_window} before the window{hint}"
    )


def cmd_agreement(args: argparse.Namespace) -> int:
    config = load_monitor_config(list(args.monitor_set or []))
    with open_store(args.db_url, args.clip_root) as store:
        ticks = stored_ticks(store, args.run, args.phases, args.iteration)
        takeovers = store.list_takeovers(run=args.run, phases=args.phases, iteration=args.iteration)
    rows = summarize(ticks.plan_gaps(), config)
    handbacks = handback_summary(ticks, takeovers, config, args.retake_s)
    onsets = onset_summary(takeover_onsets(ticks, takeovers, config))
    if args.json:
        print(json.dumps({"drivers": [dataclasses.asdict(r) for r in rows],
                          "handbacks": dataclasses.asdict(handbacks),
                          "onsets": dataclasses.asdict(onsets)}, indent=2))  # fmt: skip
        return 0
    out = console()
    if not rows:
        out.print(f"no stored ticks with both plans for run {args.run!r}, phases {args.phases}")
        return 1
    where = f"run {args.run}" + (f" iteration {args.iteration}" if args.iteration is not None else "")
    out.print(agreement_table(f"policy vs expert plan, {where}, phases {', '.join(args.phases)}", rows))
    out.print(handback_line(handbacks))
    out.print(onset_line(onsets))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agreement", help="policy-vs-expert plan gaps in a run's stored clips, per driver"
    )
    p.add_argument("--run", required=True, help="the run whose episodes are read")
    p.add_argument("--iteration", type=int, help="only this iteration's episodes")
    p.add_argument(
        "--phases", nargs="+", default=["eval_takeover"], help="episode phases (default: eval_takeover)"
    )
    p.add_argument("--monitor-set", nargs="+", metavar="KEY=VALUE", help="conf/monitor.yaml overrides")
    p.add_argument(
        "--retake-s",
        type=float,
        default=DEFAULT_RETAKE_S,
        help="a takeover this soon after a hand-back retakes it",
    )
    add_storage_args(p)
    p.set_defaults(func=cmd_agreement)


__all__ = ["agreement_table", "cmd_agreement", "handback_line", "onset_line", "register"]
