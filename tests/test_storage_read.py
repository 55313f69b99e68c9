"""Store's read API for training data (list_clips, list_frames, list_takeovers, list_preference_pairs):
the episode filters, ordering, and frame rows of strided clips, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from postgres import *  # noqa: F403  (fixtures: db_url, store, clip_root, ...)
from postgres import TICK_S, make_clip_arrays, make_episode

import storage.store as store_module
from storage.records import ClipRecord, PreferencePairRecord
from storage.store import Store

STRIDE = 5
DEMO_START, DEMO_FRAMES = 100, 12


@dataclass(frozen=True)
class Stored:
    """Episode ids of the `filled` store."""

    it0: int  # run-a, rollout, iteration 0: 2 takeovers, 4 clips
    it1: int  # run-a, rollout, iteration 1: 1 takeover, 2 clips
    demo: int  # run-a, expert, no iteration: one clip of every 5th tick
    other: int  # run-b, rollout, iteration 0: 1 takeover, 2 clips
    overlap: int  # run-c, rollout, no iteration: two clips sharing ticks 20..29


def demo_episode():
    episode, _, _ = make_episode(3, run="run-a", iteration=None, n_takeovers=0, phase="expert")
    arrays = make_clip_arrays(DEMO_START, DEMO_FRAMES, expert_from=0, seed=3)
    arrays["frame"] = DEMO_START + STRIDE * np.arange(DEMO_FRAMES)
    arrays["time_s"] = arrays["frame"] * TICK_S
    return episode, (), [ClipRecord("demo", DEMO_START, arrays)]


def overlap_episode():
    episode, _, _ = make_episode(5, run="run-c", iteration=None, n_takeovers=0)
    clips = [
        ClipRecord("a", 10, make_clip_arrays(10, 20, expert_from=20, seed=1)),
        ClipRecord("b", 20, make_clip_arrays(20, 20, expert_from=0, seed=2)),
    ]
    return episode, (), clips


@pytest.fixture
def filled(store: Store) -> tuple[Store, Stored]:
    ids = Stored(
        it0=store.ingest_episode(*make_episode(1, run="run-a", iteration=0)),
        it1=store.ingest_episode(*make_episode(2, run="run-a", iteration=1, n_takeovers=1)),
        demo=store.ingest_episode(*demo_episode()),
        other=store.ingest_episode(*make_episode(4, run="run-b", iteration=0, n_takeovers=1)),
        overlap=store.ingest_episode(*overlap_episode()),
    )
    return store, ids


def episodes_of(clips) -> list[int]:
    return sorted({c.episode_id for c in clips})


def test_clips_are_selected_by_run_phase_iteration_and_kind(filled) -> None:
    store, ids = filled
    # Given five episodes; when clips are listed under each filter, then exactly the matching ones come
    every = store.list_clips()
    assert [c.id for c in every] == sorted(c.id for c in every) and len(every) == 4 + 2 + 1 + 2 + 2
    assert episodes_of(store.list_clips(run="run-a")) == [ids.it0, ids.it1, ids.demo]
    # max_iteration counts episodes outside any iteration as iteration 0; iteration= needs the number
    assert episodes_of(store.list_clips(run="run-a", phases=["rollout"], max_iteration=0)) == [ids.it0]
    assert episodes_of(store.list_clips(run="run-a", phases=["expert"], max_iteration=0)) == [ids.demo]
    assert episodes_of(store.list_clips(run="run-a", max_iteration=1)) == [ids.it0, ids.it1, ids.demo]
    assert episodes_of(store.list_clips(run="run-a", iteration=0)) == [ids.it0]
    assert episodes_of(store.list_clips(iteration=1)) == [ids.it1]
    assert episodes_of(store.list_clips(iteration=0, max_iteration=0)) == [ids.it0, ids.other]
    # A bare string is one phase / kind, not its letters
    assert episodes_of(store.list_clips(phases="expert")) == [ids.demo]
    takeover_clips = store.list_clips(kinds="takeover")
    assert {c.kind for c in takeover_clips} == {"takeover"} and len(takeover_clips) == 2 + 1 + 1
    assert episodes_of(store.list_clips(episode_ids=[ids.it1, ids.other])) == [ids.it1, ids.other]
    assert store.list_clips(run="nobody") == [] and store.list_clips(phases=[]) == []
    # And every ClipInfo is what clip_info says
    assert all(store.clip_info(c.id) == c for c in every)


def test_clips_by_id_survive_id_lists_longer_than_one_query(filled, monkeypatch) -> None:
    store, _ = filled
    monkeypatch.setattr(store_module, "ID_CHUNK", 2)
    wanted = [*(c.id for c in reversed(store.list_clips())), 10_000]  # one id that is not stored
    assert [c.id for c in store.list_clips(ids=wanted)] == sorted(wanted[:-1])
    assert store.list_clips(ids=[]) == []


def test_frame_rows_index_the_clip_arrays_even_in_strided_clips(filled) -> None:
    store, ids = filled
    # When the frames of the demonstration (every 5th tick from 100) are listed
    demo = store.list_frames(phases=["expert"])
    # Then they carry the real ticks, and row k is the clip's k-th entry
    assert demo.frame.tolist() == list(range(DEMO_START, DEMO_START + STRIDE * DEMO_FRAMES, STRIDE))
    assert demo.row.tolist() == list(range(DEMO_FRAMES)) and set(demo.episode_id.tolist()) == {ids.demo}
    # And on every clip, each entry's row reads back its own tick's time, speed and driver
    table = store.list_frames()
    for clip in store.list_clips():
        arrays = store.load_clip(clip.id)
        mine = table.subset(table.clip_id == clip.id)
        assert len(mine) == arrays["time_s"].shape[0]
        np.testing.assert_allclose(arrays["time_s"][mine.row], mine.time_s)
        np.testing.assert_allclose(arrays["ego_speed"][mine.row], mine.ego_speed_mps)
        np.testing.assert_array_equal(arrays["driver"][mine.row], mine.driver)


def test_frames_come_by_episode_tick_and_clip_with_takeover_ticks_flagged(filled) -> None:
    store, _ = filled
    # Given an episode whose clips share ticks 20..29: each shared tick comes once per clip, by clip id
    overlap = store.list_frames(run="run-c")
    assert overlap.frame.tolist() == [*range(10, 20), *np.repeat(np.arange(20, 30), 2), *range(30, 40)]
    (a, b) = [c.id for c in store.list_clips(run="run-c")]
    assert overlap.clip_id[10:30].tolist() == [a, b] * 10
    assert overlap.row[10:30].tolist() == [r for k in range(10) for r in (10 + k, k)]
    # And across episodes the order is (episode, tick, clip) with the trigger ticks flagged
    table = store.list_frames(run="run-a", phases=["rollout"])
    keys = list(zip(table.episode_id.tolist(), table.frame.tolist(), table.clip_id.tolist(), strict=True))
    assert keys == sorted(keys)
    triggers = {(t.episode_id, t.frame) for t in store.list_takeovers(run="run-a")}
    flagged = set(
        zip(
            table.episode_id[table.is_takeover].tolist(), table.frame[table.is_takeover].tolist(), strict=True
        )
    )
    assert flagged == triggers and len(triggers) == 3
    assert len(store.list_frames(run="nobody")) == 0


def test_takeovers_are_listed_by_episode_and_tick_with_their_plans(filled) -> None:
    store, ids = filled
    _, records, _ = make_episode(1, run="run-a", iteration=0)
    takeovers = store.list_takeovers(run="run-a", phases=["rollout"], max_iteration=1)
    assert [(t.episode_id, t.seq) for t in takeovers] == [(ids.it0, 0), (ids.it0, 1), (ids.it1, 0)]
    first, want = takeovers[0], records[0]
    assert (first.frame, first.time_s, first.reason, first.handback_frame) == (
        want.frame,
        pytest.approx(want.time_s),
        want.reason,
        want.handback_frame,
    )
    assert first.ttc_s == pytest.approx(1.0) and first.policy_plan == [list(p) for p in want.policy_plan]
    assert [t.episode_id for t in store.list_takeovers(reasons="red_light")] == [ids.it0]
    assert store.list_takeovers(iteration=1, run="run-b") == []


def test_preference_pairs_know_their_row_in_the_clip(filled) -> None:
    store, ids = filled
    demo_clip = store.list_clips(phases=["expert"])[0].id
    plan = [[1.0, 0.0], [2.0, 0.0]]
    tick_of_row_3 = DEMO_START + 3 * STRIDE
    pair_ids = store.add_preference_pairs(
        [
            PreferencePairRecord(
                ids.demo, tick_of_row_3, 6.0, plan, plan, "expert_vs_policy", None, demo_clip
            ),
            PreferencePairRecord(
                ids.demo, tick_of_row_3 + 1, 6.0, plan, plan, "expert_vs_policy", None, demo_clip
            ),
            PreferencePairRecord(ids.demo, 0, 0.0, plan, plan, "sampled_safety", None, None),
            PreferencePairRecord(ids.it1, 130, 6.5, plan, plan, "expert_vs_policy", None, None, 0.5),
        ]
    )
    # When the pairs are listed
    pairs = store.list_preference_pairs(run="run-a")
    # Then each knows where its state is in its clip: row 3 of the strided clip, none off its ticks
    assert [p.id for p in pairs] == sorted(pair_ids)
    assert [p.clip_row for p in pairs] == [3, None, None, None]
    assert pairs[0].chosen == plan and pairs[3].weight == 0.5 and pairs[2].source == "sampled_safety"
    # And the filters hold: sources, iterations (outside any iteration counts as 0), phases
    assert [p.id for p in store.list_preference_pairs(sources=["sampled_safety"])] == [pair_ids[2]]
    assert [p.episode_id for p in store.list_preference_pairs(iteration=1)] == [ids.it1]
    assert len(store.list_preference_pairs(run="run-a", max_iteration=0)) == 3
    assert store.list_preference_pairs(run="run-a", phases=["rollout"], iteration=0) == []
