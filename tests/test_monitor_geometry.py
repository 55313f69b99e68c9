"""The takeover monitor's pure geometry: plan sampling, displacement, swept boxes, stop-line crossings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from carla_bridge.snapshot import ActorKind, StopLine
from experts.synthetic import ActorSpec, actor_table
from takeover.monitor import (
    MonitorConfig,
    distance_to_polyline,
    first_overlap_time,
    forecast_actor_boxes,
    path_headings,
    plan_displacement,
    plan_positions,
    stop_line_crossing_time,
)

TIMES = 0.5 * np.arange(1, 9)


def straight_plan(speed_mps: float, y: float = 0.0) -> np.ndarray:
    return np.stack([speed_mps * TIMES, np.full_like(TIMES, y)], axis=1)


def test_plan_positions_interpolate_in_time_from_the_ego() -> None:
    # Given a plan at 4 m/s along +x starting at the origin
    plan = straight_plan(4.0)
    # When it is sampled between and beyond its waypoints
    xy = plan_positions(TIMES, plan, np.zeros(2), np.array([0.0, 0.25, 1.0, 5.0]))
    # Then positions are linear in time from the ego and hold the last waypoint afterwards
    np.testing.assert_allclose(xy[:, 0], [0.0, 1.0, 4.0, 16.0])
    np.testing.assert_allclose(xy[:, 1], 0.0)


def test_path_headings_follow_motion_and_hold_while_standing() -> None:
    # Given points that go +x, then stand, then go +y
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    # When headings are taken with a start heading of 0.3 rad
    yaw = path_headings(xy, 0.3)
    # Then the first is the start's, standing keeps the last motion's, and +y is pi/2
    np.testing.assert_allclose(yaw, [0.3, 0.0, 0.0, math.pi / 2])


def test_plan_displacement_is_mean_and_final_distance() -> None:
    a = straight_plan(4.0)
    b = straight_plan(4.0, y=1.0)
    b[-1, 1] = 3.0
    ade, fde = plan_displacement(a, b)
    assert fde == pytest.approx(3.0)
    assert ade == pytest.approx((7 * 1.0 + 3.0) / 8)


def test_stop_line_crossing_time_of_a_front_bumper_path() -> None:
    # Given a lane along +x with its stop line at x = 10 (4 m wide) and a path at 5 m/s from x = 0
    line = StopLine(x=10.0, y=0.0, yaw=0.0, road_id=1, lane_id=-1, width=4.0)
    front = np.vstack([[0.0, 0.0], straight_plan(5.0)])
    # When the crossing is searched
    t = stop_line_crossing_time(TIMES, front, line, math.radians(60))
    # Then it is crossed at 2 s
    assert t == pytest.approx(2.0)
    # And a path beside the lane, or moving against the lane's direction, never crosses it
    beside = np.vstack([[0.0, 5.0], straight_plan(5.0, y=5.0)])
    assert math.isinf(stop_line_crossing_time(TIMES, beside, line, math.radians(60)))
    backwards = StopLine(x=10.0, y=0.0, yaw=math.pi, road_id=1, lane_id=1, width=4.0)
    assert math.isinf(stop_line_crossing_time(TIMES, front, backwards, math.radians(60)))


def test_first_overlap_time_of_swept_boxes() -> None:
    # Given the ego sweeping +x at 10 m/s and a 2 m long box standing 12 m ahead
    times = 0.1 * np.arange(21)
    ego = np.stack([10.0 * times, np.zeros_like(times)], axis=1)
    yaw = np.zeros_like(times)
    ax, ay, ayaw = np.full((1, 21), 12.0), np.zeros((1, 21)), np.zeros((1, 21))
    # When overlaps are searched with a 2 m half-length ego
    t, who = first_overlap_time(times, ego, yaw, (2.0, 1.0), ax, ay, ayaw, np.array([[1.0, 1.0]]))
    # Then the boxes touch when the gap of 12 - 2 - 1 = 9 m is closed: at 0.9 s, actor 0
    assert t == pytest.approx(0.9)
    assert who == 0
    # And a box in the next lane is never hit
    t_side, _ = first_overlap_time(times, ego, yaw, (2.0, 1.0), ax, ay + 3.5, ayaw, np.array([[1.0, 1.0]]))
    assert math.isinf(t_side)


def test_forecasts_brake_vehicles_by_their_pedals_and_move_walkers() -> None:
    # Given a braking car at 10 m/s and a walker crossing at 1.5 m/s
    actors = actor_table(
        [
            ActorSpec(1, ActorKind.VEHICLE, 0.0, 0.0, speed=10.0, control=(0.0, 0.0, 1.0)),
            ActorSpec(2, ActorKind.WALKER, 0.0, 5.0, yaw=math.pi / 2, speed=1.5, extent=(0.3, 0.3, 0.9)),
        ]
    )
    # When both are forecast 2 s at 0.1 s
    x, y, _ = forecast_actor_boxes(actors, np.array([0, 1]), 0.1, 21, MonitorConfig())
    # Then the car stops within its braking distance v^2 / 2b = 6.25 m (plus one Euler step)
    assert x[0, 0] == 0.0
    assert 5.5 < x[0, -1] < 7.5
    # And the walker keeps its velocity: 3 m in 2 s
    assert y[1, -1] == pytest.approx(8.0)


def test_distance_to_polyline_projects_on_pieces() -> None:
    line = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    d = distance_to_polyline(np.array([[5.0, 2.0], [12.0, 5.0], [-3.0, -4.0]]), line)
    np.testing.assert_allclose(d, [2.0, 2.0, 5.0])
