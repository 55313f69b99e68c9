"""PID trajectory follower and TCP fusion rule."""

from __future__ import annotations

import numpy as np
import pytest

from carla_bridge.route import RoadOption
from carla_bridge.snapshot import Control
from takeover.policy.config import ControllerConfig
from takeover.policy.controller import PIDController, TrajectoryFollower, fuse_controls, is_turning

DT = 0.5


def straight(speed_mps: float, lateral_m: float = 0.0, k: int = 8) -> np.ndarray:
    t = DT * np.arange(1, k + 1)
    return np.stack([speed_mps * t, lateral_m * t / t[-1]], axis=1)


def test_pid_matches_its_equation():
    # u_t = kp e_t + ki mean(window) + kd (e_t - e_{t-1}); window of 4 zeros initially
    pid = PIDController(kp=2.0, ki=1.0, kd=0.5, window=4)
    assert pid.step(1.0) == pytest.approx(2.0 + 1.0 * (1.0 / 4) + 0.5 * 1.0)
    assert pid.step(3.0) == pytest.approx(6.0 + 1.0 * (4.0 / 4) + 0.5 * 2.0)
    pid.reset()
    assert pid.step(1.0) == pytest.approx(2.0 + 0.25 + 0.5)


def test_follower_accelerates_along_a_straight_plan():
    follower = TrajectoryFollower(ControllerConfig(), DT)
    out = follower.step(straight(5.0), speed_mps=2.0)
    assert out.desired_speed_mps == pytest.approx(5.0)
    assert not out.brake and 0.0 < out.control.throttle <= 0.75
    assert out.control.steer == pytest.approx(0.0, abs=1e-9) and out.control.brake == 0.0


def test_follower_brakes_for_a_stop_plan_and_when_too_fast():
    cfg = ControllerConfig()
    stop = TrajectoryFollower(cfg, DT).step(np.zeros((8, 2)), speed_mps=3.0)
    assert stop.brake and stop.control.brake == 1.0 and stop.control.throttle == 0.0
    fast = TrajectoryFollower(cfg, DT).step(straight(5.0), speed_mps=5.0 * cfg.brake_ratio + 0.1)
    assert fast.brake


def test_follower_steers_towards_the_plan():
    right = TrajectoryFollower(ControllerConfig(), DT).step(straight(5.0, lateral_m=6.0), speed_mps=5.0)
    left = TrajectoryFollower(ControllerConfig(), DT).step(straight(5.0, lateral_m=-6.0), speed_mps=5.0)
    assert right.control.steer > 0.05 and left.control.steer < -0.05
    standing = TrajectoryFollower(ControllerConfig(), DT).step(straight(5.0, lateral_m=6.0), speed_mps=0.0)
    assert standing.control.steer == 0.0


def test_fusion_weights_follow_tcp():
    cfg = ControllerConfig()
    ctrl = Control(throttle=0.5, steer=0.4, brake=0.0)
    traj = Control(throttle=0.0, steer=-0.2, brake=1.0)
    # turning: 0.7 control branch + 0.3 trajectory branch
    fused = fuse_controls(ctrl, traj, turning=True, config=cfg)
    assert fused.steer == pytest.approx(0.7 * 0.4 + 0.3 * -0.2)
    acc = 0.7 * 0.5 + 0.3 * -1.0
    assert fused.throttle == pytest.approx(acc) and fused.brake == 0.0
    # straight: 0.3 / 0.7
    fused = fuse_controls(ctrl, traj, turning=False, config=cfg)
    assert fused.steer == pytest.approx(0.3 * 0.4 + 0.7 * -0.2)
    assert fused.brake == pytest.approx(-(0.3 * 0.5 + 0.7 * -1.0)) and fused.throttle == 0.0


def test_turning_rule():
    cfg = ControllerConfig()
    assert is_turning(int(RoadOption.LEFT), 0.0, cfg)
    assert is_turning(int(RoadOption.LANEFOLLOW), 0.3, cfg)
    assert not is_turning(int(RoadOption.STRAIGHT), 0.05, cfg)
