"""Scenario behaviours of the expert on real CARLA roads, closed loop in a small kinematic world.

The world here is deliberately simple and independent of the embedded simulator: the ego follows the
expert's controls through the bicycle model and the longitudinal model of LongitudinalConfig; other
actors move at constant velocity (or stand). Roads are real: Town01 road 8 (a straight two-way road,
one lane each way) and Town04 road 39 (four same-direction lanes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import carla
import numpy as np
import pytest

from carla_bridge.geometry import boxes_overlap
from carla_bridge.route import Route
from carla_bridge.snapshot import (
    ActorKind,
    ActorRole,
    Pose,
    StopLine,
    StopSign,
    TrafficLight,
    TrafficLightState,
)
from experts.config import ExpertConfig
from experts.errors import ExpertError
from experts.expert import ExpertPlan, PDMLiteExpert, Reason
from experts.forecast import bicycle_step
from experts.synthetic import EGO_EXTENT, WALKER_EXTENT, ActorSpec, lane_route, point_on_route, snapshot

DT = 0.05
TOWN01_LANE = (392.38, 20.0)  # road 8, lane 1: heading +y, oncoming lane 4 m to the left (+x)
TOWN04_LANE = (-60.0, 30.37)  # road 39, lane 4: heading +x, same-direction lanes left (3) and right (5, 6)


@pytest.fixture(scope="module")
def town01(shared_maps_dir) -> carla.Map:
    return carla.Map("Town01", (shared_maps_dir / "Town01.xodr").read_text())


@pytest.fixture(scope="module")
def town04(shared_maps_dir) -> carla.Map:
    return carla.Map("Town04", (shared_maps_dir / "Town04.xodr").read_text())


@dataclass
class Mover:
    """An actor moving at constant velocity from (x, y); `appear_s` delays its entry into the world."""

    spec: ActorSpec
    appear_s: float = 0.0

    def at(self, t: float) -> ActorSpec | None:
        if t < self.appear_s:
            return None
        dt = t - self.appear_s
        s = self.spec
        return replace(s, x=s.x + s.speed * math.cos(s.yaw) * dt, y=s.y + s.speed * math.sin(s.yaw) * dt)


@dataclass
class Trace:
    plans: list[ExpertPlan] = field(default_factory=list)
    ego: list[tuple[float, float, float, float]] = field(default_factory=list)  # x, y, yaw, v
    collided_with: set[int] = field(default_factory=set)

    @property
    def speeds(self) -> np.ndarray:
        return np.array([e[3] for e in self.ego])

    def reasons(self) -> set[str]:
        return {str(p.reason) for p in self.plans}


def drive(
    expert: PDMLiteExpert,
    route,
    s0: float,
    v0: float,
    seconds: float,
    movers: list[Mover] = (),
    lights: Callable[[float], tuple] = lambda t: (),
    signs: tuple = (),
    stop_when: Callable[[Trace], bool] | None = None,
) -> Trace:
    """Closed loop: expert -> bicycle + longitudinal model -> snapshot, for `seconds`."""
    lon = expert.cfg.longitudinal
    x, y, yaw = point_on_route(route, s0)
    v = v0
    trace = Trace()
    for k in range(int(seconds / DT)):
        t = k * DT
        actors = [a for a in (m.at(t) for m in movers) if a is not None]
        i = int(np.argmin(np.hypot(route.dense.xyz[:, 0] - x, route.dense.xyz[:, 1] - y)))
        z = float(route.dense.xyz[i, 2])
        snap = snapshot(x, y, yaw, v, actors, lights(t), signs, time_s=t, frame=k, route_index=i, z=z)
        plan = expert.plan(snap)
        trace.plans.append(plan)
        trace.ego.append((x, y, yaw, v))
        for a in actors:
            if boxes_overlap(
                x, y, yaw, EGO_EXTENT[0], EGO_EXTENT[1], a.x, a.y, a.yaw, a.extent[0], a.extent[1]
            ):
                trace.collided_with.add(a.id)
        c = plan.control
        a_cmd = (
            c.throttle * lon.throttle_accel_mps2 * (1 - v / lon.throttle_fade_speed_mps)
            - c.brake * lon.brake_decel_mps2
        )
        a_cmd -= (lon.rolling_resistance_mps2 + lon.drag_per_m * v * v) if v > 0 else 0.0
        v_new = max(v + a_cmd * DT, 0.0)
        x, y, yaw = bicycle_step(x, y, yaw, v_new, c.steer, DT, expert.cfg.bicycle)
        v = v_new
        if stop_when is not None and stop_when(trace):
            break
    return trace


def _expert(route, cmap) -> PDMLiteExpert:
    e = PDMLiteExpert(ExpertConfig())
    e.reset(route, cmap)
    return e


def _route_frame(route, x: float, y: float) -> tuple[float, float]:
    """(arc length, lateral offset right-positive) of (x, y) on the dense route, by tangent projection."""
    d = route.dense
    i = int(np.argmin(np.hypot(d.xyz[:, 0] - x, d.xyz[:, 1] - y)))
    dx, dy = x - d.xyz[i, 0], y - d.xyz[i, 1]
    c, s = math.cos(d.yaw[i]), math.sin(d.yaw[i])
    return float(d.s[i] + dx * c + dy * s), float(-dx * s + dy * c)


def _lateral(route, x: float, y: float) -> float:
    return _route_frame(route, x, y)[1]


def _gap_ahead(route, ego: tuple, s_obj: float, obj_half_length: float) -> float:
    """Bumper gap from the ego front to an object at arc length s_obj (negative once past it)."""
    return s_obj - obj_half_length - (_route_frame(route, ego[0], ego[1])[0] + EGO_EXTENT[0])


# ---------------------------------------------------------------------------------------- plan output
def test_plan_has_eight_waypoints_half_a_second_apart_with_speeds(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    expert = _expert(route, town01)
    x, y, yaw = point_on_route(route, 20.0)
    plan = expert.plan(snapshot(x, y, yaw, 6.0, route_index=20))
    assert plan.waypoints.shape == (8, 2) and plan.target_speeds.shape == (8,)
    assert plan.dt_s == 0.5
    # spacing matches the planned speeds (trapezoid over 0.5 s) within a few per cent
    steps = np.hypot(*np.diff(np.vstack([[x, y], plan.waypoints]), axis=0).T)
    expected = 0.5 * (np.concatenate([[6.0], plan.target_speeds[:-1]]) + plan.target_speeds) * 0.5
    assert steps == pytest.approx(expected, rel=0.05)
    assert plan.reason in (Reason.CRUISE, Reason.SPEED_LIMIT)
    assert plan.hazard.actor_id == -1 and math.isinf(plan.hazard.time_to_collision_s)
    assert plan.hazard.ego_forecast.shape[1] == 3
    assert plan.control.throttle > 0.0 and plan.control.brake == 0.0


def test_run_step_is_the_plans_control(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    a, b = _expert(route, town01), _expert(route, town01)
    x, y, yaw = point_on_route(route, 20.0)
    snap = snapshot(x, y, yaw, 6.0, route_index=20)
    assert a.run_step(snap) == b.plan(snap).control


# ---------------------------------------------------------------------------------------- leading vehicle
def test_stops_behind_a_standing_vehicle_without_touching_it(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    expert = _expert(route, town01)
    expert.cfg.obstacles.standing_time_s = 60.0  # it is traffic here, never a stuck vehicle to pass
    lx, ly, lyaw = point_on_route(route, 70.0)
    lead = Mover(ActorSpec(1, ActorKind.VEHICLE, lx, ly, lyaw))
    trace = drive(expert, route, 10.0, 6.0, 20.0, [lead])
    assert not trace.collided_with
    assert trace.speeds[-1] < 0.05
    # away from junctions it keeps the room it would need to pass the vehicle, should it not move on
    gap = _gap_ahead(route, trace.ego[-1], 70.0, 2.3)
    assert expert.cfg.obstacles.wait_gap_m - 1.0 < gap < expert.cfg.obstacles.wait_gap_m + 1.0
    assert Reason.LEADING_VEHICLE in trace.reasons()


def test_passes_a_vehicle_that_stands_still_for_long_when_the_way_is_clear(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    expert = _expert(route, town01)
    lx, ly, lyaw = point_on_route(route, 50.0)
    stuck = Mover(ActorSpec(1, ActorKind.VEHICLE, lx, ly, lyaw))
    trace = drive(expert, route, 10.0, 6.0, 28.0, [stuck])
    assert not trace.collided_with
    assert _gap_ahead(route, trace.ego[-1], 50.0, 2.3) < -10.0  # got past it
    waited = [p for p in trace.plans if p.reason == Reason.LEADING_VEHICLE]
    assert len(waited) * DT > expert.cfg.obstacles.standing_time_s - 8.0  # after waiting behind it first


def test_follows_a_slower_vehicle_at_its_speed(town01):
    route = lane_route(town01, *TOWN01_LANE, 290)
    expert = _expert(route, town01)
    lx, ly, lyaw = point_on_route(route, 45.0)
    lead = Mover(ActorSpec(1, ActorKind.VEHICLE, lx, ly, lyaw, speed=3.0))
    trace = drive(expert, route, 10.0, 6.0, 25.0, [lead])
    assert not trace.collided_with
    assert trace.speeds[-40:].mean() == pytest.approx(3.0, abs=0.3)
    assert trace.plans[-1].reason == Reason.LEADING_VEHICLE and trace.plans[-1].reason_actor_id == 1


# ---------------------------------------------------------------------------------------- lights and signs
def _stop_line(route, s: float) -> StopLine:
    x, y, yaw = point_on_route(route, s)
    return StopLine(x, y, yaw, 8, 1, 4.0)


def test_stops_at_a_red_light_and_goes_on_green(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    expert = _expert(route, town01)
    line = _stop_line(route, 60.0)

    def lights(t: float) -> tuple:
        state = TrafficLightState.RED if t < 12.0 else TrafficLightState.GREEN
        return (TrafficLight(7, state, Pose(line.x, line.y, 0.0, 0.0), (line,)),)

    trace = drive(expert, route, 10.0, 6.0, 16.0, lights=lights)
    red = [e for k, e in enumerate(trace.ego) if k * DT < 12.0]
    gaps = [_gap_ahead(route, e, 60.0, 0.0) for e in red]
    assert min(gaps) > 0.0  # never over the line while red
    assert gaps[-1] < 4.0 and red[-1][3] < 0.05  # stopped close to it
    assert trace.speeds[-1] > 1.0  # moving again after green
    assert Reason.RED_LIGHT in trace.reasons()


def test_yellow_stops_when_comfortable_and_goes_when_too_close(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    line = _stop_line(route, 60.0)
    yellow = (TrafficLight(7, TrafficLightState.YELLOW, Pose(line.x, line.y, 0.0, 0.0), (line,)),)
    far = _expert(route, town01)
    x, y, yaw = point_on_route(route, 20.0)
    assert far.plan(snapshot(x, y, yaw, 8.0, lights=yellow, route_index=20)).reason == Reason.RED_LIGHT
    near = _expert(route, town01)
    x, y, yaw = point_on_route(route, 54.0)
    assert near.plan(snapshot(x, y, yaw, 8.0, lights=yellow, route_index=54)).reason != Reason.RED_LIGHT


def test_stop_sign_full_stop_then_proceeds(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    expert = _expert(route, town01)
    line = _stop_line(route, 50.0)
    sign = StopSign(3, Pose(line.x, line.y, 0.0, 0.0), (line,))
    trace = drive(expert, route, 10.0, 6.0, 20.0, signs=(sign,))
    stopped = [
        k for k, e in enumerate(trace.ego) if e[3] < 0.1 and 0.0 < _gap_ahead(route, e, 50.0, 0.0) < 4.0
    ]
    assert stopped, "never came to a full stop in front of the stop sign"
    assert _gap_ahead(route, trace.ego[-1], 50.0, 0.0) < -5.0  # and then drove on past it
    assert Reason.STOP_SIGN in trace.reasons()


# ---------------------------------------------------------------------------------------- walkers
def test_brakes_for_a_pedestrian_crossing_ahead(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    expert = _expert(route, town01)
    # a pedestrian 4.5 m right of the lane centre at s=40 walks left across the road at 1.2 m/s
    px, py, pyaw = point_on_route(route, 40.0, lateral_m=4.5)
    walker = Mover(ActorSpec(5, ActorKind.WALKER, px, py, pyaw - math.pi / 2, 1.2, extent=WALKER_EXTENT))
    trace = drive(expert, route, 10.0, 6.0, 12.0, [walker])
    assert not trace.collided_with
    assert Reason.PEDESTRIAN in trace.reasons()
    assert trace.speeds.min() < 2.0  # it really slowed down for the crossing


# ---------------------------------------------------------------------------------------- two-way obstacles
def _parked(route, s: float, lateral: float = 0.6) -> Mover:
    x, y, yaw = point_on_route(route, s, lateral_m=lateral)
    return Mover(ActorSpec(20, ActorKind.VEHICLE, x, y, yaw, role=ActorRole.PARKED))


def _oncoming(route, s: float, speed: float, aid: int, appear_s: float = 0.0) -> Mover:
    x, y, yaw = point_on_route(route, s, lateral_m=-4.0)
    return Mover(ActorSpec(aid, ActorKind.VEHICLE, x, y, yaw + math.pi, speed), appear_s)


def test_overtakes_a_parked_vehicle_when_the_oncoming_lane_is_clear(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    expert = _expert(route, town01)
    trace = drive(expert, route, 10.0, 6.0, 25.0, [_parked(route, 60.0)])
    assert not trace.collided_with
    lateral = [_lateral(route, e[0], e[1]) for e in trace.ego]
    assert min(lateral) < -1.5  # moved over the centre line, as far as the obstacle needs
    assert abs(lateral[-1]) < 0.5  # and came back
    assert _gap_ahead(route, trace.ego[-1], 60.0, 2.3) < -10.0  # past it


def test_waits_behind_a_parked_vehicle_while_the_oncoming_lane_is_busy(town01):
    route = lane_route(town01, *TOWN01_LANE, 290)
    expert = _expert(route, town01)
    flow = [_oncoming(route, 90.0 + 25.0 * k, 6.0, 100 + k) for k in range(12)]
    trace = drive(expert, route, 10.0, 6.0, 14.0, [_parked(route, 60.0), *flow])
    assert not trace.collided_with
    lateral = [_lateral(route, e[0], e[1]) for e in trace.ego]
    assert max(abs(v) for v in lateral) < 0.6  # never left its lane
    assert trace.speeds[-1] < 0.05
    assert trace.plans[-1].reason == Reason.OVERTAKE_WAIT
    gap = _gap_ahead(route, trace.ego[-1], 60.0, 2.3)
    assert gap > 5.0  # left room to swerve out later


def test_overtake_is_rechecked_and_abandoned_before_commitment(town01):
    route = lane_route(town01, *TOWN01_LANE, 290)
    expert = _expert(route, town01)
    # clear at first; an oncoming car appears when the ego has begun to move out but is still mostly
    # in its lane, close enough to make the pass unsafe
    late = _oncoming(route, 120.0, 8.0, 101, appear_s=5.5)
    trace = drive(expert, route, 10.0, 6.0, 12.0, [_parked(route, 60.0), late])
    assert not trace.collided_with
    offsets = [p.lateral_offset_m for p in trace.plans]
    k_appear = int(5.5 / DT)
    assert min(offsets[:k_appear]) < -0.3  # had started to move out
    assert Reason.OVERTAKE_WAIT in {str(p.reason) for p in trace.plans[k_appear:]}
    assert abs(offsets[-1]) < 0.3  # back in its lane, waiting


# ---------------------------------------------------------------------------------------- multi-lane roads
def test_shifts_into_the_same_direction_lane_around_cones(town04):
    route = lane_route(town04, *TOWN04_LANE, 130, speed_limit_mps=60 / 3.6)
    expert = _expert(route, town04)
    cones = []
    for k in range(5):
        x, y, yaw = point_on_route(route, 55.0 + 2.0 * k, lateral_m=-1.2 + 0.6 * k)
        cones.append(Mover(ActorSpec(30 + k, ActorKind.STATIC, x, y, yaw, extent=(0.2, 0.2, 0.4))))
    trace = drive(expert, route, 10.0, 8.0, 12.0, cones)
    assert not trace.collided_with
    lateral = [_lateral(route, e[0], e[1]) for e in trace.ego]
    assert min(lateral) < -3.0 or max(lateral) > 3.0  # drove in a neighbour lane
    assert trace.speeds.min() > 3.0  # without stopping: the lane was free


def test_steps_aside_for_an_emergency_vehicle_from_behind(town04):
    route = lane_route(town04, *TOWN04_LANE, 130, speed_limit_mps=60 / 3.6)
    expert = _expert(route, town04)
    x, y, yaw = point_on_route(route, 0.0)
    ev = Mover(ActorSpec(50, ActorKind.VEHICLE, x, y, yaw, 16.0, role=ActorRole.EMERGENCY))
    trace = drive(expert, route, 25.0, 8.0, 6.0, [ev])
    assert not trace.collided_with
    lateral = [_lateral(route, e[0], e[1]) for e in trace.ego]
    assert max(abs(v) for v in lateral) > 2.5  # moved over a lane
    assert Reason.EMERGENCY_VEHICLE in trace.reasons()


def _oncoming_car(route, actor_id: int, s_m: float, lateral_m: float, speed_mps: float) -> Mover:
    """A car driving against the route at `s_m`, `lateral_m` off its centre (negative: left)."""
    x, y, yaw = point_on_route(route, s_m, lateral_m=lateral_m)
    return Mover(ActorSpec(actor_id, ActorKind.VEHICLE, x, y, yaw + math.pi, speed_mps))


def test_nudges_away_from_an_oncoming_car_cutting_into_the_lane(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    expert = _expert(route, town01)
    # oncoming car 2.2 m left of the ego lane centre (4 m lane): its right side is 0.8 m inside the lane
    invader = _oncoming_car(route, 60, 45.0, -2.2, 4.0)
    trace = drive(expert, route, 10.0, 5.0, 4.0, [invader])
    assert not trace.collided_with
    assert max(p.lateral_offset_m for p in trace.plans) > 0.3  # planned a nudge to the right
    assert max(_lateral(route, e[0], e[1]) for e in trace.ego) > 0.2  # and drove it


def test_keeps_going_past_an_oncoming_car_that_passes_close_by(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    expert = _expert(route, town01)
    # given an oncoming car whose right side is 1.2 m inside the ego's 4 m lane, driving at 8 m/s
    invader = _oncoming_car(route, 61, 60.0, -1.8, 8.0)
    # when the ego meets it at 6 m/s
    trace = drive(expert, route, 10.0, 6.0, 5.0, [invader])
    # then it nudges right and passes without touching it, never slowing to a crawl (stopping in
    # the lane, as for a leader, would have it driven into)
    assert not trace.collided_with
    assert min(e[3] for e in trace.ego) > 3.0
    assert all(p.reason != Reason.LEADING_VEHICLE for p in trace.plans)


# ---------------------------------------------------------------------------------------- forecast
def test_forecast_brakes_for_a_vehicle_crossing_the_path(town01):
    route = lane_route(town01, *TOWN01_LANE, 200)
    expert = _expert(route, town01)
    # a car 14 m right of the route at s=40 drives across it (heading left) at 6 m/s
    x, y, yaw = point_on_route(route, 40.0, lateral_m=14.0)
    crosser = Mover(ActorSpec(70, ActorKind.VEHICLE, x, y, yaw - math.pi / 2, 6.0))
    trace = drive(expert, route, 20.0, 8.0, 6.0, [crosser])
    assert not trace.collided_with
    hits = [p for p in trace.plans if p.reason == Reason.FORECAST_COLLISION]
    assert hits and hits[0].hazard.actor_id == 70
    assert 0.0 < hits[0].hazard.time_to_collision_s <= expert.cfg.forecast.junction_horizon_s
    assert hits[0].hazard.brake_decel_mps2 > 0.0


def test_traffic_on_another_level_is_ignored(town04):
    # Town04 road 39 is a bridge: a car standing across the route 10 m below must not stop the ego
    route = lane_route(town04, *TOWN04_LANE, 130, speed_limit_mps=60 / 3.6)
    expert = _expert(route, town04)
    x, y, yaw = point_on_route(route, 45.0)
    z = float(route.dense.xyz[45, 2]) - 10.0
    below = Mover(ActorSpec(80, ActorKind.VEHICLE, x, y, yaw + math.pi / 2, 0.0, z=z))
    trace = drive(expert, route, 10.0, 8.0, 6.0, [below])
    assert trace.speeds.min() > 7.0
    assert not trace.reasons() & {Reason.LEADING_VEHICLE, Reason.FORECAST_COLLISION, Reason.OBSTACLE}


def _junction_crossing(town01: carla.Map, from_right_m: float) -> tuple[Route, PDMLiteExpert, float, Mover]:
    """Heading east from (105, 59.5) the lane crosses a four-way junction straight about 40 m on; a car
    (id 90) crosses the ego's path 4 m inside the junction at 8 m/s, starting `from_right_m` to the
    right. Returns the route, the expert, the junction entry's arc length and the car."""
    route = lane_route(town01, 105.0, 59.5, 120)
    expert = _expert(route, town01)
    entry = float(expert.route.junctions[0][0])
    x, y, yaw = point_on_route(route, entry + 4.0, lateral_m=from_right_m)
    return route, expert, entry, Mover(ActorSpec(90, ActorKind.VEHICLE, x, y, yaw - math.pi / 2, 8.0))


