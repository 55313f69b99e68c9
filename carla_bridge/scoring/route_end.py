"""Criteria that end a route: completion, deviation, agent blocked, route timeout, Bench2Drive's tick cap.

- RouteCompletionTest: completion = RouteProgress.completion rounded to 0.01 %; the destination is
  reached (route completion 100 %) when completion > 99 % and the ego is within 10 m of the last
  dense point.
- InRouteTest: the ego further than 30 m from every dense point in [index, index + 5] deviates.
- ActorBlockedTest: speed below 0.1 m/s for more than 60 s since the last tick at or above it. Like
  the leaderboard there is no exception for waiting at red lights or behind traffic.
- Route timeout: game time beyond T = 300 s + sum_i ds_i / (0.1 x v_limit,i) over the dense route.
- Bench2Drive stops every route after 4000 ticks (200 s at 20 Hz), counted from the first snapshot.
"""

from __future__ import annotations

import numpy as np

from carla_bridge.route import DenseRoute
from carla_bridge.scoring.config import RouteEndConfig
from carla_bridge.scoring.events import ego_location, make_event
from carla_bridge.snapshot import InfractionEvent, InfractionKind, WorldSnapshot

COMPLETION_DIGITS = 2  # the leaderboard rounds the completion percentage to 0.01 %


def route_timeout_s(dense: DenseRoute, config: RouteEndConfig) -> float:
    """T = base + sum_i (s_{i+1} - s_i) / (fraction x v_i), v_i the speed limit at point i (m/s).

    Points with no usable limit (<= 0 or NaN) use `default_speed_limit_mps`.
    """
    ds = np.diff(np.asarray(dense.s, dtype=float))
    limits = np.asarray(dense.speed_limit, dtype=float)[: ds.shape[0]]
    limits = np.where(np.isfinite(limits) & (limits > 0.0), limits, config.default_speed_limit_mps)
    return float(config.route_timeout_base_s + np.sum(ds / (config.route_timeout_speed_fraction * limits)))


class RouteCompletion:
    """Route completion percentage and whether the destination was reached."""

    def __init__(self, dense: DenseRoute, config: RouteEndConfig) -> None:
        self._end_xy = np.asarray(dense.xyz[-1, :2], dtype=float)
        self._config = config
        self.completion_pct = 0.0
        self.reached = False

    def update(self, snapshot: WorldSnapshot) -> bool:
        """Update from the tick; True once the destination is reached."""
        if self.reached:
            return True
        self.completion_pct = max(self.completion_pct, round(snapshot.route.completion, COMPLETION_DIGITS))
        to_end = float(np.hypot(snapshot.ego.pose.x - self._end_xy[0], snapshot.ego.pose.y - self._end_xy[1]))
        if (
            self.completion_pct > self._config.completion_threshold_pct
            and to_end < self._config.completion_distance_m
        ):
            self.reached = True
            self.completion_pct = 100.0
        return self.reached


class RouteDeviation:
    """Ends the route when the ego is too far from the route ahead of its progress (InRouteTest)."""

    def __init__(self, dense: DenseRoute, config: RouteEndConfig) -> None:
        self._xy = np.asarray(dense.xyz[:, :2], dtype=float)
        self._config = config

    def distance_to_route(self, snapshot: WorldSnapshot) -> float:
        """min over dense points i in [index, index + window] of |ego - p_i| (planar)."""
        start = int(np.clip(snapshot.route.index, 0, len(self._xy) - 1))
        window = self._xy[start : start + self._config.deviation_window_points + 1]
        ego = np.array([snapshot.ego.pose.x, snapshot.ego.pose.y])
        return float(np.min(np.linalg.norm(window - ego, axis=1)))

    def update(self, snapshot: WorldSnapshot) -> InfractionEvent | None:
        if self.distance_to_route(snapshot) <= self._config.deviation_distance_m:
            return None
        message = f"Agent deviated from the route at {ego_location(snapshot)}"
        return make_event(InfractionKind.ROUTE_DEVIATION, snapshot, message)


class AgentBlocked:
    """Ends the route when the ego stands still too long (ActorBlockedTest)."""

    def __init__(self, config: RouteEndConfig) -> None:
        self._config = config
        self._time_last_moving_s: float | None = None

    def update(self, snapshot: WorldSnapshot) -> InfractionEvent | None:
        speed = float(np.linalg.norm(snapshot.ego.velocity))
        if speed >= self._config.blocked_speed_mps or self._time_last_moving_s is None:
            self._time_last_moving_s = snapshot.time_s
            return None
        if snapshot.time_s - self._time_last_moving_s <= self._config.blocked_time_s:
            return None
        return make_event(
            InfractionKind.AGENT_BLOCKED, snapshot, f"Agent got blocked at {ego_location(snapshot)}"
        )


class RouteTimeout:
    """Ends the route when the game time since the start exceeds the route's timeout."""

    MESSAGE = "Route timeout."

    def __init__(self, dense: DenseRoute, config: RouteEndConfig) -> None:
        self.timeout_s = route_timeout_s(dense, config)

    def update(self, snapshot: WorldSnapshot, elapsed_s: float) -> InfractionEvent | None:
        if elapsed_s <= self.timeout_s:
            return None
        return make_event(InfractionKind.ROUTE_TIMEOUT, snapshot, self.MESSAGE)
