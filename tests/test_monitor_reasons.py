"""TakeoverMonitor on hand-built snapshots and plans: each reason, its thresholds, and the hand-back.

The ego drives east on the built-in Takeover01 town (a real carla.Map): lane -2 of road 4 at y = -400,
so the monitor's lane check runs against real OpenDRIVE lanes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from carla_bridge.geometry import world_to_ego
from carla_bridge.maps import MapLibrary
from carla_bridge.snapshot import (
    ActorKind,
    Control,
    RouteProgress,
    StopLine,
    StopSign,
    TrafficLight,
    TrafficLightState,
    WorldSnapshot,
)
from experts.expert import ExpertPlan, HazardForecast, Reason
from experts.synthetic import ActorSpec, lane_route, snapshot
from takeover.monitor import (
    DEVIATION_EXPLAINED,
    Driver,
    MonitorConfig,
    MonitorError,
    TakeoverMonitor,
    TakeoverReason,
    load_monitor_config,
)
from takeover.policy.protocol import PolicyPlan

X0, Y0 = 300.0, -400.0  # ego start, heading east (yaw 0) in lane -2
DT = 0.05
TIMES = 0.5 * np.arange(1, 9)


@pytest.fixture(scope="module")
def cmap():
    return MapLibrary().load("Takeover01")


@pytest.fixture(scope="module")
def route(cmap):
    return lane_route(cmap, X0 - 20.0, Y0, 200.0)


@pytest.fixture
def monitor(route, cmap) -> TakeoverMonitor:
    m = TakeoverMonitor(MonitorConfig())
    m.reset(route, cmap)
    return m


def plan_xy(x: float, y: float, speed_mps: float, lateral_per_s: float = 0.0) -> np.ndarray:
    """Waypoints of a plan going east at `speed_mps`, drifting `lateral_per_s` to the right."""
    return np.stack([x + speed_mps * TIMES, y + lateral_per_s * TIMES], axis=1)


def policy_plan(snap: WorldSnapshot, xy: np.ndarray) -> PolicyPlan:
    steps = np.diff(np.vstack([[snap.ego.pose.x, snap.ego.pose.y], xy]), axis=0)
    c = Control(throttle=0.3)
    return PolicyPlan(TIMES, xy, world_to_ego(xy, snap.ego.pose), np.hypot(*steps.T) / 0.5, c, c, c, False,
                      float(snap.ego.speed), np.ones((len(TIMES), 2)))  # fmt: skip


def expert_plan(xy: np.ndarray, speeds: np.ndarray | float, ttc: float = math.inf) -> ExpertPlan:
    speeds = np.broadcast_to(np.asarray(speeds, float), (len(xy),)).copy()
    hazard = HazardForecast(-1, ttc, np.zeros((0, 3)), 0.1, 0.0)
    return ExpertPlan(Control(brake=0.5), xy, speeds, float(speeds[0]), Reason.CRUISE, -1, hazard, 0.0, 0.5)


def stopping_xy(x: float, y: float, stop_x: float, speed_mps: float) -> np.ndarray:
    """An expert plan that decelerates evenly to stand at `stop_x`."""
    decel = speed_mps**2 / (2.0 * max(stop_x - x, 1e-3))
    t = np.minimum(TIMES, speed_mps / decel)
    return np.stack([x + speed_mps * t - 0.5 * decel * t**2, np.full_like(t, y)], axis=1)


def at(time_s: float, speed: float = 8.0, x: float = X0, **kwargs) -> WorldSnapshot:
    return snapshot(x, Y0, 0.0, speed, time_s=time_s, frame=round(time_s / DT), **kwargs)


def drive(monitor: TakeoverMonitor, seconds: float, make, start_s: float = 0.0):
    """Feed `seconds` of ticks; make(t) -> (snapshot, policy plan, expert plan). All decisions back."""
    out = []
    for k in range(round(seconds / DT)):
        snap, pp, ep = make(start_s + k * DT)
        out.append(monitor.update(snap, pp, ep))
    return out


def agreeing(t: float, speed: float = 8.0):
    snap = at(t, speed)
    xy = plan_xy(X0, Y0, speed)
    return snap, policy_plan(snap, xy), expert_plan(xy, speed)


def test_agreeing_plans_leave_the_policy_driving(monitor: TakeoverMonitor) -> None:
    decisions = drive(monitor, 3.0, agreeing)
    assert all(d.driver is Driver.POLICY and not d.active for d in decisions)
    assert decisions[-1].severity["ade_m"] == pytest.approx(0.0)


def test_predicted_collision_when_the_plan_runs_into_a_standing_car(monitor: TakeoverMonitor) -> None:
    # Given a car standing 15 m ahead in the ego's lane, the policy planning 8 m/s through it, the expert stopping
    car = ActorSpec(7, ActorKind.VEHICLE, X0 + 15.0, Y0, control=(0.0, 0.0, 1.0))
    snap = at(0.0, actors=[car])
    decision = monitor.update(
        snap, policy_plan(snap, plan_xy(X0, Y0, 8.0)), expert_plan(stopping_xy(X0, Y0, X0 + 9.0, 8.0), 0.0)
    )
    # Then the expert takes over at once; the bumpers meet when 15 - 2.74 - 2.3 = 9.96 m are driven
    assert decision.triggered is TakeoverReason.PREDICTED_COLLISION
    assert decision.driver is Driver.EXPERT
    assert decision.severity["ttc_s"] == pytest.approx(1.3, abs=0.051)
    assert "expert_plan_ttc_s" not in decision.severity  # the expert's plan stops short of the car


def test_no_takeover_for_a_collision_the_expert_cannot_avoid_either(monitor: TakeoverMonitor) -> None:
    # Given a car standing 8 m ahead: the policy's 8 m/s plan and the expert's full-brake plan both reach it
    car = ActorSpec(7, ActorKind.VEHICLE, X0 + 8.0, Y0, control=(0.0, 0.0, 1.0))
    snap = at(0.0, actors=[car])
    braking = stopping_xy(X0, Y0, X0 + 6.0, 8.0)  # stands 6 m on: its bumper is past the car's tail
    decision = monitor.update(snap, policy_plan(snap, plan_xy(X0, Y0, 8.0)), expert_plan(braking, 0.0))
    # Then the overlap is measured for both plans, less than the margin apart, and the policy keeps driving
    ttc, expert_ttc = decision.severity["ttc_s"], decision.severity["expert_plan_ttc_s"]
    assert ttc < MonitorConfig().collision_ttc_s
    assert expert_ttc <= ttc + MonitorConfig().collision_expert_margin_s
    assert TakeoverReason.PREDICTED_COLLISION not in decision.active
    assert decision.driver is Driver.POLICY


def test_cars_beside_or_behind_the_plan_are_no_collision(monitor: TakeoverMonitor) -> None:
    beside = ActorSpec(7, ActorKind.VEHICLE, X0 + 15.0, Y0 + 3.5)
    behind = ActorSpec(8, ActorKind.VEHICLE, X0 - 6.0, Y0, speed=12.0)
    snap = at(0.0, actors=[beside, behind])
    xy = plan_xy(X0, Y0, 8.0)
    decision = monitor.update(snap, policy_plan(snap, xy), expert_plan(xy, 8.0))
    assert decision.triggered is None
    assert "ttc_s" not in decision.severity


def test_a_far_collision_stays_below_the_threshold(monitor: TakeoverMonitor) -> None:
    # Given the car 30 m ahead: the swept plan meets it after ~3.1 s, beyond collision_ttc_s = 2 s
    snap = at(0.0, actors=[ActorSpec(7, ActorKind.VEHICLE, X0 + 30.0, Y0)])
    xy = plan_xy(X0, Y0, 8.0)
    decision = monitor.update(snap, policy_plan(snap, xy), expert_plan(xy, 8.0))
    assert decision.triggered is None
    assert decision.severity["ttc_s"] == pytest.approx(3.1, abs=0.11)


def red_light(state: TrafficLightState, line_x: float, yaw: float = 0.0) -> TrafficLight:
    line = StopLine(x=line_x, y=Y0, yaw=yaw, road_id=4, lane_id=-2, width=3.5)
    return TrafficLight(id=11, state=state, pose=line_pose(line_x), stop_lines=(line,))


def line_pose(x: float):
    from carla_bridge.snapshot import Pose

    return Pose(x, Y0 + 3.0, 0.0, 0.0)


def test_red_light_when_the_plan_crosses_a_line_the_expert_stops_before(monitor: TakeoverMonitor) -> None:
    # Given a red light 20 m ahead, the policy driving through at 8 m/s, the expert stopping 1 m before it
    snap = at(0.0, lights=[red_light(TrafficLightState.RED, X0 + 20.0)])
    stop = stopping_xy(X0, Y0, X0 + 20.0 - 2.44 - 1.0, 8.0)
    decision = monitor.update(snap, policy_plan(snap, plan_xy(X0, Y0, 8.0)), expert_plan(stop, 0.0))
    # Then red_light triggers; the front bumper reaches the line after (20 - 2.44) / 8 s
    assert decision.triggered is TakeoverReason.RED_LIGHT
    assert decision.severity["red_light_cross_s"] == pytest.approx((20.0 - 2.44) / 8.0, abs=1e-6)


@pytest.mark.parametrize(
    ("state", "yaw", "expert_crosses"),
    [
        (TrafficLightState.GREEN, 0.0, False),  # green: nothing to stop for
        (TrafficLightState.RED, 0.0, True),  # the expert drives through too (too late to stop)
        (TrafficLightState.RED, math.pi, False),  # the line of the opposite direction
    ],
)
def test_no_red_light_takeover_when_the_expert_would_not_stop(
    monitor: TakeoverMonitor, state: TrafficLightState, yaw: float, expert_crosses: bool
) -> None:
    snap = at(0.0, lights=[red_light(state, X0 + 20.0, yaw)])
    xy = plan_xy(X0, Y0, 8.0)
    e_xy = xy if expert_crosses else stopping_xy(X0, Y0, X0 + 16.0, 8.0)
    decision = monitor.update(snap, policy_plan(snap, xy), expert_plan(e_xy, 8.0))
    assert decision.triggered is not TakeoverReason.RED_LIGHT


def test_stop_sign_when_the_plan_runs_it(monitor: TakeoverMonitor) -> None:
    line = StopLine(x=X0 + 15.0, y=Y0, yaw=0.0, road_id=4, lane_id=-2, width=3.5)
    sign = StopSign(id=21, pose=line_pose(X0 + 15.0), stop_lines=(line,))
    snap = at(0.0, stop_signs=[sign])
    decision = monitor.update(
        snap, policy_plan(snap, plan_xy(X0, Y0, 8.0)), expert_plan(stopping_xy(X0, Y0, X0 + 11.5, 8.0), 0.0)
    )
    assert decision.triggered is TakeoverReason.STOP_SIGN
    assert decision.severity["stop_sign_cross_s"] == pytest.approx((15.0 - 2.44) / 8.0, abs=1e-6)


def off_route(t: float, distance_m: float, expert_lateral_m: float = 0.0):
    snap = at(t)
    snap = dataclasses.replace(snap, route=RouteProgress(0, 0.0, 200.0, distance_m, 4))
    xy = plan_xy(X0, Y0, 8.0)
    e_xy = xy + np.array([0.0, expert_lateral_m])
    return snap, policy_plan(snap, xy), expert_plan(e_xy, 8.0)


def test_off_route_after_it_persists(monitor: TakeoverMonitor) -> None:
    # Given the ego 3 m from the route (beyond off_route_distance_m = 2.5) with the expert's plan on it
    decisions = drive(monitor, 0.5, lambda t: off_route(t, 3.0))
    # Then it triggers once it held off_route_min_s = 0.25 s (the 6th tick), not before
    first = next(i for i, d in enumerate(decisions) if d.triggered)
    assert decisions[first].triggered is TakeoverReason.OFF_ROUTE
    assert first == 5


def test_off_route_allows_what_the_expert_itself_plans(monitor: TakeoverMonitor) -> None:
    # Given the expert's own plan 3.5 m beside the route (passing an obstacle): the ego there is fine
    decisions = drive(monitor, 1.0, lambda t: off_route(t, 3.5, expert_lateral_m=3.5))
    assert not any(d.triggered for d in decisions)


def test_off_lane_when_the_ego_leaves_the_drivable_lanes(monitor: TakeoverMonitor) -> None:
    # Given the ego on the verge 2.75 m outside the rightmost lane (edge at y = -394.75), route distance 0
    def make(t: float):
        snap = snapshot(X0, -392.0, 0.0, 8.0, time_s=t)
        xy = plan_xy(X0, -392.0, 8.0)
        return snap, policy_plan(snap, xy), expert_plan(xy, 8.0)

    decisions = drive(monitor, 0.5, make)
    fired = [d for d in decisions if d.triggered]
    assert fired and fired[0].triggered is TakeoverReason.OFF_ROUTE
    assert fired[0].severity["outside_lane_m"] == pytest.approx(2.75, abs=0.05)


def standing(t: float, expert_speed: float):
    snap = at(t, speed=0.0)
    still = np.tile([X0, Y0], (8, 1))
    e_xy = plan_xy(X0, Y0, 0.5 * expert_speed)
    return snap, policy_plan(snap, still), expert_plan(e_xy, np.linspace(0.5, expert_speed, 8))


def test_stuck_after_standing_while_the_expert_wants_to_go(monitor: TakeoverMonitor) -> None:
    # Given the ego standing with the policy planning to stand, the expert planning up to 6 m/s
    decisions = drive(monitor, 3.5, lambda t: standing(t, 6.0))
    first = next(i for i, d in enumerate(decisions) if d.triggered)
    # Then stuck fires after stuck_time_s = 3 s (tick 60), and plan_deviation never pre-empts it
    assert decisions[first].triggered is TakeoverReason.STUCK
    assert first == 60
    assert all(TakeoverReason.PLAN_DEVIATION not in d.active for d in decisions)


def test_waiting_with_the_expert_is_not_stuck(monitor: TakeoverMonitor) -> None:
    decisions = drive(monitor, 5.0, lambda t: standing(t, 0.0))
    assert not any(d.triggered for d in decisions)


def deviating(t: float, lateral_per_s: float, speed: float = 8.0, **kwargs):
    snap = at(t, speed, **kwargs)
    return (
        snap,
        policy_plan(snap, plan_xy(X0, Y0, speed, lateral_per_s)),
        expert_plan(plan_xy(X0, Y0, speed), speed),
    )


def test_plan_deviation_after_it_persists(monitor: TakeoverMonitor) -> None:
    # Given a policy plan drifting 2 m/s sideways: ADE = 2 x mean(t) = 4.5 m > 3 m
    decisions = drive(monitor, 1.5, lambda t: deviating(t, 2.0))
    first = next(i for i, d in enumerate(decisions) if d.triggered)
    # Then plan_deviation fires once it held deviation_min_s = 1 s (tick 20)
    assert decisions[first].triggered is TakeoverReason.PLAN_DEVIATION
    assert first == 20
    assert decisions[first].severity["ade_m"] == pytest.approx(4.5)
    assert decisions[first].severity["fde_m"] == pytest.approx(8.0)
    assert DEVIATION_EXPLAINED not in decisions[first].severity  # no hazard in the plan explains it


def test_a_deviation_explained_by_a_hazard_is_reported_as_that_hazard(monitor: TakeoverMonitor) -> None:
    # Given a car 40 m ahead that the policy's 10 m/s plan reaches after ~3.5 s (later than collision_ttc_s)
    # and an expert plan that slows down (FDE > 6 m)
    car = ActorSpec(7, ActorKind.VEHICLE, X0 + 40.0, Y0)

    def make(t: float):
        snap = at(t, 10.0, actors=[car])
        return (
            snap,
            policy_plan(snap, plan_xy(X0, Y0, 10.0)),
            expert_plan(stopping_xy(X0, Y0, X0 + 30.0, 10.0), 0.0),
        )

    decisions = drive(monitor, 1.5, make)
    fired = [d for d in decisions if d.triggered]
    # Then the deviation fires after 1 s but names its cause: the predicted collision
    assert fired[0].triggered is TakeoverReason.PREDICTED_COLLISION
    assert fired[0].severity["ttc_s"] > MonitorConfig().collision_ttc_s
    assert fired[0].severity[DEVIATION_EXPLAINED] == 1.0  # what tells it apart from the immediate rule


def test_hand_back_waits_for_min_expert_and_uninterrupted_agreement(monitor: TakeoverMonitor) -> None:
    # Given a takeover at t = 0 (red light)...
    trigger = monitor.update(*_red_tick(0.0))
    assert trigger.triggered is TakeoverReason.RED_LIGHT
    # ... then plans that agree except for one disagreeing tick at t = 1.5 s
    decisions = []
    for k in range(1, 100):
        t = k * DT
        decisions.append(monitor.update(*(deviating(t, 4.0) if k == 30 else agreeing(t))))
    back = next(i for i, d in enumerate(decisions) if d.handed_back)
    # Then control returns at 2.55 s: min_expert_s (2 s) passed, and 1 s of agreement after the 1.5 s break
    assert (back + 1) * DT == pytest.approx(2.55)
    assert decisions[back].driver is Driver.POLICY
    assert all(d.driver is Driver.EXPERT and d.reason is TakeoverReason.RED_LIGHT for d in decisions[:back])
    assert not any(d.triggered for d in decisions)


def _red_tick(t: float):
    snap = at(t, lights=[red_light(TrafficLightState.RED, X0 + 20.0)])
    return (
        snap,
        policy_plan(snap, plan_xy(X0, Y0, 8.0)),
        expert_plan(stopping_xy(X0, Y0, X0 + 16.0, 8.0), 0.0),
    )


def test_no_hand_back_while_the_policy_still_runs_the_light(monitor: TakeoverMonitor) -> None:
    decisions = [monitor.update(*_red_tick(k * DT)) for k in range(100)]
    assert decisions[0].triggered is TakeoverReason.RED_LIGHT
    assert all(d.driver is Driver.EXPERT for d in decisions)


@pytest.mark.parametrize("expert_speed", [0.0, 1.0])
def test_standing_plans_hand_back_only_without_handback_expert_speed(
    route, cmap, expert_speed: float
) -> None:
    monitor = TakeoverMonitor(MonitorConfig(handback_expert_speed_mps=expert_speed))
    monitor.reset(route, cmap)
    # Given a takeover at t = 0 (red light), then 4 s standing with both plans standing still (they agree
    # trivially: ADE = FDE = 0; the expert's target speeds stay below 1 m/s)
    assert monitor.update(*_red_tick(0.0)).triggered is TakeoverReason.RED_LIGHT
    decisions = drive(monitor, 4.0, lambda t: standing(t, 0.0), start_s=DT)
    assert not any(d.active for d in decisions)
    if expert_speed == 0.0:
        # Then by default the standing agreement hands the wheel back after min_expert_s
        back = next(i for i, d in enumerate(decisions) if d.handed_back)
        assert (back + 1) * DT == pytest.approx(MonitorConfig().min_expert_s)
        return
    # Then with the threshold the expert keeps waiting, and hands back agree_s after both plans move
    assert all(d.driver is Driver.EXPERT for d in decisions)
    after = drive(monitor, 2.0, agreeing, start_s=4.0 + DT)
    back = next(i for i, d in enumerate(after) if d.handed_back)
    assert back * DT == pytest.approx(MonitorConfig().agree_s)  # agreeing since the first moving tick


def test_disabled_reasons_are_measured_but_never_trigger(route, cmap) -> None:
    monitor = TakeoverMonitor(MonitorConfig(enabled_reasons=["stuck"]))
    monitor.reset(route, cmap)
    decision = monitor.update(*_red_tick(0.0))
    assert decision.driver is Driver.POLICY
    assert decision.active == (TakeoverReason.RED_LIGHT,)


def test_conf_monitor_yaml_matches_the_schema_defaults() -> None:
    assert load_monitor_config() == MonitorConfig()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["enabled_reasons=[red_light,speeding]"], "speeding"),
        (["handback_ade_m=5.0"], "handback"),
        (["collision_dt_s=0"], "collision_dt_s"),
        (["stuck_time_s=-1"], "stuck_time_s"),
    ],
)
def test_bad_monitor_config_names_the_value(overrides: list[str], message: str) -> None:
    with pytest.raises(MonitorError, match=message):
        load_monitor_config(overrides)


def test_update_before_reset_is_a_clear_error() -> None:
    snap, pp, ep = agreeing(0.0)
    with pytest.raises(MonitorError, match="reset"):
        TakeoverMonitor(MonitorConfig()).update(snap, pp, ep)
