"""The Bench2Drive leaderboard agent, driven by the embedded simulator the way the evaluator drives it:
leaderboard input_data (speed, IMU, GNSS), the global plan in GPS and world coordinates, real
carla.VehicleControl back; its episode and takeovers stored, or not stored when the route broke off."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from carla_bridge.bev import BevConfig
from carla_bridge.carla_client.config import AgentConfig, write_agent_config
from carla_bridge.carla_client.episode_outbox import read_bundles
from carla_bridge.carla_client.leaderboard_harness import drive_agent_on_embedded
from carla_bridge.carla_client.leaderboard_io import (
    AgentInputError,
    compass_from_yaw,
    decode_input_data,
    ego_from_sensors,
    encode_input_data,
    global_plan,
    route_from_global_plan,
    yaw_from_compass,
)
from carla_bridge.carla_client.world_sources import EmbeddedSource
from carla_bridge.config import load_config
from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.errors import SimulatorError
from carla_bridge.geo import geo_reference
from carla_bridge.leaderboard_agent import TakeoverAgent, get_entry_point
from carla_bridge.maps import MapLibrary
from carla_bridge.route_planner import plan_route
from carla_bridge.route_sets import load_route_set
from carla_bridge.snapshot import Control, EgoState, Pose
from storage import Store
from takeover.policy import HybridPolicy, PolicyConfig
from takeover.policy.config import ModelConfig

LEADERBOARD_AGENT = Path(__file__).resolve().parents[1] / "carla_bridge" / "leaderboard_agent.py"


@pytest.fixture(scope="module")
def maps() -> MapLibrary:
    return MapLibrary()


@pytest.fixture(scope="module")
def cmap(maps):
    return maps.load("Takeover01")


@pytest.fixture
def route(cmap):
    route = load_route_set("builtin:eval")[0]
    route.dense = plan_route(route, cmap)
    return route


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small untrained policy: it drives badly, so the monitor takes over."""
    torch.manual_seed(0)
    config = PolicyConfig(
        bev=BevConfig(size_px=32, ego_forward_offset_m=4.0, channels=["drivable", "route", "vehicles"]),
        model=ModelConfig(
            encoder_channels=[8, 16], feature_dim=32, measurement_dim=16, fused_dim=32, gru_hidden=16
        ),
        device="cpu",
    )
    path = tmp_path_factory.mktemp("policy") / "policy.pt"
    HybridPolicy(config).save(path)
    return path


def agent_yaml(tmp_path: Path, checkpoint: Path, **fields) -> Path:
    config = AgentConfig(
        **{"policy": f"policy:{checkpoint}", "ego_source": "sensors", "run": "lb-test", **fields}
    )
    config.store.db_url = f"sqlite:///{tmp_path / 'takeover.db'}"
    config.store.clip_root = str(tmp_path / "clips")
    config.metric_info_dir = str(tmp_path / "save")
    return write_agent_config(config, tmp_path / "agent.yaml")


def rows(tmp_path: Path) -> dict[str, int]:
    with Store(f"sqlite:///{tmp_path / 'takeover.db'}", str(tmp_path / "clips")) as store:
        return store.stats().rows


# ------------------------------------------------------------------------------------ input data
def test_compass_convention_north_is_minus_y():
    assert compass_from_yaw(0.0) == pytest.approx(math.pi / 2)  # heading +x (east)
    assert compass_from_yaw(-math.pi / 2) == pytest.approx(0.0)  # heading -y (north)
    for yaw in (-3.0, -1.0, 0.0, 0.5, 3.1):
        assert yaw_from_compass(compass_from_yaw(yaw)) == pytest.approx(yaw)


