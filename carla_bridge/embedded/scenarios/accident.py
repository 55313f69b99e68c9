"""Blocked-lane overtaking scenarios: Accident(TwoWays) and HazardAtSideLane(TwoWays).

Accident (scenario_runner route_obstacles.Accident): `distance` (default 120 m) along the route past
the trigger point, a police car (lights on) and, ACCIDENT_FIRST_GAP_M and a further
ACCIDENT_SECOND_GAP_M beyond it, two crashed cars, all shifted towards `direction` (default right) by
ACCIDENT_OFFSET_FRACTION x half a lane width. They block the ego's lane: the ego must change to the
neighbouring lane (Accident, multi-lane roads) or pass on the opposite lane when it is clear
(AccidentTwoWays: an oncoming flow every `frequency` metres, default 20-100).

HazardAtSideLane: two bicycles BIKE_GAP_M apart, the first `distance` (default 100 m) ahead, riding
at `bicycle_speed` (km/h, default 10) near the right edge of the ego's lane (BIKE_OFFSET_FRACTION of
half a lane width) for `bicycle_drive_distance` (default 50 m) and more, from the trigger on. The ego
overtakes them with a lane invasion, or follows them. TwoWays: an oncoming flow (`frequency`, default 100 m).

Both keep background traffic off the stretch (none spawns there and, until the scenario ends, any
that drives onto it is removed: it would queue behind the block in front of the ego), and, while a
TwoWays flow runs, off the flow's opposite lane (the flow replaces it, as the leaderboard's
ChangeOppositeBehavior). They are done once the ego is PASSED_MARGIN_M past the last
actor, and remove their actors then.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from carla_bridge.embedded.catalogue import vehicles_of
from carla_bridge.embedded.scenarios.actor_flow import ActorFlow, oncoming_flow
from carla_bridge.embedded.scenarios.base import DONE, RUNNING, Scenario, register
from carla_bridge.embedded.scenarios.placement import (
    RIGHT,
    clear_lane_stretch,
    direction_param,
    interval_param,
    offset_polyline,
    route_node_at_s,
    route_polyline,
    trigger_index,
)
from carla_bridge.route import ScenarioSpec
from carla_bridge.snapshot import ActorRole, Pose
from carla_bridge.units import KMH_PER_MPS

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

PASSED_MARGIN_M = 15.0  # the scenario ends when the ego is this far past its last actor
KEEP_CLEAR_BEFORE_M = 40.0  # background traffic is kept off the route lane this far before the block
KEEP_CLEAR_AFTER_M = 20.0
ONCOMING_SOURCE_AHEAD_M = 80.0  # the oncoming flow starts this far beyond the block
ONCOMING_EXTRA_M = 60.0  # and drives this far past the trigger point towards the ego

ACCIDENT_DEFAULT_DISTANCE_M = 120.0
ACCIDENT_FIRST_GAP_M = 10.0  # police car -> first crashed car
ACCIDENT_SECOND_GAP_M = 6.0  # first -> second crashed car
ACCIDENT_OFFSET_FRACTION = 0.75  # lateral shift, fraction of half the lane width
ACCIDENT_DEFAULT_FREQUENCY_M = (20.0, 100.0)
POLICE_TYPE_ID = "vehicle.dodge.charger_police_2020"
ACCIDENT_CAR_CATEGORY = "car"

HAZARD_DEFAULT_DISTANCE_M = 100.0
BIKE_GAP_M = 9.0
BIKE_OFFSET_FRACTION = 0.55
BIKE_DEFAULT_SPEED_KMH = 10.0
BIKE_DEFAULT_DRIVE_DISTANCE_M = 50.0
BIKE_PATH_EXTRA_M = 100.0  # the bicycles ride on this far past their drive distance (then stop)
BIKE_ACCEL_MPS2 = 1.0
BIKE_TYPE_IDS = ("vehicle.bh.crossbike", "vehicle.diamondback.century", "vehicle.gazelle.omafiets")
HAZARD_DEFAULT_FREQUENCY_M = (100.0, 100.0)


class _BlockedLane(Scenario):
    """Actors on the ego's route lane `distance` past the trigger point, plus an optional oncoming flow."""

    trigger_distance_m = 20.0
    timeout_s = 180.0
    default_distance_m = ACCIDENT_DEFAULT_DISTANCE_M
    default_frequency_m = ACCIDENT_DEFAULT_FREQUENCY_M

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        self.two_ways = spec.type.endswith("TwoWays")
        i_trig = trigger_index(world, spec)
        self.trigger_s = float(world.dense.s[i_trig])
        distance = float(spec.value("distance", self.default_distance_m))
        self.block_s = self.trigger_s + distance
        self.last_s = self.block_s
        _, self.block_node = route_node_at_s(world, self.block_s)
        self.owned: list[int] = []  # the standing / riding actors (the flow's vehicles come and go)
        self.flow: ActorFlow | None = None
        self._gaps = interval_param(spec, "frequency", self.default_frequency_m)
        self.place(world, spec)
        i0 = world.route_index_at_s(self.block_s - KEEP_CLEAR_BEFORE_M)
        i1 = world.route_index_at_s(self.last_s + KEEP_CLEAR_AFTER_M)
        clear_lane_stretch(world, world.route_nodes[i0 : i1 + 1])
        self._zones = [world.keep_out_background(world.route_nodes[i0 : i1 + 1])]

    def place(self, world: World, spec: ScenarioSpec) -> None:
        raise NotImplementedError

    def on_trigger(self, world: World) -> None:
        if self.two_ways:
            length = ONCOMING_SOURCE_AHEAD_M + (self.block_s - self.trigger_s) + ONCOMING_EXTRA_M
            self.flow = oncoming_flow(world, self.block_node, ONCOMING_SOURCE_AHEAD_M, length, self._gaps)
            if self.flow is not None:
                clear_lane_stretch(world, self.flow.nodes)
                self._zones.append(world.keep_out_background(self.flow.nodes))
                self.flow.fill(world)

    def passed(self, world: World) -> bool:
        return world.route_s() > self.last_s + PASSED_MARGIN_M

    def tick(self, world: World) -> str:
        if self.flow is not None:
            self.flow.tick(world)
            self.actor_ids = [*self.owned, *self.flow.ids]
        return DONE if self.passed(world) else RUNNING

    def cleanup(self, world: World) -> None:
        if self.flow is not None:
            self.flow.remove_all(world)
        for aid in self.owned:
            world.remove_actor(aid)
        for zone in self._zones:
            world.allow_background(zone)
        self._zones = []

    def spawn_on_route(self, world: World, s: float, right_m: float, type_id: str, role: ActorRole) -> int:
        """Spawn a standing actor on the route lane at arc length `s`, shifted `right_m` to the right."""
        _, node = route_node_at_s(world, s)
        g = world.graph
        yaw = float(g.yaw[node])
        x = float(g.xy[node, 0]) - math.sin(yaw) * right_m
        y = float(g.xy[node, 1]) + math.cos(yaw) * right_m
        aid = world.spawn_scripted(Pose(x, y, float(g.z[node]), yaw), type_id, role)
        self.owned.append(aid)
        self.actor_ids.append(aid)
        return aid


