"""RunningStopTest: once inside a stop sign's zone the ego must come to a stop before leaving it.

The leaderboard tests whether any of the ego's lane points (its own lane waypoint and the next ones
every 0.5 m up to 4 m ahead) lies in the stop sign's trigger volume (enlarged 1.2x), after a quick
reject when the volume is more than 4 m from the ego's lane point. While affected, a speed below
0.1 m/s marks the stop as done; when the ego stops being affected without having stopped, one
infraction is counted (never twice in a row for the same sign). Signs are looked for only while the
ego heads along its lane.

The snapshot carries stop lines, not trigger volumes: the zone stands in for the volume as a box over
the last ``zone_length_m`` of lane before each stop line, as wide as the lane. With the defaults the
ego is affected from about 6 m before the line until its centre passes the line, so it must stop with
its centre in that stretch (a car stopping with its front bumper at the line qualifies).
"""

from __future__ import annotations

import carla
import numpy as np

from carla_bridge.geometry import heading, points_in_oriented_box
from carla_bridge.scoring.config import StopSignConfig
from carla_bridge.scoring.events import make_event
from carla_bridge.scoring.leaderboard import location_text
from carla_bridge.snapshot import InfractionEvent, InfractionKind, StopLine, StopSign, WorldSnapshot


def stop_zone(line: StopLine, config: StopSignConfig) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half extents of the zone: c = line - f x L/2, half = factor x (L/2, width/2)."""
    length = config.zone_length_m
    center = np.array([line.x, line.y]) - heading(line.yaw) * length / 2.0
    half = config.zone_extent_factor * np.array([length / 2.0, line.width / 2.0])
    return center, half


def is_affected(points: np.ndarray, line: StopLine, config: StopSignConfig) -> bool:
    """Whether lane points (K, 2), the ego's own first, touch the zone of `line`."""
    center, half = stop_zone(line, config)
    if np.linalg.norm(points[0] - center) > config.proximity_m:
        return False
    return bool(np.any(points_in_oriented_box(points, center, line.yaw, half)))


class StopSignCriterion:
    """Counts stop signs run without stopping (leaderboard RunningStopTest)."""

    def __init__(self, cmap: carla.Map, config: StopSignConfig) -> None:
        self._map = cmap
        self._config = config
        self._target: tuple[StopSign, StopLine] | None = None
        self._stop_completed = False
        self._last_failed_stop: int | None = None

    def _lane_points(self, snapshot: WorldSnapshot) -> tuple[np.ndarray, np.ndarray] | None:
        """The ego's lane point and those every `waypoint_step_m` up to `proximity_m` ahead; lane heading."""
        pose = snapshot.ego.pose
        wp = self._map.get_waypoint(carla.Location(x=pose.x, y=pose.y, z=pose.z))
        if wp is None:
            return None
        yaw = np.deg2rad(wp.transform.rotation.yaw)
        points = [(wp.transform.location.x, wp.transform.location.y)]
        steps = int(self._config.proximity_m / self._config.waypoint_step_m)
        for _ in range(steps):
            following = wp.next(self._config.waypoint_step_m)
            if not following:
                break
            wp = following[0]
            points.append((wp.transform.location.x, wp.transform.location.y))
        return np.asarray(points, dtype=float), heading(yaw)

    def update(self, snapshot: WorldSnapshot) -> list[InfractionEvent]:
        if self._target is None and not snapshot.stop_signs:
            return []
        lane = self._lane_points(snapshot)
        if lane is None:
            return []
        points, lane_dir = lane

        if self._target is None:
            if float(heading(snapshot.ego.pose.yaw) @ lane_dir) <= 0.0:
                return []  # driving against the lane: the leaderboard ignores signs
            for sign in snapshot.stop_signs:
                for line in sign.stop_lines:
                    if is_affected(points, line, self._config):
                        self._target = (sign, line)
                        return []
            return []

        if (
            not self._stop_completed
            and float(np.linalg.norm(snapshot.ego.velocity)) < self._config.stopped_speed_mps
        ):
            self._stop_completed = True

        sign, line = self._target
        events: list[InfractionEvent] = []
        if not is_affected(points, line, self._config):
            if not self._stop_completed and self._last_failed_stop != sign.id:
                pose = sign.pose
                message = f"Agent ran a stop with id={sign.id} at {location_text(pose.x, pose.y, pose.z)}"
                events.append(
                    make_event(
                        InfractionKind.STOP_SIGN, snapshot, message, actor_id=sign.id, xy=(pose.x, pose.y)
                    )
                )
                self._last_failed_stop = sign.id
            self._target = None
            self._stop_completed = False
        return events
