"""Evaluation aggregates (DS, RC, IP, SR, disengagements per km) and the promotion rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from takeover.evaluate import (
    EpisodeFailure,
    EpisodeScore,
    EvalResult,
    EvaluationError,
    NecessaryRates,
    PromotionConfig,
    disengagements_per_km,
    promotion_decision,
    score_decision,
    should_promote,
    validate_promotion_config,
)
from takeover.paired import Interval

SHA = "c" * 64


def score(route: str, seed: int, ds: float, *, phase: str = "eval", takeovers: int = 0, km: float = 0.2,
          success: bool = False, reasons: dict[str, int] | None = None) -> EpisodeScore:  # fmt: skip
    return EpisodeScore(
        episode_id=hash((route, seed, phase)) % 10_000, route_id=route, seed=seed, phase=phase,
        status="Completed", driving_score=ds, route_completion=min(100.0, ds * 1.25),
        infraction_penalty=0.8, success=success, distance_m=km * 1000.0, takeovers=takeovers,
        takeovers_by_reason=reasons or ({"stuck": takeovers} if takeovers else {}), scenario_type="Accident",
    )  # fmt: skip


def result(ds: list[float], takeovers: list[int], *, failures: int = 0, km: float = 0.2) -> EvalResult:
    return EvalResult(
        run="r", iteration=1, checkpoint_path="/x/c.pt", checkpoint_sha256=SHA, route_set="builtin:eval",
        backend="embedded",
        episodes=tuple(score(f"{i}", 0, d) for i, d in enumerate(ds)),
        takeover_episodes=tuple(score(f"{i}", 0, 0.0, phase="eval_takeover", takeovers=t, km=km)
                                for i, t in enumerate(takeovers)),
        failures=tuple(EpisodeFailure("9", 0, "eval", "MapNotFoundError: x") for _ in range(failures)),
    )  # fmt: skip


def test_disengagements_per_policy_km_leave_the_experts_stretches_out():
    # given 3 takeovers over 0.2 + 0.2 km, of which the expert drove 0.1 km and 0 km
    taken = replace(score("a", 0, 0, phase="eval_takeover", takeovers=3), expert_distance_m=100.0)
    clean = replace(score("b", 0, 0, phase="eval_takeover"), expert_distance_m=0.0)
    r = EvalResult(
        run="r", iteration=0, checkpoint_path="c.pt", checkpoint_sha256=SHA, route_set="s", backend="embedded",
        episodes=(), takeover_episodes=(taken, clean),
    )  # fmt: skip
    # then the policy drove 0.3 km: 10 per policy km, against 7.5 per km driven by either
    assert r.policy_distance_km == pytest.approx(0.3)
    assert r.disengagements_per_policy_km == pytest.approx(10.0)
    assert r.disengagements_per_km == pytest.approx(7.5)
    assert r.metrics()["disengagements_per_policy_km"] == pytest.approx(10.0)
    # and an episode stored before the expert's distance was recorded leaves it undefined, not low
    old = replace(r, takeover_episodes=(taken, replace(clean, expert_distance_m=None)))
    assert old.disengagements_per_policy_km is None and "disengagements_per_policy_km" not in old.metrics()


def test_aggregates_follow_the_leaderboard_means():
    # given two routes scored 40 and 80, one success, and 3 + 1 takeovers over 0.2 + 0.2 km
    r = EvalResult(
        run="r", iteration=0, checkpoint_path="c.pt", checkpoint_sha256=SHA, route_set="s", backend="embedded",
        episodes=(score("a", 0, 40.0), score("b", 0, 80.0, success=True)),
        takeover_episodes=(score("a", 0, 0, phase="eval_takeover", takeovers=3, reasons={"stuck": 2, "red_light": 1}),
                           score("b", 0, 0, phase="eval_takeover", takeovers=1)),
    )  # fmt: skip
    # then DS, SR and disengagements per km are the episode means / totals
    assert r.driving_score == pytest.approx(60.0)
    assert r.success_rate == pytest.approx(0.5)
    assert r.disengagements == 4
    assert r.disengagements_per_km == pytest.approx(4 / 0.4)
    assert r.takeovers_by_reason == {"red_light": 1, "stuck": 3}
    per_route = {row.route_id: row for row in r.per_route()}
    assert per_route["a"].disengagements_per_km == pytest.approx(15.0)
    assert per_route["b"].driving_score == pytest.approx(80.0)


def test_expert_share_is_the_expert_time_over_all_driving_time():
    # given two episodes with takeovers: 60 s with the expert at the wheel for 15 s, and 40 s without one
    taken = replace(score("a", 0, 0, phase="eval_takeover", takeovers=2), duration_s=60.0, expert_s=15.0)
    clean = replace(score("b", 0, 0, phase="eval_takeover"), duration_s=40.0)
    r = EvalResult(
        run="r", iteration=0, checkpoint_path="c.pt", checkpoint_sha256=SHA, route_set="s", backend="embedded",
        episodes=(score("a", 0, 40.0),), takeover_episodes=(taken, clean),
    )  # fmt: skip
    # then the expert drove 15 of 100 s and one episode of two needed no takeover
    assert r.expert_share == pytest.approx(0.15)
    assert r.takeover_free_share == pytest.approx(0.5)
    assert r.metrics()["expert_share"] == pytest.approx(0.15)
    # and without takeover episodes (or durations: results stored before the field) both are undefined
    assert replace(r, takeover_episodes=()).expert_share is None
    assert replace(r, takeover_episodes=()).takeover_free_share is None
    assert replace(r, takeover_episodes=(score("a", 0, 0, phase="eval_takeover"),)).expert_share is None


def test_eval_result_survives_a_json_round_trip():
    original = result([10.0, 20.0], [2, 0], failures=1)
    assert EvalResult.from_json(original.to_json()) == original


def test_disengagements_per_km_is_undefined_without_distance():
    assert disengagements_per_km(3, 0.0) is None
    assert disengagements_per_km(3, 1500.0) == pytest.approx(2.0)


def test_a_clearly_higher_score_is_promoted():
    # given an incumbent at DS 50 and a candidate at 52 (margin 1)
    config = PromotionConfig(min_ds_gain=1.0, ds_tie_tolerance=1.0)
    assert should_promote(result([52.0], [5]), result([50.0], [1]), config)


def test_a_lower_score_is_not_promoted_even_with_fewer_disengagements():
    config = PromotionConfig()
    decision = promotion_decision(result([45.0], [0]), result([50.0], [9]), config)
    assert not decision.promoted
    assert "below" in decision.reason


def test_an_equal_score_needs_fewer_disengagements_per_km():
    config = PromotionConfig(min_ds_gain=2.0, ds_tie_tolerance=1.0, min_disengagement_drop=0.1)
    incumbent = result([50.0], [10])
    # when the score ties and disengagements drop by 50 %: promoted
    assert should_promote(result([50.5], [5]), incumbent, config)
    # when they drop by only ~5 % (same count over 5 % more km): not promoted (10 % needed)
    assert not should_promote(result([50.0], [10], km=0.21), incumbent, config)
    # when they are the same: not promoted
    assert not should_promote(result([50.0], [10]), incumbent, config)


def test_a_small_gain_between_tie_and_margin_is_not_enough():
    config = PromotionConfig(min_ds_gain=3.0, ds_tie_tolerance=1.0)
    decision = promotion_decision(result([52.0], [0]), result([50.0], [10]), config)
    assert not decision.promoted
    assert "less than the required" in decision.reason


def test_a_candidate_with_more_failed_episodes_is_not_promoted():
    decision = promotion_decision(result([90.0], [0], failures=1), result([50.0], [10]), PromotionConfig())
    assert not decision.promoted
    assert "failed" in decision.reason


def test_without_an_incumbent_the_candidate_is_promoted():
    assert should_promote(result([5.0], [3]), None, PromotionConfig())


def test_bad_thresholds_are_named():
    with pytest.raises(EvaluationError, match="min_disengagement_drop"):
        validate_promotion_config(PromotionConfig(min_disengagement_drop=1.0))
    with pytest.raises(EvaluationError, match="min_ds_gain"):
        validate_promotion_config(PromotionConfig(min_ds_gain=-1.0))


PAIRED = PromotionConfig(min_ds_gain=1.0, ds_tie_tolerance=1.0, paired_confidence=0.8)


def test_a_higher_score_from_one_route_alone_is_not_promoted_pair_by_pair():
    # given an incumbent at DS 10 on two routes and a candidate that gains on one of them only (30 / 10)
    incumbent = result([10.0, 10.0], [1, 1])
    lucky = result([30.0, 10.0], [1, 1])
    # then without the paired gate the mean (+10) promotes it
    assert should_promote(lucky, incumbent, PromotionConfig())
    # and with it: draws of the two pairs give +200 %, +100 % or 0 % (1/4, 1/2, 1/4), so the 80 %
    # interval is [0, +200] % and does not lie above 0
    decision = promotion_decision(lucky, incumbent, PAIRED)
    assert not decision.promoted
    assert decision.reason.endswith(
        "the paired 80 % interval of the DS change, [+0.0, +200.0] %, is not above 0"
    )
    # while a candidate that gains on both routes is promoted, the interval in the reason
    steady = promotion_decision(result([30.0, 30.0], [1, 1]), incumbent, PAIRED)
    assert (
        steady.promoted
        and "and the paired 80 % interval of the DS change, [+200.0, +200.0] %" in steady.reason
    )


def test_an_equal_score_needs_fewer_disengagements_on_every_draw_pair_by_pair():
    # given equal scores; the incumbent has 2 takeovers on each of two routes
    incumbent = result([50.0, 50.0], [2, 2])
    # when the candidate halves them on both routes: every draw gives x 0.5, promoted
    assert should_promote(result([50.0, 50.0], [1, 1]), incumbent, PAIRED)
    # when it removes them on one route only (x 0.5 in all, but draws give x 1, x 0.5 or x 0): not
    decision = promotion_decision(result([50.0, 50.0], [2, 0]), incumbent, PAIRED)
    assert not decision.promoted
    assert decision.reason.endswith("the paired 80 % interval of the DPK ratio, [0.00, 1.00], is not below 1")


def test_the_paired_gate_needs_a_confidence_below_one():
    with pytest.raises(EvaluationError, match=r"paired_confidence=1\.0"):
        validate_promotion_config(PromotionConfig(paired_confidence=1.0))


def test_a_higher_score_bought_with_more_disengagements_can_be_refused():
    # given an incumbent at DS 40 with 5 takeovers on 200 m (25 /km), and a candidate at DS 50 with 7 (35 /km)
    incumbent, candidate = result([40.0], [5]), result([50.0], [7])
    # then by default the score promotes it
    assert should_promote(candidate, incumbent, PromotionConfig())
    # but not when disengagements/km may rise at most 20 % (they rise 40 %)
    decision = promotion_decision(candidate, incumbent, PromotionConfig(max_disengagement_rise=0.2))
    assert not decision.promoted
    assert (
        decision.reason == "DS 50.0 >= incumbent 40.0 + 1, but disengagements/km rise 40 % (more than 20 %)"
    )
    # and a rise within the limit still promotes
    assert should_promote(result([50.0], [6]), incumbent, PromotionConfig(max_disengagement_rise=0.2))
    with pytest.raises(EvaluationError, match="max_disengagement_rise"):
        validate_promotion_config(PromotionConfig(max_disengagement_rise=-0.1))


GUARDED = PromotionConfig(max_necessary_rise=0.0)


def test_a_higher_score_that_fails_more_often_when_left_alone_is_refused():
    # given a candidate that beats the incumbent on score (DS 50 vs 40) and on disengagements/km (5 vs 25)
    incumbent, candidate = result([40.0], [5]), result([50.0], [1])
    assert should_promote(candidate, incumbent, PromotionConfig())
    # when its necessary disengagements/km rise from 4.0 to 5.0 with no rise allowed
    decision = promotion_decision(candidate, incumbent, GUARDED, NecessaryRates(5.0, 4.0))
    # then it is refused, the rates in the reason
    assert not decision.promoted
    assert decision.reason == (
        "DS 50.0 >= incumbent 40.0 + 1, but necessary disengagements/km 5.00 vs the incumbent's 4.00 "
        "(a rise above 0 %)"
    )
    # and a 25 % rise passes a 30 % limit, while equal rates pass a limit of 0
    assert should_promote(
        candidate, incumbent, PromotionConfig(max_necessary_rise=0.3), NecessaryRates(5.0, 4.0)
    )
    kept = promotion_decision(candidate, incumbent, GUARDED, NecessaryRates(4.0, 4.0))
    assert kept.promoted and kept.reason.endswith("necessary disengagements/km 4.00 vs the incumbent's 4.00")


def test_the_necessary_guard_also_holds_on_an_equal_score():
    # given equal scores and the candidate with half the disengagements/km (promoted on the tie rule) ...
    incumbent, candidate = result([50.0], [4]), result([50.0], [2])
    assert score_decision(candidate, incumbent, GUARDED).promoted
    # ... but some necessary ones where the incumbent had none
    decision = promotion_decision(candidate, incumbent, GUARDED, NecessaryRates(2.5, 0.0))
    # then the rise is infinite and it is refused; none on either side is no rise
    assert NecessaryRates(2.5, 0.0).rise == float("inf") and NecessaryRates(0.0, 0.0).rise == 0.0
    assert (
        not decision.promoted
        and "necessary disengagements/km 2.50 vs the incumbent's 0.00" in decision.reason
    )
    assert should_promote(candidate, incumbent, GUARDED, NecessaryRates(0.0, 0.0))


def test_the_necessary_guard_refuses_what_it_cannot_judge():
    incumbent, candidate = result([40.0], [5]), result([50.0], [1])
    # given the guard on, but no counterfactuals (or an evaluation without distance on one side)
    for necessary in (None, NecessaryRates(None, 4.0), NecessaryRates(5.0, None)):
        decision = promotion_decision(candidate, incumbent, GUARDED, necessary)
        # then nothing is promoted, and the reason says what is missing
        assert not decision.promoted and "were not measured for both" in decision.reason
    # while a candidate the score refuses keeps the score's reason, and v0 needs no comparison
    assert promotion_decision(result([30.0], [1]), incumbent, GUARDED).reason.startswith("DS 30.0 is below")
    assert promotion_decision(candidate, None, GUARDED).promoted
    with pytest.raises(EvaluationError, match="max_necessary_rise"):
        validate_promotion_config(PromotionConfig(max_necessary_rise=-0.1))


PAIRED_GUARD = PromotionConfig(max_necessary_rise=0.0, necessary_confidence=0.8)


def interval(estimate: float, low: float, high: float, confidence: float = 0.8) -> Interval:
    return Interval(estimate, low, high, confidence, pairs=30, unpaired=0)


def test_the_paired_guard_refuses_only_a_rise_the_interval_shows():
    incumbent, candidate = result([40.0], [5]), result([50.0], [1])
    # given necessary rates 5.0 vs 4.0, which the point guard refuses
    assert not should_promote(candidate, incumbent, GUARDED, NecessaryRates(5.0, 4.0))
    # when the paired 80 % interval of their ratio still reaches below 1
    noisy = NecessaryRates(5.0, 4.0, interval(1.25, 0.9, 1.8))
    decision = promotion_decision(candidate, incumbent, PAIRED_GUARD, noisy)
    # then the paired guard promotes, and says why
    assert decision.promoted
    assert decision.reason == (
        "DS 50.0 >= incumbent 40.0 + 1; necessary disengagements/km 5.00 vs the incumbent's 4.00: the "
        "paired 80 % interval of their ratio, x 1.25 [0.90, 1.80], does not lie above 1"
    )
    # while an interval wholly above 1 (or above 1 + m) refuses it
    shown = NecessaryRates(5.0, 4.0, interval(1.25, 1.05, 1.6))
    refused = promotion_decision(candidate, incumbent, PAIRED_GUARD, shown)
    assert not refused.promoted and refused.reason.endswith("x 1.25 [1.05, 1.60], lies above 1")
    assert should_promote(candidate, incumbent, replace(PAIRED_GUARD, max_necessary_rise=0.1), shown)


def test_the_paired_guard_refuses_without_an_interval_at_its_confidence():
    incumbent, candidate = result([40.0], [5]), result([50.0], [1])
    # given rates without a paired ratio, or one at another confidence than the guard's
    for ratio, have in ((None, "none"), (interval(1.0, 0.5, 1.5, confidence=0.95), "one at 95 %")):
        decision = promotion_decision(candidate, incumbent, PAIRED_GUARD, NecessaryRates(4.0, 4.0, ratio))
        # then nothing is promoted, and the reason says which interval is missing
        assert not decision.promoted and f"no paired 80 % interval of their ratio ({have};" in decision.reason


def test_the_paired_guard_needs_the_guard_and_a_confidence_below_one():
    with pytest.raises(
        EvaluationError, match=r"necessary_confidence=0.8 .* set promotion.max_necessary_rise"
    ):
        validate_promotion_config(PromotionConfig(necessary_confidence=0.8))
    with pytest.raises(EvaluationError, match=r"necessary_confidence=1.0 must be in \[0, 1\)"):
        validate_promotion_config(replace(PAIRED_GUARD, necessary_confidence=1.0))
