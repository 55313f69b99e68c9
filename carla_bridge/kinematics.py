"""The kinematic bicycle's equations, shared by the embedded simulator and the expert's forecasts.

World-on-Rails fit (research/pdm_lite.md; l_f may be negative, it is a fit), with k the wheel angle
per unit of steer:
    beta = atan(l_r / (l_f + l_r) tan(k steer))               slip angle at the centre of gravity
    x'   = x + v cos(yaw + beta) dt ;  y' = y + v sin(yaw + beta) dt
    yaw' = yaw + v / l_r sin(beta) dt
Each side keeps its own parameters (the simulator's VehicleParams, the expert's EgoModelConfig: the
expert must not read the simulator, it also drives on a CARLA server); only the equations live here.
`slip_angle` and `pose_step` take floats or numpy arrays; `pose_step_scalar` is the float hot path.
"""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray | float


def slip_angle(steer: Array, wheel_per_steer_rad: float, front_axle_m: float, rear_axle_m: float) -> Array:
    """beta = atan(l_r / (l_f + l_r) tan(k steer))."""
    wheel = np.asarray(steer, dtype=float) * wheel_per_steer_rad
    return np.arctan(rear_axle_m / (front_axle_m + rear_axle_m) * np.tan(wheel))


def pose_step(
    x: Array, y: Array, yaw: Array, v: Array, beta: Array, dt: float, rear_axle_m: float
) -> tuple[Array, Array, Array]:
    """One explicit Euler step of the pose at speed v and slip angle beta (yaw not wrapped)."""
    heading = yaw + beta
    return (
        x + v * np.cos(heading) * dt,
        y + v * np.sin(heading) * dt,
        yaw + v / rear_axle_m * np.sin(beta) * dt,
    )


def pose_step_scalar(
    x: float,
    y: float,
    yaw: float,
    v: float,
    steer: float,
    dt: float,
    wheel_per_steer_rad: float,
    front_axle_m: float,
    rear_axle_m: float,
) -> tuple[float, float, float]:
    """`slip_angle` + `pose_step` for one vehicle in Python floats (no numpy call overhead)."""
    beta = math.atan(rear_axle_m / (front_axle_m + rear_axle_m) * math.tan(steer * wheel_per_steer_rad))
    heading = yaw + beta
    return (
        x + v * math.cos(heading) * dt,
        y + v * math.sin(heading) * dt,
        yaw + v / rear_axle_m * math.sin(beta) * dt,
    )
