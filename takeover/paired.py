"""Is a change real? Paired bootstrap intervals between two evaluations of one protocol.

Two evaluations under the same protocol drive the same episodes, one per (route, seed), so each
episode of evaluation A has a twin in evaluation B. Comparing them pair by pair cancels what the route
and the traffic seed contribute (a hard route is hard for both checkpoints), which a comparison of two
independent means would count as noise. With N pairs j, the statistics of B against A are

    DS change %        = 100 (sum_j DS_B,j / sum_j DS_A,j - 1)                  (leaderboard episodes)
    DPK ratio          = (sum_j T_B,j / sum_j d_B,j) / (sum_j T_A,j / sum_j d_A,j)   (episodes with takeovers)
    policy DPK ratio   = the same with d_j - e_j, the metres the policy drove itself

where T_j is the episode's takeovers, d_j its distance and e_j the expert's metres in it. (Over the
same pairs, sum_j DS_B,j / sum_j DS_A,j is the ratio of the two mean driving scores.)

The interval is Efron's percentile bootstrap: draw N pairs with replacement R times, compute the
statistic on each draw, and take its (1 - c) / 2 and (1 + c) / 2 quantiles for confidence c. A draw
whose denominator is zero has no ratio and is left out. `method: bca` takes Efron's bias-corrected and
accelerated quantiles instead (Efron 1987; Efron & Tibshirani 1993, ch. 14), which keep their coverage
better for a skewed statistic such as a ratio of sums over 30 pairs:

    z0 = Phi^-1( #{draws < estimate} / R )                 (bias: the draws' median off the estimate)
    a  = sum_i (m - t_i)^3 / (6 (sum_i (m - t_i)^2)^1.5)   (acceleration, from the jackknife values t_i
                                                            of the N leave-one-pair-out statistics, mean m)
    alpha(z) = Phi( z0 + (z0 + z) / (1 - a (z0 + z)) )     quantiles at alpha(z_(1-c)/2) and alpha(z_(1+c)/2)

With z0 = a = 0 they are the percentile ones; where z0 is infinite (every draw on one side of the
estimate) the percentile interval is kept. The point estimate is the statistic on all
pairs. Episodes without a twin (a crashed episode, another seed list) are left out and counted.
An interval that excludes 0 % (or x 1) says the change is larger than the route-by-route scatter of
this evaluation explains; it says nothing about other routes.

`evaluation_intervals` draws one evaluation's episodes alone (mean DS, sum T / sum d): the wider,
unpaired spread that error bars of a single evaluation show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from carla_bridge.config import load_config
from carla_bridge.errors import TakeoverError
from carla_bridge.units import M_PER_KM
from takeover.text import MISSING

if TYPE_CHECKING:  # evaluate.py's promotion rule uses this module
    from takeover.evaluate import EpisodeScore, EvalResult

CONFIG_NAME = "paired"
PERCENTILE = "percentile"
BCA = "bca"
METHODS = (PERCENTILE, BCA)
Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (R, N, k) columns before, after -> (R,)


class PairedError(TakeoverError):
    """The paired bootstrap is misconfigured."""


@dataclass
class PairedConfig:
    """The bootstrap's settings (schema of conf/paired.yaml)."""

    resamples: int = 2000  # R: bootstrap draws of the N pairs
    confidence: float = 0.95  # c: the interval's coverage
    seed: int = 0  # the draws' random seed (the same evaluations give the same interval)
    method: str = "percentile"  # percentile | bca (bias-corrected and accelerated quantiles)


def load_paired_config(overrides: list[str] | None = None) -> PairedConfig:
    config = load_config(PairedConfig, CONFIG_NAME, overrides)
    if config.resamples < 1:
        raise PairedError(f"paired.resamples={config.resamples} must be >= 1 (e.g. 2000)")
    if not 0.0 < config.confidence < 1.0:
        raise PairedError(
            f"paired.confidence={config.confidence} must lie strictly between 0 and 1 (e.g. 0.95)"
        )
    if config.method not in METHODS:
        raise PairedError(f"paired.method={config.method!r}; use one of {', '.join(METHODS)}")
    return config