@register("Accident", "AccidentTwoWays")
class Accident(_BlockedLane):
    """A police car and two crashed cars blocking the ego's lane (module docstring)."""

    def place(self, world: World, spec: ScenarioSpec) -> None:
        side = 1.0 if direction_param(spec) == RIGHT else -1.0
        width = float(world.graph.width[self.block_node])
        shift = side * ACCIDENT_OFFSET_FRACTION * width / 2.0
        cars = vehicles_of(ACCIDENT_CAR_CATEGORY)
        s1 = self.block_s + ACCIDENT_FIRST_GAP_M
        s2 = s1 + ACCIDENT_SECOND_GAP_M
        self.spawn_on_route(world, self.block_s, shift, POLICE_TYPE_ID, ActorRole.PARKED)
        for s in (s1, s2):
            bp = cars[int(world.rng.integers(len(cars)))]
            self.spawn_on_route(world, s, shift, bp.type_id, ActorRole.PARKED)
        self.last_s = s2


@register("HazardAtSideLane", "HazardAtSideLaneTwoWays")
class HazardAtSideLane(_BlockedLane):
    """Two slow bicycles riding at the right edge of the ego's lane (module docstring)."""

    default_distance_m = HAZARD_DEFAULT_DISTANCE_M
    default_frequency_m = HAZARD_DEFAULT_FREQUENCY_M

    def place(self, world: World, spec: ScenarioSpec) -> None:
        width = float(world.graph.width[self.block_node])
        self.shift = BIKE_OFFSET_FRACTION * width / 2.0
        self.speed = float(spec.value("bicycle_speed", BIKE_DEFAULT_SPEED_KMH)) / KMH_PER_MPS
        self.ride_m = float(spec.value("bicycle_drive_distance", BIKE_DEFAULT_DRIVE_DISTANCE_M))
        self.bike_s = [self.block_s, self.block_s + BIKE_GAP_M]
        for k, s in enumerate(self.bike_s):
            type_id = BIKE_TYPE_IDS[int(world.rng.integers(len(BIKE_TYPE_IDS)))] if k else BIKE_TYPE_IDS[0]
            self.spawn_on_route(world, s, self.shift, type_id, ActorRole.SCENARIO)
        self.last_s = self.bike_s[-1]

    def on_trigger(self, world: World) -> None:
        super().on_trigger(world)
        for aid, s in zip(self.owned, self.bike_s, strict=True):
            xy, yaw = route_polyline(world, s, s + self.ride_m + BIKE_PATH_EXTRA_M)
            world.set_path(
                aid, offset_polyline(xy, yaw, self.shift), self.speed, max_accel_mps2=BIKE_ACCEL_MPS2
            )

    def passed(self, world: World) -> bool:
        lead = world.scripted.get(self.owned[-1])
        if lead is None:
            return True
        lead_s = self.bike_s[-1] + lead.s  # the bicycles ride along the route polyline
        return world.route_s() > lead_s + PASSED_MARGIN_M
