"""Reports of the loop: the per-iteration table, before/after, the ablation, per-route evaluations,
the plot of driving score and disengagement rate per iteration, and markdown for Prefect artifacts.

Before/after compares v0 with the final incumbent (the last promoted checkpoint):
    DS change  = 100 (DS_final - DS_v0) / DS_v0                    (percent, relative to v0)
    DPK ratio  = DPK_final / DPK_v0                                 (0.5 = disengagements per km halved)
where DS is the mean driving score and DPK the disengagements per km on the held-out routes; beside
them the expert's share of the driving time and the share of episodes without a takeover.

Replicates (the same recipe run with other rollout and training seeds) are summarised per iteration
by the incumbent's mean and sample standard deviation over the runs,
    mean = (1/n) sum_i x_i,    sd = sqrt( sum_i (x_i - mean)^2 / (n - 1) ),
and the final DS change and DPK ratio above are computed per run, then summarised the same way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from sqlalchemy import text

from takeover.evaluate import EpisodeFailure, EvalResult, episode_failures
from takeover.paired import (
    Interval,
    PairedComparison,
    PairedConfig,
    compare_evaluations,
    comparison_json,
    evaluation_intervals,
    interval_cell,
    interval_json,
    load_paired_config,
)
from takeover.text import MISSING, fmt

if TYPE_CHECKING:
    from storage.store import Store
    from takeover.confirm import Confirmation
    from takeover.iteration import CollectOutcome, IterationResult, LoopResult
    from takeover.training import TrainResult

PLOT_DPI = 120
PLOT_SIZE_IN = (10.0, 4.0)
SHA_SHOWN = 10


def _percent(share: float | None) -> float | None:
    return None if share is None else 100.0 * share


def _pct(share: float | None) -> str:
    return fmt(_percent(share), ".0f")


@dataclass(frozen=True)
class IterationRow:
    """One line of the per-iteration table."""

    iteration: int
    candidate: str  # checkpoint file name of the evaluated candidate
    collected_takeovers_per_km: float | None  # the incumbent on the training routes (rollouts)
    collected_necessary_per_km: float | None  # ... of which necessary (collect_counterfactuals), else None
    driving_score: float | None  # the candidate on the held-out routes
    route_completion: float | None
    infraction_penalty: float | None
    success_rate: float | None
    disengagements_per_km: float | None
    expert_share: float | None  # of the driving time with takeovers enabled
    promoted: bool
    necessary_per_km: float | None  # counterfactual replays (the loop's `counterfactuals`), else None
    incumbent_driving_score: float | None  # the incumbent after the iteration
    incumbent_disengagements_per_km: float | None
    incumbent_disengagements_per_policy_km: float | None
    incumbent_expert_share: float | None
    note: str


def iteration_rows(loop: LoopResult) -> list[IterationRow]:
    rows = []
    for result in loop.iterations:
        ev = result.evaluation
        incumbent_eval = loop.evaluation_of(result.incumbent_after)
        rows.append(
            IterationRow(
                iteration=result.iteration,
                candidate=Path(result.candidate.path).name if result.candidate else MISSING,
                collected_takeovers_per_km=result.collect.get("takeovers_per_km")
                if result.iteration
                else None,
                collected_necessary_per_km=result.collect_verdicts.get("necessary_per_km"),
                driving_score=ev.driving_score if ev else None,
                route_completion=ev.route_completion if ev else None,
                infraction_penalty=ev.infraction_penalty if ev else None,
                success_rate=ev.success_rate if ev else None,
                disengagements_per_km=ev.disengagements_per_km if ev else None,
                expert_share=ev.expert_share if ev else None,
                promoted=result.promoted,
                necessary_per_km=result.necessary_per_km,
                incumbent_driving_score=incumbent_eval.driving_score if incumbent_eval else None,
                incumbent_disengagements_per_km=incumbent_eval.disengagements_per_km
                if incumbent_eval
                else None,
                incumbent_disengagements_per_policy_km=incumbent_eval.disengagements_per_policy_km
                if incumbent_eval
                else None,
                incumbent_expert_share=incumbent_eval.expert_share if incumbent_eval else None,
                note=result.reason,
            )
        )
    return rows


def iteration_table(loop: LoopResult, title: str | None = None) -> Table:
    table = Table(
        title=title or f"run {loop.run} ({loop.method}): candidate on the held-out routes per iteration"
    )
    rows = iteration_rows(loop)
    necessary = _has_necessary(rows)
    judged = any(r.collected_necessary_per_km is not None for r in rows)
    for column in ("iter", "candidate", "rollout TO/km", *(["rollout necessary/km"] if judged else []),
                   "DS", "RC %", "IP", "SR %", "dis/km", *(["necessary/km"] if necessary else []), "expert %",
                   "promoted", "incumbent DS", "incumbent dis/km", "why"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row.iteration), row.candidate, fmt(row.collected_takeovers_per_km, ".2f"),
            *([fmt(row.collected_necessary_per_km, ".2f")] if judged else []),
            fmt(row.driving_score), fmt(row.route_completion), fmt(row.infraction_penalty, ".3f"),
            _pct(row.success_rate), fmt(row.disengagements_per_km, ".2f"),
            *([fmt(row.necessary_per_km, ".2f")] if necessary else []),
            _pct(row.expert_share), "yes" if row.promoted else "no",
            fmt(row.incumbent_driving_score), fmt(row.incumbent_disengagements_per_km, ".2f"), row.note,
        )  # fmt: skip
    return table


def _has_necessary(rows: Sequence[IterationRow]) -> bool:
    """Whether any iteration measured necessary disengagements (the column is shown only then)."""
    return any(r.necessary_per_km is not None for r in rows)


@dataclass(frozen=True)
class BeforeAfter:
    v0: EvalResult
    final: EvalResult
    final_iteration: int  # the iteration whose candidate is the final incumbent

    @property
    def ds_change_pct(self) -> float | None:
        """100 (DS_final - DS_v0) / DS_v0."""
        return _change_pct(self.v0.driving_score, self.final.driving_score)

    @property
    def dpk_ratio(self) -> float | None:
        """DPK_final / DPK_v0."""
        return _ratio(self.v0.disengagements_per_km, self.final.disengagements_per_km)

    def paired(self, config: PairedConfig | None = None) -> PairedComparison:
        """The DS change and the rate ratios with paired bootstrap intervals (takeover/paired.py)."""
        return compare_evaluations(self.v0, self.final, config)


def _change_pct(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before <= 0:
        return None
    return 100.0 * (after - before) / before


def _ratio(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before <= 0:
        return None
    return after / before


def before_after(loop: LoopResult) -> BeforeAfter:
    v0 = loop.v0.evaluation
    assert v0 is not None, "iteration 0 always has v0's evaluation"
    final_ckpt = loop.final.incumbent_after
    for result in loop.iterations:
        if (
            result.candidate is not None
            and result.candidate.sha256 == final_ckpt.sha256
            and result.evaluation
        ):
            return BeforeAfter(v0, result.evaluation, result.iteration)
    return BeforeAfter(v0, v0, 0)


# Rows of the before/after table whose change is a ratio (final / v0), as the target is stated.
RATE_ROWS = frozenset({"disengagements / km", "disengagements / policy km"})


def before_after_table(loop: LoopResult, paired: PairedConfig | None = None) -> Table:
    ba = before_after(loop)
    title = f"run {loop.run}: v0 vs the final incumbent (iteration {ba.final_iteration})"
    return comparison_table(ba.v0, ba.final, title, ("v0", "final"), paired)


def comparison_table(
    before: EvalResult,
    after: EvalResult,
    title: str,
    labels: tuple[str, str] = ("before", "after"),
    paired: PairedConfig | None = None,
    comparison: PairedComparison | None = None,
) -> Table:
    """Two evaluations metric by metric: the change (DS in percent, rates as a ratio, the rest as a
    difference) and, where defined, its paired bootstrap interval over the shared (route, seed) episodes
    (`comparison` when the caller has it already, else bootstrapped here with `paired`)."""
    paired = paired if paired is not None else load_paired_config()
    if comparison is None:
        comparison = compare_evaluations(before, after, paired)
    intervals = {
        "driving score": interval_cell(comparison.ds_change_pct, "+.1f", suffix=" %"),
        "disengagements / km": interval_cell(comparison.dpk_ratio, ".2f", prefix="x "),
        "disengagements / policy km": interval_cell(comparison.policy_dpk_ratio, ".2f", prefix="x "),
    }
    table = Table(title=title)
    for column in ("metric", *labels, "change", f"{100 * paired.confidence:g} % interval (paired)"):
        table.add_column(column)
    rows = [
        ("driving score", before.driving_score, after.driving_score, ".1f"),
        ("route completion %", before.route_completion, after.route_completion, ".1f"),
        ("infraction penalty", before.infraction_penalty, after.infraction_penalty, ".3f"),
        ("success rate", before.success_rate, after.success_rate, ".2f"),
        ("disengagements / km", before.disengagements_per_km, after.disengagements_per_km, ".2f"),
        ("disengagements / policy km", before.disengagements_per_policy_km, after.disengagements_per_policy_km,
         ".2f"),
        ("expert share of driving %", _percent(before.expert_share), _percent(after.expert_share), ".1f"),
        ("episodes without takeover %", _percent(before.takeover_free_share), _percent(after.takeover_free_share),
         ".1f"),
    ]  # fmt: skip
    for name, value_before, value_after, spec in rows:
        change = MISSING
        if name == "driving score" and (pct := _change_pct(value_before, value_after)) is not None:
            change = f"{pct:+.1f} %"
        elif name in RATE_ROWS and (ratio := _ratio(value_before, value_after)) is not None:
            change = f"x {ratio:.2f}"
        elif value_before is not None and value_after is not None:
            change = format(value_after - value_before, "+" + spec)
        table.add_row(name, fmt(value_before, spec), fmt(value_after, spec), change, intervals.get(name, ""))
    return table


def ablation_table(arms: Sequence[LoopResult], paired: PairedConfig | None = None) -> Table:
    """Per iteration, each arm's candidate DS and disengagements/km (e.g. DAgger + DPO vs DAgger only);
    last, each arm's final incumbent against the first arm's, with paired bootstrap intervals."""
    table = Table(title="ablation: candidate DS and disengagements/km per iteration")
    table.add_column("iter")
    for arm in arms:
        name = f"{arm.run} ({arm.method})"
        table.add_column(f"{name} DS")
        table.add_column(f"{name} dis/km")
    depth = max(len(arm.iterations) for arm in arms)
    for k in range(depth):
        cells = [str(k)]
        for arm in arms:
            ev = arm.iterations[k].evaluation if k < len(arm.iterations) else None
            cells += [
                fmt(ev.driving_score if ev else None),
                fmt(ev.disengagements_per_km if ev else None, ".2f"),
            ]
        table.add_row(*cells)
    finals = ["final incumbent"]
    for arm in arms:
        ba = before_after(arm)
        finals += [
            f"{fmt(ba.final.driving_score)} ({fmt(ba.ds_change_pct, '+.1f')} %)",
            f"{fmt(ba.final.disengagements_per_km, '.2f')} (x {fmt(ba.dpk_ratio, '.2f')})",
        ]
    table.add_row(*finals)
    # Final against the first arm's final, pair by pair (the arms share the held-out routes and seeds).
    paired = paired if paired is not None else load_paired_config()
    reference = before_after(arms[0]).final
    versus = [f"vs {arms[0].run}, paired", "", ""]
    for arm in arms[1:]:
        comparison = compare_evaluations(reference, before_after(arm).final, paired)
        ds, dpk = comparison.ds_change_pct, comparison.dpk_ratio
        versus += [
            MISSING if ds is None else f"{ds.estimate:+.1f} % {ds.bounds('+.1f')}",
            MISSING if dpk is None else f"x {dpk.estimate:.2f} {dpk.bounds('.2f')}",
        ]
    if len(arms) > 1:
        table.add_row(*versus)
    return table


@dataclass(frozen=True)
class Spread:
    """One metric over replicate runs (module docstring for mean and sd)."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float | None:
        """Sample standard deviation; None for a single run."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def format(self, spec: str) -> str:
        """`mean ± sd [min, max]`, or the single value (the sd unsigned even where `spec` signs)."""
        if self.sd is None:
            return format(self.values[0], spec)
        return (
            f"{format(self.mean, spec)} ± {format(self.sd, spec.lstrip('+'))} "
            f"[{format(min(self.values), spec)}, {format(max(self.values), spec)}]"
        )


def spread(values: Sequence[float | None]) -> Spread | None:
    """The spread of the known values (None when none is known)."""
    known = tuple(v for v in values if v is not None)
    return Spread(known) if known else None


@dataclass(frozen=True)
class ReplicateRow:
    """One iteration over replicate runs: the incumbent after it, and how many runs promoted."""

    iteration: int
    driving_score: Spread | None
    disengagements_per_km: Spread | None
    disengagements_per_policy_km: Spread | None  # None where evaluations predate the expert's metres
    expert_share: Spread | None
    promoted: int


@dataclass(frozen=True)
class ReplicateSummary:
    runs: tuple[str, ...]
    rows: tuple[ReplicateRow, ...]  # iterations every run has finished
    ds_change_pct: Spread | None  # per run: final incumbent vs its v0
    dpk_ratio: Spread | None
    policy_dpk_ratio: Spread | None  # ... per km the policy drove


def replicate_summary(loops: Sequence[LoopResult]) -> ReplicateSummary:
    """Mean and spread per iteration of the incumbent over replicate runs of one recipe.

    Only the iterations that every run has finished are summarised, so that each row averages the
    same number of runs; the final change and ratio are each run's own (its final incumbent vs v0).
    """
    if not loops:
        raise ValueError("replicate_summary needs at least one run")
    depth = min(len(loop.iterations) for loop in loops)
    per_run = [iteration_rows(loop)[:depth] for loop in loops]
    rows = []
    for k in range(depth):
        incumbents = [rows_of_run[k] for rows_of_run in per_run]
        rows.append(
            ReplicateRow(
                iteration=k,
                driving_score=spread([r.incumbent_driving_score for r in incumbents]),
                disengagements_per_km=spread([r.incumbent_disengagements_per_km for r in incumbents]),
                disengagements_per_policy_km=spread(
                    [r.incumbent_disengagements_per_policy_km for r in incumbents]
                ),
                expert_share=spread([_percent(r.incumbent_expert_share) for r in incumbents]),
                promoted=sum(r.promoted for r in incumbents),
            )
        )
    finals = [before_after(replace(loop, iterations=loop.iterations[:depth])) for loop in loops]
    return ReplicateSummary(
        runs=tuple(loop.run for loop in loops),
        rows=tuple(rows),
        ds_change_pct=spread([ba.ds_change_pct for ba in finals]),
        dpk_ratio=spread([ba.dpk_ratio for ba in finals]),
        policy_dpk_ratio=spread(
            [
                _ratio(ba.v0.disengagements_per_policy_km, ba.final.disengagements_per_policy_km)
                for ba in finals
            ]
        ),
    )


def _spread_cell(value: Spread | None, spec: str) -> str:
    return MISSING if value is None else value.format(spec)


def replicate_table(summary: ReplicateSummary) -> Table:
    n = len(summary.runs)
    table = Table(
        title=f"{n} replicate runs ({', '.join(summary.runs)}): the incumbent per iteration, "
        "mean ± sd [min, max]"
    )
    for column in ("iter", "DS", "dis/km", "dis/policy km", "expert %", "promoted"):
        table.add_column(column)
    for row in summary.rows:
        table.add_row(
            str(row.iteration), _spread_cell(row.driving_score, ".1f"),
            _spread_cell(row.disengagements_per_km, ".2f"), _spread_cell(row.disengagements_per_policy_km, ".2f"),
            _spread_cell(row.expert_share, ".0f"), f"{row.promoted} of {n}",
        )  # fmt: skip
    table.add_row(
        "final vs v0",
        f"{_spread_cell(summary.ds_change_pct, '+.1f')} %",
        f"x {_spread_cell(summary.dpk_ratio, '.2f')}",
        f"x {_spread_cell(summary.policy_dpk_ratio, '.2f')}",
        "",
        "",
    )
    return table


def plot_replicates(summary: ReplicateSummary, path: str | Path) -> Path:
    """The incumbent's mean DS and disengagements per km per iteration, with a ± sd band and each
    run's range as error bars (min-max); saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=PLOT_SIZE_IN)
    metrics = (
        ("driving_score", "driving score (held-out routes)"),
        ("disengagements_per_km", "disengagements per km"),
    )
    for ax, (field_name, ylabel) in zip(axes, metrics, strict=True):
        points = [(r.iteration, getattr(r, field_name)) for r in summary.rows]
        points = [(k, s) for k, s in points if s is not None]
        ks = [k for k, _ in points]
        means = [s.mean for _, s in points]
        sds = [s.sd or 0.0 for _, s in points]
        ax.plot(ks, means, "o-", label=f"mean of {len(summary.runs)} runs")
        ax.fill_between(ks, [m - d for m, d in zip(means, sds, strict=True)],
                        [m + d for m, d in zip(means, sds, strict=True)], alpha=0.25, label="± sd")  # fmt: skip
        ax.vlines(ks, [min(s.values) for _, s in points], [max(s.values) for _, s in points],
                  colors="grey", label="min-max")  # fmt: skip
        ax.set(xlabel="iteration", ylabel=ylabel)
        _style_iteration_axis(ax)
    fig.suptitle(f"incumbent per iteration over replicates: {', '.join(summary.runs)}", fontsize="medium")
    return _save_figure(fig, path)


