"""Lateral manoeuvre planning (experts/obstacles.py) on real roads, one tick at a time."""

from __future__ import annotations

import math

import carla
import numpy as np
import pytest

from carla_bridge.snapshot import ActorKind, ActorRole
from experts.config import ExpertConfig
from experts.obstacles import Bump, EgoOnRoute, LateralPlan, ObstaclePlanner, time_to_cover
from experts.route_prep import NeighbourLane, prepare_route
from experts.scene import project_actors
from experts.synthetic import ActorSpec, actor_table, lane_route, point_on_route

CFG = ExpertConfig()


@pytest.fixture(scope="module")
def town01(shared_maps_dir) -> carla.Map:
    return carla.Map("Town01", (shared_maps_dir / "Town01.xodr").read_text())


@pytest.fixture(scope="module")
def town04(shared_maps_dir) -> carla.Map:
    return carla.Map("Town04", (shared_maps_dir / "Town04.xodr").read_text())


def _plan(route, cmap, specs, ego_s=10.0, ego_v=6.0, planner=None, standing=None, deadlocked=frozenset()):
    prepared = prepare_route(route, cmap, CFG.route, CFG.speed)
    actors = actor_table(specs, float(route.dense.xyz[0, 2]))
    stand = np.zeros(len(actors)) if standing is None else np.asarray(standing, float)
    frame, _ = project_actors(prepared, actors, np.arange(len(actors)), stand, 0, len(prepared), 12.0, 3.0)
    planner = planner or ObstaclePlanner(CFG.obstacles, CFG.hazards)
    ego = EgoOnRoute(ego_s, 0.0, ego_v, 2.44, 1.06)
    return planner.plan(prepared, frame, ego, 6.0, deadlocked), prepared


def _parked(route, s, lateral=0.6, aid=1, role=ActorRole.PARKED, kind=ActorKind.VEHICLE, speed=0.0):
    x, y, yaw = point_on_route(route, s, lateral)
    return ActorSpec(aid, kind, x, y, yaw, speed, role=role)


def _oncoming(route, s, speed, aid):
    x, y, yaw = point_on_route(route, s, -4.0)
    return ActorSpec(aid, ActorKind.VEHICLE, x, y, yaw + math.pi, speed)


def test_bump_ramps_holds_and_returns():
    b = Bump(10.0, 20.0, 30.0, 40.0, -3.0)
    s = np.array([0.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 50.0])
    o = b.evaluate(s)
    assert o.tolist() == pytest.approx([0.0, 0.0, -1.5, -3.0, -3.0, -3.0, -1.5, 0.0, 0.0])
    plan = LateralPlan(bumps=(b, Bump(0.0, 5.0, 45.0, 50.0, 1.0)))
    assert plan.offset(np.array([25.0, 47.5])).tolist() == pytest.approx([-3.0, 0.5])


def test_time_to_cover_accelerates_then_cruises():
    assert time_to_cover(10.0, 0.0, 10.0, 2.0) == pytest.approx(math.sqrt(10.0))  # s = a t^2 / 2
    assert time_to_cover(100.0, 10.0, 10.0, 2.0) == pytest.approx(10.0)
    assert time_to_cover(75.0, 0.0, 10.0, 2.0) == pytest.approx(5.0 + 50.0 / 10.0)  # 25 m to reach 10 m/s


def test_two_way_road_borrows_only_what_the_obstacle_needs(town01):
    route = lane_route(town01, 392.38, 20.0, 200)
    plan, _ = _plan(route, town01, [_parked(route, 50.0)])
    assert len(plan.bumps) == 1 and not math.isfinite(plan.wait_s)
    b = plan.bumps[0]
    # parked car's left side at 0.6 - 1.0 = -0.4 m: pass with ego half width + clearance beyond it
    assert b.offset_m == pytest.approx(-0.4 - (1.06 + CFG.obstacles.clearance_m), abs=0.1)
    assert b.s1 <= 50.0 - 2.3 - 2.44 and b.s2 >= 50.0 + 2.3 + 2.44
    assert plan.lane_change_active and plan.speed_cap_mps == CFG.obstacles.overtake_speed_mps
    assert 1 in plan.passing_ids


def test_multi_lane_road_moves_a_whole_lane(town04):
    route = lane_route(town04, -60.0, 30.37, 120)
    plan, _ = _plan(route, town04, [_parked(route, 50.0, lateral=0.0)])
    assert len(plan.bumps) == 1
    assert abs(plan.bumps[0].offset_m) == pytest.approx(3.5, abs=0.05)  # centre of the neighbour lane
    assert plan.speed_cap_mps == math.inf  # no oncoming lane involved


def test_an_obstacle_on_the_lane_edge_is_passed_inside_the_lane(town04):
    route = lane_route(town04, -60.0, 30.37, 120)
    x, y, yaw = point_on_route(route, 40.0, 1.65)  # a cone 0.2 m in from the right lane edge (1.75 m)
    cone = ActorSpec(5, ActorKind.STATIC, x, y, yaw, extent=(0.2, 0.2, 0.4))
    plan, _ = _plan(route, town04, [cone])
    assert len(plan.bumps) == 1
    assert -CFG.obstacles.max_in_lane_shift_m <= plan.bumps[0].offset_m < 0.0
    assert not plan.lane_change_active


