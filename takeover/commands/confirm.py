"""`takeover confirm`: v0 and a run's incumbent driven again on seeds that decided nothing.

    takeover confirm kfkf --seeds 100 101 102               # the incumbent after the last iteration
    takeover confirm kfkf --iteration 2 --seeds 100 101 102 --json

The run's promotions were decided on its own evaluation seeds, and its before/after table reports
those episodes; this drives both checkpoints on the same routes and protocol with `--seeds` instead
(stored under the run <RUN>-confirm, resumable) and prints the change with its paired interval
(takeover/confirm.py).
"""

from __future__ import annotations

import argparse
import json

from takeover.commands.compare import add_confidence_arg, paired_config_of
from takeover.commands.iterate import add_storage_args, console, open_store
from takeover.confirm import confirm_run
from takeover.report import (
    comparison_table,
    confirmation_json,
    confirmation_labels,
    confirmation_title,
    paired_sentence,
)


def cmd_confirm(args: argparse.Namespace) -> int:
    paired = paired_config_of(args)
    with open_store(args.db_url, args.clip_root) as store:
        result = confirm_run(
            store, args.run, args.seeds, args.iteration, paired=paired, progress=not args.no_progress
        )
    if args.json:
        print(json.dumps(confirmation_json(result), indent=2))
        return 0
    title, labels = confirmation_title(result), confirmation_labels(result)
    out = console()
    out.print(comparison_table(result.v0, result.incumbent, title, labels, paired, result.comparison))
    out.print(paired_sentence(result.comparison))
    out.print(f"episodes stored under run {result.stored_as} (takeover compare reads them back)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "confirm", help="v0 and a run's incumbent on fresh seeds that decided nothing, with paired intervals"
    )
    p.add_argument("run", help="the run to confirm")
    p.add_argument(
        "--seeds", nargs="+", type=int, required=True,
        help="evaluation seeds the run never used, e.g. 100 101 102",
    )  # fmt: skip
    p.add_argument("--iteration", type=int, help="the incumbent after this iteration (default: the last)")
    add_confidence_arg(p)
    add_storage_args(p)
    p.set_defaults(func=cmd_confirm)
