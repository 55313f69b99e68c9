"""Walkers crossing the ego's road: PedestrianCrossing, DynamicObjectCrossing, ParkingCrossingPedestrian.

PedestrianCrossing (scenario_runner pedestrian_crossing.py): three walkers wait on the right sidewalk
where the route enters the first junction after the trigger point (the crosswalk), at the
scenario_runner offsets WALKER_GROUP_OFFSETS_M; when the ego is GROUP_REACTION_TIME_S (or
GROUP_MIN_TRIGGER_M) from the crossing they walk across the whole road to the far sidewalk at
GROUP_SPEED_MPS and vanish there. The ego must stop before the crosswalk and wait until they are across.

DynamicObjectCrossing (object_crash_vehicle.py): `distance` (default 12 m) along the route past the
trigger, on the sidewalk at `direction` (default right), stands a blocker prop (`blocker_model`,
default a vending machine); a walker hides just beyond it. When the ego is CROSSING_REACTION_TIME_S
(or CROSSING_MIN_TRIGGER_M) from that point, the walker steps out towards the road, turned by
`crossing_angle` degrees, at CROSSING_SPEED_MPS for twice its distance to the ego's lane centre,
then vanishes. The ego must brake for it (a careful driver slows past the blocker).

ParkingCrossingPedestrian (parking_crossing_pedestrian.py): the same with a parked car on the parking
lane (or shoulder) as the blocker, the walker stepping out in front of it.

Each is done once its walkers are gone and the ego has passed the crossing point; blocker and walkers
are removed then.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import carla
import numpy as np

from carla_bridge.embedded.catalogue import WALKERS, blueprint, vehicles_of
from carla_bridge.embedded.scenarios.base import DONE, RUNNING, Scenario, register
from carla_bridge.embedded.scenarios.junction_layout import junction_after
from carla_bridge.embedded.scenarios.placement import (
    LEFT,
    RIGHT,
    ScenarioLayoutError,
    direction_param,
    ego_time_to_arrival,
    lanes_outward,
    node_waypoint,
    offset_point,
    right_of,
    route_node,
    route_node_at_s,
    sidewalk_point,
    trigger_index,
    wrap,
)
from carla_bridge.route import ScenarioSpec
from carla_bridge.snapshot import ActorRole, Pose

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

PASSED_MARGIN_M = 5.0  # the ego counts as past the crossing this far beyond it

# (right, forward) offsets of the group's walkers from the sidewalk point, m (scenario_runner's)
WALKER_GROUP_OFFSETS_M = ((0.4, 1.5), (1.0, 2.5), (1.6, 0.5))
GROUP_SPEED_MPS = 1.3
GROUP_REACTION_TIME_S = 4.0
GROUP_MIN_TRIGGER_M = 12.0
GROUP_TIMEOUT_S = 60.0

CROSSING_DEFAULT_DISTANCE_M = 12.0
CROSSING_DEFAULT_BLOCKER = "static.prop.vendingmachine"
CROSSING_SPEED_MPS = 2.0
CROSSING_REACTION_TIME_S = 2.1
CROSSING_MIN_TRIGGER_M = 6.0
CROSSING_WALK_RATIO = 2.0  # walk this multiple of the distance to the ego's lane centre
WALKER_BEHIND_BLOCKER_M = 0.8  # gap between the blocker's far end and the hidden walker
CROSSING_TIMEOUT_S = 60.0
# Boxes (half extents, m) of blocker props the catalogue does not know, as in CARLA 0.9.15.
BLOCKER_EXTENTS_M: dict[str, tuple[float, float, float]] = {
    "static.prop.vendingmachine": (0.55, 0.85, 1.05),
    "static.prop.advertisement": (0.30, 1.10, 1.30),
    "static.prop.busstoplb": (1.50, 4.00, 1.50),
    "static.prop.haybalelb": (0.65, 0.90, 0.60),
    "static.prop.foodcart": (1.20, 0.80, 1.20),
}
PARKING_LANE_TYPES = (carla.LaneType.Parking, carla.LaneType.Shoulder)
PARKED_CAR_CATEGORY = "car"


def _walker_type(world: World) -> str:
    return WALKERS[int(world.rng.integers(len(WALKERS)))].type_id


class _Crossing(Scenario):
    """Walkers that start walking when the ego comes close to `self.collision_xy`."""

    trigger_distance_m = 20.0
    reaction_time_s = CROSSING_REACTION_TIME_S
    min_trigger_m = CROSSING_MIN_TRIGGER_M
    speed_mps = CROSSING_SPEED_MPS

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        self.walkers: list[int] = []
        self.paths: list[np.ndarray] = []
        self.collision_xy = np.zeros(2)
        self.collision_s = 0.0
        self.started = False

    def add_walker(self, world: World, start: np.ndarray, z: float, heading: float, length_m: float) -> None:
        pose = Pose(float(start[0]), float(start[1]), z, heading)
        aid = world.spawn_walker(pose, _walker_type(world))
        self.walkers.append(aid)
        self.actor_ids.append(aid)
        self.paths.append(np.vstack([start, offset_point(start, heading, length_m, 0.0)]))

    def tick(self, world: World) -> str:
        if not self.started:
            close = math.hypot(*(world.ego_xy - self.collision_xy)) < self.min_trigger_m
            if close or ego_time_to_arrival(world, self.collision_xy) < self.reaction_time_s:
                for aid, path in zip(self.walkers, self.paths, strict=True):
                    world.set_path(aid, path, self.speed_mps, remove_at_end=True)
                self.started = True
        gone = all(world.scripted.get(a) is None for a in self.walkers)
        passed = world.route_s() > self.collision_s + PASSED_MARGIN_M
        return DONE if self.started and gone and passed else RUNNING

    def cleanup(self, world: World) -> None:
        for aid in self.actor_ids:
            world.remove_actor(aid)


@register("PedestrianCrossing")
class PedestrianCrossing(_Crossing):
    """A group of three walkers crossing at the junction ahead (module docstring)."""

    timeout_s = GROUP_TIMEOUT_S
    reaction_time_s = GROUP_REACTION_TIME_S
    min_trigger_m = GROUP_MIN_TRIGGER_M
    speed_mps = GROUP_SPEED_MPS

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        j = junction_after(world, trigger_index(world, spec))
        i_c = max(j.enter_index - 1, 0)
        node = route_node(world, i_c)
        if node < 0:
            raise ScenarioLayoutError(f"{spec.name}: no lane before junction {j.junction_id}")
        g = world.graph
        yaw = float(g.yaw[node])
        self.collision_xy = g.xy[node].copy()
        self.collision_s = float(world.dense.s[i_c])
        near, _, _ = sidewalk_point(world, node, RIGHT)
        far, far_width, _ = sidewalk_point(world, node, LEFT)
        heading = math.atan2(*(far - near)[::-1])
        road_m = float(np.hypot(*(far - near)))
        for right, ahead in WALKER_GROUP_OFFSETS_M:
            start = offset_point(near, yaw, ahead, right)
            self.add_walker(world, start, float(g.z[node]), heading, road_m + right + far_width / 2.0)


@register("DynamicObjectCrossing")
class DynamicObjectCrossing(_Crossing):
    """A walker stepping out from behind a prop on the sidewalk (module docstring)."""

    timeout_s = CROSSING_TIMEOUT_S

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        side = direction_param(spec)
        distance = float(spec.value("distance", CROSSING_DEFAULT_DISTANCE_M))
        self.collision_s = float(world.dense.s[trigger_index(world, spec)]) + distance
        _, node = route_node_at_s(world, self.collision_s)
        g = world.graph
        yaw = float(g.yaw[node])
        self.collision_xy = g.xy[node].copy()
        blocker_xy, half_along = self.place_blocker(world, spec, node, side)
        walker_xy = offset_point(blocker_xy, yaw, half_along + WALKER_BEHIND_BLOCKER_M, 0.0)
        sign = 1.0 if side == RIGHT else -1.0
        angle = math.radians(float(spec.value("crossing_angle", 0.0)))
        heading = wrap(yaw - sign * (math.pi / 2.0) + sign * angle)
        to_lane = abs(float(np.dot(walker_xy - self.collision_xy, right_of(yaw))))
        self.add_walker(world, walker_xy, float(g.z[node]), heading, CROSSING_WALK_RATIO * to_lane)

    def place_blocker(
        self, world: World, spec: ScenarioSpec, node: int, side: str
    ) -> tuple[np.ndarray, float]:
        """Spawn the blocker; returns its position and its half length along the road."""
        g = world.graph
        yaw = float(g.yaw[node])
        xy, _, _ = sidewalk_point(world, node, side)
        model = spec.text("blocker_model", CROSSING_DEFAULT_BLOCKER) or CROSSING_DEFAULT_BLOCKER
        is_vehicle = model.startswith("vehicle.")
        extent = BLOCKER_EXTENTS_M.get(model, blueprint(model).extent)
        # props stand turned towards the road (scenario_runner: yaw + 90), vehicles along it
        turn = 0.0 if is_vehicle else math.pi / 2.0
        pose = Pose(float(xy[0]), float(xy[1]), float(g.z[node]), wrap(yaw + turn))
        if is_vehicle:
            aid = world.spawn_scripted(pose, model, ActorRole.PARKED)
        else:
            aid = world.spawn_static(pose, model, extent)
        self.actor_ids.append(aid)
        return xy, float(extent[0] if is_vehicle else extent[1])


@register("ParkingCrossingPedestrian")
class ParkingCrossingPedestrian(DynamicObjectCrossing):
    """A walker stepping out in front of a car parked at the road side (module docstring)."""

    def place_blocker(
        self, world: World, spec: ScenarioSpec, node: int, side: str
    ) -> tuple[np.ndarray, float]:
        g = world.graph
        yaw = float(g.yaw[node])
        wp = node_waypoint(world, node)
        spot = next((w for w in lanes_outward(wp, side) if w.lane_type in PARKING_LANE_TYPES), None)
        if spot is None:
            raise ScenarioLayoutError(
                f"{spec.name}: no parking lane or shoulder on the {side} of the route at the crossing point"
            )
        loc = spot.transform.location
        xy = np.array([loc.x, loc.y])
        cars = vehicles_of(PARKED_CAR_CATEGORY)
        bp = cars[int(world.rng.integers(len(cars)))]
        aid = world.spawn_scripted(
            Pose(float(xy[0]), float(xy[1]), float(g.z[node]), yaw), bp.type_id, ActorRole.PARKED
        )
        self.actor_ids.append(aid)
        # the walker stands in front of the car: move the "blocker point" to the car's front
        return xy, float(bp.extent[0])
