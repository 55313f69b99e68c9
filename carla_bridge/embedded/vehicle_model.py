"""Ego vehicle dynamics: kinematic bicycle (World-on-Rails parameters) + first-order longitudinal model.

Lateral (research/pdm_lite.md; the bicycle equations live in carla_bridge.kinematics), per step of `dt` seconds:
    steer'  = steer + clip(steer_cmd - steer, -r dt, r dt)            (rate-limited steering, r = max_steer_rate)
    wheel   = k x steer'                                              (k = wheel_angle_per_steer)
    beta    = atan(l_r / (l_f + l_r) x tan(wheel))                    (slip angle at the centre of gravity)
    x'      = x + v' cos(yaw + beta) dt ;  y' = y + v' sin(yaw + beta) dt
    yaw'    = yaw + v' / l_r x sin(beta) dt
Longitudinal (a documented stand-in for CARLA's fitted throttle/brake polynomials):
    forward gear: a_drive = throttle x a_max x max(0, 1 - v / v_max)
    reverse gear: a_drive = -throttle x a_rev x max(0, 1 - max(0, -v) / v_rev)
    v_free  = v + a_drive dt
    decel   = (c_roll [v_free != 0] + c_drag v^2 + brake x b_max + hand_brake x b_hand) dt
    v'      = sign(v_free) x max(0, |v_free| - decel)                 (resistances and brakes never reverse motion)
Positions use the updated speed v' (semi-implicit Euler). Every function accepts floats or numpy arrays
of one shape (N vehicles at once) and returns the same kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from carla_bridge import kinematics
from carla_bridge.embedded.config import VehicleParams
from carla_bridge.snapshot import Control

Array = np.ndarray | float


@dataclass(frozen=True)
class BicycleState:
    """Pose, signed speed along the heading (m/s) and the current (rate-limited) steer in [-1, 1]."""

    x: Array
    y: Array
    yaw: Array  # radians
    speed: Array  # m/s, negative when reversing
    steer: Array = 0.0


@dataclass(frozen=True)
class BicycleControl:
    """Vectorisable control: throttle, brake in [0, 1], steer in [-1, 1] (positive = right)."""

    throttle: Array
    steer: Array
    brake: Array
    reverse: Array = False
    hand_brake: Array = False

    @staticmethod
    def from_control(c: Control) -> BicycleControl:
        c = c.clipped()
        return BicycleControl(c.throttle, c.steer, c.brake, bool(c.reverse), bool(c.hand_brake))


def slip_angle(steer: Array, params: VehicleParams) -> Array:
    """beta = atan(l_r / (l_f + l_r) x tan(k x steer)) (carla_bridge.kinematics)."""
    return kinematics.slip_angle(
        steer, params.wheel_angle_per_steer_rad, params.front_wheel_offset_m, params.rear_wheel_offset_m
    )


def steer_for_curvature(curvature: Array, params: VehicleParams) -> Array:
    """Steady-state steer that makes the bicycle follow a path of `curvature` (1/m).

    yaw rate = v / l_r sin(beta) = v kappa  =>  beta = asin(kappa l_r);
    steer = atan(tan(beta) (l_f + l_r) / l_r) / k, clipped to [-1, 1].
    """
    lf, lr = params.front_wheel_offset_m, params.rear_wheel_offset_m
    beta = np.arcsin(np.clip(np.asarray(curvature) * lr, -0.99, 0.99))
    return np.clip(np.arctan(np.tan(beta) * (lf + lr) / lr) / params.wheel_angle_per_steer_rad, -1.0, 1.0)


def turning_radius(steer: float, params: VehicleParams) -> float:
    """R = l_r / sin(beta) at constant `steer` (inf for steer = 0)."""
    b = float(slip_angle(steer, params))
    return math.inf if b == 0.0 else params.rear_wheel_offset_m / abs(math.sin(b))


def longitudinal_speed(
    speed: Array,
    throttle: Array,
    brake: Array,
    reverse: Array,
    hand_brake: Array,
    dt: float,
    p: VehicleParams,
) -> Array:
    """v' of the first-order longitudinal model (module docstring)."""
    fwd = p.max_accel_mps2 * np.maximum(0.0, 1.0 - speed / p.max_speed_mps)
    rev = -p.reverse_accel_mps2 * np.maximum(0.0, 1.0 - np.maximum(0.0, -speed) / p.max_reverse_speed_mps)
    a_drive = throttle * np.where(reverse, rev, fwd)
    v_free = speed + a_drive * dt
    moving = v_free != 0.0
    decel = (
        p.rolling_resistance_mps2 * moving
        + p.drag_per_m * speed * speed
        + brake * p.max_brake_decel_mps2
        + hand_brake * p.hand_brake_decel_mps2
    ) * dt
    return np.sign(v_free) * np.maximum(0.0, np.abs(v_free) - decel)


