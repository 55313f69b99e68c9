"""Bench2Drive evaluator runs: command line, environment, judging its results, storing the episode only
when the leaderboard counted the route, and crash retries on a pool of (fake) servers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_carla_server import carla_root, server_config  # noqa: F401  (fixture + helper)

from carla_bridge.carla_client.config import AgentConfig, LeaderboardConfig, load_agent_config
from carla_bridge.carla_client.episode_outbox import EpisodeBundle, read_bundles, write_bundle
from carla_bridge.carla_client.errors import LeaderboardRunError, ServerCrashedError
from carla_bridge.carla_client.leaderboard import (
    AGENT_ENTRY,
    LeaderboardPaths,
    judge_results,
    leaderboard_command,
    leaderboard_env,
    run_leaderboard_route,
    run_leaderboard_routes,
)
from carla_bridge.carla_client.server import CarlaServerPool
from carla_bridge.scoring.record import build_route_record
from carla_bridge.scoring.results_io import write_results
from storage import EpisodeRecord, RouteRecord, Store, TakeoverRecord
from storage.models import Episode

CRASHED = "Failed - Simulation crashed"


@pytest.fixture
def paths(tmp_path: Path) -> LeaderboardPaths:
    b2d = tmp_path / "Bench2Drive"
    evaluator = b2d / "leaderboard" / "leaderboard" / "leaderboard_evaluator.py"
    evaluator.parent.mkdir(parents=True)
    evaluator.write_text("# stand-in\n")
    return LeaderboardPaths(b2d, tmp_path / "carla")


def record(route_id: str, status: str = "Completed", completion: float = 100.0):
    rec = build_route_record(
        route_id=f"RouteScenario_{route_id}_rep0",
        index=0,
        events=[],
        completion_pct=completion,
        reached=completion >= 100.0,
        failure_status=None,
        route_length_m=120.0,
        duration_game_s=30.0,
        duration_system_s=60.0,
    )
    return dataclasses.replace(rec, status=status)


def bundle(route_id: str) -> EpisodeBundle:
    episode = EpisodeRecord(
        run="carla-test",
        route=RouteRecord(route_id=route_id, town="Town01", route_set="routes_dev"),
        backend="carla",
        seed=0,
        distance_m=80.0,
        duration_s=30.0,
        n_frames=600,
        status="Failed",
        driving_score=40.0,
    )
    takeover = TakeoverRecord(frame=120, time_s=6.0, x_m=1.0, y_m=2.0, speed_mps=5.0, reason="red_light")
    return EpisodeBundle(episode, (takeover,), (), record(route_id, "Failed", 40.0), None)


def test_command_line_names_the_route_ports_agent_and_checkpoint(paths, tmp_path):
    config = LeaderboardConfig(extra_args=["--record="])
    cmd = leaderboard_command(
        config, paths, route_file=tmp_path / "routes.xml", route_id="2001", host="10.0.0.5", port=2010,
        tm_port=8010, agent_config_path=tmp_path / "a.yaml", checkpoint_path=tmp_path / "r.json", seed=4,
    )  # fmt: skip
    assert cmd[0] == sys.executable
    assert cmd[1] == str(paths.bench2drive_root / "leaderboard/leaderboard/leaderboard_evaluator.py")
    for flag in (
        f"--routes={tmp_path / 'routes.xml'}", "--routes-subset=2001", "--repetitions=1", "--track=SENSORS",
        f"--checkpoint={tmp_path / 'r.json'}", f"--agent={AGENT_ENTRY}", f"--agent-config={tmp_path / 'a.yaml'}",
        "--host=10.0.0.5", "--port=2010", "--traffic-manager-port=8010", "--traffic-manager-seed=4", "--record=",
    ):  # fmt: skip
        assert flag in cmd
    assert AGENT_ENTRY.is_file()


def test_environment_points_at_carla_bench2drive_and_this_repository(paths, tmp_path):
    env = leaderboard_env(LeaderboardConfig(), paths, tmp_path / "save", base={"PYTHONPATH": "/extra"})
    parts = env["PYTHONPATH"].split(":")
    b2d = paths.bench2drive_root
    assert parts[:3] == [
        str(b2d / "leaderboard"),
        str(b2d / "scenario_runner"),
        str(paths.carla_root / "PythonAPI/carla"),
    ]
    assert parts[-1] == "/extra" and str(AGENT_ENTRY.parents[1]) in parts
    assert env["CARLA_ROOT"] == str(paths.carla_root) and env["SAVE_PATH"] == str(
        (tmp_path / "save").resolve()
    )
    assert env["LEADERBOARD_ROOT"] == str(b2d / "leaderboard") and env["IS_BENCH2DRIVE"] == "True"


def test_missing_bench2drive_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH2DRIVE_ROOT", raising=False)
    with pytest.raises(LeaderboardRunError, match=r"\$BENCH2DRIVE_ROOT"):
        LeaderboardPaths.resolve(LeaderboardConfig())
    with pytest.raises(LeaderboardRunError, match=r"leaderboard_evaluator\.py does not exist"):
        LeaderboardPaths.resolve(LeaderboardConfig(bench2drive_root=str(tmp_path)), tmp_path)


def test_results_are_judged_by_the_route_status(tmp_path):
    log = tmp_path / "evaluator.log"
    log.write_text("Traceback ...\nRuntimeError: agent exploded\n")
    ok = write_results(tmp_path / "ok.json", [record("7")])
    assert judge_results(ok, "7", 0, log).status == "Completed"
    crashed = write_results(tmp_path / "crash.json", [record("7", CRASHED, 30.0)])
    with pytest.raises(ServerCrashedError, match="simulation crashed during route 7"):
        judge_results(crashed, "7", 0, log)
    agent = write_results(tmp_path / "agent.json", [record("7", "Failed - Agent crashed", 0.0)])
    with pytest.raises(LeaderboardRunError, match=r"agent failed on route 7(.|\n)*agent exploded"):
        judge_results(agent, "7", 0, log)
    with pytest.raises(
        LeaderboardRunError, match=r"exited with code 1 and no usable results(.|\n)*agent exploded"
    ):
        judge_results(tmp_path / "missing.json", "7", 1, log)
    with pytest.raises(ServerCrashedError, match="killed"):
        judge_results(tmp_path / "missing.json", "7", -9, log)


class FakeServer:
    host, port, tm_port = "127.0.0.1", 2000, 8000

    def __init__(self, alive: bool = True) -> None:
        self._alive = alive

    def alive(self) -> bool:
        return self._alive

    def describe(self) -> str:
        return "fake server"


def fake_evaluator(status: str):
    """A subprocess.run stand-in: what Bench2Drive's evaluator + our agent leave behind for a route."""

    def run(command, **kwargs):
        args = dict(a[2:].split("=", 1) for a in command[2:] if a.startswith("--") and "=" in a)
        agent = load_agent_config(args["agent-config"])
        assert agent.route_id == args["routes-subset"] and agent.episode_outbox
        write_bundle(bundle(agent.route_id), agent.episode_outbox)
        write_results(
            args["checkpoint"], [record(agent.route_id, status, 100.0 if status == "Completed" else 30.0)]
        )
        kwargs["stdout"].write(b"route done\n")
        return subprocess.CompletedProcess(command, 0)

    return run


