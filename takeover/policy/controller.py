"""From a planned trajectory to a control (TCP's PID pair), and the TCP fusion with the control branch.

Trajectory branch (waypoints w_1..w_K in the ego frame, x forward, y right, dt apart):
    desired speed v* = |w_2 - w_1| / dt
    brake  = v* < brake_speed  or  v / v* > brake_ratio
    throttle = clip(PID_speed(clip(v* - v, 0, clip_delta)), 0, max_throttle), 0 when braking
    aim = (w_1 + w_2) / 2,  steer = clip(PID_turn(atan2(aim_y, aim_x) / (pi/2)), -1, 1)   (0 when standing)
Fusion (TCP): the control branch gets weight w = control_weight_turning when turning, else
control_weight_straight; the trajectory branch gets 1 - w. Blended are steer and the longitudinal
action a = throttle - brake, which then splits into throttle = min(max(a, 0), max_throttle) and
brake = max(-a, 0), so the fused control never throttles and brakes at once.
Turning = the command is LEFT or RIGHT, or |trajectory-branch steer| > turning_steer_threshold.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from carla_bridge.route import RoadOption
from carla_bridge.snapshot import Control
from takeover.policy.config import ControllerConfig

_TURN_COMMANDS = (int(RoadOption.LEFT), int(RoadOption.RIGHT))


class PIDController:
    """TCP's discrete PID: integral = mean of the last `window` errors, derivative = last difference.

    u_t = kp e_t + ki mean(e_{t-n+1..t}) + kd (e_t - e_{t-1})
    """

    def __init__(self, kp: float, ki: float, kd: float, window: int) -> None:
        self.kp, self.ki, self.kd = kp, ki, kd
        self._errors: deque[float] = deque([0.0] * window, maxlen=window)

    def reset(self) -> None:
        for i in range(len(self._errors)):
            self._errors[i] = 0.0

    def step(self, error: float) -> float:
        self._errors.append(float(error))
        integral = float(np.mean(self._errors))
        derivative = self._errors[-1] - self._errors[-2]
        return self.kp * error + self.ki * integral + self.kd * derivative


@dataclass(frozen=True)
class TrajectoryControl:
    control: Control
    desired_speed_mps: float
    brake: bool


class TrajectoryFollower:
    """The trajectory branch's controller (stateful PIDs: one instance per episode, `reset` between)."""

    def __init__(self, config: ControllerConfig, waypoint_dt_s: float) -> None:
        self.config = config
        self.dt = waypoint_dt_s
        self.turn = PIDController(config.turn_kp, config.turn_ki, config.turn_kd, config.turn_window)
        self.speed = PIDController(config.speed_kp, config.speed_ki, config.speed_kd, config.speed_window)

    def reset(self) -> None:
        self.turn.reset()
        self.speed.reset()

    def step(self, waypoints_ego: np.ndarray, speed_mps: float) -> TrajectoryControl:
        c = self.config
        w = np.asarray(waypoints_ego, dtype=np.float64)
        desired = float(np.linalg.norm(w[1] - w[0]) / self.dt)
        brake = desired < c.brake_speed_mps or (speed_mps / max(desired, 1e-6)) > c.brake_ratio
        delta = float(np.clip(desired - speed_mps, 0.0, c.clip_delta_mps))
        throttle = 0.0 if brake else float(np.clip(self.speed.step(delta), 0.0, c.max_throttle))
        aim = 0.5 * (w[0] + w[1])
        angle = math.atan2(aim[1], aim[0]) / (0.5 * math.pi)
        if speed_mps < c.min_steer_speed_mps:
            angle = 0.0
        steer = float(np.clip(self.turn.step(angle), -1.0, 1.0))
        return TrajectoryControl(
            Control(throttle=throttle, steer=steer, brake=1.0 if brake else 0.0), desired, brake
        )


def is_turning(command: int, trajectory_steer: float, config: ControllerConfig) -> bool:
    return int(command) in _TURN_COMMANDS or abs(trajectory_steer) > config.turning_steer_threshold


def fuse_controls(
    control_branch: Control, trajectory_branch: Control, turning: bool, config: ControllerConfig
) -> Control:
    """TCP fusion (module docstring): w * control branch + (1 - w) * trajectory branch."""
    w = config.control_weight_turning if turning else config.control_weight_straight
    steer = w * control_branch.steer + (1.0 - w) * trajectory_branch.steer
    acc_c = control_branch.throttle - control_branch.brake
    acc_t = trajectory_branch.throttle - trajectory_branch.brake
    acc = w * acc_c + (1.0 - w) * acc_t
    return Control(
        throttle=float(np.clip(acc, 0.0, config.max_throttle)),
        steer=float(np.clip(steer, -1.0, 1.0)),
        brake=float(np.clip(-acc, 0.0, 1.0)),
    )
