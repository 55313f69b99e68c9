"""YieldToEmergencyVehicle: an emergency vehicle comes up behind the ego; the ego must make way.

scenario_runner yield_to_emergency_vehicle.py: when triggered, an emergency vehicle (role EMERGENCY:
ambulance, police car or fire truck) appears `distance` metres (default 140) behind the ego in the
ego's lane and drives the ego's route at EV_SPEED_INCREMENT_KMH above the ego's speed (at least
`speed` km/h when given), ignoring lights; background traffic is kept off the lanes of the route
ahead (scenario_runner removes that lane from the background activity). The traffic model makes it
follow the ego while the ego is in its way.

Yielding criterion: the emergency vehicle is *blocked* (held back by the ego) while it is behind
the ego in the ego's lane (the ego centre less than half a lane width off the EV's heading line), at
a bumper gap below EV_BLOCKED_GAP_M + EV_FOLLOW_HEADWAY_S x its speed (its car-following distance),
and slower than its target speed by more than EV_HELD_MARGIN_MPS. Blocked for more than
EV_BLOCKED_LIMIT_S in total -> status "failed" (scored as YIELD_TO_EMERGENCY_VEHICLE). Once it is EV_DONE_AHEAD_M ahead of the ego the scenario is done and the
vehicle is removed. What the ego must do: move to a neighbouring lane (or aside far enough) soon after
it comes close, and let it pass.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from carla_bridge.embedded.catalogue import EMERGENCY
from carla_bridge.embedded.scenarios.actor_flow import ActorFlow
from carla_bridge.embedded.scenarios.base import DONE, FAILED, RUNNING, Scenario, register
from carla_bridge.embedded.scenarios.placement import (
    ScenarioLayoutError,
    clear_lane_stretch,
    forward,
    node_behind,
    right_of,
    route_node,
)
from carla_bridge.route import ScenarioSpec
from carla_bridge.snapshot import ActorRole
from carla_bridge.units import KMH_PER_MPS

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

log = logging.getLogger(__name__)

EV_DEFAULT_DISTANCE_M = 140.0
EV_SPEED_INCREMENT_KMH = 15.0  # the EV drives this much faster than the ego
EV_MIN_SPEED_KMH = 15.0
EV_PATH_AHEAD_M = 400.0  # the EV's path: this far along the route lanes from its spawn point
EV_BLOCKED_GAP_M = 15.0
EV_FOLLOW_HEADWAY_S = 1.2  # the traffic model's IDM time headway: how far a held-back EV follows
EV_HELD_MARGIN_MPS = 1.5
EV_BLOCKED_LIMIT_S = 6.0
EV_DONE_AHEAD_M = 30.0


@register("YieldToEmergencyVehicle")
class YieldToEmergencyVehicle(Scenario):
    trigger_distance_m = 5.0
    timeout_s = 120.0

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        self.distance_m = float(spec.value("distance", EV_DEFAULT_DISTANCE_M))
        self.min_speed = max(float(spec.value("speed", EV_MIN_SPEED_KMH)), EV_MIN_SPEED_KMH) / KMH_PER_MPS
        self.flow: ActorFlow | None = None
        self.ev = -1
        self.blocked_s = 0.0  # total time the EV was held back by the ego
        route_segs: list[int] = []
        for n in world.route_nodes.tolist():
            if n >= 0:
                seg = int(world.graph.seg[n])
                if not route_segs or route_segs[-1] != seg:
                    route_segs.append(seg)
        self._route_segs = set(route_segs)

    def on_trigger(self, world: World) -> None:
        try:
            self._spawn_ev(world)
        except ScenarioLayoutError as exc:  # a failed layout must not read as a failure to yield
            log.warning(
                "%s: %s; the emergency vehicle is not spawned", self.spec.name if self.spec else "", exc
            )

    def _spawn_ev(self, world: World) -> None:
        g = world.graph
        ego_node = route_node(world, world.route_index)
        if ego_node < 0:
            raise ScenarioLayoutError("no lane under the ego")
        start = node_behind(g, ego_node, self.distance_m, stop_at_junction=False)

        def along_route(succ: np.ndarray) -> int:
            on = [int(s) for s in succ.tolist() if int(s) in self._route_segs]
            return on[0] if on else int(succ[0])

        nodes = g.path_nodes(start, self.distance_m + EV_PATH_AHEAD_M, along_route)
        clear_lane_stretch(world, nodes)  # scenario_runner takes this lane from the background traffic
        speed = self._target_speed(world)
        self.flow = ActorFlow(
            world, nodes, (0.0, 0.0), speed, ignore_signals=True, role=ActorRole.EMERGENCY, max_vehicles=1
        )
        bp = EMERGENCY[int(world.rng.integers(len(EMERGENCY)))]
        self.ev = self.flow.spawn(world, 0, bp.type_id)
        self.actor_ids.append(self.ev)

    def _target_speed(self, world: World) -> float:
        return max(world.ego_speed + EV_SPEED_INCREMENT_KMH / KMH_PER_MPS, self.min_speed)

    def tick(self, world: World) -> str:
        if self.flow is None:
            return DONE
        self.flow.tick(world)
        t = world.traffic
        row = t.index_of(self.ev)
        if row < 0:
            return DONE  # it reached the end of its path
        t.speed_cap[row] = self._target_speed(world)
        ahead = self._ev_ahead_of_ego(world, row)
        if ahead > EV_DONE_AHEAD_M:
            return DONE
        if self._blocked(world, row) and float(t.v[row]) < float(t.speed_cap[row]) - EV_HELD_MARGIN_MPS:
            self.blocked_s += world.dt
            if self.blocked_s > EV_BLOCKED_LIMIT_S:
                return FAILED
        return RUNNING

    def _ev_ahead_of_ego(self, world: World, row: int) -> float:
        """Gap from the ego's front to the EV's rear along the ego's heading (negative: not past yet)."""
        rel = world.traffic.xyz[row, :2] - world.ego_xy
        lon = float(np.dot(rel, forward(world.ego[2])))
        return lon - float(world.ego_extent[0]) - float(world.traffic.extent[row, 0])

    def _blocked(self, world: World, row: int) -> bool:
        t = world.traffic
        yaw = float(t.yaw[row])
        rel = world.ego_xy - t.xyz[row, :2]
        lon = float(np.dot(rel, forward(yaw)))
        lat = float(np.dot(rel, right_of(yaw)))
        half_lane = float(world.graph.width[int(t.node[row])]) / 2.0
        gap = lon - float(t.extent[row, 0]) - float(world.ego_extent[0])
        reach = EV_BLOCKED_GAP_M + EV_FOLLOW_HEADWAY_S * float(t.v[row])
        return lon > 0.0 and abs(lat) < half_lane and gap < reach

    def cleanup(self, world: World) -> None:
        if self.flow is not None:
            self.flow.remove_all(world)
