"""The Prefect flows under one session-wide prefect_test_harness: collection into SQLite, a failing
route beside a good one, the nightly iteration end to end and its resume, the carla backend path.

Slow: the harness takes ~17 s to start and the flows drive real (short) closed-loop episodes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest_prefect import *  # noqa: F403 (fixtures: prefect_harness, untrained_checkpoint)
from conftest_prefect import (
    BAD_ROUTE_ID,
    short_overrides,
    tiny_train_overrides,
    write_routes_with_missing_town,
)
from prefect.artifacts import Artifact
from sqlalchemy import create_engine, text

import takeover.iteration as it
from flows.loop import (
    artifact_key,
    collect_demos_flow,
    collect_takeovers_flow,
    confirm_flow,
    counterfactual_flow,
    evaluate_flow,
    nightly_iteration_flow,
)

pytestmark = pytest.mark.slow


def _db(tmp_path: Path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path / 'flows.db'}", str(tmp_path / "clips")


def _rows(db_url: str, sql: str) -> list[tuple]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _artifact(key: str) -> str:
    artifact = Artifact.get(key)
    assert artifact is not None, f"no artifact {key}"
    return str(artifact.data)


def test_collect_takeovers_on_two_short_routes_lands_takeovers_in_sqlite(
    prefect_harness: None, untrained_checkpoint: Path, tmp_path: Path
):
    db_url, clips = _db(tmp_path)
    # when an untrained policy drives two short training routes, two episodes at a time
    result = collect_takeovers_flow(
        checkpoint=str(untrained_checkpoint), routes="builtin:train", route_ids=["1005", "1009"], seeds=[0],
        run="flows", iteration=1, concurrency=2, retries=0, db_url=db_url, clip_root=clips,
        overrides=short_overrides(),
    )  # fmt: skip
    # then both episodes, their takeovers and clips are in the database
    episodes = _rows(
        db_url, "SELECT r.route_id, e.phase, e.n_takeovers FROM episodes e JOIN routes r ON r.id = e.route_pk"
    )
    assert sorted((r, p) for r, p, _ in episodes) == [("1005", "rollout"), ("1009", "rollout")]
    takeovers = _rows(db_url, "SELECT COUNT(*) FROM takeovers")[0][0]
    assert takeovers == sum(n for *_, n in episodes) > 0
    assert _rows(db_url, "SELECT COUNT(*) FROM clips WHERE kind = 'takeover'")[0][0] > 0
    assert result["metrics"]["takeovers"] == takeovers and result["failures"] == []
    # and the artifact summarises them per reason and scenario type
    markdown = _artifact(artifact_key("collect-takeovers", "flows", 1))
    assert "Disengagements per reason" in markdown and "Disengagements per scenario type" in markdown


def test_a_route_that_fails_is_recorded_and_the_others_are_stored(prefect_harness: None, tmp_path: Path):
    db_url, clips = _db(tmp_path)
    routes = write_routes_with_missing_town(tmp_path / "routes.xml")
    # when expert demonstrations run on a good route and on one whose town does not exist (retried once)
    result = collect_demos_flow(
        routes=str(routes), seeds=[0], run="fail", iteration=0, concurrency=2, retries=1, retry_delay_s=0.0,
        db_url=db_url, clip_root=clips, overrides=short_overrides(),
    )  # fmt: skip
    # then the good route is stored, the bad one is a failure in the result, the database and the artifact
    assert _rows(db_url, "SELECT r.route_id FROM episodes e JOIN routes r ON r.id = e.route_pk") == [
        ("2002",)
    ]
    assert [f["route_id"] for f in result["failures"]] == [BAD_ROUTE_ID]
    failed = _rows(db_url, "SELECT status, config FROM training_rounds WHERE kind = 'episode_failure'")
    assert len(failed) == 1 and failed[0][0] == "failed" and BAD_ROUTE_ID in failed[0][1]
    markdown = _artifact(artifact_key("collect-demos", "fail", 0))
    assert "Failed route x seeds" in markdown and BAD_ROUTE_ID in markdown


def test_nightly_iteration_runs_end_to_end_and_resumes_without_repeating_steps(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    db_url, clips = _db(tmp_path)
    calls: Counter[str] = Counter()

    def counting(name: str, crash_first: bool = False):
        real = getattr(it, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            if crash_first and calls[name] == 1:
                raise RuntimeError(f"injected crash in {name}")
            return real(*args, **kwargs)

        monkeypatch.setattr(it, name, wrapper)

    for name in ("collect_episodes", "train_bc", "dagger_round", "evaluate_checkpoint"):
        counting(name)
    counting("dpo_round", crash_first=True)
    params = {
        "run": "nightly", "train_route_ids": ["1005"], "eval_route_ids": ["2002"], "seeds": [0],
        "concurrency": 1, "retries": 0, "db_url": db_url, "clip_root": clips,
        "config_overrides": ["collect_overrides={episode: [max_time_s=6]}",
                             "eval.overrides={episode: [max_time_s=6,store_features=false]}",
                             "counterfactuals=true", "counterfactual_overrides=[horizon_s=2]",
                             "promotion.max_necessary_rise=1.0"],
        "train_overrides": tiny_train_overrides(tmp_path / "runs"),
    }  # fmt: skip
    # given a first night: the bootstrap (v0) and iteration 1, whose DPO round crashes
    with pytest.raises(RuntimeError, match="injected crash in dpo_round"):
        nightly_iteration_flow(**params)
    assert calls == Counter({"collect_episodes": 2, "train_bc": 1, "evaluate_checkpoint": 1,
                             "dagger_round": 1, "dpo_round": 1})  # fmt: skip
    # when the next night runs with `resume`, the episode and training overrides not given again
    forgotten = {k: v for k, v in params.items() if k not in ("config_overrides", "train_overrides")}
    result = nightly_iteration_flow(**forgotten, resume=True)
    # then iteration 1 resumes at DPO: no collection, BC or DAgger again
    (one,) = result["iterations"]
    assert one["iteration"] == 1
    assert one["steps_resumed"] == ["collect_takeovers", "dagger"]
    assert one["steps_run"] == ["dpo", "evaluate", "counterfactual", "promote"]
    # and the candidate's takeovers were replayed (v0's in the bootstrap) for the promotion's guard
    assert one["necessary_per_km"] is not None
    replayed = _rows(db_url, "SELECT COUNT(*) FROM counterfactuals")[0][0]
    # and the flow returns what `takeover iterate --json` prints for an iteration (one shared builder)
    assert one["rival"] is None and one["rival_metrics"] == {}  # no candidate selection configured
    assert one["incumbent_after"].endswith(".pt")
    assert set(one["training"]) == {"dagger", "dpo"}
    assert calls == Counter({"collect_episodes": 2, "train_bc": 1, "evaluate_checkpoint": 2,
                             "dagger_round": 1, "dpo_round": 2})  # fmt: skip
    # with the settings the run started with: its evaluation episodes are still cut at 6 s
    durations = _rows(db_url, "SELECT MAX(e.duration_s) FROM episodes e JOIN iterations i ON i.id = "
                              "e.iteration_id WHERE i.number = 1 AND e.phase LIKE 'eval%'")  # fmt: skip
    assert 0 < durations[0][0] <= 6.0
    # and both iterations are finished in the database, with their artifacts
    promoted = _rows(db_url, "SELECT number, status FROM iterations ORDER BY number")
    assert promoted == [(0, "completed"), (1, "completed")]
    assert "Run nightly" in _artifact(artifact_key("nightly-iteration", "nightly", "history"))
    night = _artifact(artifact_key("nightly-iteration", "nightly", 1))
    assert "evaluation of dpo-1.pt" in night
    assert "Against the incumbent bc.pt: " in night  # the candidate against v0, pair by pair
    # when the run is confirmed on a seed that decided nothing
    confirmed = confirm_flow(run="nightly", seeds=[7], retries=0, db_url=db_url, clip_root=clips)
    # then v0 and the incumbent (one checkpoint when nothing beat v0) drove seed 7 under nightly-confirm
    promoted_one = one["promoted"]
    assert calls["evaluate_checkpoint"] == 3 + int(promoted_one)
    assert confirmed["iteration"] == 1 and confirmed["seeds"] == [7]
    assert confirmed["stored_as"] == "nightly-confirm" and confirmed["promoted_in"] == int(promoted_one)
    seeds = _rows(db_url, "SELECT DISTINCT seed FROM episodes WHERE run = 'nightly-confirm'")
    assert seeds == [(7,)]
    assert "Run nightly on fresh seeds 7" in _artifact(artifact_key("confirm", "nightly", 1))
    # when the candidate's takeovers and v0's are replayed without them
    found = counterfactual_flow(run="nightly", iteration=1, baseline_run="nightly", baseline_iteration=0,
                                settings=["horizon_s=2"], db_url=db_url, clip_root=clips)  # fmt: skip
    # then every stored takeover has a verdict that reached its trigger, and a report
    v0, candidate = found["evaluations"]
    stored = _rows(db_url, "SELECT COUNT(*) FROM counterfactuals")[0][0]
    assert stored == v0["takeovers"] + candidate["takeovers"] > 0
    assert stored == replayed  # the iteration's verdicts, under the same settings, were read back
    assert v0["diverged"] == candidate["diverged"] == 0 and "necessary_ratio" in found
    assert "takeovers | necessary | false alarms" in _artifact(artifact_key("counterfactual", "nightly", 1))


def test_carla_backend_goes_through_the_leaderboard_on_a_server_pool(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from test_evaluate_carla import CRASHING_ROUTE, FakeLeaderboard

    from carla_bridge.carla_client import leaderboard, server

    b2d = tmp_path / "b2d" / "leaderboard" / "leaderboard"
    b2d.mkdir(parents=True)
    (b2d / "leaderboard_evaluator.py").write_text("# stand-in\n")
    monkeypatch.setenv("BENCH2DRIVE_ROOT", str(tmp_path / "b2d"))
    monkeypatch.setenv("CARLA_ROOT", str(tmp_path / "carla"))
    fake = FakeLeaderboard()
    monkeypatch.setattr(server, "CarlaServerPool", fake.pool)
    monkeypatch.setattr(leaderboard, "run_leaderboard_routes", fake.run_routes)
    checkpoint = tmp_path / "policy.pt"
    checkpoint.write_bytes(b"weights")
    db_url, clips = _db(tmp_path)
    result = evaluate_flow(
        checkpoint=str(checkpoint), routes="builtin:eval", route_ids=["2002", CRASHING_ROUTE], seeds=[0],
        run="carla", iteration=3, backend="carla", carla_managed=False, carla_overrides=["server.gpus=[0,1]"],
        db_url=db_url, clip_root=clips,
    )  # fmt: skip
    assert [p.managed for p in fake.pools] == [False] and fake.pools[0].config.gpus == [0, 1]
    assert result["metrics"]["episodes"] == 1.0
    assert {f["route_id"] for f in result["failures"]} == {CRASHING_ROUTE}
    assert CRASHING_ROUTE in _artifact(artifact_key("evaluate", "carla", 3))