def test_busy_oncoming_lane_means_waiting_behind(town01):
    route = lane_route(town01, 392.38, 20.0, 200)
    plan, _ = _plan(route, town01, [_parked(route, 50.0), _oncoming(route, 100.0, 8.0, 2)])
    assert not plan.bumps
    assert plan.wait_reason == "overtake_wait" and plan.wait_actor == 1
    assert plan.wait_s == pytest.approx(50.0 - 2.3, abs=0.3) and plan.wait_gap_m == CFG.obstacles.wait_gap_m


def test_far_oncoming_vehicle_leaves_enough_time(town01):
    route = lane_route(town01, 392.38, 20.0, 290)
    plan, _ = _plan(route, town01, [_parked(route, 50.0), _oncoming(route, 280.0, 6.0, 2)])
    assert len(plan.bumps) == 1


def test_committed_overtake_is_kept_but_an_early_one_is_withdrawn(town01):
    route = lane_route(town01, 392.38, 20.0, 200)
    planner = ObstaclePlanner(CFG.obstacles, CFG.hazards)
    first, _ = _plan(route, town01, [_parked(route, 50.0)], planner=planner)
    assert first.bumps
    # an oncoming car shows up while the ego is still in its lane: withdrawn, wait
    again, _ = _plan(
        route, town01, [_parked(route, 50.0), _oncoming(route, 100.0, 8.0, 2)], ego_s=12.0, planner=planner
    )
    assert not again.bumps and again.wait_reason == "overtake_wait"
    # ... but once beside the obstacle the manoeuvre is finished, whatever comes
    late = ObstaclePlanner(CFG.obstacles, CFG.hazards)
    _plan(route, town01, [_parked(route, 50.0)], planner=late)
    kept, _ = _plan(
        route, town01, [_parked(route, 50.0), _oncoming(route, 100.0, 8.0, 2)], ego_s=47.0, planner=late
    )
    assert kept.bumps and kept.bumps[0].offset_m < -1.0


def test_background_cyclist_is_followed_scenario_cyclist_passed(town01):
    route = lane_route(town01, 392.38, 20.0, 200)
    bg = _parked(route, 40.0, lateral=0.8, role=ActorRole.BACKGROUND, kind=ActorKind.BICYCLE, speed=2.0)
    plan, _ = _plan(route, town01, [bg])
    assert not plan.bumps and not math.isfinite(plan.wait_s)
    sc = _parked(route, 40.0, lateral=0.8, role=ActorRole.SCENARIO, kind=ActorKind.BICYCLE, speed=2.0)
    plan, _ = _plan(route, town01, [sc])
    assert plan.bumps


def test_long_standing_vehicle_is_an_obstacle_except_queued_before_a_junction(town01):
    # road 8 lane 1 enters a junction about 122 m after y = 250
    route = lane_route(town01, 392.38, 250.0, 150)
    queued = _parked(route, 110.0, lateral=0.0, role=ActorRole.BACKGROUND)
    plan, _ = _plan(route, town01, [queued], ego_s=70.0, standing=[30.0])
    assert not plan.bumps and not math.isfinite(plan.wait_s)
    broken = _parked(route, 40.0, lateral=0.0, role=ActorRole.BACKGROUND)
    plan, _ = _plan(route, town01, [broken], ego_s=5.0, standing=[30.0])
    assert plan.bumps or plan.wait_reason == "overtake_wait"


def test_mutual_wait_turns_the_other_actor_into_an_obstacle(town01):
    route = lane_route(town01, 392.38, 20.0, 200)
    x, y, yaw = point_on_route(route, 22.0, 1.2)
    bike = ActorSpec(
        1, ActorKind.BICYCLE, x, y, yaw + 0.7, extent=(0.9, 0.3, 0.8)
    )  # standing across the lane edge
    plan, _ = _plan(route, town01, [bike], ego_s=10.0, ego_v=0.0)
    assert not plan.bumps
    plan, _ = _plan(route, town01, [bike], ego_s=10.0, ego_v=0.0, deadlocked=frozenset({1}))
    assert plan.bumps and plan.bumps[0].offset_m < 0.0


def test_emergency_vehicle_behind_makes_the_ego_step_aside(town04):
    route = lane_route(town04, -60.0, 30.37, 120)
    x, y, yaw = point_on_route(route, 10.0)
    ev = ActorSpec(9, ActorKind.VEHICLE, x, y, yaw, 15.0, role=ActorRole.EMERGENCY)
    plan, prepared = _plan(route, town04, [ev], ego_s=35.0, ego_v=8.0)
    assert plan.yielding_to == 9 and plan.lane_change_active
    i = prepared.index_at(35.0)
    assert prepared.right_lane[i] == NeighbourLane.SAME
    assert plan.bumps[0].offset_m == pytest.approx(3.5, abs=0.05)  # the right lane first