@dataclass(frozen=True)
class Interval:
    """A statistic on all pairs and its bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    pairs: int  # N: the episodes that had a twin
    unpaired: int  # episodes of either evaluation left out for want of one

    def excludes(self, value: float) -> bool:
        """True when `value` (0 for a change, 1 for a ratio) lies outside the interval."""
        return value < self.low or value > self.high

    def bounds(self, spec: str) -> str:
        """The interval as text, e.g. '[+4.1, +20.8]' for spec '+.1f'."""
        return f"[{self.low:{spec}}, {self.high:{spec}}]"


@dataclass(frozen=True)
class PairedComparison:
    """Evaluation B (after) against evaluation A (before), pair by pair."""

    ds_change_pct: Interval | None
    dpk_ratio: Interval | None
    policy_dpk_ratio: Interval | None  # None when an episode predates the expert's metres


def pair_episodes(
    before: Sequence[EpisodeScore], after: Sequence[EpisodeScore]
) -> tuple[list[tuple[EpisodeScore, EpisodeScore]], int]:
    """The (before, after) twins with the same route and seed, in `before`'s order, and how many
    episodes of either side had none."""
    by_key = {(e.route_id, e.seed): e for e in after}
    pairs = [(e, by_key[(e.route_id, e.seed)]) for e in before if (e.route_id, e.seed) in by_key]
    return pairs, len(before) + len(after) - 2 * len(pairs)


def bootstrap_interval(
    before: np.ndarray, after: np.ndarray, statistic: Statistic, config: PairedConfig, unpaired: int = 0
) -> Interval | None:
    """`statistic` on all N pairs and its percentile interval over `config.resamples` draws.

    `before` and `after` are (N, k) per-pair columns; `statistic(b, a)` maps stacks (R, N, k) of them
    to (R,) values (NaN where undefined). None when there is no pair or no draw defines it."""
    n = len(before)
    if n == 0:
        return None
    estimate = float(statistic(before[None], after[None])[0])
    if not np.isfinite(estimate):
        return None
    rng = np.random.default_rng(config.seed)
    draws = rng.integers(0, n, size=(config.resamples, n))
    values = statistic(before[draws], after[draws])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1.0 - config.confidence) / 2.0
    levels = [tail, 1.0 - tail]
    if config.method == BCA:
        levels = bca_levels(values, estimate, jackknife(before, after, statistic), levels)
    low, high = np.quantile(values, levels)
    return Interval(estimate, float(low), float(high), config.confidence, n, unpaired)


def jackknife(before: np.ndarray, after: np.ndarray, statistic: Statistic) -> np.ndarray:
    """The N leave-one-pair-out values of `statistic` (NaN where undefined; empty for one pair)."""
    n = len(before)
    if n < 2:
        return np.zeros(0)
    keep = np.array([[j for j in range(n) if j != i] for i in range(n)])  # (N, N - 1)
    return statistic(before[keep], after[keep])


def bca_levels(draws: np.ndarray, estimate: float, jack: np.ndarray, levels: Sequence[float]) -> list[float]:
    """The BCa quantile levels for the percentile `levels` (the module's equations); `levels` unchanged
    when the bias is unbounded (every draw on one side of the estimate)."""
    normal = NormalDist()
    below = float(np.mean(draws < estimate)) + 0.5 * float(np.mean(draws == estimate))  # ties split
    if not 0.0 < below < 1.0:
        return list(levels)
    z0 = normal.inv_cdf(below)
    jack = jack[np.isfinite(jack)]
    spread = jack.mean() - jack if jack.size >= 2 else np.zeros(0)
    denominator = 6.0 * float(np.sum(spread**2)) ** 1.5
    a = float(np.sum(spread**3)) / denominator if denominator > 0 else 0.0
    out = []
    for level in levels:
        z = z0 + normal.inv_cdf(level)
        out.append(normal.cdf(z0 + z / (1.0 - a * z)))
    return out


def sum_ratio(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(sum after[..., 0] / sum after[..., 1]) / (sum before[..., 0] / sum before[..., 1]), NaN where a
    sum in a denominator is zero."""
    b = before.sum(axis=-2)
    a = after.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_b = np.where(b[..., 1] > 0, b[..., 0] / b[..., 1], np.nan)
        rate_a = np.where(a[..., 1] > 0, a[..., 0] / a[..., 1], np.nan)
        return np.where(rate_b > 0, rate_a / rate_b, np.nan)


def _ds_change_pct(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """100 (sum after / sum before - 1) over the pairs, NaN where before sums to zero."""
    b = before[..., 0].sum(axis=-1)
    a = after[..., 0].sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, 100.0 * (a / b - 1.0), np.nan)


def compare_evaluations(
    before: EvalResult, after: EvalResult, config: PairedConfig | None = None
) -> PairedComparison:
    """DS change, DPK ratio and policy DPK ratio of `after` over `before` with paired bootstrap intervals."""
    config = config if config is not None else load_paired_config()
    ds_pairs, ds_unpaired = pair_episodes(before.episodes, after.episodes)
    ds = bootstrap_interval(
        np.array([[b.driving_score] for b, _ in ds_pairs]).reshape(-1, 1),
        np.array([[a.driving_score] for _, a in ds_pairs]).reshape(-1, 1),
        _ds_change_pct, config, ds_unpaired,
    )  # fmt: skip
    to_pairs, to_unpaired = pair_episodes(before.takeover_episodes, after.takeover_episodes)

    def rate_columns(policy_only: bool, side: int) -> np.ndarray:
        rows = [
            (e.takeovers, e.distance_m - ((e.expert_distance_m or 0.0) if policy_only else 0.0))
            for e in (pair[side] for pair in to_pairs)
        ]
        return np.array(rows, dtype=float).reshape(-1, 2)

    dpk = bootstrap_interval(rate_columns(False, 0), rate_columns(False, 1), sum_ratio, config, to_unpaired)
    recorded = all(e.expert_distance_m is not None for pair in to_pairs for e in pair)
    policy = (
        bootstrap_interval(rate_columns(True, 0), rate_columns(True, 1), sum_ratio, config, to_unpaired)
        if recorded
        else None
    )
    return PairedComparison(ds, dpk, policy)


@dataclass(frozen=True)
class EvaluationIntervals:
    """One evaluation's own spread: the bootstrap over its episodes alone (not paired)."""

    driving_score: Interval | None  # mean DS
    disengagements_per_km: Interval | None  # sum T / sum d, per km


def _mean_of_after(_before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return after[..., 0].mean(axis=-1)


def _rate_of_after(_before: np.ndarray, after: np.ndarray) -> np.ndarray:
    sums = after.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sums[..., 1] > 0, M_PER_KM * sums[..., 0] / sums[..., 1], np.nan)


def evaluation_intervals(result: EvalResult, config: PairedConfig | None = None) -> EvaluationIntervals:
    """Intervals of an evaluation's mean DS and disengagements per km from its own episodes: how much
    the same checkpoint's figures would move on another draw of these routes (error bars of a plot)."""
    config = config if config is not None else load_paired_config()
    ds = np.array([e.driving_score for e in result.episodes], dtype=float).reshape(-1, 1)
    rates = np.array([(e.takeovers, e.distance_m) for e in result.takeover_episodes], dtype=float).reshape(
        -1, 2
    )
    # bootstrap_interval draws rows of both arrays together; these statistics read only the second
    return EvaluationIntervals(
        bootstrap_interval(ds, ds, _mean_of_after, config),
        bootstrap_interval(rates, rates, _rate_of_after, config),
    )


def interval_cell(interval: Interval | None, spec: str, prefix: str = "", suffix: str = "") -> str:
    """A table cell: the interval's bounds between `prefix` and `suffix` (e.g. 'x ', ' %'), or MISSING."""
    return MISSING if interval is None else f"{prefix}{interval.bounds(spec)}{suffix}"


def interval_json(interval: Interval | None) -> dict[str, float | int] | None:
    if interval is None:
        return None
    return {
        "estimate": interval.estimate, "low": interval.low, "high": interval.high,
        "confidence": interval.confidence, "pairs": interval.pairs, "unpaired": interval.unpaired,
    }  # fmt: skip


def comparison_json(comparison: PairedComparison) -> dict[str, dict[str, float | int] | None]:
    """The three intervals of a comparison as JSON (`takeover iterate --json`, `takeover compare --json`)."""
    return {
        "ds_change_pct": interval_json(comparison.ds_change_pct),
        "disengagements_per_km_ratio": interval_json(comparison.dpk_ratio),
        "disengagements_per_policy_km_ratio": interval_json(comparison.policy_dpk_ratio),
    }


__all__ = [
    "EvaluationIntervals",
    "Interval",
    "PairedComparison",
    "PairedConfig",
    "PairedError",
    "bootstrap_interval",
    "compare_evaluations",
    "comparison_json",
    "evaluation_intervals",
    "interval_cell",
    "interval_json",
    "load_paired_config",
    "pair_episodes",
]
