"""Episode modes (demonstrations, pure policy evaluation), their configs, and collection into storage.

Closed-loop runs use the built-in Takeover01 town and routes (shipped with the project) with
background traffic off, cut short with `max_time_s`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import text

from carla_bridge.config import load_config
from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.maps import MapLibrary
from carla_bridge.route_planner import prepare_routes
from carla_bridge.route_sets import load_route_set
from carla_bridge.snapshot import Control
from experts.expert import PDMLiteExpert
from storage.clip_format import DRIVER_EXPERT, validate_clip_arrays
from storage.records import EXPERT_DISTANCE_KEY
from storage.store import Store
from takeover.cli import main
from takeover.clips import ClipPhase
from takeover.collect import CollectError, collect_demos, collect_takeovers, make_setup
from takeover.episode import (
    DEMO_CLIP_KIND,
    EpisodeConfig,
    EpisodeError,
    EpisodeTags,
    load_episode_config,
    run_episode,
)
from takeover.monitor import MonitorConfig, TakeoverMonitor
from takeover.policy import HybridPolicy, load_policy_config

ROUTE = "1008"  # a straight road of the built-in train set
NO_TRAFFIC = ["traffic.enabled=false", "walkers.enabled=false"]


@pytest.fixture(scope="module")
def maps() -> MapLibrary:
    return MapLibrary()


@pytest.fixture(scope="module")
def route(maps):
    return prepare_routes(load_route_set("builtin:train", [ROUTE]), maps)[0]


@pytest.fixture(scope="module")
def sim(maps) -> EmbeddedSimulator:
    return EmbeddedSimulator(load_config(SimConfig, "sim", NO_TRAFFIC), maps)


@pytest.fixture(scope="module")
def policy_config():
    return load_policy_config(["device=cpu"])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The untrained policy's forward pass on one thread: the test machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, policy_config) -> Path:
    """An untrained policy saved like a trained one."""
    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    torch.manual_seed(0)
    HybridPolicy(policy_config).save(path)
    return path


def test_demonstrations_store_strided_expert_frames_with_training_keys(sim, route, policy_config) -> None:
    # Given an expert-only episode of 6 s keeping every 5th tick in clips of at most 10 frames
    config = EpisodeConfig(mode="expert", max_time_s=6.0, demo_stride=5, demo_clip_frames=10)
    result = run_episode(sim, route, 0, None, PDMLiteExpert(), None, config, feature_config=policy_config,
                         tags=EpisodeTags(run="demo-test"))  # fmt: skip
    # Then 120 ticks give 24 frames in clips of 10, 10 and 4, all driven by the expert
    assert result.n_ticks == 120 and result.expert_ticks == 120 and not result.takeovers
    assert [c.arrays["frame"].shape[0] for c in result.clips] == [10, 10, 4]
    frames = np.concatenate([c.arrays["frame"] for c in result.clips])
    np.testing.assert_array_equal(frames, np.arange(0, 120, 5))
    k = policy_config.model.num_waypoints
    bev = policy_config.bev
    for clip in result.clips:
        arrays = clip.arrays
        t = validate_clip_arrays(arrays)
        assert clip.kind == DEMO_CLIP_KIND and clip.start_frame == arrays["frame"][0]
        assert (arrays["driver"] == DRIVER_EXPERT).all() and (
            arrays["phase"] == ClipPhase.DEMONSTRATION
        ).all()
        assert arrays["feat_bev"].shape == (t, len(bev.channels), bev.size_px, bev.size_px)
        assert arrays["feat_bev"].dtype == np.uint8
        assert arrays["expert_waypoints_ego"].shape == (t, k, 2)
        assert arrays["expert_speeds"].shape == (t, k) and arrays["expert_control"].shape == (t, 3)
        assert "policy_plan" not in arrays and "policy_control" not in arrays
    # And the expert drives forward along the road: its waypoints lie ahead of the ego
    late = result.clips[1].arrays["expert_waypoints_ego"]
    assert (late[:, -1, 0] > 5.0).all() and (np.abs(late[:, :, 1]) < 1.0).all()
    assert result.episode.phase == "expert" and result.episode.checkpoint_sha256 is None
    assert result.distance_m > 20.0
    # and every metre of it is the expert's
    assert result.expert_distance_m == result.distance_m
    assert result.episode.scores[EXPERT_DISTANCE_KEY] == result.distance_m


class Reckless:
    """Full throttle straight ahead, plan at 15 m/s: a policy for evaluation runs."""

    name = "reckless"

    def reset(self, route, cmap, seed: int = 0) -> None:
        pass

    def act(self, snap):
        from carla_bridge.geometry import world_to_ego
        from takeover.policy.protocol import PolicyPlan

        times = 0.5 * np.arange(1, 9)
        ego = np.stack([15.0 * times, np.zeros(8)], axis=1)
        pose = snap.ego.pose
        xy = np.stack([pose.x + np.cos(pose.yaw) * ego[:, 0], pose.y + np.sin(pose.yaw) * ego[:, 0]], axis=1)
        c = Control(throttle=1.0)
        return c, PolicyPlan(times, xy, world_to_ego(xy, pose), np.full(8, 15.0), c, c, c, False, 0.0,
                             np.ones((8, 2)))  # fmt: skip


def test_policy_mode_drives_without_expert_or_takeovers(sim, route) -> None:
    config = EpisodeConfig(mode="policy", max_time_s=4.0)
    result = run_episode(sim, route, 0, Reckless(), None, None, config)
    assert result.expert_ticks == 0 and not result.takeovers and not result.clips
    assert result.expert_distance_m == 0.0 and result.distance_m > 0.0
    assert result.episode.phase == "eval"
    assert result.episode.n_frames == 80 and result.sim_time_s == pytest.approx(4.0)
    # Full throttle for 4 s from standstill covers about a_max t^2 / 2 (a_max 3.5 m/s^2, minus drag)
    assert 15.0 < result.distance_m < 28.0
    assert result.record.route_id == route.name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "takeover", "monitor": None}, "TakeoverMonitor"),
        ({"mode": "takeover", "policy": None}, "needs a policy"),
        ({"mode": "expert", "expert": None}, "needs an expert"),
        ({"mode": "drive"}, "unknown"),
        ({"mode": "takeover", "max_clip_s": 2.0}, "max_clip_s"),
        ({"mode": "expert", "demo_stride": 0}, "demo_stride"),
    ],
)
def test_misconfigured_episodes_fail_before_driving(sim, route, kwargs: dict, message: str) -> None:
    parts = {"policy": Reckless(), "expert": PDMLiteExpert(), "monitor": TakeoverMonitor(MonitorConfig())}
    for name in ("policy", "expert", "monitor"):
        if name in kwargs:
            parts[name] = kwargs.pop(name)
    with pytest.raises(EpisodeError, match=message):
        run_episode(
            sim, route, 0, parts["policy"], parts["expert"], parts["monitor"], EpisodeConfig(**kwargs)
        )


def test_conf_episode_yaml_matches_the_schema_defaults() -> None:
    assert load_episode_config() == EpisodeConfig()


def test_collect_demos_and_takeovers_into_one_store(tmp_path: Path, maps, checkpoint: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 't.db'}", str(tmp_path / "clips"))
    overrides = {"sim": NO_TRAFFIC, "episode": ["max_time_s=3"]}
    routes = load_route_set("builtin:train", [ROUTE])
    with store:
        demos = collect_demos(routes, [0, 1], store, "exp", route_set="builtin:train", maps=maps,
                              overrides=overrides, progress=False)  # fmt: skip
        longer = {"sim": NO_TRAFFIC, "episode": ["max_time_s=4"]}
        rollouts = collect_takeovers(routes, [0], checkpoint, store, "exp", 0, route_set="builtin:train",
                                     maps=maps, overrides=longer, progress=False)  # fmt: skip
        with store.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT phase, seed, checkpoint_id IS NOT NULL FROM episodes ORDER BY id")
            ).all()
            taken = conn.execute(text("SELECT count(*) FROM disengagements WHERE run = 'exp'")).scalar_one()
    assert [(e.route_id, e.seed) for e in demos.episodes] == [(ROUTE, 0), (ROUTE, 1)]
    assert all(e.expert_share == 1.0 and e.takeovers == {} and e.clips == 1 for e in demos.episodes)
    assert [tuple(r) for r in rows] == [("expert", 0, 0), ("expert", 1, 0), ("rollout", 0, 1)]
    # The untrained policy stands still: after stuck_time_s = 3 s the expert takes over
    assert rollouts.takeovers_by_reason == {"stuck": 1} and taken == 1
    assert rollouts.episodes[0].episode_id == 3 and rollouts.episodes[0].clips == 1


def test_collect_refuses_a_missing_checkpoint_and_unknown_sections(tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="does not exist"):
        make_setup("takeover", checkpoint=tmp_path / "nope.pt")
    with pytest.raises(CollectError, match="--checkpoint"):
        make_setup("takeover")
    with pytest.raises(CollectError, match="unknown config section"):
        make_setup("expert", overrides={"simulator": ["x=1"]})


def test_cli_collects_demos_and_prints_a_table(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    code = main(["collect", "demos", "--routes", "builtin:train", "--route-ids", ROUTE, "--seeds", "3",
                 "--db", db, "--clips", str(tmp_path / "clips"), "--run", "cli", "--no-progress", "--json",
                 "--set", "episode.max_time_s=2", *[f"sim.{o}" for o in NO_TRAFFIC]])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "expert" and report["episodes"][0]["seed"] == 3
    assert report["episodes"][0]["route_id"] == ROUTE and report["takeovers_by_reason"] == {}
    with Store(db, str(tmp_path / "clips")) as store:
        assert store.stats().rows["episodes"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "planner.x=1"], "unknown section"),
        (["--set", "episode.max_time_s"], "SECTION.KEY=VALUE"),
        (["--set", "episode.no_such_key=1"], "no_such_key"),
        (["--route-ids", "9999"], "no route with id 9999"),
    ],
)
def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    code = main(
        ["collect", "demos", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--clips", str(tmp_path), *args]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