def eval_table(result: EvalResult) -> Table:
    """Per route: scores averaged over seeds and disengagements per km; then the totals."""
    name = Path(result.checkpoint_path).name
    table = Table(title=f"{name} ({result.checkpoint_sha256[:SHA_SHOWN]}) on {result.route_set}")
    for column in ("route", "scenario", "seeds", "DS", "RC %", "IP", "SR %", "dis/km"):
        table.add_column(column)
    for row in result.per_route():
        table.add_row(
            row.route_id, row.scenario_type, str(row.seeds), f"{row.driving_score:.1f}",
            f"{row.route_completion:.1f}", f"{row.infraction_penalty:.3f}", f"{100.0 * row.success_rate:.0f}",
            fmt(row.disengagements_per_km, ".2f"),
        )  # fmt: skip
    table.add_row(
        "all", "", str(len(result.episodes)), fmt(result.driving_score), fmt(result.route_completion),
        fmt(result.infraction_penalty, ".3f"),
        _pct(result.success_rate),
        fmt(result.disengagements_per_km, ".2f"),
    )  # fmt: skip
    return table


def plot_iterations(loop: LoopResult, path: str | Path, others: Sequence[LoopResult] = ()) -> Path:
    """Driving score and disengagements per km of each iteration's candidate (markers) and of the
    incumbent after it (line), for `loop` and any `others` (ablation arms), with the candidates'
    necessary disengagements per km (crosses) where counterfactuals were run; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    spread_config = load_paired_config()
    fig, (ax_ds, ax_dpk) = plt.subplots(1, 2, figsize=PLOT_SIZE_IN)
    for arm in (loop, *others):
        label = f"{arm.run} ({arm.method})"
        rows = iteration_rows(arm)
        ks = [r.iteration for r in rows]
        spreads = [
            evaluation_intervals(r.evaluation, spread_config) if r.evaluation else None
            for r in arm.iterations
        ]
        (line,) = ax_ds.plot(ks, [r.incumbent_driving_score for r in rows], drawstyle="steps-post",
                             label=f"{label} incumbent")  # fmt: skip
        ax_ds.errorbar(ks, _values([r.driving_score for r in rows]),
                       yerr=_error_bars([s.driving_score if s else None for s in spreads]), fmt="o",
                       capsize=3, color=line.get_color(), label=f"{label} candidate")  # fmt: skip
        (line,) = ax_dpk.plot(ks, [r.incumbent_disengagements_per_km for r in rows], drawstyle="steps-post",
                              label=f"{label} incumbent")  # fmt: skip
        ax_dpk.errorbar(ks, _values([r.disengagements_per_km for r in rows]),
                        yerr=_error_bars([s.disengagements_per_km if s else None for s in spreads]), fmt="o",
                        capsize=3, color=line.get_color(), label=f"{label} candidate")  # fmt: skip
        if _has_necessary(rows):  # the counterfactual share of those disengagements, beside them
            ax_dpk.plot(ks, _values([r.necessary_per_km for r in rows]), "x--", color=line.get_color(),
                        label=f"{label} necessary (counterfactual)")  # fmt: skip
    caption = (
        f"bars: {100 * spread_config.confidence:g} % bootstrap interval of each evaluation over its episodes"
    )
    fig.text(0.01, 0.01, caption, fontsize="small")
    ax_ds.set(xlabel="iteration", ylabel="driving score (held-out routes)", title="driving score")
    ax_dpk.set(xlabel="iteration", ylabel="disengagements per km", title="disengagement rate")
    for ax in (ax_ds, ax_dpk):
        _style_iteration_axis(ax)
    return _save_figure(fig, path)


def _values(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _error_bars(intervals: Sequence[Interval | None]) -> list[list[float]]:
    """matplotlib's yerr rows (below, above) of each marker; NaN (no bar) where there is no interval."""
    return [
        [math.nan if i is None else i.estimate - i.low for i in intervals],
        [math.nan if i is None else i.high - i.estimate for i in intervals],
    ]


