"""Forecasts over a short horizon: kinematic bicycle for vehicles and the ego, constant velocity for walkers.

Kinematic bicycle: the equations of carla_bridge.kinematics with the expert's own parameters
(EgoModelConfig, the World-on-Rails fit).
Other vehicles hold their curvature (from their steer, or from their measured yaw rate when the
simulator gives no control) and their acceleration, vectorised over actors x time with cumulative
sums, no Python loop. The ego is rolled forward with the memoryless part of its own lateral controller
along the planned path, once; slower speed profiles reuse that geometry by travelled distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carla_bridge import kinematics
from experts.config import EgoModelConfig, LateralConfig
from experts.controllers import aim_distance, proportional_steer


def slip_angle(steer: np.ndarray | float, cfg: EgoModelConfig) -> np.ndarray:
    """beta = atan(l_r / (l_f + l_r) tan(k_steer steer)) (carla_bridge.kinematics)."""
    return kinematics.slip_angle(steer, cfg.wheel_per_steer_rad, cfg.front_axle_m, cfg.rear_axle_m)


def bicycle_step(
    x: float, y: float, yaw: float, v: float, steer: float, dt: float, cfg: EgoModelConfig
) -> tuple[float, float, float]:
    """One explicit Euler step of the kinematic bicycle (carla_bridge.kinematics)."""
    return kinematics.pose_step_scalar(
        x, y, yaw, v, steer, dt, cfg.wheel_per_steer_rad, cfg.front_axle_m, cfg.rear_axle_m
    )


def speed_profiles(v0: float, accel: np.ndarray, v_stop: np.ndarray, dt: float, steps: int) -> np.ndarray:
    """Speeds (K, T) at t = dt, 2 dt, ... under constant acceleration a_k, clamped at v_stop_k and at 0.

    v_k(t) = clip(v0 + a_k t, ...) toward v_stop_k: accelerating profiles stop rising at v_stop_k,
    decelerating ones stop falling at it.
    """
    t = dt * np.arange(1, steps + 1)
    accel = np.asarray(accel, dtype=float)[:, None]
    v_stop = np.asarray(v_stop, dtype=float)[:, None]
    v = v0 + accel * t
    v = np.where(accel >= 0.0, np.minimum(v, np.maximum(v_stop, v0)), np.maximum(v, np.minimum(v_stop, v0)))
    return np.maximum(v, 0.0)


def distances_from_speeds(v0: float, speeds: np.ndarray, dt: float) -> np.ndarray:
    """Travelled distance at each step (trapezoidal rule) for speed rows (K, T) starting at v0."""
    prev = np.concatenate([np.full((speeds.shape[0], 1), v0), speeds[:, :-1]], axis=1)
    return np.cumsum(0.5 * (prev + speeds) * dt, axis=1)


@dataclass(frozen=True)
class Trajectory:
    """Poses over the horizon: arrays (..., T) of x, y, yaw and speed."""

    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    v: np.ndarray


def rollout_ego_on_path(
    x0: float,
    y0: float,
    yaw0: float,
    path_xy: np.ndarray,
    path_s0: float,
    path_spacing: float,
    s_ego: float,
    speeds: np.ndarray,
    dt: float,
    lateral: LateralConfig,
    model: EgoModelConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Bicycle rollout of the ego following `path_xy` (uniform spacing, first point at arc length path_s0).

    Steering is the controller's proportional law toward the aim point at aim_distance(v) ahead of the
    ego's progress along the path. Returns poses (T+1, 3) x, y, yaw starting with the current pose, and
    the travelled distance (T+1,).
    """
    n = path_xy.shape[0]
    poses = np.empty((speeds.shape[0] + 1, 3))
    travelled = np.empty(speeds.shape[0] + 1)
    x, y, yaw = x0, y0, yaw0
    poses[0] = (x, y, yaw)
    travelled[0] = 0.0
    s = s_ego
    dist = 0.0
    v_prev = None
    for k, v in enumerate(speeds.tolist()):
        v_mid = v if v_prev is None else 0.5 * (v + v_prev)
        v_prev = v
        i = int((s + aim_distance(v_mid, lateral) - path_s0) / path_spacing)
        i = min(max(i, 0), n - 1)
        steer = proportional_steer(x, y, yaw, path_xy[i, 0], path_xy[i, 1], lateral)
        x, y, yaw = bicycle_step(x, y, yaw, v_mid, steer, dt, model)
        s += v_mid * dt
        dist += v_mid * dt
        poses[k + 1] = (x, y, yaw)
        travelled[k + 1] = dist
    return poses, travelled


