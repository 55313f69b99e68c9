"""Lane obstructions the ego must drive around: ConstructionObstacle and ParkedObstacleTwoWays.

Both place their obstacle `distance` metres (route arc length) past the trigger point on the ego's
route lane at set-up, keep background traffic off that stretch of lane, and are done once the ego
is `PASSED_MARGIN_M` past the obstacle. Until then background vehicles may not drive on that
stretch (they would queue behind the obstacle in front of the ego). The two-ways variants also run
an oncoming flow on the opposite lane once triggered: vehicles appear `FLOW_SOURCE_AHEAD_M` upstream
of the obstacle on the opposite lane every `frequency` metres of flow (a uniform draw from the
route's from/to values) and vanish behind the ego; while it runs, background vehicles may not drive
on the opposite lane from the flow source to OPPOSITE_KEEP_OUT_BEHIND_M behind the trigger point
(the flow replaces them, as the leaderboard's ChangeOppositeBehavior).
"""

from __future__ import annotations

import math

import carla
import numpy as np

from carla_bridge.embedded.scenarios.base import DONE, RUNNING, Scenario, register
from carla_bridge.route import ScenarioSpec
from carla_bridge.snapshot import ActorRole, Pose

PASSED_MARGIN_M = 15.0
KEEP_CLEAR_BEFORE_M = 40.0  # lane stretch kept free of background traffic before the obstacle
KEEP_CLEAR_AFTER_M = 20.0
FLOW_SOURCE_AHEAD_M = 80.0
FLOW_SPEED_FRACTION_OF_LIMIT = 0.7
FLOW_SPAWN_CLEARANCE_M = 10.0
FLOW_DESPAWN_BEHIND_M = 30.0
CONE_SPACING_M = 2.0
TAPER_LENGTH_M = 8.0
MAX_LANES_TO_OPPOSITE = 6
OPPOSITE_KEEP_OUT_BEHIND_M = 20.0  # the opposite-lane keep-out zone reaches this far past the trigger


