"""RunningRedLightTest: the ego's tail crosses the stop line of a red light that governs its lane.

As the leaderboard: the infraction is the *rear* of the ego passing the line while the light is red,
so a car that stops with its nose over the line is not penalised, and a car that entered on yellow
and is still crossing when the light turns red is. Yellow is never an infraction. The tail is the
segment from ``tail_near_fraction`` x half length behind the centre to ``tail_far_margin_m`` behind
the rear bumper; the stop line spans +-``stop_line_half_width_fraction`` x lane width around the
snapshot's `StopLine`. A light counts only if the ego heads along the stop line's lane direction and
the map lane under the tail's far end is the stop line's (road_id, lane_id). The light last run is
not counted again until another light is run.

Beyond the leaderboard (which tests the tail segment only, once per tick) the sweep of the tail's
near point since the previous tick is tested too, so a fast ego cannot jump over a line between ticks.
"""

from __future__ import annotations

import math

import carla

from carla_bridge.geometry import Point, segments_intersect
from carla_bridge.scoring.config import RedLightConfig
from carla_bridge.scoring.events import make_event
from carla_bridge.scoring.leaderboard import location_text
from carla_bridge.snapshot import InfractionEvent, InfractionKind, StopLine, TrafficLightState, WorldSnapshot


def stop_line_ends(line: StopLine, half_width_fraction: float) -> tuple[Point, Point]:
    """End points c +- n x fraction x width of the stop line, n the lane normal (-sin yaw, cos yaw)."""
    half = half_width_fraction * line.width
    nx, ny = -math.sin(line.yaw) * half, math.cos(line.yaw) * half
    return (line.x + nx, line.y + ny), (line.x - nx, line.y - ny)


class RedLightCriterion:
    """Counts red lights run (leaderboard RunningRedLightTest).

    Plain-float geometry: a handful of points per tick, where numpy's call overhead would dominate.
    """

    def __init__(self, cmap: carla.Map, config: RedLightConfig) -> None:
        self._map = cmap
        self._config = config
        self._last_red_light_id: int | None = None
        self._prev_tail_near: Point | None = None

    def update(self, snapshot: WorldSnapshot) -> list[InfractionEvent]:
        cfg = self._config
        ego = snapshot.ego
        x, y = ego.pose.x, ego.pose.y
        fx, fy = math.cos(ego.pose.yaw), math.sin(ego.pose.yaw)
        half_length = float(ego.extent[0])
        near = cfg.tail_near_fraction * half_length
        far = half_length + cfg.tail_far_margin_m
        tail_near = (x - fx * near, y - fy * near)
        tail_far = (x - fx * far, y - fy * far)
        prev_tail_near, self._prev_tail_near = self._prev_tail_near, tail_near

        tail_lane: tuple[int, int] | None = None
        events: list[InfractionEvent] = []
        for light in snapshot.traffic_lights:
            if light.state != TrafficLightState.RED or light.id == self._last_red_light_id:
                continue
            for line in light.stop_lines:
                if math.hypot(line.x - x, line.y - y) > cfg.max_light_distance_m:
                    continue
                if fx * math.cos(line.yaw) + fy * math.sin(line.yaw) <= 0.0:
                    continue
                if tail_lane is None:
                    wp = self._map.get_waypoint(carla.Location(x=tail_far[0], y=tail_far[1], z=ego.pose.z))
                    tail_lane = (wp.road_id, wp.lane_id) if wp is not None else (-1, 0)
                if tail_lane != (line.road_id, line.lane_id):
                    continue
                left, right = stop_line_ends(line, cfg.stop_line_half_width_fraction)
                crossed = segments_intersect(tail_near, tail_far, left, right) or (
                    prev_tail_near is not None and segments_intersect(prev_tail_near, tail_near, left, right)
                )
                if crossed:
                    pose = light.pose
                    message = f"Agent ran a red light {light.id} at {location_text(pose.x, pose.y, pose.z)}"
                    events.append(
                        make_event(
                            InfractionKind.RED_LIGHT,
                            snapshot,
                            message,
                            actor_id=light.id,
                            xy=(pose.x, pose.y),
                        )
                    )
                    self._last_red_light_id = light.id
                    break
        return events