def bicycle_step(
    state: BicycleState, control: BicycleControl, dt: float, params: VehicleParams
) -> BicycleState:
    """One step of the kinematic bicycle + longitudinal model (module docstring); pure, vectorised."""
    max_ds = params.max_steer_rate_per_s * dt
    steer_cmd = np.clip(control.steer, -1.0, 1.0)
    steer = state.steer + np.clip(steer_cmd - state.steer, -max_ds, max_ds)
    beta = slip_angle(steer, params)
    v = longitudinal_speed(
        state.speed,
        np.clip(control.throttle, 0.0, 1.0),
        np.clip(control.brake, 0.0, 1.0),
        control.reverse,
        control.hand_brake,
        dt,
        params,
    )
    x, y, yaw = kinematics.pose_step(state.x, state.y, state.yaw, v, beta, dt, params.rear_wheel_offset_m)
    return BicycleState(x=x, y=y, yaw=(yaw + np.pi) % (2.0 * np.pi) - np.pi, speed=v, steer=steer)


def bicycle_step_scalar(
    state: tuple[float, float, float, float, float],
    control: Control,
    dt: float,
    params: VehicleParams,
) -> tuple[float, float, float, float, float]:
    """Same equations as `bicycle_step` for one vehicle with Python floats (the ego's hot path).

    state = (x, y, yaw, speed, steer); returns the next state tuple. Kept equal to `bicycle_step`
    by tests/test_sim_vehicle_model.py.
    """
    x, y, yaw, v, st = state
    c = control
    throttle = min(max(c.throttle, 0.0), 1.0)
    brake = min(max(c.brake, 0.0), 1.0)
    max_ds = params.max_steer_rate_per_s * dt
    st = st + min(max(min(max(c.steer, -1.0), 1.0) - st, -max_ds), max_ds)
    if c.reverse:
        a_drive = (
            -throttle
            * params.reverse_accel_mps2
            * max(0.0, 1.0 - max(0.0, -v) / params.max_reverse_speed_mps)
        )
    else:
        a_drive = throttle * params.max_accel_mps2 * max(0.0, 1.0 - v / params.max_speed_mps)
    v_free = v + a_drive * dt
    decel = (
        params.rolling_resistance_mps2 * (v_free != 0.0)
        + params.drag_per_m * v * v
        + brake * params.max_brake_decel_mps2
        + float(c.hand_brake) * params.hand_brake_decel_mps2
    ) * dt
    v_new = math.copysign(max(0.0, abs(v_free) - decel), v_free) if v_free != 0.0 else 0.0
    x, y, yaw = kinematics.pose_step_scalar(
        x, y, yaw, v_new, st, dt,
        params.wheel_angle_per_steer_rad, params.front_wheel_offset_m, params.rear_wheel_offset_m,
    )  # fmt: skip
    return (x, y, (yaw + math.pi) % (2.0 * math.pi) - math.pi, v_new, st)
