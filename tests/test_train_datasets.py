"""Training data sets from storage: frame selection and roles, lazy clip loading, pairs, sampling order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_synthetic import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    DT_S,
    HANDBACK,
    OBSTACLE_FROM,
    PRE_START,
    TINY_POLICY,
    TRIGGER,
    K,
    clip_arrays,
    one_torch_thread,
    open_store,
    route,
    write_synthetic_run,
)

from carla_bridge.bev import BevConfig
from storage import ClipRecord, EpisodeRecord, PreferencePairRecord
from storage.clip_format import DRIVER_EXPERT
from storage.records import CounterfactualRecord
from storage.store import Store
from takeover.counterfactual import CLEAR, config_digest, load_counterfactual_config
from takeover.datasets import (
    BlockShuffleSampler,
    DataConfig,
    DatasetError,
    FeatureSpec,
    FrameDataset,
    FrameRole,
    KeyframeWeighting,
    PairDataset,
    collate_frames,
    frame_roles,
    keyframe_factor,
    select_demo_frames,
    select_pairs,
    select_takeover_frames,
    split_by_episode,
    subsample,
    trigger_of_frames,
    validate_data_config,
)
from takeover.policy.config import PolicyConfig
from takeover.preferences import PairConfig, build_preference_pairs
from takeover.training import TrainingError

SPEC = FeatureSpec.of(TINY_POLICY)
DEMO_FRAMES = 32


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("datasets")
    s = open_store(path)
    write_synthetic_run(s, "syn", demos=3, rollouts=2, iterations=2, demo_frames=DEMO_FRAMES)
    yield s
    s.close()


def test_frame_roles_by_driver_and_trigger_time():
    # Given ticks at 0.5 s spacing, a trigger at 3.0 s and the expert driving from 3.0 s
    time_s = np.arange(0, 5.0, 0.5)
    driver = (time_s >= 3.0).astype(int)
    # When roles are assigned with a 1 s pre-takeover window
    roles = frame_roles(driver, np.zeros(len(time_s), bool), time_s, np.array([3.0]), pre_window_s=1.0)
    # Then 2.0 and 2.5 s are pre-takeover, from 3.0 s the expert's, earlier ticks plain policy frames
    assert roles.tolist() == [FrameRole.POLICY] * 4 + [FrameRole.PRE_TAKEOVER] * 2 + [FrameRole.TAKEOVER] * 4


def test_demo_frames_are_every_tick_of_the_expert_episodes(store):
    index = select_demo_frames(store, "syn", DataConfig(), SPEC)
    assert len(index) == 3 * DEMO_FRAMES
    assert set(index.role.tolist()) == {FrameRole.DEMO} and np.all(index.weight == 1.0)
    assert len(np.unique(index.episode_id)) == 3


def test_takeover_frames_roles_weights_and_iterations(store):
    config = DataConfig(takeover_weight=2.0, pre_takeover_weight=0.5)
    # Given two rollouts per iteration; when the frames of iteration 0 are selected
    index = select_takeover_frames(store, "syn", 0, config, SPEC)
    # Then each rollout gives its expert-driven ticks (trigger..hand-back) and its pre-takeover window
    per_episode_takeover = HANDBACK - TRIGGER
    per_episode_pre = TRIGGER - PRE_START
    assert index.count(FrameRole.TAKEOVER) == 2 * per_episode_takeover
    assert index.count(FrameRole.PRE_TAKEOVER) == 2 * per_episode_pre
    assert index.count(FrameRole.POLICY) == 0  # after hand-back: left out with policy_weight 0
    assert np.all(index.weight[index.role == FrameRole.TAKEOVER] == 2.0)
    assert np.all(index.weight[index.role == FrameRole.PRE_TAKEOVER] == 0.5)
    # And iterations <= 1 doubles the takeover frames; policy_weight > 0 adds the ticks after hand-back
    assert (
        select_takeover_frames(store, "syn", 1, config, SPEC).count(FrameRole.TAKEOVER)
        == 4 * per_episode_takeover
    )
    with_policy = select_takeover_frames(store, "syn", 0, DataConfig(policy_weight=1.0), SPEC)
    assert with_policy.count(FrameRole.POLICY) == 2 * 4


def test_frame_dataset_returns_features_and_expert_labels_lazily(store):
    index = select_takeover_frames(store, "syn", 0, DataConfig(), SPEC)
    dataset = FrameDataset(store, index, cache_clips=2)
    # When every sample of the first clip is read, then one of another clip
    first_clip = int(index.clip_id[0])
    rows = np.flatnonzero(index.clip_id == first_clip)
    samples = [dataset[int(i)] for i in rows]
    assert dataset.cache.loads == 1  # one decode for the whole clip
    # Then the labels are the clip's expert arrays and the features the policy's shapes
    arrays = store.load_clip(first_clip)
    s = samples[0]
    row = int(index.row[rows[0]])
    assert torch.equal(s.waypoints, torch.from_numpy(arrays["expert_waypoints_ego"][row]))
    assert s.features.bev.shape == (2, 16, 16) and float(s.features.bev.max()) <= 1.0
    assert s.features.command.sum() == 1.0 and s.speed == pytest.approx(float(arrays["feat_speed"][row]))
    batch = collate_frames(samples[:4])
    assert batch.waypoints.shape == (4, K, 2) and batch.features.bev.shape == (4, 2, 16, 16)


def _plan(step_lengths_m: list[float]) -> np.ndarray:
    """A straight plan along +x with these distances between consecutive waypoints."""
    return np.stack([np.cumsum(step_lengths_m), np.zeros(len(step_lengths_m))], axis=1)


def test_keyframe_factor_weighs_departures_from_holding_speed():
    keyframes = KeyframeWeighting(brake_gain=2.0, accel_gain=1.0, scale_m=6.0, horizon_s=4.0)
    # Given an expert at 8 m/s: a plan holding 8 m/s (4 m per 0.5 s) is no keyframe
    assert keyframe_factor(_plan([4.0] * 8), 8.0, keyframes) == pytest.approx(1.0)
    # And a standing expert planning to stand (waiting at a light) is none either
    assert keyframe_factor(_plan([0.0] * 8), 0.0, keyframes) == pytest.approx(1.0)
    # When it plans 3 m less by 4 s (the onset of braking): half the departure scale, half the gain
    assert keyframe_factor(_plan([4.0] * 7 + [1.0]), 8.0, keyframes) == pytest.approx(2.0)
    # Then stopping, beyond the scale, earns the full braking gain and no more
    assert keyframe_factor(_plan([2.0] * 4 + [0.0] * 4), 8.0, keyframes) == pytest.approx(3.0)
    # And driving off from rest the full acceleration gain; with that gain 0, nothing
    assert keyframe_factor(_plan([1.0] * 8), 0.0, keyframes) == pytest.approx(2.0)
    brake_only = KeyframeWeighting(brake_gain=2.0, accel_gain=0.0, scale_m=6.0, horizon_s=4.0)
    assert keyframe_factor(_plan([1.0] * 8), 0.0, brake_only) == pytest.approx(1.0)


def test_keyframe_weighting_scales_dataset_weights_only_when_configured(store):
    index = select_takeover_frames(store, "syn", 0, DataConfig(), SPEC)
    assert KeyframeWeighting.of(DataConfig(), SPEC) is None  # off by default
    config = DataConfig(keyframe_brake_gain=4.0, keyframe_accel_gain=4.0, keyframe_scale_m=1.0)
    keyframes = KeyframeWeighting.of(config, SPEC)
    assert keyframes is not None and keyframes.horizon_s == pytest.approx(K * SPEC.waypoint_dt_s)
    plain, focused = FrameDataset(store, index, 2), FrameDataset(store, index, 2, keyframes)
    factors = []
    for i in range(len(index)):
        # Then each weight is the role's weight times the factor of the frame's own label and speed
        s = focused[i]
        factor = keyframe_factor(s.waypoints.numpy(), float(s.speed), keyframes)
        assert float(s.weight) == pytest.approx(float(plain[i].weight) * factor, rel=1e-6)
        factors.append(factor)
    assert min(factors) >= 1.0 and 1.0 < max(factors) <= 5.0  # the synthetic expert does change speed
    for bad in (DataConfig(keyframe_brake_gain=-1.0), DataConfig(keyframe_scale_m=0.0)):
        with pytest.raises(DatasetError, match="keyframe"):
            validate_data_config(bad, "dagger.data")


def test_clips_for_another_network_are_refused_with_the_fix(store):
    other = PolicyConfig(
        bev=BevConfig(size_px=32, ego_forward_offset_m=2.0, channels=["drivable", "vehicles"])
    )
    with pytest.raises(
        DatasetError, match=r"feat_bev has per-frame shape \(2, 16, 16\), the policy needs \(2, 32, 32\)"
    ):
        select_demo_frames(store, "syn", DataConfig(), FeatureSpec.of(other))


def test_unknown_run_selects_nothing(store):
    assert len(select_demo_frames(store, "nope", DataConfig(), SPEC)) == 0
    assert len(select_takeover_frames(store, "nope", 3, DataConfig(), SPEC)) == 0


def test_split_by_episode_keeps_episodes_whole(store):
    index = select_demo_frames(store, "syn", DataConfig(), SPEC)
    train, val = split_by_episode(index, 0.3, seed=0)
    assert len(train) + len(val) == len(index)
    assert not set(train.episode_id.tolist()) & set(val.episode_id.tolist())
    assert len(np.unique(val.episode_id)) == 1
    again, _ = split_by_episode(index, 0.3, seed=0)
    assert np.array_equal(again.frame, train.frame) and np.array_equal(again.episode_id, train.episode_id)


def test_subsample_is_seeded_and_sized(store):
    index = select_demo_frames(store, "syn", DataConfig(), SPEC)
    part = subsample(index, 0.2, seed=3)
    assert len(part) == round(0.2 * len(index))
    assert np.array_equal(part.frame, subsample(index, 0.2, seed=3).frame)
    assert len(subsample(index, 1.0, seed=3)) == len(index)


def test_block_shuffle_is_a_seeded_permutation_in_clip_blocks():
    clips = np.repeat(np.arange(6), 5)
    order = list(BlockShuffleSampler(clips, block_clips=2, generator=torch.Generator().manual_seed(1)))
    assert sorted(order) == list(range(30))
    # Each run of 10 samples covers exactly two clips
    for start in range(0, 30, 10):
        assert len({int(clips[i]) for i in order[start : start + 10]}) == 2
    again = list(BlockShuffleSampler(clips, block_clips=2, generator=torch.Generator().manual_seed(1)))
    assert order == again


def test_pair_dataset_reads_plans_from_the_db_and_controls_from_the_clip(store):
    # Given one stored pair at tick 35 of the first rollout (obstacle visible, policy still driving)
    clip_id = 4  # clips: 3 demos, then each rollout's pre_takeover and takeover clips
    info = store.clip_info(clip_id)
    assert info.kind == "pre_takeover" and info.start_frame == PRE_START
    arrays = store.load_clip(clip_id)
    frame = OBSTACLE_FROM + 5
    row = frame - PRE_START
    store.add_preference_pairs(
        [
            PreferencePairRecord(
                info.episode_id,
                frame,
                frame * 0.05,
                arrays["expert_waypoints_ego"][row],
                arrays["policy_waypoints_ego"][row],
                "expert_vs_policy",
                None,
                clip_id,
            )
        ]
    )
    # When the pairs of iteration 0 are read
    index = select_pairs(store, "syn", 0, ["expert_vs_policy"], SPEC)
    dataset = PairDataset(store, index, cache_clips=2)
    sample = dataset[0]
    # Then chosen = expert plan and rejected = policy plan, with both controls from the clip
    assert len(dataset) == 1 and bool(sample.has_control)
    assert np.allclose(sample.chosen_waypoints.numpy(), arrays["expert_waypoints_ego"][row])
    assert np.allclose(sample.rejected_waypoints.numpy(), arrays["policy_waypoints_ego"][row])
    assert sample.chosen_control.tolist() == [0.0, 0.0, 1.0] and sample.rejected_control[0] == 0.5
    # And the other sources and later iterations' filters see nothing new
    assert len(select_pairs(store, "syn", 0, ["sampled_safety"], SPEC)) == 0
    assert len(select_pairs(store, "syn", 1, ["expert_vs_policy"], SPEC, only_iteration=True)) == 0


def test_frames_belong_to_the_takeover_in_progress_or_the_one_they_lead_to():
    # given triggers at 3 s and 6 s and frames of each role
    roles = np.array([FrameRole.PRE_TAKEOVER, FrameRole.TAKEOVER, FrameRole.TAKEOVER, FrameRole.PRE_TAKEOVER,
                      FrameRole.TAKEOVER, FrameRole.POLICY], np.int8)  # fmt: skip
    time_s = np.array([2.5, 3.0, 4.0, 5.5, 6.5, 8.0])
    # then takeover frames belong to the latest trigger so far, pre-takeover frames to the next one
    assert trigger_of_frames(roles, time_s, np.array([3.0, 6.0])).tolist() == [0, 0, 0, 1, 1, -1]
    assert trigger_of_frames(roles, time_s, np.zeros(0)).tolist() == [-1] * 6


def test_reason_weights_scale_the_frames_of_their_takeovers(store):
    # given the synthetic rollouts, whose takeovers are all predicted collisions
    plain = select_takeover_frames(store, "syn", 0, DataConfig(), SPEC)
    # when that reason is weighted 0.5, or another reason 0
    half = select_takeover_frames(
        store, "syn", 0, DataConfig(reason_weights={"predicted_collision": 0.5}), SPEC
    )
    other = select_takeover_frames(store, "syn", 0, DataConfig(reason_weights={"stuck": 0.0}), SPEC)
    # then its takeover and pre-takeover frames count half; another reason's weight changes nothing
    assert len(half) == len(plain) and np.allclose(half.weight, 0.5 * plain.weight)
    assert np.array_equal(other.weight, plain.weight)
    # and weight 0 drops them
    none = select_takeover_frames(
        store, "syn", 0, DataConfig(reason_weights={"predicted_collision": 0.0}), SPEC
    )
    assert len(none) == 0


def judged_run(store: Store, run: str, overrides: list[str] | None = None) -> dict[int, float]:
    """Three synthetic rollouts (one takeover each) whose takeovers were replayed: the first necessary,
    the second a false alarm, the third not replayed. Returns each episode's factor under the weights
    {necessary: 3, false_alarm: 0.5}."""
    write_synthetic_run(store, run, demos=0, rollouts=3)
    first, second, third = sorted(store.list_takeovers(run=run), key=lambda t: t.id)
    digest = config_digest(load_counterfactual_config(overrides))
    store.add_counterfactuals([
        CounterfactualRecord(first.id, digest, 8.0, "collision_vehicle", True, 1.5, 4.0),
        CounterfactualRecord(second.id, digest, 8.0, CLEAR, False, None, 20.0),
    ])  # fmt: skip
    return {first.episode_id: 3.0, second.episode_id: 0.5, third.episode_id: 1.0}


VERDICT_WEIGHTS = {"necessary": 3.0, "false_alarm": 0.5}


def test_verdict_weights_scale_the_frames_of_judged_takeovers(tmp_path):
    # given rollouts whose takeovers were judged necessary, a false alarm, or not at all
    with open_store(tmp_path) as store:
        factor = judged_run(store, "v")
        plain = select_takeover_frames(store, "v", 0, DataConfig(), SPEC)
        # when the frames are weighted by verdict
        weighted = select_takeover_frames(store, "v", 0, DataConfig(verdict_weights=VERDICT_WEIGHTS), SPEC)
        # then each takeover and pre-takeover frame weighs its role's weight x its trigger's verdict factor
        expected = plain.weight * np.array([factor[int(e)] for e in plain.episode_id], np.float32)
        assert np.array_equal(weighted.frame, plain.frame) and np.allclose(weighted.weight, expected)
        # and an unjudged weight of 0 drops the frames of takeovers never replayed
        judged_only = DataConfig(verdict_weights={**VERDICT_WEIGHTS, "unjudged": 0.0})
        kept = select_takeover_frames(store, "v", 0, judged_only, SPEC)
        assert set(kept.episode_id.tolist()) == {e for e, f in factor.items() if f != 1.0}
        # and verdicts stored under other replay settings are not read: every takeover is unjudged
        other = DataConfig(verdict_weights=VERDICT_WEIGHTS, verdict_overrides=["horizon_s=4"])
        assert np.allclose(select_takeover_frames(store, "v", 0, other, SPEC).weight, plain.weight)


def test_verdict_weights_scale_the_pairs_of_judged_takeovers(tmp_path):
    # given the preference pairs of rollouts judged as above
    with open_store(tmp_path) as store:
        factor = judged_run(store, "v")
        build_preference_pairs(store, "v", 0, PairConfig(stride_frames=5), SPEC)
        plain = select_pairs(store, "v", 0, ["expert_vs_policy"], SPEC)
        # when the pairs are read with verdict weights
        weighted = select_pairs(store, "v", 0, ["expert_vs_policy"], SPEC, verdict_weights=VERDICT_WEIGHTS)
        # then each pair's weight is its stored weight x its takeover's verdict factor
        episode_of = {p.id: p.episode_id for p in store.list_preference_pairs(run="v")}
        expected = plain.weight * np.array([factor[episode_of[int(i)]] for i in plain.pair_id], np.float32)
        assert len(plain) >= 3 and np.array_equal(weighted.pair_id, plain.pair_id)
        assert np.allclose(weighted.weight, expected)


def test_bad_verdict_weights_are_named():
    with pytest.raises(TrainingError, match=r"unknown verdict 'needed'.*necessary, false_alarm, unjudged"):
        validate_data_config(DataConfig(verdict_weights={"needed": 2.0}), "dagger.data")
    with pytest.raises(TrainingError, match=r"dagger\.data\.verdict_weights\.false_alarm=-1.0 must be >= 0"):
        validate_data_config(DataConfig(verdict_weights={"false_alarm": -1.0}), "dagger.data")
    with pytest.raises(TrainingError, match=r"verdict_overrides: .*horizon"):
        validate_data_config(
            DataConfig(verdict_weights={"necessary": 2.0}, verdict_overrides=["horizon=4"]), "x"
        )


def test_missing_data_config_values_are_rejected():
    with pytest.raises(DatasetError, match="takeover_weight"):
        validate_data_config(DataConfig(takeover_weight=-1.0), "dagger.data")
    with pytest.raises(DatasetError, match="cache_clips"):
        validate_data_config(DataConfig(cache_clips=0), "bc.data")
    with pytest.raises(DatasetError, match=r"unknown reason 'stuk'.*plan_deviation"):
        validate_data_config(DataConfig(reason_weights={"stuk": 0.0}), "dagger.data")


def test_strided_demonstration_frames_index_their_clip_rows(tmp_path):
    # Given a demonstration stored like the episode runner stores it: every 5th tick, with a frame key
    stride, n = 5, 12
    rng = np.random.default_rng(3)
    arrays = clip_arrays(rng, 0, n, np.zeros(n, bool), np.full(n, DRIVER_EXPERT), 6.0, 2.0, False)
    arrays["frame"] = stride * np.arange(n)
    arrays["time_s"] = arrays["frame"] * DT_S
    arrays["feat_speed"] = np.linspace(1.0, 12.0, n).astype(np.float32)  # tells the rows apart
    episode = EpisodeRecord("strided", route("demo-strided"), "embedded", 0, 30.0, stride * n * DT_S,
                            stride * n, phase="expert")  # fmt: skip
    with open_store(tmp_path) as store:
        store.ingest_episode(episode, [], [ClipRecord("demo", 0, arrays)])
        # When its frames are selected and read
        index = select_demo_frames(store, "strided", DataConfig(), SPEC)
        dataset = FrameDataset(store, index, cache_clips=1)
        speeds = [float(dataset[i].speed) for i in range(len(dataset))]
    # Then each tick points at its own row of the clip (row k holds tick 5k), not at row = tick
    assert index.frame.tolist() == arrays["frame"].tolist()
    assert index.row.tolist() == list(range(n))
    assert speeds == pytest.approx(arrays["feat_speed"].tolist())