def open_store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'takeover.db'}", str(tmp_path / "clips"))


def test_a_finished_route_stores_the_episode_with_the_leaderboards_scores(paths, tmp_path):
    with open_store(tmp_path) as store:
        result = run_leaderboard_route(
            tmp_path / "routes.xml", "7", FakeServer(), AgentConfig(), config=LeaderboardConfig(), paths=paths,
            out_dir=tmp_path / "out", store=store, runner=fake_evaluator("Completed"),
        )  # fmt: skip
        stats = store.stats()
        with Session(store.engine) as session:
            (status, score, scores) = session.execute(
                select(Episode.status, Episode.driving_score, Episode.scores)
            ).one()
    assert result.record.status == "Completed" and result.episode_id is not None
    # the leaderboard's verdict replaces the agent's own (kept for comparison)
    assert status == "Completed" and score == pytest.approx(100.0) and scores["agent_driving_score"] == 40.0
    assert stats.rows["episodes"] == 1 and stats.rows["takeovers"] == 1
    assert "route done" in result.log_path.read_text()


def test_a_crashed_route_stores_nothing_and_asks_for_a_retry(paths, tmp_path):
    with open_store(tmp_path) as store:
        with pytest.raises(ServerCrashedError):
            run_leaderboard_route(
                tmp_path / "routes.xml", "7", FakeServer(), AgentConfig(), config=LeaderboardConfig(), paths=paths,
                out_dir=tmp_path / "out", store=store, runner=fake_evaluator(CRASHED),
            )  # fmt: skip
        with pytest.raises(ServerCrashedError, match="died during route 7"):
            run_leaderboard_route(
                tmp_path / "routes.xml", "7", FakeServer(alive=False), AgentConfig(), config=LeaderboardConfig(),
                paths=paths, out_dir=tmp_path / "out", store=store, runner=fake_evaluator("Completed"),
            )  # fmt: skip
        assert store.stats().rows["episodes"] == 0


def test_routes_on_a_pool_are_retried_after_a_crash_and_stored_once(paths, tmp_path, carla_root):  # noqa: F811
    # given a pool of two fake servers and an evaluator whose first run of route "b" crashes
    tries: dict[str, int] = {}

    def runner(command, **kwargs):
        route_id = next(a.split("=", 1)[1] for a in command if a.startswith("--routes-subset="))
        tries[route_id] = tries.get(route_id, 0) + 1
        status = CRASHED if route_id == "b" and tries[route_id] == 1 else "Completed"
        return fake_evaluator(status)(command, **kwargs)

    cfg = server_config(carla_root, tmp_path, gpus=(0, 1))
    with open_store(tmp_path) as store, CarlaServerPool(cfg) as pool:
        # when three routes run
        results = run_leaderboard_routes(
            tmp_path / "routes.xml", ["a", "b", "c"], pool, AgentConfig(), config=LeaderboardConfig(),
            paths=paths, out_dir=tmp_path / "out", store=store, runner=runner,
        )  # fmt: skip
        # then every route has its record, "b" after a restart, and each episode is stored once
        assert [r.route_id for r in results] == ["a", "b", "c"]
        assert tries == {"a": 1, "b": 2, "c": 1}
        assert sum(s.starts for s in pool.servers) == 3
        assert store.stats().rows["episodes"] == 3


def test_bundles_are_written_whole(tmp_path):
    path = write_bundle(bundle("9"), tmp_path / "outbox")
    assert path.name == "9_rep0.episode.pkl"
    ((_, read),) = read_bundles(tmp_path / "outbox")
    assert read.episode == bundle("9").episode
    assert not list((tmp_path / "outbox").glob(".tmp-*"))
