"""Vehicles cutting in from a standstill: StaticCutIn and ParkingCutIn.

StaticCutIn (scenario_runner cut_in_with_static_vehicle.py): `distance` (default 100 m) along the
route past the trigger, in the neighbouring lane at `direction` (default right), a stopped queue:
QUEUE_BEHIND cars, the adversary, QUEUE_AHEAD cars, QUEUE_GAP_M apart. When the ego is
CUT_IN_REACTION_TIME_S (or CUT_IN_MIN_TRIGGER_M) from the adversary, it pulls into the ego's lane
over CUT_IN_LENGTH_M, accelerating at CUT_IN_ACCEL_MPS2 to CUT_IN_SPEED_MPS, drives
CUT_IN_END_DISTANCE_M on along the route and vanishes. The ego must brake for it. Done once the
adversary is gone and the ego has passed the queue.

ParkingCutIn (parking_cut_in.py): a car parked on the parking lane (or shoulder) at `direction`
`distance` (default PARKING_DEFAULT_DISTANCE_M) ahead, and PARKING_ADVERSARY_GAP_M beyond it a
parked adversary that pulls out into the ego's lane when the ego is PARKING_REACTION_TIME_S (or
PARKING_MIN_TRIGGER_M) away, to PARKING_SPEED_MPS.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import carla
import numpy as np

from carla_bridge.embedded.catalogue import vehicles_of
from carla_bridge.embedded.scenarios.base import DONE, RUNNING, Scenario, register
from carla_bridge.embedded.scenarios.placement import (
    ScenarioLayoutError,
    clear_lane_stretch,
    direction_param,
    ego_time_to_arrival,
    lanes_outward,
    lateral_of,
    node_ahead,
    node_waypoint,
    offset_polyline,
    route_node_at_s,
    route_polyline,
    side_lane_node,
    trigger_index,
)
from carla_bridge.route import ScenarioSpec
from carla_bridge.snapshot import ActorRole, Pose

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

PASSED_MARGIN_M = 10.0
CAR_CATEGORY = "car"

STATIC_DEFAULT_DISTANCE_M = 100.0
QUEUE_BEHIND = 2
QUEUE_AHEAD = 3
QUEUE_GAP_M = 11.0
CUT_IN_REACTION_TIME_S = 2.7
CUT_IN_MIN_TRIGGER_M = 15.0
CUT_IN_SPEED_MPS = 60.0 / 3.6
CUT_IN_ACCEL_MPS2 = 3.0
CUT_IN_LENGTH_M = 12.0  # longitudinal length of the lane change
CUT_IN_END_DISTANCE_M = 70.0
CUT_IN_TIMEOUT_S = 60.0

PARKING_DEFAULT_DISTANCE_M = 36.0
PARKING_ADVERSARY_GAP_M = 8.0  # blocker centre -> adversary centre
PARKING_REACTION_TIME_S = 2.35
PARKING_MIN_TRIGGER_M = 10.0
PARKING_SPEED_MPS = 13.0
PARKING_LANE_TYPES = (carla.LaneType.Parking, carla.LaneType.Shoulder)


def smoothstep(u: np.ndarray) -> np.ndarray:
    """3u^2 - 2u^3 on [0, 1] (0 outside below, 1 above): a lane-change profile with zero end slopes."""
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def cut_in_path(
    world: World, start_xy: np.ndarray, s_start: float, change_m: float, end_m: float
) -> np.ndarray:
    """From `start_xy` (beside the route at arc length `s_start`) into the route lane over `change_m`,
    then `end_m` along it: route polyline shifted by lat0 (1 - smoothstep((s - s_start) / change_m))."""
    xy, yaw = route_polyline(world, s_start, s_start + change_m + end_m)
    lat0 = lateral_of(start_xy, xy[0], float(yaw[0]))
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    return offset_polyline(xy, yaw, lat0 * (1.0 - smoothstep(along / change_m)))


class _CutIn(Scenario):
    """An adversary standing beside the ego's route that cuts in when the ego comes close."""

    trigger_distance_m = 20.0
    timeout_s = CUT_IN_TIMEOUT_S
    reaction_time_s = CUT_IN_REACTION_TIME_S
    min_trigger_m = CUT_IN_MIN_TRIGGER_M
    speed_mps = CUT_IN_SPEED_MPS

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        self.adversary = -1
        self.adversary_s = 0.0  # route arc length beside the adversary
        self.last_s = 0.0  # route arc length beside the last standing actor
        self.started = False

    def spawn_car(self, world: World, xy: np.ndarray, z: float, yaw: float, role: ActorRole) -> int:
        cars = vehicles_of(CAR_CATEGORY)
        bp = cars[int(world.rng.integers(len(cars)))]
        aid = world.spawn_scripted(Pose(float(xy[0]), float(xy[1]), z, yaw), bp.type_id, role)
        self.actor_ids.append(aid)
        return aid

    def tick(self, world: World) -> str:
        a = world.scripted.get(self.adversary)
        if not self.started and a is not None:
            start = np.array([a.x, a.y])
            beside = world.dense.xyz[world.route_index_at_s(self.adversary_s), :2]
            close = math.hypot(*(world.ego_xy - beside)) < self.min_trigger_m
            if close or ego_time_to_arrival(world, beside) < self.reaction_time_s:
                path = cut_in_path(world, start, self.adversary_s, CUT_IN_LENGTH_M, CUT_IN_END_DISTANCE_M)
                world.set_path(self.adversary, path, self.speed_mps, CUT_IN_ACCEL_MPS2, remove_at_end=True)
                self.started = True
        gone = world.scripted.get(self.adversary) is None
        passed = world.route_s() > self.last_s + PASSED_MARGIN_M
        return DONE if self.started and gone and passed else RUNNING

    def cleanup(self, world: World) -> None:
        for aid in self.actor_ids:
            world.remove_actor(aid)


