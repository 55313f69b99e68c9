"""Plan agreement between the policy's and the expert's plans: the per-tick gaps, the per-driver summary
against the monitor's thresholds, and the reading of stored clips (overlapping ticks counted once)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from postgres import TICK_S, make_clip_arrays, make_episode

from storage.records import ClipRecord, TakeoverInfo
from storage.store import Store
from takeover.agreement import (
    HandbackSummary,
    Onset,
    OnsetKind,
    OnsetSummary,
    PlanGaps,
    StoredTicks,
    handback_summary,
    onset_summary,
    plan_gaps,
    stored_ticks,
    summarize,
    takeover_onsets,
)
from takeover.cli import main
from takeover.monitor import MonitorConfig

K = 4  # waypoints per plan


def straight(n: int, step_m: float, lateral_m: float = 0.0) -> np.ndarray:
    """n identical plans of K waypoints step_m apart along x, shifted by lateral_m along y."""
    xs = step_m * np.arange(1, K + 1)
    plan = np.stack([xs, np.full(K, lateral_m)], axis=1)
    return np.repeat(plan[None], n, axis=0).astype(np.float32)


def test_gaps_are_the_hand_computed_ade_fde_and_lead():
    # given a policy planning 2 m per waypoint and an expert 1 m per waypoint, 1 m to the side
    policy, expert = straight(1, 2.0), straight(1, 1.0, lateral_m=1.0)
    # when the gaps are computed
    ade, fde, lead = plan_gaps(policy, expert)
    # then each waypoint k is sqrt(k^2 + 1) apart, the last one sqrt(17), and the policy leads by 4 m
    assert ade[0] == pytest.approx(np.mean([np.hypot(k, 1.0) for k in range(1, K + 1)]))
    assert fde[0] == pytest.approx(np.hypot(4.0, 1.0))
    assert lead[0] == pytest.approx(4.0)
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        plan_gaps(policy, expert[:, :2])


def test_summary_counts_ticks_against_the_hand_back_and_deviation_thresholds():
    # given two expert-driven ticks (one agreeing, one deviating) and one policy tick in between
    gaps = PlanGaps(
        ade_m=np.array([1.0, 4.0, 2.0]), fde_m=np.array([2.0, 5.0, 4.0]), lead_m=np.array([0.5, 3.0, -1.0]),
        expert_drove=np.array([True, True, False]),
    )  # fmt: skip
    config = MonitorConfig(handback_ade_m=1.5, handback_fde_m=3.0, deviation_ade_m=3.0, deviation_fde_m=6.0)
    rows = {r.driver: r for r in summarize(gaps, config)}
    # then the expert's ticks agree half the time and deviate half the time; the policy's do neither
    assert (rows["expert"].ticks, rows["expert"].agree_share, rows["expert"].deviate_share) == (2, 0.5, 0.5)
    assert (rows["policy"].agree_share, rows["policy"].deviate_share) == (0.0, 0.0)
    assert rows["expert"].fde_median_m == pytest.approx(3.5) and rows["policy"].lead_median_m == -1.0
    assert rows["all"].ticks == 3
    # and a driver with no ticks gets no row
    only_policy = PlanGaps(gaps.ade_m[2:], gaps.fde_m[2:], gaps.lead_m[2:], gaps.expert_drove[2:])
    assert [r.driver for r in summarize(only_policy, config)] == ["policy", "all"]


def clip(start: int, n: int, expert_from: int, seed: int) -> ClipRecord:
    """Ticks before `expert_from` are the policy's, planned like the expert (1 m per waypoint); the
    expert's ticks have a policy planning 3 m per waypoint (8 m ahead at the end)."""
    arrays = make_clip_arrays(start, n, expert_from=expert_from, seed=seed)
    expert_drove = (arrays["driver"] == 1)[:, None, None]
    arrays["policy_waypoints_ego"] = np.where(expert_drove, straight(n, 3.0), straight(n, 1.0))
    arrays["expert_waypoints_ego"] = straight(n, 1.0)
    return ClipRecord("takeover", start, arrays)


