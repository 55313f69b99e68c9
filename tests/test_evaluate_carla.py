"""Backend "carla": one leaderboard run per route on a server pool, with run_leaderboard_routes and the
pool replaced by stand-ins (no CARLA server exists here). The stand-in stores what the agent would."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from carla_bridge.carla_client import leaderboard, server
from carla_bridge.carla_client.errors import RouteRetriesExhaustedError
from carla_bridge.route_sets import load_route_set
from storage.records import EpisodeRecord, RouteRecord, TakeoverRecord
from storage.store import Store
from takeover.evaluate import CarlaRun, EvalConfig, episode_failures, evaluate_checkpoint, single_route_file
from takeover.iteration import collect_episodes

CRASHING_ROUTE = "2004"


@dataclass
class FakePool:
    config: Any
    host: str
    managed: bool
    entered: int = 0

    def __enter__(self) -> FakePool:
        self.entered += 1
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


@dataclass
class FakeLeaderboard:
    """Stores one episode per route like the agent + launcher do; CRASHING_ROUTE exhausts its retries."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    pools: list[FakePool] = field(default_factory=list)

    def pool(self, config, *, host: str, managed: bool) -> FakePool:
        self.pools.append(FakePool(config, host, managed))
        return self.pools[-1]

    def run_routes(self, route_file, route_ids, pool, agent, *, config, paths, out_dir, store, seed, **_kw):
        self.calls.append({"route_file": str(route_file), "route_ids": list(route_ids), "agent": agent,
                           "seed": seed, "pool": pool, "b2d": paths.bench2drive_root})  # fmt: skip
        results = []
        for route_id in route_ids:
            if route_id == CRASHING_ROUTE:
                results.append(RouteRetriesExhaustedError(f"route {route_id} failed 3 time(s)"))
                continue
            takeovers = [
                TakeoverRecord(frame=10, time_s=0.5, x_m=0.0, y_m=0.0, speed_mps=5.0, reason="stuck")
            ]
            episode = EpisodeRecord(
                run=agent.run, route=RouteRecord(route_id, "Takeover01", agent.route_set), backend=agent.backend,
                seed=seed, distance_m=250.0, duration_s=30.0, n_frames=600,
                iteration=None if agent.iteration < 0 else agent.iteration,
                checkpoint_sha256=_sha_of(agent.policy), phase=agent.phase, driving_score=70.0,
                route_completion=100.0, infraction_penalty=0.7, success=False,
            )  # fmt: skip
            store.ingest_episode(episode, takeovers if agent.mode == "takeover" else [], [])
            results.append(object())
        return results


def _sha_of(policy_spec: str) -> str:
    from takeover.policy import file_sha256

    return file_sha256(policy_spec.removeprefix("policy:"))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeLeaderboard:
    b2d = tmp_path / "Bench2Drive"
    evaluator = b2d / "leaderboard" / "leaderboard" / "leaderboard_evaluator.py"
    evaluator.parent.mkdir(parents=True)
    evaluator.write_text("# stand-in\n")
    monkeypatch.setenv("BENCH2DRIVE_ROOT", str(b2d))
    monkeypatch.setenv("CARLA_ROOT", str(tmp_path / "carla"))
    monkeypatch.delenv("TAKEOVER_CARLA_OVERRIDES", raising=False)
    f = FakeLeaderboard()
    monkeypatch.setattr(server, "CarlaServerPool", f.pool)
    monkeypatch.setattr(leaderboard, "run_leaderboard_routes", f.run_routes)
    return f


@pytest.fixture
def store(tmp_path: Path):
    with Store(f"sqlite:///{tmp_path / 'carla.db'}", str(tmp_path / "clips")) as s:
        yield s


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "policy.pt"
    path.write_bytes(b"weights")  # the stand-in leaderboard never loads it
    return path


def test_evaluation_runs_one_leaderboard_run_per_route_and_records_the_crashed_one(
    fake: FakeLeaderboard, store: Store, checkpoint: Path, tmp_path: Path
):
    # given three held-out routes, one of which crashes its server every time
    routes = load_route_set("builtin:eval", ["2002", CRASHING_ROUTE, "2009"])
    carla = CarlaRun(str(single_route_file("builtin:eval")), ("server.gpus=[0,1]",), managed=False,
                     out_dir=str(tmp_path / "lb"))  # fmt: skip
    # when it is evaluated on backend carla
    result = evaluate_checkpoint(checkpoint, routes, [0], store, "c", 1, config=EvalConfig(seeds=[0]),
                                 backend="carla", carla=carla, progress=False)  # fmt: skip
    # then one pool (external servers, two GPUs) served one fan-out per mode, every route in it
    assert [p.managed for p in fake.pools] == [False]
    assert fake.pools[0].config.gpus == [0, 1]
    assert [(c["agent"].mode, c["agent"].phase) for c in fake.calls] == [
        ("policy", "eval"),
        ("takeover", "eval_takeover"),
    ]
    assert all(c["route_ids"] == ["2002", CRASHING_ROUTE, "2009"] for c in fake.calls)
    assert fake.calls[0]["agent"].policy == f"policy:{checkpoint.resolve()}"
    assert fake.calls[0]["route_file"].endswith("builtin_eval.xml")
    # and the scores come from the stored episodes; the crashed route is a recorded failure
    assert [e.route_id for e in result.episodes] == ["2002", "2009"]
    assert result.backend == "carla" and result.driving_score == pytest.approx(70.0)
    assert result.disengagements_per_km == pytest.approx(2 / 0.5)
    assert {(f.route_id, f.phase) for f in result.failures} == {
        (CRASHING_ROUTE, "eval"),
        (CRASHING_ROUTE, "eval_takeover"),
    }
    assert {f.route_id for f in episode_failures(store, "c", 1)} == {CRASHING_ROUTE}
    # when it runs again, only the crashed route goes back to the leaderboard
    evaluate_checkpoint(checkpoint, routes, [0], store, "c", 1, config=EvalConfig(seeds=[0]), backend="carla",
                        carla=carla, progress=False)  # fmt: skip
    assert [c["route_ids"] for c in fake.calls[2:]] == [[CRASHING_ROUTE], [CRASHING_ROUTE]]


def test_takeover_collection_on_carla_stores_rollouts(fake: FakeLeaderboard, store: Store, checkpoint: Path):
    outcome = collect_episodes("takeover", "builtin:train", [0, 1], store, "c", 2, route_ids=["1000", "1001"],
                               checkpoint=str(checkpoint), backend="carla", progress=False)  # fmt: skip
    assert [(c["agent"].mode, c["agent"].phase, c["seed"], c["agent"].iteration) for c in fake.calls] == [
        ("takeover", "rollout", 0, 2), ("takeover", "rollout", 1, 2)]  # fmt: skip
    assert len(outcome.episodes) == 4 and outcome.takeovers == 4 and not outcome.failures
    assert fake.pools[0].managed is True
