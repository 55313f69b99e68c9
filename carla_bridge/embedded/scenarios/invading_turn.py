"""InvadingTurn: oncoming vehicles cut the curve into the ego's lane; the ego must keep right.

scenario_runner invading_turn.py: from `distance` (default 100 m) along the route past the trigger
point, on the opposite lane, a flow of cars drives towards the ego past the trigger point, each
shifted towards the ego's lane so that its near side invades it by `offset` x lane width (default
0.25):

    shift = lane_width / 2 - half_width + offset x lane_width    (centre shift to its left)

The cars keep their lateral shift and their speed (INVADER_SPEED_FRACTION_OF_LIMIT of the limit);
they brake (INVADER_BRAKE_MPS2) only when the ego's centre comes within the sum of half widths plus
INVADER_LATERAL_MARGIN_M of their path ahead (stopping distance + INVADER_STOP_GAP_M), as a driver
would for a car in their way; one that has waited INVADER_YIELD_PATIENCE_S for a stopped ego steers
back to its own lane centre over INVASION_RAMP_M and drives past (it would otherwise wait for ever
for an ego that waits for it). The ego must drive close to the right edge of its lane (the invasion
leaves lane_width x (1 - offset) for it); stopping in the lane centre only stalls the flow. Done
once the ego has passed the flow's source; the cars are removed then. One car every INVADER_GAP_M; the
stretch is seeded with cars (up to SEED_CLEAR_BEFORE_TRIGGER_M before the trigger point) at the
trigger. No invader appears closer than MIN_SPAWN_AHEAD_OF_EGO_M ahead of the ego (a car appearing
a few metres ahead at full speed could not react to a stopped ego). Until the scenario ends,
background vehicles may not drive on the opposite lane's stretch nor on the ego's route lane from
the trigger point to past the source (a background car there stalls with the invaders and the ego
crawls behind it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from carla_bridge.embedded.catalogue import vehicles_of
from carla_bridge.embedded.scenarios.base import DONE, RUNNING, Scenario, register
from carla_bridge.embedded.scenarios.placement import (
    ScenarioLayoutError,
    clear_lane_stretch,
    lane_polyline,
    offset_polyline,
    opposite_lane_node,
    route_node_at_s,
    trigger_index,
)
from carla_bridge.route import ScenarioSpec
from carla_bridge.snapshot import Pose

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

DEFAULT_DISTANCE_M = 100.0
DEFAULT_OFFSET_FRACTION = 0.25
INVADER_GAP_M = 40.0  # scenario_runner's flow frequency
INVADER_SPEED_FRACTION_OF_LIMIT = 0.7
INVADER_PAST_TRIGGER_M = 40.0  # the cars drive this far past the trigger point, then vanish
INVASION_RAMP_M = 10.0  # from their lane centre to the full shift over this distance
SEED_CLEAR_BEFORE_TRIGGER_M = 20.0  # seeded cars stand at least this far before the trigger point
MIN_SPAWN_AHEAD_OF_EGO_M = 60.0  # invaders appear at least this far ahead of the ego (route arc length)
EGO_LANE_KEEP_OUT_BEFORE_TRIGGER_M = 20.0  # the ego-lane keep-out zone starts this far before the trigger
SOURCE_CLEARANCE_M = 8.0
INVADER_BRAKE_MPS2 = 6.0
INVADER_STOP_GAP_M = 4.0  # bumper gap an invader keeps to the ego when it has to stop
INVADER_LATERAL_MARGIN_M = 0.1
INVADER_YIELD_PATIENCE_S = 3.0  # an invader stopped this long for the ego gives up its invasion
PASSED_MARGIN_M = 5.0
CAR_CATEGORY = "car"


def invasion_shift(lane_width_m: float, half_width_m: float, offset_fraction: float) -> float:
    """Leftward shift of an invader's centre: w/2 - half width + offset x w (module docstring)."""
    return lane_width_m / 2.0 - half_width_m + offset_fraction * lane_width_m


