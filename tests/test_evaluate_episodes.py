"""Closed-loop evaluation on the embedded simulator: stored episodes, resume, and failed routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest_prefect import *  # noqa: F403 (fixtures: untrained_checkpoint)
from conftest_prefect import BAD_ROUTE_ID, short_overrides, write_routes_with_missing_town
from sqlalchemy import text

import takeover.evaluate as ev
from carla_bridge.route_sets import load_route_set
from storage.records import CheckpointRecord
from storage.store import Store
from takeover.cli import main
from takeover.episode import EpisodeMode
from takeover.evaluate import (
    EpisodeFailure,
    EpisodeJob,
    EvalConfig,
    EvaluationError,
    episode_failures,
    evaluate_checkpoint,
    record_failures,
    resolve_failures,
    stored_evaluation,
)

SHA = "d" * 64


@pytest.fixture
def store(tmp_path: Path):
    with Store(f"sqlite:///{tmp_path / 'eval.db'}", str(tmp_path / "clips")) as s:
        yield s


def test_failures_are_recorded_then_resolved_when_the_episode_succeeds(store: Store):
    # given a checkpoint and a failed route x seed of iteration 2
    store.record_checkpoint(CheckpointRecord("/x.pt", SHA))
    failure = EpisodeFailure("2002", 1, "eval", "MapNotFoundError: no town")
    record_failures(store, "r", 2, "builtin:eval", SHA, [failure])
    # then it is listed as failed, in the database
    assert episode_failures(store, "r", 2) == [failure]
    assert episode_failures(store, "r", 1) == [] and episode_failures(store, "other", 2) == []
    # when the same job later succeeds
    route = load_route_set("builtin:eval", ["2002"])[0]
    resolved = resolve_failures(
        store, "r", 2, "builtin:eval", SHA, [EpisodeJob(route, 1, EpisodeMode.POLICY, "eval")]
    )
    # then the row is resolved and no longer listed
    assert resolved == 1 and episode_failures(store, "r", 2) == []
    with store.engine.connect() as conn:
        status = conn.execute(
            text("SELECT status FROM training_rounds WHERE kind = 'episode_failure'")
        ).scalar_one()
    assert status == "resolved"


@pytest.mark.slow
def test_evaluation_stores_episodes_records_a_failed_route_and_resumes(
    store: Store,
    tmp_path: Path,
    untrained_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    # given route 2002 and a route whose town does not exist, and an untrained policy
    routes_file = write_routes_with_missing_town(tmp_path / "routes.xml")
    routes = load_route_set(str(routes_file))
    config = EvalConfig(routes=str(routes_file), seeds=[0], overrides=short_overrides())
    driven: list[str] = []
    real_job = ev.run_episode_job
    monkeypatch.setattr(
        ev, "run_episode_job", lambda b, s, job: (driven.append(job.label), real_job(b, s, job))[1]
    )
    # when it is evaluated without and with takeovers
    result = evaluate_checkpoint(
        untrained_checkpoint, routes, [0], store, "r", 0, config=config, progress=False
    )
    # then the good route is scored in both passes and the bad one is a recorded failure
    assert [e.route_id for e in result.episodes] == ["2002"]
    assert [e.route_id for e in result.takeover_episodes] == ["2002"]
    assert {(f.route_id, f.phase) for f in result.failures} == {
        (BAD_ROUTE_ID, "eval"),
        (BAD_ROUTE_ID, "eval_takeover"),
    }
    assert "MapNotFoundError" in result.failures[0].error or "RouteError" in result.failures[0].error
    assert {f.route_id for f in episode_failures(store, "r", 0)} == {BAD_ROUTE_ID}
    with store.engine.connect() as conn:
        phases = conn.execute(text("SELECT phase FROM episodes ORDER BY phase")).scalars().all()
    assert phases == ["eval", "eval_takeover"]
    assert result.driving_score is not None and 0.0 <= result.driving_score <= 100.0
    assert result.disengagements_per_km is not None
    # and the expert's time is each takeover's span to its hand-back (or to the episode's end)
    with store.engine.connect() as conn:
        expert_s, duration_s = conn.execute(
            text(
                "SELECT (SELECT COALESCE(SUM(COALESCE(t.handback_time_s, e.duration_s) - t.time_s), 0) "
                "FROM takeovers t WHERE t.episode_id = e.id), e.duration_s "
                "FROM episodes e WHERE e.phase = 'eval_takeover'"
            )
        ).one()
    assert result.takeover_episodes[0].expert_s == pytest.approx(expert_s)
    assert result.expert_share == pytest.approx(expert_s / duration_s)
    assert result.episodes[0].expert_s == 0.0
    # and the policy's own kilometres are read back: all of them without takeovers
    assert result.episodes[0].expert_distance_m == 0.0
    taken = result.takeover_episodes[0]
    assert taken.expert_distance_m is not None and 0.0 <= taken.expert_distance_m <= taken.distance_m
    assert result.policy_distance_km == pytest.approx((taken.distance_m - taken.expert_distance_m) / 1000.0)
    # when it runs again, the stored episodes are read back and only the failing route is tried
    driven.clear()
    again = evaluate_checkpoint(
        untrained_checkpoint, routes, [0], store, "r", 0, config=config, progress=False
    )
    assert sorted(driven) == [
        f"eval route {BAD_ROUTE_ID} seed 0",
        f"eval_takeover route {BAD_ROUTE_ID} seed 0",
    ]
    assert again.episodes == result.episodes and again.takeover_episodes == result.takeover_episodes
    # and the stored evaluation reads back as it was returned, for `takeover compare`
    stored = stored_evaluation(store, "r", 0, routes_file.stem, [("eval", "eval_takeover")])
    assert (stored.episodes, stored.takeover_episodes) == (result.episodes, result.takeover_episodes)
    with pytest.raises(EvaluationError, match="no evaluation stored for run 'r' iteration 5"):
        stored_evaluation(store, "r", 5, routes_file.stem, [("eval", "eval_takeover")])
    with pytest.raises(EvaluationError, match=r"no checkpoint 'dpo-9' is evaluated .*: untrained"):
        stored_evaluation(store, "r", 0, routes_file.stem, [("eval", "eval_takeover")], "dpo-9")
    # and compared with itself, pair by pair, its disengagement rate has not changed at all
    db = [
        "--db-url",
        str(store.engine.url),
        "--clip-root",
        str(tmp_path / "clips"),
        "--routes",
        str(routes_file),
    ]
    assert main(["compare", "r:0", "r:0", "--json", *db]) == 0
    paired = json.loads(capsys.readouterr().out)["paired"]
    ratio = paired["disengagements_per_km_ratio"]
    assert (ratio["estimate"], ratio["low"], ratio["high"], ratio["pairs"]) == (1.0, 1.0, 1.0, 1)
    assert result.driving_score == 0.0 and paired["ds_change_pct"] is None  # no percent change of a zero DS
    # and so it has with bias-corrected, accelerated intervals
    assert main(["compare", "r:0", "r:0", "--json", "--interval", "bca", *db]) == 0
    ratio = json.loads(capsys.readouterr().out)["paired"]["disengagements_per_km_ratio"]
    assert (ratio["estimate"], ratio["low"], ratio["high"]) == (1.0, 1.0, 1.0)
    assert main(["compare", "r0", "r:0", *db]) == 2
    assert "is not RUN:ITERATION[@CHECKPOINT]" in capsys.readouterr().err