def test_stored_clips_are_read_once_per_tick_and_grouped_by_driver(tmp_path: Path):
    with Store(f"sqlite:///{tmp_path / 'a.db'}", str(tmp_path / "clips")) as store:
        # given an episode with two clips sharing ticks 20..29: policy ticks 10..19, expert ticks 20..39
        episode, _, _ = make_episode(1, run="r", iteration=2, n_takeovers=0, phase="eval_takeover")
        store.ingest_episode(episode, [], [clip(10, 20, 10, 1), clip(20, 20, 0, 2)])
        # ... a demonstration without the policy's plan, and another run
        demo, _, _ = make_episode(2, run="r", iteration=2, n_takeovers=0, phase="expert")
        store.ingest_episode(demo, [], [ClipRecord("demo", 0, make_clip_arrays(0, 10, 0, 3))])
        other, _, _ = make_episode(3, run="other", iteration=2, n_takeovers=0, phase="eval_takeover")
        store.ingest_episode(other, [], [clip(0, 10, 0, 4)])
        # when the run's evaluation ticks are read
        gaps = stored_ticks(store, "r", ["eval_takeover"], iteration=2).plan_gaps()
    # then the 30 distinct ticks are there (the second copy of 20..29 skipped): 10 agreeing policy
    # ticks and 20 expert ticks whose plans end 8 m apart, the policy's ahead
    assert len(gaps.ade_m) == 30 and int(gaps.expert_drove.sum()) == 20
    assert np.allclose(gaps.fde_m[~gaps.expert_drove], 0.0)
    assert np.allclose(gaps.fde_m[gaps.expert_drove], 8.0) and np.allclose(
        gaps.lead_m[gaps.expert_drove], 8.0
    )


