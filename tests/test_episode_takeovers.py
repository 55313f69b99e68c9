"""Closed loop: a scripted policy makes one mistake, the shadow expert takes over and hands back.

Each scripted policy is the PDM-Lite expert with one blind spot (it ignores red lights, stop signs
or other actors), or one fault (it steers off, stands still, or plans away from where it drives), so
it agrees with the shadow expert everywhere except at its mistake. They drive built-in routes of the
Takeover01 town in the embedded simulator (background traffic off, so every run is the same), cut
to the stretch around the situation.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from carla_bridge.config import load_config
from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.geometry import world_to_ego
from carla_bridge.maps import MapLibrary
from carla_bridge.route import DenseRoute, Route
from carla_bridge.route_planner import prepare_routes
from carla_bridge.route_sets import load_route_set
from carla_bridge.snapshot import ActorTable, Control, TrafficLightState, WorldSnapshot
from experts.expert import PDMLiteExpert
from storage.clip_format import DRIVER_EXPERT, DRIVER_POLICY, validate_clip_arrays
from storage.store import Store
from takeover.clips import ClipPhase
from takeover.episode import EpisodeConfig, EpisodeResult, run_episode
from takeover.monitor import MonitorConfig, TakeoverMonitor, TakeoverReason
from takeover.policy import load_policy_config
from takeover.policy.protocol import PolicyPlan

RED_LIGHT_ROUTE, RED_LIGHT_ID = "1012", 5003  # straight through a signalised junction, line at 65 m
STOP_SIGN_ROUTE = "1019"  # right turn at a stop sign, line at 65 m
STRAIGHT_ROUTE = "1008"  # a long straight two-lane road
PRE_TICKS = 60  # 3 s pre-window at 20 Hz
POST_TICKS = 20  # 1 s after the hand-back


# ------------------------------------------------------------------------------ scripted policies
class MistakenExpert:
    """Drives and plans exactly like the expert, except for the mistake its subclass adds."""

    name = "mistaken_expert"

    def __init__(self) -> None:
        self.inner = PDMLiteExpert()

    def reset(self, route: Route, cmap, seed: int = 0) -> None:
        self.inner.reset(route, cmap)

    def perceive(self, snap: WorldSnapshot) -> WorldSnapshot:
        return snap

    def adjust(self, snap: WorldSnapshot, control: Control, xy: np.ndarray) -> tuple[Control, np.ndarray]:
        return control, xy

    def act(self, snap: WorldSnapshot) -> tuple[Control, PolicyPlan]:
        plan = self.inner.plan(self.perceive(snap))
        times = plan.dt_s * np.arange(1, len(plan.waypoints) + 1)
        control, xy = self.adjust(snap, plan.control, np.asarray(plan.waypoints, float))
        steps = np.diff(np.vstack([snap.ego.pose.xy, xy]), axis=0)
        speeds = np.hypot(steps[:, 0], steps[:, 1]) / plan.dt_s
        return control, PolicyPlan(times, xy, world_to_ego(xy, snap.ego.pose), speeds, control, control, control,
                                   False, float(snap.ego.speed), np.ones((len(times), 2)))  # fmt: skip


class RedLightRunner(MistakenExpert):
    def perceive(self, snap: WorldSnapshot) -> WorldSnapshot:
        return dataclasses.replace(snap, traffic_lights=())


class StopSignRunner(MistakenExpert):
    def perceive(self, snap: WorldSnapshot) -> WorldSnapshot:
        return dataclasses.replace(snap, stop_signs=())


class ActorBlind(MistakenExpert):
    def perceive(self, snap: WorldSnapshot) -> WorldSnapshot:
        return dataclasses.replace(snap, actors=ActorTable.empty())


class Drifter(MistakenExpert):
    """Holds the wheel to the right from 2 s to 3.5 s."""

    def adjust(self, snap, control, xy):
        if 2.0 <= snap.time_s < 3.5:
            control = dataclasses.replace(control, steer=0.3)
        return control, xy


class Inertia(MistakenExpert):
    """Once standing, plans to stand and brakes (the inertia of cloned policies)."""

    def adjust(self, snap, control, xy):
        if snap.ego.speed < 0.5:
            return Control(brake=1.0), np.tile(snap.ego.pose.xy, (len(xy), 1))
        return control, xy


class Wanderer(MistakenExpert):
    """From 2 s to 5 s its trajectory head drifts 2 m/s sideways while its control keeps the lane."""

    def adjust(self, snap, control, xy):
        if 2.0 <= snap.time_s < 5.0:
            yaw = snap.ego.pose.yaw
            t = 0.5 * np.arange(1, len(xy) + 1)
            xy = xy + (2.0 * t)[:, None] * np.array([-math.sin(yaw), math.cos(yaw)])
        return control, xy


# ------------------------------------------------------------------------------ fixtures
def cut(route: Route, s0: float, s1: float) -> Route:
    """The stretch [s0, s1] m of a planned route, without its scenarios."""
    d = route.dense
    assert d is not None
    i0, i1 = int(np.searchsorted(d.s, s0)), int(np.searchsorted(d.s, s1))
    k = slice(i0, i1 + 1)
    dense = DenseRoute(d.xyz[k].copy(), d.yaw[k].copy(), d.commands[k].copy(), d.s[k] - d.s[i0],
                       d.road_id[k].copy(), d.lane_id[k].copy(), d.in_junction[k].copy(), d.speed_limit[k].copy())  # fmt: skip
    return Route(
        id=f"{route.id}_{int(s0)}_{int(s1)}",
        town=route.town,
        keypoints=dense.xyz[[0, -1]].copy(),
        dense=dense,
    )


@pytest.fixture(scope="module")
def maps() -> MapLibrary:
    return MapLibrary()


@pytest.fixture(scope="module")
def routes(maps: MapLibrary) -> dict[str, Route]:
    chosen = load_route_set("builtin", [RED_LIGHT_ROUTE, STOP_SIGN_ROUTE, STRAIGHT_ROUTE])
    return {r.id: r for r in prepare_routes(chosen, maps)}


@pytest.fixture(scope="module")
def sim(maps: MapLibrary) -> EmbeddedSimulator:
    config = load_config(SimConfig, "sim", ["traffic.enabled=false", "walkers.enabled=false"])
    return EmbeddedSimulator(config, maps)


@pytest.fixture(scope="module")
def features():
    return load_policy_config(["device=cpu"])


def run(sim, route, policy, seconds, features, on_tick=None, **episode) -> EpisodeResult:
    config = EpisodeConfig(max_time_s=seconds, **episode)
    monitor = TakeoverMonitor(MonitorConfig())
    return run_episode(sim, route, 0, policy, PDMLiteExpert(), monitor, config, feature_config=features,
                       on_tick=on_tick)  # fmt: skip


def first_clip(result: EpisodeResult) -> dict[str, np.ndarray]:
    clips = [c for c in result.clips if c.takeover_index == 0]
    assert clips, "the first takeover has no clip"
    return {k: np.concatenate([c.arrays[k] for c in clips]) for k in ("frame", "driver", "phase")}


def assert_takeover_and_hand_back(result: EpisodeResult, reason: TakeoverReason) -> None:
    """The first takeover has `reason`, is handed back, and its clip holds pre / takeover / after frames."""
    assert result.takeovers, "no takeover happened"
    tk = result.takeovers[0]
    assert tk.reason == reason.value
    assert tk.handback_frame is not None and tk.handback_frame > tk.frame
    clip = first_clip(result)
    pre = clip["phase"] == ClipPhase.PRE_TAKEOVER
    during = clip["phase"] == ClipPhase.TAKEOVER
    after = clip["phase"] == ClipPhase.AFTER_HANDBACK
    assert pre.sum() == min(PRE_TICKS, tk.frame)
    assert (clip["driver"][pre] == DRIVER_POLICY).all()
    assert (clip["driver"][during] == DRIVER_EXPERT).all()
    assert clip["frame"][during][0] == tk.frame and clip["frame"][after][0] == tk.handback_frame
    assert during.sum() == tk.handback_frame - tk.frame
    assert after.sum() == POST_TICKS + 1 and (clip["driver"][after] == DRIVER_POLICY).all()
    np.testing.assert_array_equal(np.diff(clip["frame"]), 1)
    for c in result.clips:
        validate_clip_arrays(c.arrays)
        for key in ("policy_plan", "expert_plan", "policy_waypoints_ego", "expert_waypoints_ego", "feat_bev"):
            assert np.isfinite(c.arrays[key]).all() if key != "feat_bev" else c.arrays[key].dtype == np.uint8


# ------------------------------------------------------------------------------ one test per reason
def test_running_a_red_light_hands_over_and_back(sim, routes, features) -> None:
    # Given the light red for 7.5 s then green, and a policy blind to lights approaching it
    def lights(tick: int, _snap) -> None:
        if tick == 0:
            sim.world.set_light_state(RED_LIGHT_ID, TrafficLightState.RED, 7.5)
        if tick == 150:
            sim.world.set_light_state(RED_LIGHT_ID, TrafficLightState.GREEN, 30.0)

    result = run(sim, cut(routes[RED_LIGHT_ROUTE], 25.0, 130.0), RedLightRunner(), 11.5, features, lights)
    # Then the expert takes over before the line, stops, and hands back once the light is green
    assert_takeover_and_hand_back(result, TakeoverReason.RED_LIGHT)
    tk = result.takeovers[0]
    assert tk.severity["red_light_cross_s"] <= MonitorConfig().red_light_max_time_s
    assert tk.handback_time_s is not None and tk.handback_time_s > 7.5
    assert not result.record.infractions["red_light"]


def test_running_a_stop_sign_hands_over_and_back(sim, routes, features) -> None:
    result = run(sim, cut(routes[STOP_SIGN_ROUTE], 25.0, 130.0), StopSignRunner(), 13.5, features)
    assert_takeover_and_hand_back(result, TakeoverReason.STOP_SIGN)
    assert not result.record.infractions["stop_infraction"]


def test_steering_off_the_route_hands_over_and_back(sim, routes, features) -> None:
    result = run(sim, cut(routes[STRAIGHT_ROUTE], 0.0, 150.0), Drifter(), 7.0, features)
    assert_takeover_and_hand_back(result, TakeoverReason.OFF_ROUTE)
    assert result.takeovers[0].severity["route_distance_m"] > MonitorConfig().off_route_distance_m


def test_standing_still_hands_over_and_back(sim, routes, features, tmp_path: Path) -> None:
    result = run(sim, cut(routes[STRAIGHT_ROUTE], 0.0, 150.0), Inertia(), 6.5, features)
    assert_takeover_and_hand_back(result, TakeoverReason.STUCK)
    tk = result.takeovers[0]
    assert tk.frame == 60  # stuck_time_s = 3 s of standing from the start
    assert tk.speed_mps == 0.0
    # the policy stood until the takeover and drove on after the hand-back: both drove some way
    assert 0.0 < result.expert_distance_m < result.distance_m

    # And the episode ingests into a SQLite store (once), where the disengagements view lists the takeover
    with Store(f"sqlite:///{tmp_path / 'takeover.db'}", str(tmp_path / "clips")) as store:
        episode_id = store.ingest_episode(result.episode, result.takeovers, result.clips)
        assert store.ingest_episode(result.episode, result.takeovers, result.clips) == episode_id
        with store.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT episode_id, reason, frame, route_id, expert_drive_s FROM disengagements")
            ).all()
            flagged = conn.execute(text("SELECT count(*) FROM frames WHERE is_takeover")).scalar_one()
            clip_ids = conn.execute(text("SELECT id FROM clips ORDER BY id")).scalars().all()
        assert [tuple(r[:4]) for r in rows] == [
            (episode_id, "stuck", tk.frame, result.episode.route.route_id)
        ]
        assert rows[0][4] == pytest.approx(tk.handback_time_s - tk.time_s)
        assert flagged == 1
        assert len(clip_ids) == len(result.clips)
        loaded = store.load_clip(clip_ids[0])
        np.testing.assert_array_equal(loaded["feat_bev"], result.clips[0].arrays["feat_bev"])
        np.testing.assert_array_equal(loaded["driver"], result.clips[0].arrays["driver"])


def test_driving_into_a_braking_leader_hands_over_and_back(sim, routes, features) -> None:
    # Given a leader 35 m ahead at 10 m/s that brakes hard at 1 s and leaves the road at 5 s, and a
    # policy blind to other actors following at 10 m/s
    route = cut(routes[STRAIGHT_ROUTE], 0.0, 150.0)
    state: dict[str, list[int]] = {}

    def leader(tick: int, _snap) -> None:
        world = sim.world
        if tick == 0:
            d = route.dense
            node = world.lane_node(d.xyz[35, :2], float(d.yaw[35]))
            state["leader"] = [world.spawn_lane_vehicle(node, "vehicle.tesla.model3", speed=10.0)]
            world.set_ego_state(float(d.xyz[0, 0]), float(d.xyz[0, 1]), float(d.yaw[0]), 10.0)
        if tick == 20:
            world.brake_vehicles_ahead(60.0)
        if tick == 100:
            world.remove_actor(state["leader"][0])

    result = run(sim, route, ActorBlind(), 8.0, features, leader)
    # Then the expert brakes in time (no collision) and hands back once the road is clear
    assert_takeover_and_hand_back(result, TakeoverReason.PREDICTED_COLLISION)
    assert result.takeovers[0].severity["ttc_s"] < MonitorConfig().collision_ttc_s
    assert not result.record.infractions["collisions_vehicle"]
    clip = next(c for c in result.clips if c.takeover_index == 0)
    assert state["leader"][0] in clip.arrays["actor_id"].tolist()


def test_a_plan_drifting_from_the_experts_hands_over_and_back(sim, routes, features) -> None:
    result = run(sim, cut(routes[STRAIGHT_ROUTE], 0.0, 150.0), Wanderer(), 7.5, features)
    assert_takeover_and_hand_back(result, TakeoverReason.PLAN_DEVIATION)
    assert result.takeovers[0].frame == 60  # drifts from 2 s, for deviation_min_s = 1 s
    assert result.takeovers[0].severity["ade_m"] > MonitorConfig().deviation_ade_m


def test_a_long_takeover_is_stored_as_consecutive_clips(sim, routes, features) -> None:
    # Given clips capped at 4 s: the stuck takeover (3 s pre-window + 2 s expert + 1 s after) splits
    result = run(sim, cut(routes[STRAIGHT_ROUTE], 0.0, 150.0), Inertia(), 6.5, features, max_clip_s=4.0)
    clips = [c for c in result.clips if c.takeover_index == 0]
    assert len(clips) == 2
    assert clips[0].arrays["time_s"].shape[0] == 80
    assert clips[1].start_frame == clips[0].start_frame + 80
    assert_takeover_and_hand_back(result, TakeoverReason.STUCK)