def _style_iteration_axis(ax: Any) -> None:
    ax.set_ylim(bottom=0.0)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _save_figure(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ artifacts


@dataclass(frozen=True)
class DisengagementCount:
    reason: str
    scenario_type: str
    takeovers: int
    mean_speed_kmh: float


def disengagement_counts(
    store: Store, run: str, iteration: int | None, phases: Sequence[str], checkpoint_sha256: str | None = None
) -> list[DisengagementCount]:
    """Takeovers per reason and scenario type, from the `disengagements` view."""
    where = ["run = :run", f"phase IN ({', '.join(f':p{i}' for i in range(len(phases)))})"]
    params: dict[str, object] = {"run": run, **{f"p{i}": p for i, p in enumerate(phases)}}
    if iteration is None:
        where.append("iteration IS NULL")
    else:
        where.append("iteration = :iteration")
        params["iteration"] = iteration
    if checkpoint_sha256 is not None:
        where.append("checkpoint_id = (SELECT id FROM checkpoints WHERE sha256 = :sha)")
        params["sha"] = checkpoint_sha256
    sql = (
        "SELECT reason, scenario_type, COUNT(*) AS n, AVG(speed_kmh) AS v FROM disengagements "
        f"WHERE {' AND '.join(where)} GROUP BY reason, scenario_type ORDER BY n DESC, reason, scenario_type"
    )
    with store.engine.connect() as conn:
        rows = conn.execute(text(sql), params).all()
    return [
        DisengagementCount(str(r.reason), str(r.scenario_type), int(r.n), float(r.v or 0.0)) for r in rows
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table: `header`, then one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def disengagement_markdown(
    title: str,
    counts: Sequence[DisengagementCount],
    failures: Sequence[EpisodeFailure],
    *,
    episodes: int,
    distance_km: float,
) -> str:
    """A markdown summary: disengagements per reason, per scenario type, per (reason, scenario), and
    the failed route x seeds."""
    total = sum(c.takeovers for c in counts)
    per_km = f"{total / distance_km:.2f}" if distance_km > 0 else MISSING
    parts = [f"# {title}", "", f"{episodes} episode(s), {distance_km:.3f} km, {total} disengagement(s), "
             f"{per_km} per km, {len(failures)} failed route x seed(s).", ""]  # fmt: skip
    by_reason: dict[str, int] = {}
    by_scenario: dict[str, int] = {}
    for c in counts:
        by_reason[c.reason] = by_reason.get(c.reason, 0) + c.takeovers
        by_scenario[c.scenario_type] = by_scenario.get(c.scenario_type, 0) + c.takeovers
    reason_rows = sorted(by_reason.items(), key=lambda kv: -kv[1])
    scenario_rows = sorted(by_scenario.items(), key=lambda kv: -kv[1])
    detail_rows = [(c.reason, c.scenario_type, c.takeovers, f"{c.mean_speed_kmh:.1f}") for c in counts]
    parts += [
        "## Disengagements per reason",
        "",
        markdown_table(["reason", "takeovers"], reason_rows),
        "",
        "## Disengagements per scenario type",
        "",
        markdown_table(["scenario type", "takeovers"], scenario_rows),
        "",
        "## Per reason and scenario type",
        "",
        markdown_table(["reason", "scenario type", "takeovers", "mean speed km/h"], detail_rows),
        "",
    ]
    if failures:
        failure_rows = [(f.route_id, f.seed, f.phase, f.error.replace("|", "/")) for f in failures]
        parts += [
            "## Failed route x seeds",
            "",
            markdown_table(["route", "seed", "phase", "error"], failure_rows),
            "",
        ]
    return "\n".join(parts)


def collect_markdown(store: Store, run: str, iteration: int | None, outcome: CollectOutcome, phases: Sequence[str],
                     checkpoint_sha256: str | None = None) -> str:  # fmt: skip
    """The markdown artifact of a collection."""
    counts = disengagement_counts(store, run, iteration, phases, checkpoint_sha256)
    title = (
        f"{outcome.mode} collection, run {run}, iteration {iteration if iteration is not None else MISSING}"
    )
    return disengagement_markdown(
        title, counts, outcome.failures, episodes=len(outcome.episodes), distance_km=outcome.distance_km
    )


HEADLINE_COLUMNS = ("DS", "RC %", "IP", "SR", "disengagements/km", "disengagements/policy km",
                    "expert share %", "episodes without takeover %")  # fmt: skip


def _headline_row(result: EvalResult) -> list[str]:
    return [fmt(result.driving_score), fmt(result.route_completion), fmt(result.infraction_penalty, ".3f"),
            fmt(result.success_rate, ".2f"), fmt(result.disengagements_per_km, ".2f"),
            fmt(result.disengagements_per_policy_km, ".2f"), _pct(result.expert_share),
            _pct(result.takeover_free_share)]  # fmt: skip


def confirmation_title(result: Confirmation) -> str:
    seeds = " ".join(str(s) for s in result.seeds)
    return f"Run {result.run} on fresh seeds {seeds} ({result.v0.route_set})"


def confirmation_labels(result: Confirmation) -> tuple[str, str]:
    """Names of the two checkpoints confirmed: v0 and the incumbent after the iteration."""
    v0, incumbent = (Path(e.checkpoint_path).name for e in (result.v0, result.incumbent))
    return f"v0 ({v0})", f"after iteration {result.iteration} ({incumbent})"


def confirmation_markdown(result: Confirmation) -> str:
    """`takeover confirm`'s result (the `confirm` flow's artifact): v0 and the incumbent on the fresh
    seeds, and the change pair by pair."""
    labels = confirmation_labels(result)
    return "\n".join([
        f"# {confirmation_title(result)}",
        "",
        markdown_table(("checkpoint", *HEADLINE_COLUMNS), [
            [labels[0], *_headline_row(result.v0)],
            [labels[1], *_headline_row(result.incumbent)],
        ]),
        "",
        "v0 against the incumbent: " + paired_sentence(result.comparison),
        "",
        f"Episodes stored under run {result.stored_as}.",
    ])  # fmt: skip


def confirmation_json(result: Confirmation) -> dict[str, Any]:
    """`takeover confirm --json` and the `confirm` flow's return value."""
    return {
        "run": result.run, "stored_as": result.stored_as, "iteration": result.iteration,
        "promoted_in": result.promoted_in, "seeds": list(result.seeds),
        "v0": {"checkpoint": result.v0.checkpoint_path, "metrics": result.v0.metrics()},
        "incumbent": {"checkpoint": result.incumbent.checkpoint_path, "metrics": result.incumbent.metrics()},
        "paired": comparison_json(result.comparison),
    }  # fmt: skip


def eval_markdown(store: Store, result: EvalResult, takeover_phase: str) -> str:
    """The markdown artifact of an evaluation: headline scores, then its disengagements."""
    counts = disengagement_counts(
        store, result.run, result.iteration, [takeover_phase], result.checkpoint_sha256
    )
    head = markdown_table(HEADLINE_COLUMNS, [_headline_row(result)])
    body = disengagement_markdown(
        f"evaluation of {Path(result.checkpoint_path).name} on {result.route_set}",
        counts,
        result.failures,
        episodes=len(result.takeover_episodes),
        distance_km=result.takeover_distance_km,
    )
    return head + "\n\n" + body


def loop_markdown(loop: LoopResult) -> str:
    """The per-iteration table and v0 vs the final incumbent, as markdown."""
    found = iteration_rows(loop)
    necessary = _has_necessary(found)
    rows = [
        (r.iteration, r.candidate, fmt(r.collected_takeovers_per_km, ".2f"), fmt(r.driving_score),
         fmt(r.route_completion), fmt(r.infraction_penalty, ".3f"), fmt(r.disengagements_per_km, ".2f"),
         *([fmt(r.necessary_per_km, ".2f")] if necessary else []),
         "yes" if r.promoted else "no", fmt(r.incumbent_driving_score), r.note.replace("|", "/"))
        for r in found
    ]  # fmt: skip
    ba = before_after(loop)
    return "\n".join(
        [
            f"# Run {loop.run} ({loop.method})",
            "",
            markdown_table(
                [
                    "iteration",
                    "candidate",
                    "rollout takeovers/km",
                    "DS",
                    "RC %",
                    "IP",
                    "disengagements/km",
                    *(["necessary disengagements/km"] if necessary else []),
                    "promoted",
                    "incumbent DS",
                    "why",
                ],
                rows,
            ),
            "",
            f"v0 DS {fmt(ba.v0.driving_score)} -> final incumbent (iteration {ba.final_iteration}) DS "
            f"{fmt(ba.final.driving_score)} ({fmt(ba.ds_change_pct, '+.1f')} %); disengagements/km "
            f"{fmt(ba.v0.disengagements_per_km, '.2f')} -> {fmt(ba.final.disengagements_per_km, '.2f')} "
            f"(x {fmt(ba.dpk_ratio, '.2f')}); expert share of the driving {_pct(ba.v0.expert_share)} % -> "
            f"{_pct(ba.final.expert_share)} %.",
            "",
            "v0 against the final incumbent: " + paired_sentence(ba.paired()),
        ]
    )


def paired_sentence(comparison: PairedComparison) -> str:
    """The paired bootstrap intervals of a comparison (v0 vs the final incumbent, a candidate vs the
    incumbent), in words."""
    ds, dpk = comparison.ds_change_pct, comparison.dpk_ratio
    if ds is None:
        return "no paired interval: the two evaluations share no (route, seed) episode with a DS above 0."
    text = (
        f"{100 * ds.confidence:g} % paired bootstrap interval over {ds.pairs} (route, seed) episodes: "
        f"DS change {ds.bounds('+.1f')} %"
    )
    if dpk is not None:
        text += f", disengagements/km x {dpk.bounds('.2f')}"
    if comparison.policy_dpk_ratio is not None:
        text += f", per policy km x {comparison.policy_dpk_ratio.bounds('.2f')}"
    return text + "."


def training_markdown(result: TrainResult) -> str:
    """A training round's checkpoint and final metrics, as markdown."""
    head = (
        f"# {result.kind} round {result.name} of run {result.run}\n\ncheckpoint `{result.checkpoint_path}` "
        f"(sha256 {result.sha256[:SHA_SHOWN]}, parent {(result.parent_sha256 or 'none')[:SHA_SHOWN]}), "
        f"{result.n_samples} samples, {result.steps} steps, {result.wall_s:.0f} s\n\n"
    )
    return head + markdown_table(
        ["metric", "value"], [(k, f"{v:.4g}") for k, v in sorted(result.metrics.items())]
    )


def iteration_json(result: IterationResult) -> dict[str, Any]:
    """One iteration as JSON: what `takeover iterate --json` prints per iteration and what the
    nightly-iteration flow returns."""
    return {
        "iteration": result.iteration,
        "candidate": result.candidate.path if result.candidate else None,
        "metrics": result.evaluation.metrics() if result.evaluation else {},
        "rival": result.rival.path if result.rival else None,  # select_candidate: the checkpoint not chosen
        "rival_metrics": result.rival_evaluation.metrics() if result.rival_evaluation else {},
        "collect": result.collect,
        "collect_verdicts": result.collect_verdicts,  # collect_counterfactuals; {} when not run
        "training": result.training,
        "necessary_per_km": result.necessary_per_km,  # counterfactual replays; None when not run
        "necessary_ratio": interval_json(result.necessary_ratio),  # ... over the incumbent's, paired
        "promoted": result.promoted,
        "reason": result.reason,
        "incumbent_after": result.incumbent_after.path,
        "steps_run": list(result.steps_run),
        "steps_resumed": list(result.steps_resumed),
    }


def incumbent_evaluation(loop: LoopResult, result: IterationResult) -> EvalResult | None:
    """The evaluation of the incumbent an iteration's candidate was judged against (None for v0)."""
    return loop.evaluation_of(result.incumbent_before) if result.incumbent_before else None


def iteration_markdown(
    store: Store, result: IterationResult, takeover_phase: str, incumbent_evaluation: EvalResult | None = None
) -> str:
    """An iteration's artifact: the disengagements of its collection (the incumbent's rollouts, or
    none for the expert's demonstrations), its failed route x seeds, the promotion verdict (with the
    candidate against `incumbent_evaluation` pair by pair, when given), then the candidate's evaluation."""
    phase = "expert" if result.iteration == 0 else "rollout"
    sha = result.incumbent_before.sha256 if result.incumbent_before else None
    counts = disengagement_counts(store, result.run, result.iteration, [phase], sha)
    collection = disengagement_markdown(
        f"Iteration {result.iteration} of run {result.run}: {phase} collection",
        counts,
        episode_failures(store, result.run, result.iteration),
        episodes=int(result.collect.get("episodes", 0)),
        distance_km=float(result.collect.get("distance_km", 0.0)),
    )
    verdict = f"**{'promoted' if result.promoted else 'not promoted'}**: {result.reason}"
    rival, rival_eval = result.rival, result.rival_evaluation
    if rival is not None and rival_eval is not None:
        verdict += (
            f"\n\nThe other checkpoint evaluated, {Path(rival.path).name}: DS {fmt(rival_eval.driving_score)}, "
            f"disengagements/km {fmt(rival_eval.disengagements_per_km, '.2f')}"
        )
    if (
        result.evaluation is not None
        and incumbent_evaluation is not None
        and result.incumbent_before is not None
    ):
        verdict += f"\n\nAgainst the incumbent {Path(result.incumbent_before.path).name}: " + paired_sentence(
            compare_evaluations(incumbent_evaluation, result.evaluation)
        )
    if result.evaluation is None:
        return f"{collection}\n{verdict}\n"
    return f"{collection}\n{verdict}\n\n{eval_markdown(store, result.evaluation, takeover_phase)}"


def eval_table_rows(result: EvalResult) -> list[dict[str, object]]:
    """Per-route rows for a Prefect table artifact."""
    return [
        {
            "route": r.route_id,
            "scenario": r.scenario_type,
            "seeds": r.seeds,
            "DS": round(r.driving_score, 2),
            "RC": round(r.route_completion, 2),
            "IP": round(r.infraction_penalty, 3),
            "SR": round(r.success_rate, 2),
            "dis_per_km": None if r.disengagements_per_km is None else round(r.disengagements_per_km, 3),
        }
        for r in result.per_route()
    ]


__all__ = [
    "BeforeAfter",
    "DisengagementCount",
    "IterationRow",
    "ablation_table",
    "before_after",
    "before_after_table",
    "collect_markdown",
    "disengagement_counts",
    "disengagement_markdown",
    "eval_markdown",
    "eval_table",
    "eval_table_rows",
    "iteration_markdown",
    "iteration_rows",
    "iteration_table",
    "loop_markdown",
    "plot_iterations",
    "training_markdown",
]
