"""CARLA traffic lights and stop signs -> the snapshot's `TrafficLight` / `StopSign` with stop lines.

A light's stop lines are its `get_stop_waypoints()` (CARLA's own), else they come from its trigger
volume as the leaderboard's RunningRedLightTest finds them: points across the volume

    c = T.transform(tv.location),  p_k = c + R(yaw) (x_k, 0),  x_k in [-f e_x, f e_x) every step

are snapped to lanes (one waypoint per road/lane), and each waypoint is advanced along its lane until
the next step would enter the junction. Stop signs (``traffic.stop``) get theirs the same way. The
junction of a stop line is the first junction met following the lane from it. Static parts (pose,
stop lines, junction) are computed once per actor id; state and time in state are read every tick.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import carla

from carla_bridge.carla_client.config import SnapshotConfig
from carla_bridge.snapshot import Pose, StopLine, StopSign, TrafficLight, TrafficLightState

TRAFFIC_LIGHT_TYPE_ID = "traffic.traffic_light"
STOP_SIGN_TYPE_ID = "traffic.stop"


def stop_line_of(waypoint: carla.Waypoint) -> StopLine:
    t = waypoint.transform
    return StopLine(
        x=float(t.location.x),
        y=float(t.location.y),
        yaw=math.radians(float(t.rotation.yaw)),
        road_id=int(waypoint.road_id),
        lane_id=int(waypoint.lane_id),
        width=float(waypoint.lane_width),
    )


def trigger_points(transform: carla.Transform, volume: carla.BoundingBox, config: SnapshotConfig) -> list:
    """World points across a trigger volume (module docstring), as carla.Location."""
    centre = transform.transform(volume.location)
    yaw = math.radians(transform.rotation.yaw)
    cos_y, sin_y = math.cos(yaw), math.sin(yaw)
    half = config.trigger_extent_fraction * float(volume.extent.x)
    points = []
    x = -half
    while x < half:
        points.append(carla.Location(x=centre.x + cos_y * x, y=centre.y + sin_y * x, z=centre.z))
        x += config.trigger_sample_step_m
    if not points:  # a volume narrower than one step: its centre
        points.append(carla.Location(x=centre.x, y=centre.y, z=centre.z))
    return points


def advance_to_junction(waypoint: carla.Waypoint, step_m: float, max_m: float) -> carla.Waypoint:
    """The last waypoint of the lane before it enters a junction (at most `max_m` ahead)."""
    travelled = 0.0
    while not waypoint.is_junction and travelled < max_m:
        following = waypoint.next(step_m)
        if not following or following[0].is_junction:
            break
        waypoint = following[0]
        travelled += step_m
    return waypoint


def trigger_stop_waypoints(
    transform: carla.Transform, volume: carla.BoundingBox, cmap: carla.Map, config: SnapshotConfig
) -> list[carla.Waypoint]:
    """Stop waypoints of a trigger volume: one per lane crossed, advanced to the junction entry."""
    lanes: list[carla.Waypoint] = []
    for point in trigger_points(transform, volume, config):
        wp = cmap.get_waypoint(point)
        if wp is None:
            continue
        if not lanes or (lanes[-1].road_id, lanes[-1].lane_id) != (wp.road_id, wp.lane_id):
            lanes.append(wp)
    return [advance_to_junction(wp, config.stop_waypoint_step_m, config.stop_line_search_m) for wp in lanes]


def junction_of(waypoint: carla.Waypoint, step_m: float, max_m: float) -> int:
    """Id of the first junction met following the lane from `waypoint`, -1 if none within `max_m`."""
    travelled = 0.0
    while travelled <= max_m:
        if waypoint.is_junction:
            return int(waypoint.junction_id)
        following = waypoint.next(step_m)
        if not following:
            return -1
        waypoint = following[0]
        travelled += step_m
    return -1


def pole_pose(transform: carla.Transform) -> Pose:
    loc = transform.location
    return Pose(float(loc.x), float(loc.y), float(loc.z), math.radians(float(transform.rotation.yaw)))


@dataclass(frozen=True)
class _SignalLayout:
    pose: Pose
    stop_lines: tuple[StopLine, ...]
    junction_id: int
    centre_xy: tuple[float, float]


class SignalIndex:
    """Static layout of lights and stop signs per actor id (computed on first sight) + per-tick state."""

    def __init__(self, cmap: carla.Map, config: SnapshotConfig) -> None:
        self.cmap = cmap
        self.config = config
        self._layouts: dict[int, _SignalLayout] = {}

    def _layout(self, actor, stop_waypoints: Sequence[carla.Waypoint]) -> _SignalLayout:
        key = int(actor.id)
        layout = self._layouts.get(key)
        if layout is not None:
            return layout
        cfg = self.config
        transform = actor.get_transform()
        if not stop_waypoints:
            stop_waypoints = trigger_stop_waypoints(transform, actor.trigger_volume, self.cmap, cfg)
        lines = tuple(stop_line_of(wp) for wp in stop_waypoints)
        junction = -1
        for wp in stop_waypoints:
            junction = junction_of(wp, cfg.stop_waypoint_step_m, cfg.stop_line_search_m)
            if junction >= 0:
                break
        if lines:
            centre = (sum(s.x for s in lines) / len(lines), sum(s.y for s in lines) / len(lines))
        else:
            centre = (float(transform.location.x), float(transform.location.y))
        layout = _SignalLayout(pole_pose(transform), lines, junction, centre)
        self._layouts[key] = layout
        return layout

    def _near(self, layout: _SignalLayout, ego_xy: Sequence[float] | None) -> bool:
        if ego_xy is None:
            return True
        dx, dy = layout.centre_xy[0] - ego_xy[0], layout.centre_xy[1] - ego_xy[1]
        return dx * dx + dy * dy <= self.config.signal_radius_m**2

    def traffic_lights(
        self, lights: Iterable, ego_xy: Sequence[float] | None = None
    ) -> tuple[TrafficLight, ...]:
        """TrafficLight of every light whose stop lines lie within `signal_radius_m` of the ego."""
        out: list[TrafficLight] = []
        for light in lights:
            if int(light.id) not in self._layouts:
                getter = getattr(light, "get_stop_waypoints", None)
                layout = self._layout(light, list(getter()) if getter is not None else [])
            else:
                layout = self._layouts[int(light.id)]
            if not self._near(layout, ego_xy):
                continue
            elapsed = getattr(light, "get_elapsed_time", None)
            out.append(
                TrafficLight(
                    id=int(light.id),
                    state=TrafficLightState(int(light.get_state())),
                    pose=layout.pose,
                    stop_lines=layout.stop_lines,
                    junction_id=layout.junction_id,
                    time_in_state=float(elapsed()) if elapsed is not None else 0.0,
                )
            )
        return tuple(out)

    def stop_signs(self, signs: Iterable, ego_xy: Sequence[float] | None = None) -> tuple[StopSign, ...]:
        """StopSign of every stop sign (trigger-volume stop lines) within `signal_radius_m` of the ego."""
        out: list[StopSign] = []
        for sign in signs:
            layout = self._layout(sign, [])
            if self._near(layout, ego_xy):
                out.append(StopSign(int(sign.id), layout.pose, layout.stop_lines, layout.junction_id))
        return tuple(out)
