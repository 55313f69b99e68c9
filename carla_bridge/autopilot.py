"""`autopilot`: a simple lane-following IDM driver on the dense route.

A baseline and smoke-test driver, deliberately naive (no forecasts, no overtaking, no right of way):
pure-pursuit steering on the dense route, IDM against the nearest actor inside the route corridor and
against red/yellow stop lines and unserved stop signs ahead. The PDM-Lite expert (`experts/`) is the
real teacher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import carla
import numpy as np

from carla_bridge.route import Route
from carla_bridge.snapshot import Control, TrafficLightState, WorldSnapshot

# Bicycle-model steering: wheel angle (rad) = WHEEL_ANGLE_PER_STEER x steer (research/pdm_lite.md).
WHEEL_ANGLE_PER_STEER = 0.3685


@dataclass
class AutopilotConfig:
    speed_fraction_of_limit: float = 0.7  # background traffic drives at ~70 % of the limit
    max_speed_mps: float = 15.0
    wheelbase_m: float = 2.9
    lookahead_base_m: float = 3.0
    lookahead_per_mps_s: float = 0.4  # look-ahead grows with speed (m per m/s)
    corridor_half_width_m: float = 1.6  # half lane: actors whose box reaches inside block the route
    scan_ahead_m: float = 50.0
    idm_max_accel_mps2: float = 2.0
    idm_comfort_decel_mps2: float = 3.0
    idm_min_gap_m: float = 4.0
    idm_headway_s: float = 1.2
    stop_line_gap_m: float = 2.0  # stop this far before a stop line
    stop_sign_stopped_mps: float = 0.1  # below this the stop at a stop sign counts as made
    speed_gain: float = 0.5  # throttle per m/s of speed error
    brake_gain: float = 0.4  # brake per m/s of overspeed


def idm_acceleration(v: float, v0: float, gap: float, v_lead: float, cfg: AutopilotConfig) -> float:
    """IDM: a [1 - (v/v0)^4 - (s*/s)^2], s* = s0 + v T + v (v - v_lead) / (2 sqrt(a b))."""
    a, b = cfg.idm_max_accel_mps2, cfg.idm_comfort_decel_mps2
    s_star = cfg.idm_min_gap_m + v * cfg.idm_headway_s + v * (v - v_lead) / (2.0 * math.sqrt(a * b))
    free = 1.0 - (v / max(v0, 0.1)) ** 4
    return a * (free - (max(s_star, 0.0) / max(gap, 0.1)) ** 2)


class Autopilot:
    """Agent protocol implementation (see carla_bridge.agent.Agent)."""

    name = "autopilot"

    def __init__(self, config: AutopilotConfig | None = None) -> None:
        self.cfg = config or AutopilotConfig()
        self._route: Route | None = None
        self._served_stop_signs: set[int] = set()

    def reset(self, route: Route, cmap: carla.Map) -> None:
        if route.dense is None:
            raise ValueError(f"route {route.id} has no dense route; plan it first")
        self._route = route
        self._served_stop_signs = set()

    def run_step(self, snapshot: WorldSnapshot) -> Control:
        assert self._route is not None and self._route.dense is not None, "reset() first"
        dense = self._route.dense
        ego = snapshot.ego
        v = max(ego.speed, 0.0)
        i0 = snapshot.route.index
        i1 = int(np.searchsorted(dense.s, dense.s[i0] + self.cfg.scan_ahead_m))
        window = slice(i0, max(i1, i0 + 2))
        pts = dense.xyz[window, :2]
        s_ahead = dense.s[window] - dense.s[i0]

        v0 = min(self.cfg.max_speed_mps, self.cfg.speed_fraction_of_limit * float(dense.speed_limit[i0]))
        gap, v_lead = self._nearest_blocker(snapshot, pts, s_ahead)
        accel = idm_acceleration(v, v0, gap - ego.extent[0], v_lead, self.cfg)
        target = max(0.0, v + accel * 1.0)
        steer = self._steer(snapshot, pts, s_ahead, v)
        if target < 0.05 or v > target + 1.0:
            brake = 1.0 if target < 0.05 else min(1.0, self.cfg.brake_gain * (v - target))
            return Control(throttle=0.0, steer=steer, brake=brake)
        return Control(throttle=float(np.clip(self.cfg.speed_gain * (target - v), 0.0, 1.0)), steer=steer)

    def _steer(self, snapshot: WorldSnapshot, pts: np.ndarray, s_ahead: np.ndarray, v: float) -> float:
        lookahead = self.cfg.lookahead_base_m + self.cfg.lookahead_per_mps_s * v
        j = min(int(np.searchsorted(s_ahead, lookahead)), len(pts) - 1)
        pose = snapshot.ego.pose
        dx, dy = pts[j, 0] - pose.x, pts[j, 1] - pose.y
        # CARLA frame: +yaw turns right, so the lateral offset to the right is positive.
        local_x = math.cos(pose.yaw) * dx + math.sin(pose.yaw) * dy
        local_y = -math.sin(pose.yaw) * dx + math.cos(pose.yaw) * dy
        alpha = math.atan2(local_y, max(local_x, 1e-3))
        wheel = math.atan2(2.0 * self.cfg.wheelbase_m * math.sin(alpha), max(math.hypot(dx, dy), 1e-3))
        return float(np.clip(wheel / WHEEL_ANGLE_PER_STEER, -1.0, 1.0))

    def _nearest_blocker(
        self, snapshot: WorldSnapshot, pts: np.ndarray, s_ahead: np.ndarray
    ) -> tuple[float, float]:
        """Distance along the route to the nearest thing to stop behind, and its speed."""
        best_d, best_v = 1e6, 0.0
        actors = snapshot.actors
        if len(actors):
            d2 = ((actors.xyz[:, None, :2] - pts[None, :, :]) ** 2).sum(-1)
            nearest = d2.argmin(1)
            lateral = np.sqrt(d2[np.arange(len(actors)), nearest]) - actors.extent[:, 1]
            along = s_ahead[nearest] - actors.extent[:, 0]
            inside = (lateral < self.cfg.corridor_half_width_m) & (along > 0.0) & (nearest < len(pts) - 1)
            if inside.any():
                k = np.flatnonzero(inside)[np.argmin(along[inside])]
                best_d, best_v = float(along[k]), max(float(actors.speed[k]), 0.0)
        for d in self._stop_line_distances(snapshot, pts, s_ahead):
            if d - self.cfg.stop_line_gap_m < best_d:
                best_d, best_v = d - self.cfg.stop_line_gap_m + self.cfg.idm_min_gap_m, 0.0
        return best_d, best_v

    def _stop_line_distances(
        self, snapshot: WorldSnapshot, pts: np.ndarray, s_ahead: np.ndarray
    ) -> list[float]:
        out: list[float] = []
        for light in snapshot.traffic_lights:
            if light.state in (TrafficLightState.RED, TrafficLightState.YELLOW):
                out += self._on_route(light.stop_lines, pts, s_ahead)
        for sign in snapshot.stop_signs:
            if sign.id in self._served_stop_signs:
                continue
            ds = self._on_route(sign.stop_lines, pts, s_ahead)
            if (
                ds
                and min(ds) < self.cfg.stop_line_gap_m + 1.0
                and snapshot.ego.speed < self.cfg.stop_sign_stopped_mps
            ):
                self._served_stop_signs.add(sign.id)
            elif ds:
                out += ds
        return out

    def _on_route(self, stop_lines, pts: np.ndarray, s_ahead: np.ndarray) -> list[float]:
        out = []
        for line in stop_lines:
            d2 = (pts[:, 0] - line.x) ** 2 + (pts[:, 1] - line.y) ** 2
            j = int(d2.argmin())
            if d2[j] < (0.5 * line.width) ** 2 and 0 < j < len(pts) - 1:
                out.append(float(s_ahead[j]))
        return out