class _LaneObstacle(Scenario):
    trigger_distance_m = 20.0
    timeout_s = 180.0
    default_distance_m = 100.0
    two_ways = False

    def setup(self, world, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        tp = spec.trigger_point
        i_trig = world.route_index_near((tp.x, tp.y))
        distance = spec.value("distance", self.default_distance_m)
        self.obstacle_index = world.route_index_at_s(float(world.dense.s[i_trig]) + float(distance))
        self.obstacle_s = float(world.dense.s[self.obstacle_index])
        node = int(world.route_nodes[self.obstacle_index])
        if node < 0:
            p = world.dense.xyz[self.obstacle_index]
            node = world.lane_node(p[:2], float(world.dense.yaw[self.obstacle_index]), 6.0)
        if node < 0:
            raise ValueError(f"{spec.name}: no lane at the obstacle position")
        self.node = node
        g = world.graph
        back = [node]
        # keep the lane clear: nodes from KEEP_CLEAR_BEFORE_M before to KEEP_CLEAR_AFTER_M after
        i0 = world.route_index_at_s(self.obstacle_s - KEEP_CLEAR_BEFORE_M)
        i1 = world.route_index_at_s(self.obstacle_s + KEEP_CLEAR_AFTER_M)
        lane_nodes = world.route_nodes[i0 : i1 + 1]
        back += lane_nodes[lane_nodes >= 0].tolist()
        world.block_spawns(np.asarray(back))
        world.clear_background(g.xy[node], KEEP_CLEAR_BEFORE_M)
        self._zones = [world.keep_out_background(np.asarray(lane_nodes))]
        self.trigger_s = float(world.dense.s[i_trig])
        self.place(world, node)
        self._flow: list[int] = []
        self._next_flow_at = math.inf
        self._source = -1
        self._flow_speed = 0.0
        if self.two_ways:
            self._prepare_flow(world, spec)

    def place(self, world, node: int) -> None:
        raise NotImplementedError

    # --- oncoming flow on the opposite lane
    def _prepare_flow(self, world, spec: ScenarioSpec) -> None:
        g = world.graph
        wp = world.waypoint(g.xy[self.node], float(g.z[self.node]))
        opp = wp
        for _ in range(MAX_LANES_TO_OPPOSITE):  # walk left to the first lane of the other direction
            opp = opp.get_left_lane() if opp is not None else None
            if opp is None or (opp.lane_id * wp.lane_id < 0 and opp.lane_type == carla.LaneType.Driving):
                break
        if opp is None or opp.lane_id * wp.lane_id > 0:
            return  # no opposite lane: no flow
        ups = opp.previous(FLOW_SOURCE_AHEAD_M)
        if not ups:
            return
        src = g.node_of_waypoint(ups[0])
        if src < 0:
            return
        self._source = src
        self._flow_speed = float(g.speed_limit[src]) * FLOW_SPEED_FRACTION_OF_LIMIT
        lo = spec.value("frequency", 40.0, "from")
        hi = spec.value("frequency", lo, "to")
        if spec.value("frequency", None) is not None:
            lo = hi = float(spec.value("frequency"))
        self._gap_range = (float(min(lo, hi)), float(max(lo, hi)))

    def on_trigger(self, world) -> None:
        if self._source >= 0:
            self._next_flow_at = world.time_s
            reach = FLOW_SOURCE_AHEAD_M + self.obstacle_s - self.trigger_s + OPPOSITE_KEEP_OUT_BEHIND_M
            self._zones.append(world.keep_out_background(world.graph.path_nodes(self._source, reach)))

    def tick(self, world) -> str:
        if self._source >= 0:
            self._run_flow(world)
        if world.route_s() > self.obstacle_s + PASSED_MARGIN_M:
            return DONE
        return RUNNING

    def _run_flow(self, world) -> None:
        g = world.graph
        t = world.traffic
        # forget / remove flow vehicles that are gone or far behind the ego
        alive = set(t.id.tolist())
        self._flow = [a for a in self._flow if a in alive]
        for aid in list(self._flow):
            xy = world.actor_xy(aid)
            rel = xy - world.ego_xy
            c, s = math.cos(world.ego[2]), math.sin(world.ego[2])
            if rel[0] * c + rel[1] * s < -FLOW_DESPAWN_BEHIND_M:
                world.remove_actor(aid)
                self._flow.remove(aid)
        if world.time_s < self._next_flow_at:
            return
        src_xy = g.xy[self._source]
        if len(t) and (((t.xyz[:, :2] - src_xy) ** 2).sum(axis=1) < FLOW_SPAWN_CLEARANCE_M**2).any():
            self._next_flow_at = world.time_s + 0.5
            return
        aid = world.spawn_lane_vehicle(self._source, None, self._flow_speed, ActorRole.SCENARIO)
        self._flow.append(aid)
        gap = float(world.rng.uniform(*self._gap_range))
        self._next_flow_at = world.time_s + gap / max(self._flow_speed, 1.0)

    def cleanup(self, world) -> None:
        for aid in self._flow:
            world.remove_actor(aid)
        self._flow = []
        for zone in self._zones:
            world.allow_background(zone)
        self._zones = []


def _offset_pose(world, node: int, ahead_m: float, lateral_m: float, yaw_offset: float = 0.0) -> Pose:
    """Pose `ahead_m` along the lane from `node` and `lateral_m` to its right (CARLA frame)."""
    g = world.graph
    path = g.path_nodes(node, max(ahead_m, 0.0) + 1.0)
    k = min(round(max(ahead_m, 0.0) / g.spacing_m), len(path) - 1)
    n = int(path[k]) if ahead_m >= 0 else node
    back = -ahead_m if ahead_m < 0 else 0.0
    yaw = float(g.yaw[n])
    c, s = math.cos(yaw), math.sin(yaw)
    x = float(g.xy[n, 0]) - c * back - s * lateral_m
    y = float(g.xy[n, 1]) - s * back + c * lateral_m
    return Pose(x, y, float(g.z[n]), yaw + yaw_offset)


@register("ConstructionObstacle", "ConstructionObstacleTwoWays")
class ConstructionObstacle(_LaneObstacle):
    """A construction site closing the ego's lane: warning sign, a taper of cones, cones along the lane."""

    def setup(self, world, spec: ScenarioSpec) -> None:
        self.two_ways = spec.type.endswith("TwoWays")
        super().setup(world, spec)

    def place(self, world, node: int) -> None:
        g = world.graph
        half = float(g.width[node]) / 2.0
        self.actor_ids.append(
            world.spawn_static(_offset_pose(world, node, 0.0, 0.0), "static.prop.trafficwarning")
        )
        # taper: cones from the right edge to the left edge over TAPER_LENGTH_M before the sign
        n_taper = int(TAPER_LENGTH_M / CONE_SPACING_M)
        for k in range(1, n_taper + 1):
            lateral = half * 0.8 - (half * 1.6) * (n_taper - k) / max(n_taper - 1, 1)
            pose = _offset_pose(world, node, -TAPER_LENGTH_M - 2.0 + k * CONE_SPACING_M, -lateral)
            self.actor_ids.append(world.spawn_static(pose, "static.prop.constructioncone"))
        for k in range(1, 4):  # cones along the left edge past the sign
            pose = _offset_pose(world, node, k * CONE_SPACING_M * 1.5, -half * 0.8)
            self.actor_ids.append(world.spawn_static(pose, "static.prop.constructioncone"))
        sign = _offset_pose(world, node, -TAPER_LENGTH_M - 6.0, half * 0.6)
        self.actor_ids.append(world.spawn_static(sign, "static.prop.warningconstruction"))


@register("ParkedObstacle", "ParkedObstacleTwoWays")
class ParkedObstacle(_LaneObstacle):
    """A vehicle parked in the ego's lane (hazard lights on), slightly towards the right edge."""

    default_distance_m = 60.0
    right_shift_fraction = 0.15  # of the lane width

    def setup(self, world, spec: ScenarioSpec) -> None:
        self.two_ways = spec.type.endswith("TwoWays")
        super().setup(world, spec)

    def place(self, world, node: int) -> None:
        g = world.graph
        pose = _offset_pose(world, node, 0.0, float(g.width[node]) * self.right_shift_fraction)
        aid = world.spawn_scripted(pose, "vehicle.lincoln.mkz_2020", ActorRole.PARKED)
        self.actor_ids.append(aid)