def test_ego_from_sensors_recovers_the_ego_the_sensors_saw(cmap):
    # given an ego and what the leaderboard's speedometer, IMU and GNSS report for it
    lat_ref, lon_ref = geo_reference(cmap.to_opendrive())
    ego = EgoState(
        pose=Pose(212.3, -198.7, 0.4, 2.2),
        velocity=np.array([6.0 * math.cos(2.2), 6.0 * math.sin(2.2)]),
        speed=6.0,
        acceleration=np.array([0.7, -1.1]),
        yaw_rate=0.12,
        extent=np.array([2.44, 1.06, 0.76]),
        control=Control(throttle=0.3),
    )
    data = encode_input_data(ego, 17, lat_ref, lon_ref, {"rgb_front": (64, 32)})
    assert data["rgb_front"][1].shape == (32, 64, 4) and data["imu"][1].shape == (7,)
    # when the agent decodes them
    inputs = decode_input_data(data, ["rgb_front"])
    back = ego_from_sensors(inputs, lat_ref, lon_ref, ego.extent, ego.type_id, ego.control, fallback_yaw=0.0)
    # then position (through lat/lon), heading, speed, acceleration and yaw rate come back
    assert inputs.frame == 17
    assert back.pose.x == pytest.approx(ego.pose.x, abs=1e-6) and back.pose.y == pytest.approx(
        ego.pose.y, abs=1e-6
    )
    assert back.pose.yaw == pytest.approx(ego.pose.yaw) and back.speed == 6.0
    np.testing.assert_allclose(back.velocity, ego.velocity, atol=1e-9)
    np.testing.assert_allclose(back.acceleration, ego.acceleration, atol=1e-9)
    assert back.yaw_rate == pytest.approx(0.12)


def test_nan_compass_falls_back_to_the_last_heading(cmap):
    lat_ref, lon_ref = geo_reference(cmap.to_opendrive())
    data = {
        "speed": (0, {"speed": 0.0}),
        "imu": (0, np.r_[np.zeros(6), np.nan]),
        "gps": (0, np.array([42.0, 2.0, 0.0])),
    }
    back = ego_from_sensors(
        decode_input_data(data), lat_ref, lon_ref, np.ones(3), "v", Control(), fallback_yaw=1.25
    )
    assert back.pose.yaw == 1.25


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"imu": (0, np.zeros(7)), "gps": (0, np.zeros(3))}, "no 'speed'"),
        ({"speed": (0, {"speed": 1.0}), "imu": (0, np.zeros(5)), "gps": (0, np.zeros(3))}, "7 numbers"),
        (
            {"speed": (0, {"speed": 1.0}), "imu": (0, np.zeros(7)), "gps": (0, np.array([np.nan, 0, 0]))},
            "finite",
        ),
        ({"speed": (0, 3.0), "imu": (0, np.zeros(7)), "gps": (0, np.zeros(3))}, "'speed': m/s"),
    ],
)
def test_bad_input_data_names_the_sensor(data, match):
    with pytest.raises(AgentInputError, match=match):
        decode_input_data(data)


def test_route_from_the_global_plan_matches_the_planned_route(cmap, route):
    # given the leaderboard's global plan of a planned route
    lat_ref, lon_ref = geo_reference(cmap.to_opendrive())
    gps, world = global_plan(route.dense, lat_ref, lon_ref)
    assert len(gps) == len(world) == len(route.dense)
    assert set(gps[0][0]) == {"lat", "lon", "z"}
    # when the agent rebuilds its route from the world plan
    rebuilt = route_from_global_plan(world, cmap, route.id, route.town)
    d, r = route.dense, rebuilt.dense
    # then points, headings, commands, lanes and speed limits agree with the planner's
    np.testing.assert_allclose(r.xyz, d.xyz, atol=1e-4)
    np.testing.assert_allclose(np.cos(r.yaw - d.yaw), 1.0, atol=1e-6)
    assert (r.commands == d.commands).all()
    np.testing.assert_allclose(r.s, d.s, atol=0.05)  # chords of the 1 m points vs arc length
    assert (r.lane_id == d.lane_id).mean() > 0.95 and (r.in_junction == d.in_junction).mean() > 0.95
    assert np.isclose(r.speed_limit, d.speed_limit, atol=0.01).mean() > 0.9