def test_the_command_prints_the_table_and_says_when_nothing_is_stored(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    with Store(db, str(tmp_path / "clips")) as store:
        episode, _, _ = make_episode(1, run="r", iteration=1, n_takeovers=0, phase="eval_takeover")
        store.ingest_episode(episode, [], [clip(0, 20, 10, 1), clip(20, 20, 0, 2)])
    loaded: list[int] = []
    original = Store.load_clip
    monkeypatch.setattr(
        Store, "load_clip", lambda self, clip_id: loaded.append(clip_id) or original(self, clip_id)
    )
    common = ["--db-url", db, "--clip-root", str(tmp_path / "clips")]
    assert main(["agreement", "--run", "r", *common]) == 0
    # the table and the hand-back line share one read of each clip
    assert sorted(loaded) == sorted(set(loaded)) and len(loaded) == 2
    out = capsys.readouterr().out
    assert "expert" in out and "policy" in out and "deviate %" in out
    assert "hand-backs: 0 of 0 takeovers" in out
    assert "divergence onset: no takeover" in out
    assert main(["agreement", "--run", "nobody", *common]) == 1
    assert "no stored ticks" in capsys.readouterr().out


def test_hand_backs_are_counted_standing_and_retaken(tmp_path: Path):
    with Store(f"sqlite:///{tmp_path / 'a.db'}", str(tmp_path / "clips")) as store:
        # given three takeovers: the first handed back at tick 60 while the expert's plan stands and
        # retaken 1 s later (tick 80), the second handed back at tick 120 while the expert drives on and
        # not retaken for 4 s, the third never handed back
        episode, made, _ = make_episode(1, run="r", iteration=1, n_takeovers=3, phase="eval_takeover")
        timing = [(20, 60), (80, 120), (200, None)]
        takeovers = [
            dataclasses.replace(
                t, frame=f, time_s=f * TICK_S, handback_frame=b, handback_time_s=None if b is None else b * TICK_S
            )
            for t, (f, b) in zip(made, timing, strict=True)
        ]  # fmt: skip
        arrays = make_clip_arrays(20, 120, 0, 1)
        ticks = np.arange(20, 140)
        arrays["expert_speeds"] = np.where((ticks < 70)[:, None], 0.5, 8.0) * np.ones((1, K), np.float32)
        store.ingest_episode(episode, takeovers, [ClipRecord("takeover", 20, arrays, 0)])
        config = MonitorConfig()

        def summary(iteration: int, retake_s: float) -> HandbackSummary:
            ticks = stored_ticks(store, "r", ["eval_takeover"], iteration)
            stored = store.list_takeovers(run="r", phases=["eval_takeover"], iteration=iteration)
            return handback_summary(ticks, stored, config, retake_s)

        # when the hand-backs are summarized with a 2 s retake window, then two were handed back, the
        # first standing (0.5 m/s < stuck_expert_speed_mps) and retaken
        assert summary(1, retake_s=2.0) == HandbackSummary(3, 2, 1, 1, 1, 2.0)
        # and a window shorter than the 1 s gap retakes none; another iteration has nothing
        assert summary(1, retake_s=0.5).retaken == 0
        assert summary(2, retake_s=2.0) == HandbackSummary(0, 0, 0, 0, 0, 2.0)


def ticks_of(episode_id: int, frames: range, expert: range, agree: range) -> StoredTicks:
    """Stored ticks of one episode: the expert drove `expert`, the plans agree (ADE 0.5 m) on `agree` and
    are 5 m apart elsewhere."""
    f = np.asarray(frames, np.int64)
    gap = np.where(np.isin(f, agree), 0.5, 5.0)
    return StoredTicks(np.full(f.size, episode_id, np.int64), f, f * TICK_S, np.isin(f, expert), gap, gap,
                       gap, np.full(f.size, np.nan))  # fmt: skip


def trigger(takeover_id: int, episode_id: int, frame: int) -> TakeoverInfo:
    return TakeoverInfo(takeover_id, episode_id, 0, frame, frame * TICK_S, 0.0, 0.0, None, 8.0,
                        "plan_deviation", None, None, {}, "ego", [], [], None, None)  # fmt: skip


def test_divergence_onsets_are_found_walking_back_from_each_trigger():
    config = MonitorConfig()
    # given episode 1 stored from its start: plans agree up to tick 29, the policy parts at 30 and is
    # taken over at 40; the expert drives 40..59; the policy never agrees from 60 to its retake at 80
    one = ticks_of(1, range(0, 100), expert=range(40, 60), agree=range(0, 30))
    # ... episode 2 stored from tick 100 (a 2 s pre-takeover window) without agreement, taken over at
    # 140, and again at 160 right after agreeing on tick 159
    two = ticks_of(2, range(100, 170), expert=range(140, 150), agree=range(150, 160))
    # ... episode 3 from its start without agreement (taken over at 20), and a takeover whose
    # tick before the trigger no clip holds (episode 4)
    three = ticks_of(3, range(0, 30), expert=range(20, 30), agree=range(0))
    ticks = StoredTicks(
        *(np.concatenate(c) for c in zip(*(dataclasses.astuple(t) for t in (two, one, three)), strict=True))
    )
    takeovers = [trigger(1, 1, 40), trigger(2, 1, 80), trigger(3, 2, 140), trigger(4, 2, 160),
                 trigger(5, 3, 20), trigger(6, 4, 10)]  # fmt: skip
    # when the onsets are found
    onsets = takeover_onsets(ticks, takeovers, config)
    # then each is the first tick after the last agreement, or where the walk ran out, and why
    expected = [
        Onset(1, "plan_deviation", 10 * TICK_S, 40 * TICK_S, OnsetKind.IN_WINDOW),
        Onset(2, "plan_deviation", 20 * TICK_S, 20 * TICK_S, OnsetKind.SINCE_WHEEL),
        Onset(3, "plan_deviation", 40 * TICK_S, 40 * TICK_S, OnsetKind.BEFORE_WINDOW),
        Onset(4, "plan_deviation", 0.0, 10 * TICK_S, OnsetKind.IN_WINDOW),
        Onset(5, "plan_deviation", 20 * TICK_S, 20 * TICK_S, OnsetKind.SINCE_WHEEL),
    ]
    assert [o.takeover_id for o in onsets] == [1, 2, 3, 4, 5]
    for got, want in zip(onsets, expected, strict=True):
        assert got.kind is want.kind and got.lead_s == pytest.approx(want.lead_s)
        assert got.window_s == pytest.approx(want.window_s)
    # and the summary counts the kinds and takes the spread of the leads (0, 0.5, 1, 1, 2 s)
    summary = onset_summary(onsets)
    assert (summary.takeovers, summary.in_window, summary.since_wheel, summary.before_window) == (5, 2, 2, 1)
    assert summary.lead_median_s == pytest.approx(1.0) and summary.window_median_s == pytest.approx(1.0)
    assert onset_summary([]) == OnsetSummary(0, 0, 0, 0, *([pytest.approx(np.nan, nan_ok=True)] * 3))
