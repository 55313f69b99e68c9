"""Confirmation on fresh seeds: v0 and a run's incumbent driven again on seeds that no decision used.

Each promotion (and, with `select_candidate`, the choice between DAgger's and DPO's checkpoints) is
decided on the run's held-out routes and evaluation seeds, and the before/after table reports those
same episodes. A candidate promoted because it was lucky on them carries that luck into the reported
gain: a winner's curse, larger the more candidates were compared. `confirm_run` drives v0 and the
incumbent after iteration N again, on the run's routes and protocol but with other seeds, under the
run `<run>-confirm` (iterations 0 and N), and compares the two pair by pair (takeover/paired.py).
Episodes already stored are not driven again, so an interrupted confirmation resumes;
`takeover compare <run>-confirm:0 <run>-confirm:N` reads the result back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from storage.store import Store
from takeover.evaluate import EvalResult, JobMapper
from takeover.iteration import (
    LoopError,
    evaluate_on_protocol,
    incumbent_before,
    next_iteration,
    stored_iteration_config,
)
from takeover.paired import PairedComparison, PairedConfig, compare_evaluations, load_paired_config

CONFIRM_SUFFIX = "-confirm"  # the run its episodes are stored under: <run>-confirm


@dataclass(frozen=True)
class Confirmation:
    run: str  # the run confirmed
    stored_as: str  # the run its confirmation episodes are stored under
    iteration: int  # the incumbent after this iteration was confirmed against v0
    promoted_in: int  # the iteration that promoted that incumbent (0: nothing beat v0)
    seeds: tuple[int, ...]
    v0: EvalResult
    incumbent: EvalResult
    comparison: PairedComparison


def confirm_run(
    store: Store,
    run: str,
    seeds: Sequence[int],
    iteration: int | None = None,
    *,
    paired: PairedConfig | None = None,
    map_jobs: JobMapper | None = None,
    progress: bool = True,
) -> Confirmation:
    """v0 and the incumbent after `iteration` (default: the last finished one) of `run`, driven on the
    run's evaluation protocol with `seeds` instead of its own, and compared pair by pair."""
    config = stored_iteration_config(store, run)
    if config is None:
        raise LoopError(f"run {run!r} has no stored iteration in {store.masked_url}: nothing to confirm")
    last = next_iteration(store, run) - 1
    if last < 1:
        raise LoopError(
            f"run {run!r} has no finished post-optimization iteration: run one first "
            f"(takeover iterate --run {run} --iterations 1)"
        )
    iteration = last if iteration is None else iteration
    if not 1 <= iteration <= last:
        raise LoopError(f"iteration {iteration} of run {run!r} is not in its finished iterations 1..{last}")
    if not seeds:
        raise LoopError("no confirmation seeds: give some, e.g. --seeds 100 101 102")
    reused = sorted(set(seeds) & set(config.eval.seeds))
    if reused:
        raise LoopError(
            f"seeds {reused} are run {run!r}'s evaluation seeds (eval.seeds {list(config.eval.seeds)}), on "
            "which its promotions were decided; confirm on others, e.g. --seeds 100 101 102"
        )
    v0, _ = incumbent_before(store, run, 1)
    incumbent, promoted_in = incumbent_before(store, run, iteration + 1)
    eval_config = dataclasses.replace(config.eval, seeds=[int(s) for s in seeds])
    stored_as = run + CONFIRM_SUFFIX
    before = evaluate_on_protocol(
        store, stored_as, 0, v0.path, config, eval_config, map_jobs=map_jobs, progress=progress
    )
    after = before  # nothing beat v0: the same checkpoint, not driven twice
    if incumbent.sha256 != v0.sha256:
        after = evaluate_on_protocol(
            store, stored_as, iteration, incumbent.path, config, eval_config, map_jobs=map_jobs,
            progress=progress,
        )  # fmt: skip
    comparison = compare_evaluations(before, after, paired or load_paired_config())
    return Confirmation(
        run, stored_as, iteration, promoted_in, tuple(eval_config.seeds), before, after, comparison
    )