# ------------------------------------------------------------------------------------ the agent
def test_entry_point_loads_like_the_evaluator_loads_it(tmp_path):
    # the evaluator puts the agent's folder first on sys.path and imports the file by its name
    code = (
        "import importlib, sys; sys.path.insert(0, sys.argv[1]); m = importlib.import_module('leaderboard_agent'); "
        "cls = getattr(m, m.get_entry_point()); a = cls('127.0.0.1', 2000, False); print(type(a).__name__, a.track)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(LEADERBOARD_AGENT.parent)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [get_entry_point(), "SENSORS"]


def test_agent_drives_on_leaderboard_input_and_stores_its_episode(tmp_path, maps, route, checkpoint):
    # given the agent set up from a config file, as the evaluator does
    sim = EmbeddedSimulator(load_config(SimConfig, "sim"), maps)
    agent = TakeoverAgent("127.0.0.1", 2000)
    # when the embedded simulator feeds it 20 ticks of input_data
    outcome = drive_agent_on_embedded(
        agent, sim, route, 0, agent_yaml(tmp_path, checkpoint, route_id=route.id), max_ticks=20
    )
    # then every tick returned a carla.VehicleControl (the harness refuses anything else) that moved the ego
    assert outcome.ticks == 20 and outcome.last.ego.pose.xy.tolist() != route.dense.xyz[0, :2].tolist()
    # the episode ran through run_episode with the agent's route and was stored
    result = agent.result
    assert (
        result.n_ticks == 20
        and result.episode.backend == "carla"
        and result.episode.route.route_id == route.id
    )
    assert agent.stored is not None and rows(tmp_path)["episodes"] == 1
    # Bench2Drive's per-step metric info
    info = json.loads((tmp_path / "save" / f"RouteScenario_{route.id}_rep0" / "metric_info.json").read_text())
    assert len(info) == 20 and set(info["0"]) >= {
        "acceleration",
        "angular_velocity",
        "forward_vector",
        "location",
    }


@pytest.mark.slow
def test_agent_runs_a_whole_route_and_its_takeovers_land_in_the_database(tmp_path, maps, route, checkpoint):
    sim = EmbeddedSimulator(load_config(SimConfig, "sim"), maps)
    agent = TakeoverAgent()
    outcome = drive_agent_on_embedded(
        agent, sim, route, 0, agent_yaml(tmp_path, checkpoint, route_id=route.id)
    )
    assert outcome.route_done  # the simulator's scoring ended the route
    assert agent.result.n_ticks == outcome.ticks and agent.result.takeovers
    stored = rows(tmp_path)
    assert stored["episodes"] == 1
    assert stored["takeovers"] == len(agent.result.takeovers) >= 1
    assert stored["clips"] >= 1 and stored["frames"] > 0


class BreakingSource(EmbeddedSource):
    """The world stops answering at tick `at` (a server crash)."""

    def __init__(self, sim, at: int, in_snapshot: bool) -> None:
        super().__init__(sim)
        self.at, self.in_snapshot, self.calls = at, in_snapshot, 0

    def snapshot(self, frame, time_s, control):
        self.calls += 1
        if self.in_snapshot and self.calls > self.at:
            raise SimulatorError("the CARLA world stopped answering")
        return super().snapshot(frame, time_s, control)

    def alive(self) -> bool:
        return self.calls <= self.at


@pytest.mark.parametrize("in_snapshot", [True, False])
def test_a_route_that_breaks_off_stores_no_episode(tmp_path, maps, route, checkpoint, in_snapshot):
    # given a world that dies after 15 ticks: during a tick, or after the last one the agent saw
    sim = EmbeddedSimulator(load_config(SimConfig, "sim"), maps)
    agent = TakeoverAgent()
    source = BreakingSource(sim, 15, in_snapshot)
    config = agent_yaml(tmp_path, checkpoint, route_id=route.id)
    if in_snapshot:
        with pytest.raises(SimulatorError, match="stopped answering"):
            drive_agent_on_embedded(agent, sim, route, 0, config, max_ticks=30, source=source)
    else:
        drive_agent_on_embedded(agent, sim, route, 0, config, max_ticks=16, source=source)
    # then nothing reaches the database
    assert agent.stored is None and rows(tmp_path)["episodes"] == 0


def test_outbox_mode_leaves_the_episode_for_the_launcher(tmp_path, maps, route, checkpoint):
    sim = EmbeddedSimulator(load_config(SimConfig, "sim"), maps)
    agent = TakeoverAgent()
    config = agent_yaml(tmp_path, checkpoint, route_id=route.id, episode_outbox=str(tmp_path / "outbox"))
    drive_agent_on_embedded(agent, sim, route, 0, config, max_ticks=20)
    ((path, bundle),) = read_bundles(tmp_path / "outbox")
    assert (
        agent.stored == path and bundle.episode.n_frames == 20 and bundle.checkpoint_path == str(checkpoint)
    )
    assert not (tmp_path / "takeover.db").exists()


def test_takeover_mode_without_a_policy_is_a_clear_error(tmp_path, maps, route):
    sim = EmbeddedSimulator(load_config(SimConfig, "sim"), maps)
    config = write_agent_config(AgentConfig(policy=""), tmp_path / "agent.yaml")
    with pytest.raises(Exception, match="needs a policy checkpoint"):
        drive_agent_on_embedded(TakeoverAgent(), sim, route, 0, config, max_ticks=2)


@pytest.mark.parametrize(("ego_source", "deviates"), [("privileged", False), ("sensors", True)])
def test_ego_source_decides_whether_gnss_is_believed(tmp_path, maps, route, checkpoint, ego_source, deviates):
    # given GNSS readings 1.1 km north of the truth
    sim = EmbeddedSimulator(load_config(SimConfig, "sim"), maps)
    agent = TakeoverAgent()
    original = agent._run_step

    def lying_gnss(input_data, timestamp):
        frame, gps = input_data["gps"]
        return original({**input_data, "gps": (frame, gps + np.array([0.01, 0.0, 0.0]))}, timestamp)

    agent._run_step = lying_gnss
    config = agent_yaml(tmp_path, checkpoint, route_id=route.id, ego_source=ego_source, record=False)
    # when the agent drives a few ticks
    drive_agent_on_embedded(agent, sim, route, 0, config, max_ticks=5)
    # then only the sensor-based ego believes it left the route (the privileged one reads the hero actor)
    kinds = {i["kind"] for i in agent.result.episode.infractions}
    assert ("route_deviation" in kinds) == deviates
    assert agent.stored is None  # record: false


def test_the_agent_decides_every_tick_on_the_evaluators_thread(
    tmp_path, maps, route, checkpoint, monkeypatch
):
    # Given a policy that notes the thread it is asked on, and the threads alive before the route
    asked_on: list[threading.Thread] = []
    act = HybridPolicy.act

    def noting_act(self, snapshot):
        asked_on.append(threading.current_thread())
        return act(self, snapshot)

    monkeypatch.setattr(HybridPolicy, "act", noting_act)
    before = set(threading.enumerate())
    sim = EmbeddedSimulator(load_config(SimConfig, "sim"), maps)
    agent = TakeoverAgent()
    config = agent_yaml(tmp_path, checkpoint, route_id=route.id, record=False)
    # When the evaluator drives it for 10 ticks
    drive_agent_on_embedded(agent, sim, route, 0, config, max_ticks=10)
    # Then every tick was decided on the evaluator's own thread, and no thread was left behind
    assert len(asked_on) == 10 and set(asked_on) == {threading.current_thread()}
    assert set(threading.enumerate()) == before
    assert agent.result.n_ticks == 10


def test_a_route_ended_before_its_first_tick_stores_nothing(tmp_path, maps, route, checkpoint):
    sim = EmbeddedSimulator(load_config(SimConfig, "sim"), maps)
    agent = TakeoverAgent()
    drive_agent_on_embedded(
        agent, sim, route, 0, agent_yaml(tmp_path, checkpoint, route_id=route.id), max_ticks=0
    )
    assert agent.result is None and agent.stored is None
    assert not (tmp_path / "takeover.db").exists()


def test_a_policy_failing_mid_route_stores_no_half_episode(tmp_path, maps, route, checkpoint, monkeypatch):
    # Given a policy that raises on its 6th tick
    act = HybridPolicy.act
    calls = {"n": 0}

    def failing_act(self, snapshot):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("policy exploded")
        return act(self, snapshot)

    monkeypatch.setattr(HybridPolicy, "act", failing_act)
    sim = EmbeddedSimulator(load_config(SimConfig, "sim"), maps)
    agent = TakeoverAgent()
    config = agent_yaml(tmp_path, checkpoint, route_id=route.id, episode_outbox=str(tmp_path / "outbox"))
    # When the evaluator drives it: the tick's error reaches the evaluator (and destroy adds no other)
    with pytest.raises(RuntimeError, match="policy exploded"):
        drive_agent_on_embedded(agent, sim, route, 0, config, max_ticks=20)
    # Then neither the outbox nor the database holds the episode
    assert agent.stored is None and read_bundles(tmp_path / "outbox") == []
    assert not (tmp_path / "takeover.db").exists()
