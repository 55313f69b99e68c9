"""Per-actor memory across ticks: measured yaw rate, acceleration and how long each actor has stood still.

The simulator gives one snapshot at a time; forecasts that hold an actor's turn and acceleration need
both, and obstacle detection needs to know that a vehicle has been standing for a while. Measured
kinematics work on any backend, including ones that report no control for other vehicles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carla_bridge.geometry import wrap_angle
from carla_bridge.snapshot import ActorTable

SMOOTHING = 0.5  # exponential smoothing weight of the newest yaw-rate / acceleration sample
MAX_ABS_YAW_RATE = 1.5  # rad/s; larger measured values are teleports or respawns, not turns
MAX_ABS_ACCEL = 10.0  # m/s^2; same for speed jumps


@dataclass(frozen=True)
class ActorKinematics:
    """Arrays aligned with the ActorTable rows of the tick they were computed for."""

    yaw_rate: np.ndarray  # (N,) rad/s
    accel: np.ndarray  # (N,) m/s^2 along the heading
    standing_s: np.ndarray  # (N,) seconds the actor has been below the standing speed (0 when moving)
    known: np.ndarray  # (N,) bool, seen on an earlier tick


class ActorHistory:
    """Exponentially smoothed yaw rate and acceleration per actor id, and standing time."""

    def __init__(self, standing_speed_mps: float) -> None:
        self.standing_speed = standing_speed_mps
        self._last: dict[int, tuple[float, float, float, float, float, float]] = {}

    def reset(self) -> None:
        self._last.clear()

    def update(self, actors: ActorTable, time_s: float) -> ActorKinematics:
        n = len(actors)
        yaw_rate = np.zeros(n)
        accel = np.zeros(n)
        standing = np.zeros(n)
        known = np.zeros(n, bool)
        new: dict[int, tuple[float, float, float, float, float, float]] = {}
        ids = actors.id.tolist()
        yaws = actors.yaw.tolist()
        speeds = actors.speed.tolist()
        for i, aid in enumerate(ids):
            yaw, speed = yaws[i], speeds[i]
            prev = self._last.get(aid)
            yr = ac = 0.0
            stand_since = time_s
            if prev is not None:
                t0, yaw0, v0, yr0, ac0, stand0 = prev
                dt = time_s - t0
                if dt > 1e-6:
                    yr_new = float(wrap_angle(yaw - yaw0)) / dt
                    ac_new = (speed - v0) / dt
                    yr = yr0 if abs(yr_new) > MAX_ABS_YAW_RATE else (1 - SMOOTHING) * yr0 + SMOOTHING * yr_new
                    ac = ac0 if abs(ac_new) > MAX_ABS_ACCEL else (1 - SMOOTHING) * ac0 + SMOOTHING * ac_new
                else:
                    yr, ac = yr0, ac0
                stand_since = stand0
                known[i] = True
            if abs(speed) >= self.standing_speed:
                stand_since = time_s
            yaw_rate[i], accel[i], standing[i] = yr, ac, time_s - stand_since
            new[aid] = (time_s, yaw, speed, yr, ac, stand_since)
        self._last = new
        return ActorKinematics(yaw_rate, accel, standing, known)