def test_waits_at_the_junction_entry_for_crossing_traffic(town01):
    route, expert, entry, crosser = _junction_crossing(town01, 30.0)
    trace = drive(expert, route, entry - 22.0, 6.0, 12.0, [crosser])
    assert not trace.collided_with
    fronts = [_route_frame(route, e[0], e[1])[0] + EGO_EXTENT[0] for e in trace.ego]
    k_cross = int((30.0 - 2.0) / 8.0 / DT)  # the car reaches the ego's path about then
    assert max(fronts[:k_cross]) < entry + 1.0  # held at the junction entry while it crossed
    assert fronts[-1] > entry + 10.0  # and went on afterwards
    assert any(p.reason == Reason.FORECAST_COLLISION and p.reason_actor_id == 90 for p in trace.plans)


def test_a_waiting_expert_plans_to_wait(town01):
    # Given the ego standing 4 m before a junction entry and a car crossing its path from 20 m to the
    # right at 8 m/s, when the expert waits for it (a forecast conflict its IDM roll-out cannot see),
    # then its plan waits too: the plan is DAgger's label, and the stuck rule reads its speeds (a plan
    # that drives off while the expert stands made a policy that waits look stuck)
    route, expert, entry, crosser = _junction_crossing(town01, 20.0)
    trace = drive(expert, route, entry - 4.0, 0.0, 3.0, [crosser])
    waiting = [
        k
        for k, p in enumerate(trace.plans)
        if p.reason == Reason.FORECAST_COLLISION and trace.ego[k][3] < 0.1
    ]
    assert len(waiting) >= 10
    for k in waiting:
        plan = trace.plans[k]
        assert plan.target_speeds.max() < 0.1
        assert np.hypot(*(plan.waypoints[-1] - trace.ego[k][:2])) < 0.5


def test_planning_before_reset_is_one_clear_error():
    with pytest.raises(ExpertError, match=r"reset\(route, cmap\)"):
        PDMLiteExpert(ExpertConfig()).plan(snapshot(0.0, 0.0, 0.0, 0.0))
