"""Paired bootstrap intervals between two evaluations (takeover/paired.py), against hand-computed values."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_evaluate_promotion import SHA, score

from takeover.evaluate import EvalResult
from takeover.paired import (
    PairedConfig,
    PairedError,
    bca_levels,
    bootstrap_interval,
    compare_evaluations,
    evaluation_intervals,
    interval_cell,
    load_paired_config,
    pair_episodes,
)

CONFIG = PairedConfig(resamples=4000, confidence=0.95, seed=0)


def evaluation(ds: dict[str, float], takeovers: dict[str, int], km: float = 1.0) -> EvalResult:
    """One episode per route (seed 0) with these driving scores, and these takeovers over `km` each."""
    return EvalResult(
        run="r", iteration=0, checkpoint_path="c.pt", checkpoint_sha256=SHA, route_set="s", backend="embedded",
        episodes=tuple(score(route, 0, value) for route, value in ds.items()),
        takeover_episodes=tuple(
            score(route, 0, 0.0, phase="eval_takeover", takeovers=n, km=km) for route, n in takeovers.items()
        ),
    )  # fmt: skip


def test_episodes_pair_by_route_and_seed_and_the_rest_is_counted():
    # given before on routes a, b (seed 0) and a (seed 1); after on b, a (seed 0) and c
    before = [score("a", 0, 10), score("b", 0, 20), score("a", 1, 30)]
    after = [score("b", 0, 21), score("a", 0, 11), score("c", 0, 99)]
    # when they are paired
    pairs, unpaired = pair_episodes(before, after)
    # then a/0 and b/0 pair in before's order, and a/1 and c/0 are left out
    assert [(b.driving_score, a.driving_score) for b, a in pairs] == [(10, 11), (20, 21)]
    assert unpaired == 2


def test_two_pairs_give_the_three_possible_draws_as_the_interval():
    # given DS 10 -> 30 on one route and 10 -> 10 on another: +100 % on all pairs
    result = compare_evaluations(
        evaluation({"a": 10, "b": 10}, {}), evaluation({"a": 30, "b": 10}, {}), CONFIG
    )
    interval = result.ds_change_pct
    assert interval is not None
    # then a draw of two pairs sums to 60 / 20 (+200 %), 40 / 20 (+100 %) or 20 / 20 (0 %), with
    # probability 1/4, 1/2, 1/4: the 2.5 % and 97.5 % quantiles of 4000 draws are the extremes
    assert interval.estimate == pytest.approx(100.0)
    assert (interval.low, interval.high) == pytest.approx((0.0, 200.0))
    assert interval.pairs == 2 and interval.unpaired == 0
    assert interval.excludes(-1.0) and not interval.excludes(0.0)


def test_the_same_change_on_every_route_has_no_scatter():
    # given every route halves its takeovers over the same distance (4 -> 2 per km)
    before = evaluation({"a": 10, "b": 20, "c": 30}, {"a": 4, "b": 4, "c": 4})
    after = evaluation({"a": 15, "b": 30, "c": 45}, {"a": 2, "b": 2, "c": 2})
    # when compared
    result = compare_evaluations(before, after, CONFIG)
    # then DS rises 50 % and the rate halves, in every draw
    assert result.ds_change_pct is not None and result.dpk_ratio is not None
    assert (result.ds_change_pct.low, result.ds_change_pct.high) == pytest.approx((50.0, 50.0))
    assert (result.dpk_ratio.estimate, result.dpk_ratio.low, result.dpk_ratio.high) == pytest.approx(
        (0.5,) * 3
    )
    assert result.dpk_ratio.excludes(1.0)


def test_the_rate_ratio_is_a_ratio_of_sums_and_draws_without_takeovers_before_are_left_out():
    # given route a: 2 -> 1 takeovers, route b: 0 -> 1, each over 1 km
    result = compare_evaluations(evaluation({}, {"a": 2, "b": 0}), evaluation({}, {"a": 1, "b": 1}), CONFIG)
    ratio = result.dpk_ratio
    assert ratio is not None
    # then on all pairs: (2 / 2 km) / (2 / 2 km) = 1; a draw of {a, a} gives 0.5, {a, b} gives 1, and
    # {b, b} has no takeovers before, so no ratio: the interval runs from 0.5 to 1
    assert ratio.estimate == pytest.approx(1.0)
    assert (ratio.low, ratio.high) == pytest.approx((0.5, 1.0))


def test_policy_km_ratio_leaves_out_the_experts_metres_and_needs_them_recorded():
    # given 2 takeovers before over 1 km of which the expert drove 0.5 km, and 2 after over 1 km, 0 by it
    before = evaluation({}, {"a": 2})
    after = evaluation({}, {"a": 2})
    before = replace(
        before, takeover_episodes=(replace(before.takeover_episodes[0], expert_distance_m=500.0),)
    )
    after = replace(after, takeover_episodes=(replace(after.takeover_episodes[0], expert_distance_m=0.0),))
    # then per policy km the rate goes 4 -> 2 (x 0.5), while per km it stays (x 1)
    result = compare_evaluations(before, after, CONFIG)
    assert result.policy_dpk_ratio is not None and result.dpk_ratio is not None
    assert result.policy_dpk_ratio.estimate == pytest.approx(0.5)
    assert result.dpk_ratio.estimate == pytest.approx(1.0)
    # and with the expert's metres missing on one side there is no policy interval, not a wrong one
    old = replace(before, takeover_episodes=(replace(before.takeover_episodes[0], expert_distance_m=None),))
    assert compare_evaluations(old, after, CONFIG).policy_dpk_ratio is None


def test_nothing_to_pair_gives_no_interval_and_a_missing_cell():
    # given evaluations on different routes, and one with a zero DS before
    result = compare_evaluations(evaluation({"a": 10}, {"a": 1}), evaluation({"b": 10}, {"b": 1}), CONFIG)
    zero = compare_evaluations(evaluation({"a": 0}, {}), evaluation({"a": 10}, {}), CONFIG)
    # then there is no interval (not a made-up one), and a table shows "-"
    assert result.ds_change_pct is None and result.dpk_ratio is None
    assert zero.ds_change_pct is None
    assert interval_cell(None, ".2f", prefix="x ") == "-"


def test_the_same_seed_gives_the_same_interval_and_more_confidence_a_wider_one():
    rng = np.random.default_rng(1)
    before = rng.uniform(0, 100, size=(30, 1))
    after = before + rng.normal(5, 20, size=(30, 1))

    def mean_change(b: np.ndarray, a: np.ndarray) -> np.ndarray:
        return (a - b)[..., 0].mean(axis=-1)

    narrow = bootstrap_interval(before, after, mean_change, PairedConfig(2000, 0.8, 3))
    again = bootstrap_interval(before, after, mean_change, PairedConfig(2000, 0.8, 3))
    wide = bootstrap_interval(before, after, mean_change, PairedConfig(2000, 0.99, 3))
    assert narrow == again
    assert narrow is not None and wide is not None
    assert wide.low < narrow.low < narrow.estimate < narrow.high < wide.high


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("resamples=0", "resamples=0 must be >= 1"),
        ("confidence=1.0", "strictly between"),
        ("method=studentized", "method='studentized'; use one of percentile, bca"),
    ],
)
def test_a_bad_setting_is_named(override: str, message: str):
    with pytest.raises(PairedError, match=message):
        load_paired_config([override])


def test_one_evaluations_own_interval_comes_from_its_episodes_alone():
    # given DS 0 and 100 on two routes, and one takeover per km on each
    result = evaluation({"a": 0.0, "b": 100.0}, {"a": 1, "b": 1})
    # when its own intervals are drawn
    spread = evaluation_intervals(result, CONFIG)
    # then the mean DS of two draws is 0, 50 or 100: the interval spans [0, 100] around 50
    assert spread.driving_score is not None
    assert (spread.driving_score.estimate, spread.driving_score.low, spread.driving_score.high) == (
        50.0,
        0.0,
        100.0,
    )
    # and the rate is 1 per km whichever episodes are drawn
    assert spread.disengagements_per_km is not None
    assert (spread.disengagements_per_km.low, spread.disengagements_per_km.high) == pytest.approx((1.0, 1.0))


def test_bca_levels_by_hand():
    # given draws 0..9 around the estimate 3 (3 below, 1 tied: 0.35 below, z0 = -0.38532)
    draws = np.arange(10, dtype=float)
    # when the jackknife values are all equal (no acceleration), the levels are Phi(2 z0 +- 1.95996)
    assert bca_levels(draws, 3.0, np.ones(3), [0.025, 0.975]) == pytest.approx(
        [0.0031609, 0.8828437], abs=1e-6
    )
    # when they are 0, 0, 3: m - t = 1, 1, -2, so a = (1 + 1 - 8) / (6 x 6^1.5) = -0.068041, and
    # alpha = Phi(z0 + z / (1 - a z)) with z = z0 -+ 1.95996: z = -2.34528 -> Phi(-3.17591)
    assert bca_levels(draws, 3.0, np.array([0.0, 0.0, 3.0]), [0.025, 0.975]) == pytest.approx(
        [0.0007468, 0.8501182], abs=1e-6
    )
    # and with every draw above the estimate the bias is unbounded: the percentile levels are kept
    assert bca_levels(draws + 10, 3.0, np.ones(3), [0.025, 0.975]) == [0.025, 0.975]


def test_bca_reaches_further_along_a_right_skewed_statistic():
    # given 30 pairs whose change is exponential (right-skewed): the mean change's sampling law is too
    rng = np.random.default_rng(4)
    before = np.zeros((30, 1))
    after = rng.exponential(10.0, size=(30, 1))

    def mean_change(b: np.ndarray, a: np.ndarray) -> np.ndarray:
        return (a - b)[..., 0].mean(axis=-1)

    # when both intervals are drawn from the same resamples
    plain = bootstrap_interval(before, after, mean_change, CONFIG)
    bca = bootstrap_interval(before, after, mean_change, replace(CONFIG, method="bca"))
    # then BCa keeps the estimate and moves both ends up, toward the long tail
    assert plain is not None and bca is not None and bca.estimate == plain.estimate
    assert bca.low > plain.low and bca.high > plain.high
    assert bca.low < bca.estimate < bca.high
