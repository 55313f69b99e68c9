"""Ego dynamics: kinematic bicycle + first-order longitudinal model (carla_bridge.embedded.vehicle_model)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from carla_bridge.embedded.config import VehicleParams
from carla_bridge.embedded.vehicle_model import (
    BicycleControl,
    BicycleState,
    bicycle_step,
    bicycle_step_scalar,
    steer_for_curvature,
    turning_radius,
)
from carla_bridge.snapshot import Control

DT = 0.05
P = VehicleParams()


def run_scalar(state, control: Control, ticks: int):
    out = [state]
    for _ in range(ticks):
        state = bicycle_step_scalar(state, control, DT, P)
        out.append(state)
    return out


def test_straight_line_keeps_heading_and_accelerates_below_max_speed():
    # given a car at rest heading east, when full throttle and zero steer for 20 s
    traj = run_scalar((0.0, 0.0, 0.0, 0.0, 0.0), Control(throttle=1.0), 400)
    _x, y, yaw, v, _ = traj[-1]
    # then it stays on the x axis, speeds up monotonically, never beyond the max speed
    assert abs(y) < 1e-9 and abs(yaw) < 1e-12
    speeds = [s[3] for s in traj]
    assert all(b >= a for a, b in itertools.pairwise(speeds))
    assert 20.0 < v < P.max_speed_mps
    # and the first second matches the documented acceleration (3.5 m/s2 falling with speed, minus resistance)
    v1 = traj[20][3]
    assert 2.9 < v1 < P.max_accel_mps2


def test_turning_radius_matches_bicycle_geometry():
    # given full right steer at a crawl, when driving a full circle
    state = (0.0, 0.0, 0.0, 3.0, 1.0)
    pts = []
    for _ in range(400):
        state = bicycle_step_scalar(state, Control(throttle=0.0, steer=1.0), DT, P)
        state = (state[0], state[1], state[2], 3.0, state[4])  # hold the speed
        pts.append(state[:2])
    pts = np.asarray(pts)
    # then the path is a circle of radius l_r / sin(beta), turning right (yaw increasing in CARLA's frame)
    # least-squares circle: x^2 + y^2 = 2 a x + 2 b y + c
    A = np.column_stack([2 * pts[:, 0], 2 * pts[:, 1], np.ones(len(pts))])
    a, b, _ = np.linalg.lstsq(A, (pts**2).sum(axis=1), rcond=None)[0]
    radii = np.hypot(pts[:, 0] - a, pts[:, 1] - b)
    expected = turning_radius(1.0, P)
    assert radii.mean() == pytest.approx(expected, rel=0.03)
    assert radii.std() < 0.01 * expected
    assert b > 0  # centre to the right of an east-heading car: +y in CARLA's left-handed frame
    assert expected == pytest.approx(P.rear_wheel_offset_m / math.sin(math.atan(
        P.rear_wheel_offset_m / (P.front_wheel_offset_m + P.rear_wheel_offset_m) * math.tan(P.wheel_angle_per_steer_rad)
    )))  # fmt: skip


def test_braking_distance_from_15_mps():
    # given 15 m/s, when full brake
    traj = run_scalar((0.0, 0.0, 0.0, 15.0, 0.0), Control(brake=1.0), 200)
    stop = next(i for i, s in enumerate(traj) if s[3] == 0.0)
    dist = traj[stop][0]
    # then it stops in about v^2 / (2 (b_max + resistances)) and never rolls backwards
    decel = P.max_brake_decel_mps2 + P.rolling_resistance_mps2
    assert dist == pytest.approx(15.0**2 / (2 * decel), rel=0.08)
    assert stop * DT == pytest.approx(15.0 / decel, abs=0.15)
    assert all(s[3] >= 0.0 for s in traj)


def test_steering_is_rate_limited():
    state = (0.0, 0.0, 0.0, 5.0, 0.0)
    state = bicycle_step_scalar(state, Control(throttle=0.2, steer=1.0), DT, P)
    assert state[4] == pytest.approx(P.max_steer_rate_per_s * DT)


def test_reverse_gear_drives_backwards_and_brake_stops_it():
    traj = run_scalar((0.0, 0.0, 0.0, 0.0, 0.0), Control(throttle=1.0, reverse=True), 100)
    assert traj[-1][0] < -1.0 and -P.max_reverse_speed_mps <= traj[-1][3] < 0.0
    traj = run_scalar(traj[-1], Control(brake=1.0), 40)
    assert traj[-1][3] == 0.0


def test_vectorised_step_equals_scalar_step():
    rng = np.random.default_rng(0)
    n = 16
    state = BicycleState(
        x=rng.normal(size=n), y=rng.normal(size=n), yaw=rng.uniform(-3, 3, n), speed=rng.uniform(-2, 20, n),
        steer=rng.uniform(-1, 1, n),
    )  # fmt: skip
    ctrl = BicycleControl(
        throttle=rng.uniform(0, 1, n), steer=rng.uniform(-1, 1, n), brake=rng.uniform(0, 1, n) * (rng.random(n) < 0.5),
        reverse=state.speed < 0, hand_brake=np.zeros(n, bool),
    )  # fmt: skip
    for _ in range(5):
        nxt = bicycle_step(state, ctrl, DT, P)
        for i in range(n):
            c = Control(
                float(ctrl.throttle[i]),
                float(ctrl.steer[i]),
                float(ctrl.brake[i]),
                False,
                bool(ctrl.reverse[i]),
            )
            s = (
                float(state.x[i]),
                float(state.y[i]),
                float(state.yaw[i]),
                float(state.speed[i]),
                float(state.steer[i]),
            )
            ref = bicycle_step_scalar(s, c, DT, P)
            got = (nxt.x[i], nxt.y[i], nxt.yaw[i], nxt.speed[i], nxt.steer[i])
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
        state = nxt


def test_steer_for_curvature_reproduces_the_curvature():
    for kappa in (-0.1, -0.02, 0.0, 0.05, 0.15):
        steer = float(steer_for_curvature(kappa, P))
        r = turning_radius(steer, P)
        assert (0.0 if math.isinf(r) else 1.0 / r) == pytest.approx(abs(kappa), abs=1e-9)
