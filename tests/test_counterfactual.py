"""Counterfactual disengagements: verdicts, replays that reach their stored triggers, storage, pairing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest_prefect import *  # noqa: F403 (fixtures: untrained_checkpoint)
from postgres import make_episode
from sqlalchemy import text
from test_episode_takeovers import (  # noqa: F401 (module fixtures)
    STOP_SIGN_ROUTE,
    STRAIGHT_ROUTE,
    StopSignRunner,
    Wanderer,
    cut,
    features,
    maps,
    routes,
    sim,
)

import takeover.counterfactual as cf
from carla_bridge.route_sets import load_route_set
from experts.expert import PDMLiteExpert
from storage.errors import RecordError
from storage.records import CounterfactualRecord, TakeoverInfo
from storage.store import Store
from takeover.cli import main
from takeover.collect import CollectSetup
from takeover.counterfactual import (
    CLEAR,
    DIVERGED,
    STANDING,
    CounterfactualConfig,
    CounterfactualError,
    Counterfactuals,
    analyse_evaluation,
    config_digest,
    counterfactual_markdown,
    judge,
    judge_episodes,
    load_counterfactual_config,
    necessary_ratio,
    tally_verdicts,
)
from takeover.episode import EpisodeConfig, EpisodeMode, run_episode
from takeover.evaluate import EpisodeScore, EvalConfig, EvalResult, evaluate_checkpoint
from takeover.iteration import collect_episodes
from takeover.monitor import MonitorConfig, TakeoverMonitor
from takeover.paired import PairedConfig

EPISODE_S = 14.0  # simulated seconds: long enough for an untrained policy to be taken over more than once
HORIZON_S = 3.0


@pytest.fixture
def store(tmp_path: Path):
    with Store(f"sqlite:///{tmp_path / 'cf.db'}", str(tmp_path / "clips")) as s:
        yield s


def _event(kind: str, after_s: float) -> dict[str, object]:
    return {"kind": kind, "after_s": after_s}


# ------------------------------------------------------------------------------------------ verdicts


def test_a_counted_infraction_in_the_window_makes_a_takeover_necessary():
    config = CounterfactualConfig(horizon_s=8.0)
    # given a collision 3.2 s after a refused plan_deviation trigger, after a lane invasion at 5 s
    events = [_event("outside_route_lanes", 5.0), _event("collision_vehicle", 3.2)]
    # then the earliest counted infraction names the outcome
    assert judge("plan_deviation", events, 20.0, config) == cf.Verdict("collision_vehicle", True, 3.2)


def test_uncounted_or_late_events_leave_a_false_alarm():
    config = CounterfactualConfig(horizon_s=8.0)
    # given only an infraction that is not counted, and a collision after the horizon
    events = [_event("min_speed", 1.0), _event("collision_vehicle", 8.5)]
    # then the takeover was not needed
    assert judge("predicted_collision", events, 30.0, config) == cf.Verdict(CLEAR, False, None)


def test_standing_on_counts_only_for_standing_reasons():
    config = CounterfactualConfig(standing_progress_m=1.0)
    # a stuck trigger whose policy drives 0.4 m in the window would have stood on
    assert judge("stuck", [], 0.4, config) == cf.Verdict(STANDING, True, None)
    # ... one that drives off was a false alarm
    assert judge("stuck", [], 5.0, config).necessary is False
    # ... and standing is no failure for a plan_deviation trigger (waiting at a red light is right)
    assert judge("plan_deviation", [], 0.0, config).necessary is False


def test_the_digest_keys_verdicts_by_the_settings_that_decide_them():
    base = CounterfactualConfig()
    assert config_digest(base) == config_digest(CounterfactualConfig(torch_threads=4))
    assert config_digest(base) != config_digest(CounterfactualConfig(horizon_s=5.0))
    assert len(config_digest(base)) == 64


def test_bad_settings_are_refused_by_name():
    with pytest.raises(CounterfactualError, match=r"horizon_s=0\.0 must be > 0"):
        load_counterfactual_config(["horizon_s=0"])
    with pytest.raises(CounterfactualError, match="standing_progress_m"):
        load_counterfactual_config(["standing_progress_m=-1"])


# ------------------------------------------------------------------------------------------ pairing


def _score(episode_id: int, route_id: str, distance_m: float, takeovers: int) -> EpisodeScore:
    return EpisodeScore(episode_id, route_id, 0, "eval_takeover", "done", 50.0, 100.0, 0.5, False,
                        distance_m, takeovers)  # fmt: skip


def _takeover_info(tid: int, episode_id: int, seq: int, time_s: float, reason: str) -> TakeoverInfo:
    return TakeoverInfo(tid, episode_id, seq, 0, time_s, 0.0, 0.0, None, 1.0, reason, None, None, {}, "ego",
                        [], [], None, None)  # fmt: skip


def _found(scores: list[EpisodeScore], necessary: dict[int, list[bool | None]]) -> Counterfactuals:
    takeovers, records = [], {}
    for episode_id, verdicts in necessary.items():
        for seq, verdict in enumerate(verdicts):
            tid = episode_id * 10 + seq
            takeovers.append(_takeover_info(tid, episode_id, seq, 1.0, "plan_deviation"))
            outcome = DIVERGED if verdict is None else ("collision_vehicle" if verdict else CLEAR)
            records[tid] = CounterfactualRecord(tid, "0" * 64, 8.0, outcome, verdict, None, 0.0)
    result = EvalResult("r", 0, "/x.pt", "0" * 64, "eval", "embedded", (), tuple(scores))
    return Counterfactuals(result, tuple(takeovers), records, CounterfactualConfig(), 0)


def test_the_necessary_rate_ratio_is_paired_and_counts_diverged_replays_as_necessary():
    # given v0 with 3 necessary takeovers of 4 over 2 km (one replay diverged) ...
    before = _found(
        [_score(1, "a", 1000.0, 3), _score(2, "b", 1000.0, 1)], {1: [True, None, False], 2: [True]}
    )
    # ... and a candidate with 1 necessary of 2 over the same routes, 2 km
    after = _found([_score(3, "a", 1000.0, 2), _score(4, "b", 1000.0, 0)], {3: [True, False]})
    # then the rates are 3 / 2 km and 1 / 2 km, and the paired ratio is 1/3
    assert before.necessary == 3 and before.diverged == 1 and after.necessary == 1
    assert before.necessary_per_km == pytest.approx(1.5) and after.necessary_per_km == pytest.approx(0.5)
    ratio = necessary_ratio(before, after, PairedConfig(resamples=200))
    assert ratio is not None and ratio.estimate == pytest.approx(1 / 3) and ratio.pairs == 2
    # the two pairs draw as (a, a): 1/2, (b, b): 0, (a, b) or (b, a): 1/4 (each 3/2 km -> 1/2 km ...)
    assert 0.0 <= ratio.low <= ratio.estimate <= ratio.high <= 0.5
    rows = {r.reason: r for r in before.by_reason()}
    assert rows["plan_deviation"].takeovers == 4 and rows["plan_deviation"].precision == pytest.approx(0.75)


def test_a_tally_counts_diverged_replays_as_necessary_and_the_rest_by_outcome():
    # given five verdicts: two collisions, a standing stop, a false alarm and a replay that diverged
    verdicts = [("collision_vehicle", True), ("collision_vehicle", True), (STANDING, True), (CLEAR, False),
                (DIVERGED, None)]  # fmt: skip
    records = [CounterfactualRecord(i, "0" * 64, 8.0, o, n, None, 0.0) for i, (o, n) in enumerate(verdicts)]
    # when they are tallied
    tally = tally_verdicts(records)
    # then the diverged one counts as necessary, the clear one is the only false alarm
    assert (tally.verdicts, tally.necessary, tally.false_alarms, tally.diverged) == (5, 4, 1, 1)
    assert tally.outcomes == {"collision_vehicle": 2, STANDING: 1, CLEAR: 1, DIVERGED: 1}
    assert next(iter(tally.outcomes)) == "collision_vehicle"  # most common first
    assert tally_verdicts([]) == cf.VerdictTally(0, 0, 0, {})


def test_necessary_takeovers_are_broken_down_by_scenario_type():
    # given two Accident episodes (1 km each: 2 of 3 takeovers necessary, one of them a diverged replay)
    # and an InvadingTurn episode (0.5 km: its one takeover a false alarm)
    scores = [replace(_score(1, "a", 1000.0, 2), scenario_type="Accident"),
              replace(_score(2, "a", 1000.0, 1), scenario_type="Accident"),
              replace(_score(3, "b", 500.0, 1), scenario_type="InvadingTurn")]  # fmt: skip
    found = _found(scores, {1: [True, None], 2: [False], 3: [False]})
    # then the rows list, most necessary first, each scenario's count, rate per km and outcomes
    accident, turn = found.by_scenario()
    assert (accident.scenario, accident.takeovers, accident.necessary) == ("Accident", 3, 2)
    assert accident.necessary_per_km == pytest.approx(1.0)  # 2 over 2 km
    assert accident.outcomes == {"collision_vehicle": 1, DIVERGED: 1}
    assert (turn.scenario, turn.takeovers, turn.necessary, turn.outcomes) == ("InvadingTurn", 1, 0, {})
    assert turn.necessary_per_km == 0.0
    # and the JSON and markdown carry them
    assert [r["scenario"] for r in found.to_json()["by_scenario"]] == ["Accident", "InvadingTurn"]
    assert "| Accident | 3 | 2 | 1.00 | collision_vehicle 1, diverged 1 |" in counterfactual_markdown([found])


# ------------------------------------------------------------------------------------------ storage


def test_verdicts_are_stored_once_per_takeover_and_setting(store: Store):
    store.ingest_episode(*make_episode(1))
    ids = [t.id for t in store.list_takeovers()]
    record = CounterfactualRecord(ids[0], "a" * 64, 8.0, "collision_vehicle", True, 2.5, 12.0,
                                  ({"kind": "collision_vehicle", "after_s": 2.5},), {"horizon_s": 8.0})  # fmt: skip
    store.add_counterfactuals([record])
    # a second write of the same (takeover, setting) keeps the first
    store.add_counterfactuals([CounterfactualRecord(ids[0], "a" * 64, 8.0, CLEAR, False, None, 0.0)])
    assert store.list_counterfactuals(ids, "a" * 64) == [record]
    assert store.list_counterfactuals(ids, "b" * 64) == []
    with pytest.raises(RecordError, match=r"takeover id\(s\) \[999\]"):
        store.add_counterfactuals([CounterfactualRecord(999, "a" * 64, 8.0, CLEAR, False, None, 0.0)])


# ------------------------------------------------------------------------------------------ replays


@pytest.mark.slow
def test_replays_reach_their_triggers_agree_with_the_policy_alone_and_resume(
    store: Store,
    untrained_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    # given an untrained policy's evaluation with takeovers on a built-in route, two seeds
    eval_routes = load_route_set("builtin:eval", ["2002"])
    overrides = {"episode": [f"max_time_s={EPISODE_S}"]}
    config = EvalConfig(seeds=[0, 1], overrides=overrides)
    result = evaluate_checkpoint(
        untrained_checkpoint, eval_routes, [0, 1], store, "cf", 0, config=config, progress=False
    )
    takeovers = store.list_takeovers(run="cf")
    assert len(takeovers) >= 2, "the untrained policy should be taken over"
    settings = CounterfactualConfig(horizon_s=HORIZON_S)
    # when every takeover is replayed with it refused
    found = analyse_evaluation(store, result, eval_routes, settings, overrides=overrides, progress=False)
    # then each replay reached its stored trigger (the embedded simulator replays exactly)
    assert found.replayed == len(takeovers) and found.diverged == 0
    assert {r.outcome for r in found.records.values()} <= {CLEAR, STANDING, *settings.counted}
    # and a first takeover's window is what the policy did alone in the leaderboard episode of that seed
    alone = {e.seed: e for e in result.episodes}
    with store.engine.connect() as conn:
        infractions = dict(
            conn.execute(text("SELECT id, infractions FROM episodes WHERE phase = 'eval'")).all()
        )
    seeds = {e.episode_id: e.seed for e in result.takeover_episodes}
    for t in (t for t in takeovers if t.seq == 0):
        stored = infractions[alone[seeds[t.episode_id]].episode_id]
        events = json.loads(stored) if isinstance(stored, str) else stored
        expected = sorted(
            (e["kind"], round(e["time_s"] - t.time_s, 3))
            for e in events
            if t.time_s - 1e-6 <= e["time_s"] <= t.time_s + HORIZON_S and e["kind"] in settings.counted
        )
        replayed = sorted(
            (e["kind"], round(e["after_s"], 3))
            for e in found.records[t.id].events
            if e["kind"] in settings.counted
        )
        assert replayed == expected
    # when it runs again, nothing is replayed: the verdicts are read back, by the CLI too
    monkeypatch.setattr(cf, "replay_takeover", lambda *a, **k: pytest.fail("replayed a stored verdict"))
    again = analyse_evaluation(store, result, eval_routes, settings, overrides=overrides, progress=False)
    assert again.replayed == 0 and dict(again.records) == dict(found.records)
    url = store.engine.url.render_as_string(hide_password=False)
    args = ["counterfactual", "cf:0", "--db-url", url, "--set", f"horizon_s={HORIZON_S}", "--json"]
    assert main(args) == 0
    shown = json.loads(capsys.readouterr().out)["evaluations"][0]
    assert (shown["takeovers"], shown["necessary"], shown["diverged"]) == (len(takeovers), found.necessary, 0)
    # and settings the episodes were not driven with show up as diverged replays, counted as necessary
    monkeypatch.undo()
    odd = CounterfactualConfig(horizon_s=HORIZON_S + 1)
    strict = {**overrides, "monitor": ["deviation_ade_m=1000", "deviation_fde_m=1000", "stuck_time_s=1000",
                                       "enabled_reasons=[]"]}  # fmt: skip
    diverged = analyse_evaluation(store, result, eval_routes, odd, overrides=strict, progress=False)
    assert diverged.diverged == len(takeovers) and diverged.necessary == len(takeovers)


@pytest.mark.slow
def test_a_collection_s_takeovers_replay_to_their_triggers_under_its_own_settings(
    store: Store, untrained_checkpoint: Path
):
    # given takeover rollouts collected as the loop does: clips with policy inputs, a 6 s pre-window and
    # a monitor of their own
    train_routes = load_route_set("builtin:train", ["1005"])
    overrides = {"episode": [f"max_time_s={EPISODE_S}", "pre_window_s=6.0"], "monitor": ["agree_s=2.0"]}
    collected = collect_episodes(
        EpisodeMode.TAKEOVER, "builtin:train", [0, 1], store, "cfc", 1, route_ids=["1005"],
        checkpoint=str(untrained_checkpoint), overrides=overrides, progress=False,
    )  # fmt: skip
    assert collected.takeovers >= 2, "the untrained policy should be taken over"
    settings = CounterfactualConfig(horizon_s=HORIZON_S)
    # when they are judged with the collection's settings
    takeovers, records, replayed = judge_episodes(
        store, collected.episodes, str(untrained_checkpoint), train_routes, settings, overrides=overrides,
        progress=False,
    )  # fmt: skip
    # then every replay met its stored trigger, and each verdict is stored for the training rounds
    assert replayed == len(takeovers) == collected.takeovers
    assert all(r.outcome != DIVERGED for r in records.values())
    assert len(store.list_counterfactuals(records, config_digest(settings))) == len(takeovers)
    # and the replays drive with the settings given: a monitor that never fires meets no trigger
    other = CounterfactualConfig(horizon_s=HORIZON_S + 1)
    silent = {**overrides, "monitor": ["deviation_ade_m=1000", "deviation_fde_m=1000", "stuck_time_s=1000",
                                       "enabled_reasons=[]"]}  # fmt: skip
    _, strays, _ = judge_episodes(
        store, collected.episodes, str(untrained_checkpoint), train_routes, other, overrides=silent,
        progress=False,
    )  # fmt: skip
    assert all(r.outcome == DIVERGED for r in strays.values()) and len(strays) == len(takeovers)


def test_a_carla_evaluation_is_refused():
    result = EvalResult("r", 0, "/x.pt", "0" * 64, "eval", "carla", (), (_score(1, "a", 1.0, 1),))
    with pytest.raises(CounterfactualError, match="cannot replay an episode tick for tick"):
        analyse_evaluation(None, result, [])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ scripted replays


def _scripted(sim, features, route, policy, seconds: float, mode: str = "takeover"):  # noqa: F811
    episode = EpisodeConfig(max_time_s=seconds, mode=mode)
    monitor = TakeoverMonitor(MonitorConfig()) if mode == "takeover" else None
    result = run_episode(sim, route, 0, policy, PDMLiteExpert(), monitor, episode, feature_config=features)
    setup = CollectSetup(EpisodeMode.TAKEOVER, sim, PDMLiteExpert(), TakeoverMonitor(MonitorConfig()), policy,
                         EpisodeConfig(max_time_s=seconds), features)  # fmt: skip
    return result, setup


def test_a_stop_sign_runner_refused_a_takeover_runs_the_sign(sim, routes, features):  # noqa: F811
    # given a policy blind to stop signs, taken over before the line of route 1019
    route = cut(routes[STOP_SIGN_ROUTE], 25.0, 130.0)
    result, setup = _scripted(sim, features, route, StopSignRunner(), 25.0)
    first = result.takeovers[0]
    assert first.reason == "stop_sign"
    # when that takeover is refused
    config = CounterfactualConfig(horizon_s=8.0)
    verdict = cf.replay_takeover(setup, route, 0, _takeover_info(1, 1, 0, first.time_s, first.reason), config)
    # then the policy runs the sign: the takeover was necessary
    assert (verdict.outcome, verdict.necessary) == ("stop_sign", True)
    assert 0.0 <= verdict.first_event_s <= config.horizon_s
    # and the window is what the policy does alone, which never hands over
    alone, _ = _scripted(sim, features, route, StopSignRunner(), 25.0, mode="policy")
    ran = [e for e in alone.episode.infractions if e["kind"] == "stop_sign"]
    assert ran and ran[0]["time_s"] - first.time_s == pytest.approx(verdict.first_event_s, abs=1e-6)


def test_a_plan_that_wanders_while_the_car_keeps_its_lane_is_a_false_alarm(sim, routes, features):  # noqa: F811
    # given a policy whose plan drifts sideways while its control keeps the lane: a plan_deviation takeover
    route = cut(routes[STRAIGHT_ROUTE], 0.0, 150.0)
    result, setup = _scripted(sim, features, route, Wanderer(), 16.0)
    first = result.takeovers[0]
    assert first.reason == "plan_deviation"
    # when it is refused, the car drives on in its lane without an infraction
    verdict = cf.replay_takeover(setup, route, 0, _takeover_info(1, 1, 0, first.time_s, first.reason),
                                 CounterfactualConfig(horizon_s=8.0))  # fmt: skip
    assert (verdict.outcome, verdict.necessary, verdict.events) == (CLEAR, False, ())
    assert verdict.progress_m > 20.0
    # and a replay told of a trigger that never comes (another tick) reports that it diverged
    late = _takeover_info(1, 1, 0, first.time_s + 0.5, first.reason)
    assert cf.replay_takeover(setup, route, 0, late, CounterfactualConfig()).outcome == DIVERGED