def resample_by_distance(poses: np.ndarray, travelled: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Poses (K, T, 3) at travelled `distances` (K, T) along one rolled-out trajectory (poses (M, 3))."""
    x = np.interp(distances, travelled, poses[:, 0])
    y = np.interp(distances, travelled, poses[:, 1])
    yaw = np.interp(distances, travelled, np.unwrap(poses[:, 2]))
    return np.stack([x, y, yaw], axis=-1)


def forecast_vehicles(
    x: np.ndarray,
    y: np.ndarray,
    yaw: np.ndarray,
    speed: np.ndarray,
    curvature: np.ndarray,
    beta: np.ndarray,
    accel: np.ndarray,
    dt: float,
    steps: int,
) -> Trajectory:
    """Vehicles (N,) holding curvature and acceleration; arrays (N, T) at t = dt ... T dt.

    v(t) = max(0, v0 + a t);  yaw(t) = yaw0 + kappa * cumsum(v dt);  position by cumsum of
    v cos(yaw + beta) dt (explicit Euler, as the ego forecast). kappa = sin(beta) / l_r for a steering
    input, or the measured yaw rate / speed.
    """
    t = dt * np.arange(1, steps + 1)
    v = np.maximum(speed[:, None] + accel[:, None] * t[None, :], 0.0)
    ds = v * dt
    heading = yaw[:, None] + curvature[:, None] * (np.cumsum(ds, axis=1) - ds)
    head_v = heading + beta[:, None]
    px = x[:, None] + np.cumsum(ds * np.cos(head_v), axis=1)
    py = y[:, None] + np.cumsum(ds * np.sin(head_v), axis=1)
    yaw_t = heading + curvature[:, None] * ds
    return Trajectory(px, py, yaw_t, v)


def forecast_walkers(
    x: np.ndarray,
    y: np.ndarray,
    yaw: np.ndarray,
    velocity: np.ndarray,
    min_speed: float,
    dt: float,
    steps: int,
) -> Trajectory:
    """Walkers at constant velocity; one standing still is assumed to start walking along its heading
    at `min_speed` (the worst case a privileged planner should respect)."""
    t = dt * np.arange(1, steps + 1)
    speed = np.hypot(velocity[:, 0], velocity[:, 1])
    slow = speed < min_speed
    heading = np.where(slow, yaw, np.arctan2(velocity[:, 1], velocity[:, 0]))
    sp = np.maximum(speed, min_speed)
    vx, vy = sp * np.cos(heading), sp * np.sin(heading)
    px = x[:, None] + vx[:, None] * t[None, :]
    py = y[:, None] + vy[:, None] * t[None, :]
    return Trajectory(
        px, py, np.broadcast_to(heading[:, None], px.shape), np.broadcast_to(sp[:, None], px.shape)
    )


def forecast_along_route(
    route_xy: np.ndarray,
    route_yaw: np.ndarray,
    route_s0: float,
    spacing: float,
    s: np.ndarray,
    d: np.ndarray,
    rel_yaw: np.ndarray,
    speed: np.ndarray,
    accel: np.ndarray,
    direction: np.ndarray,
    v_across: np.ndarray,
    max_shift_m: float,
    dt: float,
    steps: int,
) -> Trajectory:
    """Vehicles driving parallel to the route (same way, direction +1, or oncoming, -1) keep to their
    lane: they advance along the route's arc length at their speed and keep their lateral offset,
    drifting sideways at their current lateral speed (at most `max_shift_m`).

        v(t) = max(0, v0 + a t);  s(t) = s0 + direction * cumsum(v dt);  d(t) = d0 + clip(v_lat t)
        pose = route(s(t)) + d(t) n(s(t)),  yaw = route_yaw(s(t)) + rel_yaw
    On a winding road this follows the bends, where a held curvature drives straight into the other lane.
    """
    t = dt * np.arange(1, steps + 1)
    v = np.maximum(speed[:, None] + accel[:, None] * t[None, :], 0.0)
    s_t = s[:, None] + direction[:, None] * np.cumsum(v * dt, axis=1)
    d_t = d[:, None] + np.clip(v_across[:, None] * t[None, :], -max_shift_m, max_shift_m)
    idx = np.clip(np.rint((s_t - route_s0) / spacing).astype(np.int64), 0, len(route_xy) - 1)
    yaw_r = route_yaw[idx]
    x = route_xy[idx, 0] - d_t * np.sin(yaw_r)
    y = route_xy[idx, 1] + d_t * np.cos(yaw_r)
    return Trajectory(x, y, yaw_r + rel_yaw[:, None], v)
