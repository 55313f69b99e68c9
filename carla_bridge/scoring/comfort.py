"""Bench2Drive comfortness: share of 1 s segments whose filtered ego kinematics stay in nuPlan's bounds.

Per tick the log keeps the ego's longitudinal and lateral acceleration (world acceleration projected on
the heading f = (cos yaw, sin yaw) and its normal) and yaw rate. The log is cut into consecutive
`segment_ticks` (20) tick segments (a shorter tail is dropped). In a segment, with S_d the
Savitzky-Golay filter (window 7, order 2) taking the d-th derivative at spacing dt:

    a_lon = S_0(a_lon),  a_lat = S_0(a_lat),  psi_dot = S_0(yaw_rate)
    j_lon = S_1(a_lon),  j = S_1(|a|) with |a| = hypot(a_lon, a_lat),  psi_ddot = S_1(yaw_rate)

and the segment is comfortable iff at every sample min_lon < a_lon < max_lon, |a_lat| < max_lat,
|j| < max_jerk, |j_lon| < max_lon_jerk, |psi_ddot| < max_yaw_accel and |psi_dot| < max_yaw_rate.
The route's comfortness is the comfortable share (None without a full segment); the benchmark's the
mean over routes. dt is `derivative_dt_s` (Bench2Drive's 0.1 s; see ComfortConfig).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter

from carla_bridge.geometry import heading
from carla_bridge.scoring.config import ComfortConfig
from carla_bridge.snapshot import WorldSnapshot


def _filter(x: np.ndarray, config: ComfortConfig, deriv: int = 0) -> np.ndarray:
    """S_deriv along the last axis (each row a segment)."""
    return savgol_filter(
        x,
        config.savgol_window,
        config.savgol_order,
        deriv=deriv,
        delta=config.derivative_dt_s,
        axis=-1,
        mode="interp",
    )


def comfortable_rows(
    lon_accel: np.ndarray, lat_accel: np.ndarray, yaw_rate: np.ndarray, config: ComfortConfig
) -> np.ndarray:
    """(n,) bool for (n, segment) arrays: every sample of the row within every bound (module equations)."""
    lon = _filter(lon_accel, config)
    lat = _filter(lat_accel, config)
    yaw_rate_f = _filter(yaw_rate, config)
    lon_jerk = _filter(lon_accel, config, 1)
    jerk = _filter(np.hypot(lon_accel, lat_accel), config, 1)
    yaw_accel = _filter(yaw_rate, config, 1)
    ok = (
        (lon > config.min_lon_accel_mps2)
        & (lon < config.max_lon_accel_mps2)
        & (np.abs(lat) < config.max_abs_lat_accel_mps2)
        & (np.abs(jerk) < config.max_abs_jerk_mps3)
        & (np.abs(lon_jerk) < config.max_abs_lon_jerk_mps3)
        & (np.abs(yaw_accel) < config.max_abs_yaw_accel_radps2)
        & (np.abs(yaw_rate_f) < config.max_abs_yaw_rate_radps)
    )
    return np.all(ok, axis=-1)


def comfortable_segments(
    lon_accel: np.ndarray, lat_accel: np.ndarray, yaw_rate: np.ndarray, config: ComfortConfig
) -> np.ndarray:
    """(n_segments,) bool over consecutive full segments of `segment_ticks` samples."""
    n = config.segment_ticks
    count = len(lon_accel) // n
    if count == 0:
        return np.zeros(0, dtype=bool)

    def rows(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=float)[: count * n].reshape(count, n)

    return comfortable_rows(rows(lon_accel), rows(lat_accel), rows(yaw_rate), config)


def comfort_score(
    lon_accel: np.ndarray, lat_accel: np.ndarray, yaw_rate: np.ndarray, config: ComfortConfig
) -> float | None:
    """Comfortable segments / segments, None with no full segment."""
    flags = comfortable_segments(lon_accel, lat_accel, yaw_rate, config)
    return float(np.mean(flags)) if flags.size else None


class ComfortLog:
    """Per-tick ego kinematics of one route."""

    def __init__(self, config: ComfortConfig) -> None:
        self._config = config
        self.lon_accel: list[float] = []
        self.lat_accel: list[float] = []
        self.yaw_rate: list[float] = []

    def update(self, snapshot: WorldSnapshot) -> None:
        ego = snapshot.ego
        forward = heading(ego.pose.yaw)
        left = np.array([-forward[1], forward[0]])
        accel = np.asarray(ego.acceleration[:2], dtype=float)
        self.lon_accel.append(float(accel @ forward))
        self.lat_accel.append(float(accel @ left))
        self.yaw_rate.append(float(ego.yaw_rate))

    @property
    def score(self) -> float | None:
        return comfort_score(
            np.asarray(self.lon_accel), np.asarray(self.lat_accel), np.asarray(self.yaw_rate), self._config
        )
