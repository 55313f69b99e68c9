"""Low-level controllers: heading PID to a speed-dependent aim point, and speed tracking to a target.

Both are small stateful objects with `reset()`; the maths that the forecasts share (aim distance,
heading error) are pure functions.
"""

from __future__ import annotations

import math
from collections import deque

from carla_bridge.units import KMH_PER_MPS
from experts.config import LateralConfig, LongitudinalConfig


def aim_distance(speed_mps: float, cfg: LateralConfig) -> float:
    """Look-ahead of the aim point: clip(g v_kmh + c, d_min, d_max) metres."""
    d = cfg.aim_gain_s_per_kmh * speed_mps * KMH_PER_MPS + cfg.aim_offset_m
    return min(max(d, cfg.aim_min_m), cfg.aim_max_m)


def heading_error(x: float, y: float, yaw: float, aim_x: float, aim_y: float) -> float:
    """Wrapped angle (rad) from the ego heading to the direction of the aim point; positive = aim on the right."""
    a = math.atan2(aim_y - y, aim_x - x) - yaw
    return (a + math.pi) % (2.0 * math.pi) - math.pi


class LateralPID:
    """steer = clip(kp e + kd (e - e_prev) + ki mean(last n e), -1, 1), e = heading error / error scale."""

    def __init__(self, cfg: LateralConfig) -> None:
        self.cfg = cfg
        self._errors: deque[float] = deque(maxlen=max(cfg.integral_window, 1))

    def reset(self) -> None:
        self._errors.clear()

    def step(self, x: float, y: float, yaw: float, aim_x: float, aim_y: float) -> float:
        cfg = self.cfg
        e = heading_error(x, y, yaw, aim_x, aim_y) / math.radians(cfg.error_scale_deg)
        prev = self._errors[-1] if self._errors else e
        self._errors.append(e)
        mean_e = sum(self._errors) / len(self._errors)
        steer = cfg.kp * e + cfg.kd * (e - prev) + cfg.ki * mean_e
        return min(max(steer, -1.0), 1.0)


def proportional_steer(
    x: float, y: float, yaw: float, aim_x: float, aim_y: float, cfg: LateralConfig
) -> float:
    """The PID's proportional term alone (memoryless), used to roll the ego forecast forward."""
    e = heading_error(x, y, yaw, aim_x, aim_y) / math.radians(cfg.error_scale_deg)
    return min(max(cfg.kp * e, -1.0), 1.0)


class LongitudinalController:
    """Speed tracking with acceleration feed-forward through the ego's throttle/brake model.

        a_cmd = clip((v_t - v) / tau + ki * integral(v_t - v), -d_max, a_max), rate-limited to the jerk
                bounds (up / down) unless the demand is an emergency (a_cmd < -emergency decel)
        throttle = (a_cmd + r(v)) / (a_t (1 - v / v_fade))  when a_cmd + r(v) >= 0, else
        brake = -(a_cmd + r(v)) / b,   r(v) = rolling + drag v^2 (the ego model in LongitudinalConfig)
    At a zero target below the stop speed it holds the brake (no rolling).
    """

    def __init__(self, cfg: LongitudinalConfig, dt: float) -> None:
        self.cfg = cfg
        self.dt = dt
        self._integral = 0.0
        self._a_prev = 0.0

    def reset(self) -> None:
        self._integral = 0.0
        self._a_prev = 0.0

    def step(
        self, speed: float, target: float, stop_accel: float | None = None
    ) -> tuple[float, float, float]:
        """(throttle, brake, commanded acceleration) for the current speed and target speed (m/s).

        A zero target says "stop" but not how hard: `stop_accel` (m/s^2, negative) is the planner's
        deceleration demand then, and the command is never softer than it.
        """
        cfg = self.cfg
        if target <= 0.0 and speed < cfg.stop_speed_mps:
            self._integral = 0.0
            self._a_prev = 0.0
            return 0.0, cfg.hold_brake, -cfg.max_decel_mps2 * cfg.hold_brake
        err = target - speed
        if target > 0.0:
            self._integral = min(
                max(self._integral + err * self.dt, -cfg.integral_limit_mps), cfg.integral_limit_mps
            )
        else:
            self._integral = 0.0
        a = err / cfg.track_time_constant_s + cfg.ki * self._integral
        if target <= 0.0:
            # A zero target is a stop demand: never command less than a firm stop.
            a = min(a, -speed / cfg.track_time_constant_s, stop_accel if stop_accel is not None else 0.0)
        a = min(max(a, -cfg.max_decel_mps2), cfg.max_accel_mps2)
        if speed < cfg.stop_speed_mps:
            # Standing, the brake can let go at once: no acceleration (and no jerk) comes of it.
            self._a_prev = max(self._a_prev, 0.0)
        if a > -cfg.emergency_decel_mps2:
            # Braking may build faster than it is released: comfort never delays a needed stop much.
            a = min(
                max(a, self._a_prev - cfg.max_jerk_down_mps3 * self.dt),
                self._a_prev + cfg.max_jerk_up_mps3 * self.dt,
            )
        self._a_prev = a
        resist = cfg.rolling_resistance_mps2 + cfg.drag_per_m * speed * speed if speed > 0.0 else 0.0
        if a + resist >= 0.0:
            gain = cfg.throttle_accel_mps2 * max(1.0 - speed / cfg.throttle_fade_speed_mps, 0.05)
            return min((a + resist) / gain, cfg.max_throttle), 0.0, a
        if a <= -cfg.max_decel_mps2:
            return 0.0, 1.0, a  # a full stop demand gets the full brake
        # Resistance alone slows the car by `resist`; brake for the rest.
        return 0.0, min((-a - resist) / cfg.brake_decel_mps2, 1.0), a
