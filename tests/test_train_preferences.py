"""Preference pairs: the maths of the safety cost, and building pairs from takeover clips (idempotent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from test_train_synthetic import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    OBSTACLE_AHEAD_M,
    TIMES_S,
    TINY_POLICY,
    TRIGGER,
    expert_plan,
    one_torch_thread,
    open_store,
    write_synthetic_run,
)

from storage.models import PreferencePair
from takeover.datasets import FeatureSpec, PairSource
from takeover.policy.model import build_model
from takeover.preferences import (
    PairConfig,
    build_preference_pairs,
    constant_velocity_forecast,
    distance_to_polyline,
    plan_ade,
    plan_costs,
    plan_headings,
    plans_collide,
    safety_scene,
    sample_laplace_plans,
    score_plans,
    validate_pair_config,
)
from takeover.training import TrainingError

SPEC = FeatureSpec.of(TINY_POLICY)
EVP = PairSource.EXPERT_VS_POLICY.value
SAMPLED = PairSource.SAMPLED_SAFETY.value


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path)
    write_synthetic_run(s, "syn", demos=0, rollouts=2)
    yield s
    s.close()


def pair_count(store) -> int:
    with Session(store.engine) as session:
        return int(session.execute(select(func.count()).select_from(PreferencePair)).scalar_one())


# ------------------------------------------------------------------------------------------ maths


def test_plan_ade_by_hand():
    a = np.zeros((2, 2))
    b = np.array([[3.0, 4.0], [0.0, 1.0]])
    assert plan_ade(a, b) == pytest.approx((5.0 + 1.0) / 2)


def test_laplace_samples_have_the_distribution_s_median_and_scale():
    loc = torch.tensor([[1.0, -2.0]]).expand(8, 2).contiguous()
    log_scale = torch.full((8, 2), np.log(0.5))
    samples = sample_laplace_plans(loc, log_scale, 4000, torch.Generator().manual_seed(0))
    assert samples.shape == (4000, 8, 2)
    # Laplace(mu, b): median mu, E|x - mu| = b
    assert samples.median(dim=0).values.numpy() == pytest.approx(loc.numpy(), abs=0.05)
    assert float((samples - loc).abs().mean()) == pytest.approx(0.5, abs=0.02)
    again = sample_laplace_plans(loc, log_scale, 4000, torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)


def test_plan_headings_follow_the_steps_and_hold_when_standing():
    plans = np.array([[[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]]])
    assert plan_headings(plans)[0] == pytest.approx([0.0, np.pi / 2, np.pi / 2])


def test_constant_velocity_forecast_by_hand():
    now = np.array([[10.0, 0.0]])
    prev = np.array([[9.5, 0.0]])  # 0.5 m in 0.05 s: 10 m/s along x
    assert constant_velocity_forecast(now, prev, 0.05, np.array([0.5, 1.0]))[0] == pytest.approx(
        np.array([[15.0, 0.0], [20.0, 0.0]])
    )


def test_distance_to_polyline_by_hand():
    line = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    points = np.array([[5.0, 3.0], [12.0, 5.0], [-3.0, -4.0]])
    assert distance_to_polyline(points, line) == pytest.approx([3.0, 2.0, 5.0])


def test_plans_through_a_parked_car_collide_and_a_stop_before_it_does_not():
    # Given a parked car (half 2.4 x 1.0) 12 m ahead in the ego's lane
    actor_xy = np.tile([[OBSTACLE_AHEAD_M, 0.0]], (1, len(TIMES_S), 1))
    go, _ = expert_plan(6.0, 0.0, obstacle=False)
    stop, _ = expert_plan(6.0, 0.0, obstacle=True)  # 4.5 m
    beside = go + np.array([0.0, 4.0])  # the next lane over
    hits = plans_collide(
        np.stack([go, stop, beside]), np.array([2.4, 1.0]), actor_xy, np.zeros(1), np.array([[2.4, 1.0]])
    )
    assert hits.tolist() == [True, False, False]


def test_plan_costs_formula():
    config = PairConfig(ade_weight=2.0, collision_penalty_m=20.0, off_route_penalty_m=10.0)
    plans = np.zeros((2, 3, 2))
    plans[1] += [0.0, 1.0]
    costs = plan_costs(plans, np.zeros((3, 2)), np.array([False, True]), np.array([True, False]), config)
    assert costs == pytest.approx([10.0, 2.0 * 1.0 + 20.0])


def test_safety_scene_from_a_takeover_clip_penalises_the_policy_plan(store):
    # Given the takeover clip of the first rollout, at its trigger tick
    arrays = store.load_clip(2)
    assert int(arrays["time_s"].shape[0]) > 0 and store.clip_info(2).start_frame == TRIGGER
    scene = safety_scene(arrays, 0, TIMES_S)
    # Then the parked car is 12 m ahead in the ego frame, standing still, and the route runs along x
    assert (
        scene.actor_xy[0, 0] == pytest.approx([OBSTACLE_AHEAD_M, 0.0])
        and np.ptp(scene.actor_xy[0, :, 0]) == 0
    )
    assert scene.route is not None and np.abs(scene.route[:, 1]).max() == 0
    # And the policy's plan (keep going) costs a collision, the expert's (stop) only its zero ADE
    expert = arrays["expert_waypoints_ego"][0].astype(np.float64)
    policy = arrays["policy_waypoints_ego"][0].astype(np.float64)
    costs = score_plans(np.stack([expert, policy]), expert, scene, PairConfig())
    assert costs[0] == pytest.approx(0.0)
    assert costs[1] == pytest.approx(plan_ade(policy, expert) + PairConfig().collision_penalty_m)


def test_bad_pair_settings_are_named():
    with pytest.raises(TrainingError, match=r"dpo\.pairs\.sources"):
        validate_pair_config(PairConfig(sources=["human"]), "dpo.pairs")
    with pytest.raises(TrainingError, match="min_plan_margin_m"):
        validate_pair_config(PairConfig(min_plan_margin_m=-1.0), "dpo.pairs")


# ------------------------------------------------------------------------------------------ building


def test_expert_vs_policy_pairs_skip_identical_plans_and_are_idempotent(store):
    # Given two rollouts: states at the trigger (40) and at 35, 30, 25, 20 of the pre-takeover clip,
    # the obstacle visible from 30 on (before it both plans are the same)
    config = PairConfig(sources=[EVP], stride_frames=5)
    # When pairs are built
    report = build_preference_pairs(store, "syn", 0, config, SPEC)
    # Then 3 pairs per rollout are stored and the 2 near-identical ones skipped
    assert report.states == 10
    assert report.new[EVP] == 6 and report.skipped_margin[EVP] == 4 and pair_count(store) == 6
    with Session(store.engine) as session:
        frames = sorted(session.execute(select(PreferencePair.frame)).scalars())
        pair = (
            session.execute(select(PreferencePair).where(PreferencePair.frame == TRIGGER)).scalars().first()
        )
    assert frames == [30, 30, 35, 35, 40, 40]
    assert pair.source == EVP and pair.takeover_id is not None and pair.clip_id is not None
    assert np.asarray(pair.chosen)[-1, 0] < np.asarray(pair.rejected)[-1, 0]  # the expert stops
    # And building again stores nothing new and returns the same ids
    again = build_preference_pairs(store, "syn", 0, config, SPEC)
    assert sum(again.new.values()) == 0 and again.existing[EVP] == 6
    assert sorted(again.pair_ids) == sorted(report.pair_ids) and pair_count(store) == 6


def test_the_takeover_window_pairs_the_expert_driven_ticks_until_the_hand_back(store):
    # Given the same two rollouts (trigger 40, hand-back 52) and a takeover window weighted 0.5
    config = PairConfig(sources=[EVP], stride_frames=5, takeover_window_weight=0.5)
    # When pairs are built
    report = build_preference_pairs(store, "syn", 0, config, SPEC)
    # Then the expert-driven ticks 45 and 50 are paired too (the policy's shadow plan rejected), at 0.5
    assert report.states == 14 and report.new[EVP] == 10
    with Session(store.engine) as session:
        rows = session.execute(select(PreferencePair.frame, PreferencePair.weight)).all()
    assert sorted(f for f, _ in rows) == [30, 30, 35, 35, 40, 40, 45, 45, 50, 50]
    assert {w for f, w in rows if f > TRIGGER} == {0.5} and {w for f, w in rows if f <= TRIGGER} == {1.0}
    # And a 0.3 s window reaches tick 45 only; weight 0 (the default) builds none of them
    short = PairConfig(sources=[EVP], stride_frames=5, takeover_window_weight=0.5, takeover_window_s=0.3)
    assert build_preference_pairs(store, "syn", 0, short, SPEC).states == 12
    assert build_preference_pairs(store, "syn", 0, PairConfig(sources=[EVP]), SPEC).states == 10


def test_a_larger_margin_skips_more_pairs(store):
    # ADE between stop and go plans is several metres; 100 m skips everything
    report = build_preference_pairs(store, "syn", 0, PairConfig(sources=[EVP], min_plan_margin_m=100.0), SPEC)
    assert report.total == 0 and report.skipped_margin[EVP] == 10 and pair_count(store) == 0


def test_sampled_safety_pairs_prefer_the_cheaper_plan(store):
    torch.manual_seed(0)
    policy = build_model(TINY_POLICY)
    config = PairConfig(sources=[SAMPLED], num_samples=12, min_cost_gap_m=0.1, min_plan_margin_m=0.1)
    report = build_preference_pairs(store, "syn", 0, config, SPEC, policy=policy)
    assert report.new[SAMPLED] > 0 and report.new[SAMPLED] + report.skipped_margin[SAMPLED] == report.states
    with Session(store.engine) as session:
        pairs = session.execute(select(PreferencePair)).scalars().all()
    for pair in pairs:
        arrays = store.load_clip(pair.clip_id)
        row = pair.frame - store.clip_info(pair.clip_id).start_frame
        expert = arrays["expert_waypoints_ego"][row].astype(np.float64)
        plans = np.stack([np.asarray(pair.chosen), np.asarray(pair.rejected)])
        chosen_cost, rejected_cost = score_plans(plans, expert, safety_scene(arrays, row, TIMES_S), config)
        assert chosen_cost + config.min_cost_gap_m <= rejected_cost + 1e-9
    # Samples are seeded per state: building again finds the same pairs
    again = build_preference_pairs(store, "syn", 0, config, SPEC, policy=policy)
    assert sum(again.new.values()) == 0 and sorted(again.pair_ids) == sorted(report.pair_ids)


def test_sampled_pairs_need_a_policy(store):
    with pytest.raises(TrainingError, match="needs the policy"):
        build_preference_pairs(store, "syn", 0, PairConfig(sources=[SAMPLED]), SPEC)


def test_no_takeovers_no_pairs(store):
    report = build_preference_pairs(store, "other-run", 0, PairConfig(), SPEC)
    assert report.states == 0 and report.total == 0
