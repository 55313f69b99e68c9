"""`takeover demo` (what `make demo` runs): the whole loop on embedded defaults, on CPU.

Expert demonstrations on the training routes, behaviour cloning (v0) and its evaluation on held-out
routes, then N iterations of takeover collection -> DAgger -> DPO -> evaluation -> promotion; prints
the per-iteration table and v0 vs the final incumbent, and saves the plot of driving score and
disengagement rate per iteration. Sizes: the `demo` section of conf/loop.yaml. Everything lands in
<runs_dir>/<run>/ (database, clips, checkpoints, TensorBoard, plot); running it again resumes the
stored run (finished steps are read back), `--fresh` starts over.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from carla_bridge.config import load_config
from storage.config import StorageConfig
from storage.store import Store
from takeover.commands.iterate import console
from takeover.iteration import LoopHooks, load_loop_file, run_loop
from takeover.report import before_after_table, iteration_table, plot_iterations
from takeover.text import fmt

DB_FILE = "takeover.db"
CLIPS_DIR = "clips"
TRAIN_KINDS = ("bc", "dagger", "dpo")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="the whole loop on embedded defaults: demos, BC (v0), takeovers, DAgger, DPO, evaluation"
    )
    p.add_argument(
        "--iterations", type=int, help="post-optimization iterations (default: conf/loop.yaml demo)"
    )
    p.add_argument("--fresh", action="store_true", help="delete the demo run's folder first and start over")
    p.add_argument("--no-dpo", action="store_true", help="the DAgger-only ablation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = console()
    demo = load_loop_file().demo
    config = demo.loop
    if args.no_dpo:
        config.use_dpo = False
    iterations = demo.iterations if args.iterations is None else args.iterations
    folder = Path(demo.runs_dir) / demo.run
    if args.fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Checkpoints go to <runs_dir>/<run>/ckpt, beside the demo's own database and clips.
    config.train_overrides = [
        *config.train_overrides,
        *(f"{k}.loop.runs_dir={demo.runs_dir}" for k in TRAIN_KINDS),
    ]
    storage = load_config(StorageConfig, "storage")
    resumed = (folder / DB_FILE).exists()
    out.print(
        f"[bold]takeover demo[/bold]: run {demo.run!r}, {iterations} iteration(s) after v0, "
        f"{'DAgger + DPO' if config.use_dpo else 'DAgger only'}, training routes {config.train_routes} "
        f"{config.train_route_ids or 'all'}, held-out routes {config.eval.routes} {config.eval.route_ids or 'all'}, "
        f"seeds {config.eval.seeds}; everything under {folder}/"
        + (" (resuming the stored run; --fresh starts over)" if resumed else "")
    )

    def run_step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out.print(f"  [cyan]{name}[/cyan] ...")
        result = fn()
        out.print(f"  [cyan]{name}[/cyan] done in {time.perf_counter() - t0:.0f} s")
        return result

    def on_iteration(result: Any) -> None:
        ev = result.evaluation
        score = fmt(ev.driving_score if ev else None)
        dpk = fmt(ev.disengagements_per_km if ev else None, ".2f")
        out.print(
            f"[bold]iteration {result.iteration}[/bold]: DS {score}, disengagements/km {dpk}, "
            f"{'promoted' if result.promoted else 'kept the incumbent'}: {result.reason}"
        )

    with Store(f"sqlite:///{(folder / DB_FILE).resolve()}", str(folder / CLIPS_DIR), storage) as store:
        loop = run_loop(
            demo.run, iterations, config, store, hooks=LoopHooks(run_step=run_step),
            progress=not args.no_progress, on_iteration=on_iteration,
        )  # fmt: skip
    out.print(iteration_table(loop))
    out.print(before_after_table(loop))
    plot = plot_iterations(loop, folder / demo.plot_name)
    out.print(f"plot of driving score and disengagement rate per iteration: {plot}")
    out.print(f"database: {folder / DB_FILE} (try: takeover db query --db-url sqlite:///{folder / DB_FILE} "
              f"\"SELECT reason, COUNT(*) FROM disengagements GROUP BY reason\")")  # fmt: skip
    out.print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0