@register("StaticCutIn")
class StaticCutIn(_CutIn):
    """One car of a stopped queue in the neighbouring lane cuts in (module docstring)."""

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        side = direction_param(spec)
        s0 = float(world.dense.s[trigger_index(world, spec)]) + float(
            spec.value("distance", STATIC_DEFAULT_DISTANCE_M)
        )
        _, node = route_node_at_s(world, s0)
        side_node = side_lane_node(world, node, side)
        if side_node < 0:
            raise ScenarioLayoutError(
                f"{spec.name}: no same-direction lane on the {side} of the route {s0:.0f} m in; "
                "StaticCutIn needs a road with two lanes per direction"
            )
        g = world.graph
        count = QUEUE_BEHIND + 1 + QUEUE_AHEAD
        queue_nodes = []
        for k in range(count):
            n = node_ahead(g, side_node, k * QUEUE_GAP_M)
            queue_nodes.append(n)
            aid = self.spawn_car(world, g.xy[n], float(g.z[n]), float(g.yaw[n]), ActorRole.SCENARIO)
            if k == QUEUE_BEHIND:
                self.adversary = aid
        self.adversary_s = s0 + QUEUE_BEHIND * QUEUE_GAP_M
        self.last_s = s0 + (count - 1) * QUEUE_GAP_M
        side_stretch = g.path_nodes(side_node, count * QUEUE_GAP_M)
        clear_lane_stretch(world, side_stretch)
        i0 = world.route_index_at_s(s0 - QUEUE_GAP_M)
        i1 = world.route_index_at_s(self.adversary_s + CUT_IN_LENGTH_M + CUT_IN_END_DISTANCE_M)
        clear_lane_stretch(world, world.route_nodes[i0 : i1 + 1])


@register("ParkingCutIn")
class ParkingCutIn(_CutIn):
    """A parked car pulls out of the parking lane in front of the ego (module docstring)."""

    reaction_time_s = PARKING_REACTION_TIME_S
    min_trigger_m = PARKING_MIN_TRIGGER_M
    speed_mps = PARKING_SPEED_MPS

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        side = direction_param(spec)
        s0 = float(world.dense.s[trigger_index(world, spec)]) + float(
            spec.value("distance", PARKING_DEFAULT_DISTANCE_M)
        )
        for k, s in enumerate((s0, s0 + PARKING_ADVERSARY_GAP_M)):
            _, node = route_node_at_s(world, s)
            spot = next(
                (
                    w
                    for w in lanes_outward(node_waypoint(world, node), side)
                    if w.lane_type in PARKING_LANE_TYPES
                ),
                None,
            )
            if spot is None:
                raise ScenarioLayoutError(
                    f"{spec.name}: no parking lane or shoulder on the {side} at {s:.0f} m"
                )
            loc = spot.transform.location
            g = world.graph
            # the adversary is a scenario vehicle (it will move), the blocker a parked one
            role = ActorRole.SCENARIO if k == 1 else ActorRole.PARKED
            aid = self.spawn_car(world, np.array([loc.x, loc.y]), float(g.z[node]), float(g.yaw[node]), role)
            if k == 1:
                self.adversary = aid
        self.adversary_s = s0 + PARKING_ADVERSARY_GAP_M
        self.last_s = self.adversary_s
        i0 = world.route_index_at_s(s0 - QUEUE_GAP_M)
        i1 = world.route_index_at_s(self.adversary_s + CUT_IN_LENGTH_M + CUT_IN_END_DISTANCE_M)
        clear_lane_stretch(world, world.route_nodes[i0 : i1 + 1])