@register("InvadingTurn")
class InvadingTurn(Scenario):
    trigger_distance_m = 20.0
    timeout_s = 60.0

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        s_trig = float(world.dense.s[trigger_index(world, spec)])
        distance = float(spec.value("distance", DEFAULT_DISTANCE_M))
        self.distance = distance
        self.offset = float(spec.value("offset", DEFAULT_OFFSET_FRACTION))
        self.source_s = s_trig + distance
        _, node = route_node_at_s(world, self.source_s)
        opp = opposite_lane_node(world, node)
        if opp < 0:
            raise ScenarioLayoutError(
                f"{spec.name}: no opposite lane at {self.source_s:.0f} m along the route"
            )
        g = world.graph
        self.lane_xy, self.lane_yaw = lane_polyline(g, opp, distance + INVADER_PAST_TRIGGER_M)
        self.lane_width = float(g.width[opp])
        self.speed = INVADER_SPEED_FRACTION_OF_LIMIT * float(g.speed_limit[opp])
        self.along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(self.lane_xy, axis=0).T))])
        self.z = float(g.z[opp])
        nodes = g.path_nodes(opp, distance + INVADER_PAST_TRIGGER_M)
        clear_lane_stretch(world, nodes)
        i0 = world.route_index_at_s(s_trig - EGO_LANE_KEEP_OUT_BEFORE_TRIGGER_M)
        i1 = world.route_index_at_s(self.source_s + PASSED_MARGIN_M)
        self._zones = [
            world.keep_out_background(nodes),
            world.keep_out_background(world.route_nodes[i0 : i1 + 1]),
        ]
        self._next_spawn_s = math.inf
        self._cars = vehicles_of(CAR_CATEGORY)
        self.spawned = 0
        self._target: dict[int, float] = {}  # per invader: the speed it drives at now (m/s)
        self._from_m: dict[int, float] = {}  # per invader: lane arc length where its path starts
        self._stopped_since: dict[int, float] = {}  # per invader: when it began waiting for the ego
        self.gave_up: set[int] = set()  # invaders that went back to their own lane

    def invader_path(self, half_width_m: float, from_m: float = 0.0) -> np.ndarray:
        """The invader's polyline from `from_m` along the opposite lane (shift ramped in from the source)."""
        shift = invasion_shift(self.lane_width, half_width_m, self.offset)
        ramp = np.clip(self.along / INVASION_RAMP_M, 0.0, 1.0)
        path = offset_polyline(self.lane_xy, self.lane_yaw, -shift * ramp)
        k = int(np.searchsorted(self.along, from_m))
        return path[min(k, len(path) - 2) :]

    def spawn_invader(self, world: World, from_m: float) -> None:
        bp = self._cars[int(world.rng.integers(len(self._cars)))]
        path = self.invader_path(float(bp.extent[1]), from_m)
        yaw = math.atan2(path[1, 1] - path[0, 1], path[1, 0] - path[0, 0])
        aid = world.spawn_scripted(Pose(float(path[0, 0]), float(path[0, 1]), self.z, yaw), bp.type_id)
        self._target[aid] = self.speed
        self._from_m[aid] = from_m
        world.set_path(
            aid,
            path,
            lambda _t, a=aid: self._target.get(a, 0.0),
            max_decel_mps2=INVADER_BRAKE_MPS2,
            remove_at_end=True,
        )
        a = world.scripted.get(aid)
        if a is not None:
            a.speed = self.speed  # it enters the scene already driving
        self.actor_ids.append(aid)
        self.spawned += 1

    def ahead_of_ego_m(self, world: World) -> float:
        """Route arc length from the ego to the flow's source."""
        return self.source_s - world.route_s()

    def on_trigger(self, world: World) -> None:
        # seed the stretch ahead of the ego: cars every INVADER_GAP_M from half a gap past the source,
        # none closer to the ego than MIN_SPAWN_AHEAD_OF_EGO_M (the lanes run side by side)
        last = min(
            self.distance - SEED_CLEAR_BEFORE_TRIGGER_M,
            self.ahead_of_ego_m(world) - MIN_SPAWN_AHEAD_OF_EGO_M,
        )
        pos = INVADER_GAP_M / 2.0
        while pos <= last:
            self.spawn_invader(world, pos)
            pos += INVADER_GAP_M
        self._next_spawn_s = world.time_s + (INVADER_GAP_M / 2.0) / max(self.speed, 1.0)

    def give_up_invasion(self, world: World, aid: int) -> None:
        """Re-route invader `aid` from where it stands back to its own lane centre (shift ramped out
        over INVASION_RAMP_M), keeping its speed rule."""
        a = world.scripted.get(aid)
        if a is None:
            return
        here = self._from_m.get(aid, 0.0) + a.s  # its arc length along the lane (near enough)
        shift = invasion_shift(self.lane_width, float(a.extent[1]), self.offset)
        ramp_in = np.clip(self.along / INVASION_RAMP_M, 0.0, 1.0)
        ramp_out = np.clip(1.0 - (self.along - here) / INVASION_RAMP_M, 0.0, 1.0)
        path = offset_polyline(self.lane_xy, self.lane_yaw, -shift * np.minimum(ramp_in, ramp_out))
        ahead = path[self.along > here + 0.5]
        if ahead.shape[0] < 1:
            return
        world.set_path(
            aid,
            np.vstack([[a.x, a.y], ahead]),
            lambda _t, b=aid: self._target.get(b, 0.0),
            max_decel_mps2=INVADER_BRAKE_MPS2,
            remove_at_end=True,
        )
        self._from_m[aid] = here
        self.gave_up.add(aid)

    def ego_in_the_way(self, world: World, aid: int) -> bool:
        """Whether the ego's centre lies on invader `aid`'s path within its stopping reach."""
        a = world.scripted.get(aid)
        if a is None or a.path_xy is None or a.path_s is None:
            return False
        v = max(a.speed, self.speed)
        hl_ego, hw_ego = float(world.ego_extent[0]), float(world.ego_extent[1])
        reach = v * v / (2.0 * INVADER_BRAKE_MPS2) + INVADER_STOP_GAP_M + a.extent[0] + hl_ego
        ahead = (a.path_s >= a.s) & (a.path_s <= a.s + reach)
        if not ahead.any():
            return False
        d = np.hypot(*(a.path_xy[ahead] - world.ego_xy).T)
        return bool(d.min() < a.extent[1] + hw_ego + INVADER_LATERAL_MARGIN_M)

    def tick(self, world: World) -> str:
        if world.route_s() > self.source_s + PASSED_MARGIN_M:
            return DONE
        for aid in self.actor_ids:
            in_way = self.ego_in_the_way(world, aid)
            self._target[aid] = 0.0 if in_way else self.speed
            if not in_way:
                self._stopped_since.pop(aid, None)
                continue
            since = self._stopped_since.setdefault(aid, world.time_s)
            if world.time_s - since >= INVADER_YIELD_PATIENCE_S and aid not in self.gave_up:
                self.give_up_invasion(world, aid)
        if world.time_s >= self._next_spawn_s and self.ahead_of_ego_m(world) >= MIN_SPAWN_AHEAD_OF_EGO_M:
            src = self.lane_xy[0]
            busy = any(
                (a.x - src[0]) ** 2 + (a.y - src[1]) ** 2 < SOURCE_CLEARANCE_M**2
                for a in world.scripted.actors
            )
            if not busy:
                self.spawn_invader(world, 0.0)
                self._next_spawn_s = world.time_s + INVADER_GAP_M / max(self.speed, 1.0)
        return RUNNING

    def cleanup(self, world: World) -> None:
        for aid in self.actor_ids:
            world.remove_actor(aid)
        for zone in self._zones:
            world.allow_background(zone)
        self._zones = []
