"""Lateral heading PID and longitudinal speed tracking (experts/controllers.py)."""

from __future__ import annotations

import itertools
import math

import pytest

from experts.config import EgoModelConfig, LateralConfig, LongitudinalConfig
from experts.controllers import LateralPID, LongitudinalController, aim_distance, heading_error
from experts.forecast import bicycle_step


def test_aim_distance_grows_with_speed_within_bounds():
    cfg = LateralConfig()
    assert aim_distance(0.0, cfg) == cfg.aim_min_m
    assert aim_distance(50.0, cfg) == cfg.aim_max_m
    assert aim_distance(8.0, cfg) == pytest.approx(cfg.aim_gain_s_per_kmh * 8.0 * 3.6 + cfg.aim_offset_m)


def test_heading_error_sign_follows_carla_frame():
    # CARLA: +y is to the right of a vehicle heading +x
    assert heading_error(0, 0, 0, 5, 1) > 0
    assert heading_error(0, 0, 0, 5, -1) < 0
    # across the +-pi seam the error is the short way round
    aim = -math.pi + 0.05
    assert heading_error(0, 0, math.pi - 0.01, math.cos(aim), math.sin(aim)) == pytest.approx(0.06, abs=1e-9)


def test_lateral_pid_recovers_a_lateral_offset_on_a_straight_lane():
    # given the ego 1.5 m left of a lane along +x, when driving 10 s at 8 m/s with the PID
    pid = LateralPID(LateralConfig())
    model = EgoModelConfig()
    x, y, yaw = 0.0, -1.5, 0.0
    for _ in range(200):
        aim = aim_distance(8.0, pid.cfg)
        steer = pid.step(x, y, yaw, x + aim, 0.0)
        x, y, yaw = bicycle_step(x, y, yaw, 8.0, steer, 0.05, model)
    # then it converged onto the lane without leaving it
    assert abs(y) < 0.1 and abs(yaw) < 0.02


def test_lateral_pid_output_is_clipped():
    pid = LateralPID(LateralConfig())
    assert pid.step(0, 0, 0, 0, 5) == 1.0


def _speed_after(
    ctrl: LongitudinalController, v: float, target: float, seconds: float
) -> tuple[float, list[float]]:
    """Integrate v' = throttle a_t - brake b (the model the controller's feed-forward assumes)."""
    cfg = ctrl.cfg
    accels = []
    for _ in range(int(seconds / ctrl.dt)):
        throttle, brake, _ = ctrl.step(v, target)
        a = (
            throttle * cfg.throttle_accel_mps2 * max(0.0, 1 - v / cfg.throttle_fade_speed_mps)
            - brake * cfg.brake_decel_mps2
        )
        a -= cfg.rolling_resistance_mps2 + cfg.drag_per_m * v * v if v > 0 else 0.0
        v = max(v + a * ctrl.dt, 0.0)
        accels.append(a)
    return v, accels


def test_longitudinal_reaches_and_holds_target_without_overshoot():
    ctrl = LongitudinalController(LongitudinalConfig(), 0.05)
    v, accels = _speed_after(ctrl, 0.0, 8.0, 12.0)
    assert v == pytest.approx(8.0, abs=0.15)
    assert max(accels) <= ctrl.cfg.max_accel_mps2 + 1e-6


def test_longitudinal_jerk_is_limited_when_not_an_emergency():
    ctrl = LongitudinalController(LongitudinalConfig(), 0.05)
    _, accels = _speed_after(ctrl, 0.0, 10.0, 3.0)
    jerks = [abs(b - a) / 0.05 for a, b in itertools.pairwise(accels)]
    assert max(jerks) <= ctrl.cfg.max_jerk_up_mps3 + 0.6  # plus drag/rolling changes


def test_zero_target_stops_and_holds_the_brake():
    ctrl = LongitudinalController(LongitudinalConfig(), 0.05)
    v, _ = _speed_after(ctrl, 10.0, 0.0, 4.0)
    assert v == 0.0
    throttle, brake, _ = ctrl.step(0.0, 0.0)
    assert throttle == 0.0 and brake > 0.0


def test_emergency_demand_brakes_fully_at_once():
    ctrl = LongitudinalController(LongitudinalConfig(), 0.05)
    ctrl.step(10.0, 10.0)
    throttle, brake, a = ctrl.step(10.0, 0.0)
    assert throttle == 0.0 and brake == pytest.approx(1.0) and a == -ctrl.cfg.max_decel_mps2
