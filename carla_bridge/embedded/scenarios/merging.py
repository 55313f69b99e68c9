"""Merging into traffic: flows between given locations, and lane changes through traffic.

MergerIntoSlowTraffic(V2), EnterActorFlow(V2), InterurbanActorFlow, HighwayExit (scenario_runner
actor_flow.py): a flow of cars from `start_actor_flow` to `end_actor_flow` (locations; the lane path
between them follows the lane graph) at `flow_speed` m/s (default 10), one every
`source_dist_interval` m (default 20-50), seeded along the path at the trigger and kept free of
background traffic. The ego must merge into (or cut across) it through a gap. Done when the ego
passes the route point nearest to the flow's end (or FLOW_END_MAX_M past the trigger).

SequentialLaneChange (Bench2Drive): the route changes lanes several times in a row after the
trigger. At the trigger a platoon of SLC_PLATOON cars, SLC_GAP_M apart, starts in every lane the
route changes into, level with the ego, at SLC_SPEED_FRACTION_OF_LIMIT of the limit. The ego must
find gaps for each lane change. Done SLC_END_M past the last lane change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from carla_bridge.embedded.scenarios.actor_flow import ActorFlow
from carla_bridge.embedded.scenarios.base import DONE, RUNNING, Scenario, register
from carla_bridge.embedded.scenarios.placement import (
    ScenarioLayoutError,
    clear_lane_stretch,
    interval_param,
    location_param,
    node_ahead,
    node_behind,
    path_nodes_of_segments,
    seg_path,
    trigger_index,
)
from carla_bridge.route import RoadOption, ScenarioSpec

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

FLOW_DEFAULT_SPEED_MPS = 10.0
FLOW_DEFAULT_GAPS_M = (20.0, 50.0)
FLOW_END_MAX_M = 250.0
FLOW_LOCATION_SEARCH_M = 6.0  # a flow location must lie this close to a driving lane

SLC_HORIZON_M = 200.0  # lane changes within this route distance after the trigger count
SLC_PLATOON = 3
SLC_GAP_M = 22.0
SLC_SPEED_FRACTION_OF_LIMIT = 0.6
SLC_PLATOON_LENGTH_M = 300.0  # the platoon's lane path (they vanish at its end)
SLC_END_M = 20.0
LANE_CHANGE_COMMANDS = (int(RoadOption.CHANGELANELEFT), int(RoadOption.CHANGELANERIGHT))


def lane_node_at(world: World, xy: np.ndarray, what: str) -> int:
    node = world.graph.node_of_waypoint(world.waypoint(xy))
    if node < 0 or float(np.hypot(*(world.graph.xy[node] - xy))) > FLOW_LOCATION_SEARCH_M:
        raise ScenarioLayoutError(f"{what} ({xy[0]:.1f}, {xy[1]:.1f}) is not on a driving lane")
    return node


@register(
    "MergerIntoSlowTraffic",
    "MergerIntoSlowTrafficV2",
    "EnterActorFlow",
    "EnterActorFlowV2",
    "InterurbanActorFlow",
    "HighwayExit",
)
class ParametrizedActorFlow(Scenario):
    """A flow between the scenario's start/end locations (module docstring)."""

    trigger_distance_m = 20.0
    timeout_s = 180.0

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        start = location_param(spec, "start_actor_flow")
        end = location_param(spec, "end_actor_flow")
        if start is None or end is None:
            raise ScenarioLayoutError(
                f"{spec.name}: {spec.type} needs <start_actor_flow x y z/> and <end_actor_flow x y z/>"
            )
        g = world.graph
        src = lane_node_at(world, start, "start_actor_flow")
        sink = lane_node_at(world, end, "end_actor_flow")
        segs = seg_path(g, int(g.seg[src]), int(g.seg[sink]))
        self.nodes = path_nodes_of_segments(g, segs, src, sink)
        self.speed = float(spec.value("flow_speed", FLOW_DEFAULT_SPEED_MPS))
        self.gaps = interval_param(spec, "source_dist_interval", FLOW_DEFAULT_GAPS_M)
        s_trig = float(world.dense.s[trigger_index(world, spec)])
        self.end_s = min(float(world.dense.s[world.route_index_near(end)]), s_trig + FLOW_END_MAX_M)
        clear_lane_stretch(world, self.nodes)
        self.flow: ActorFlow | None = None

    def on_trigger(self, world: World) -> None:
        self.flow = ActorFlow(world, self.nodes, self.gaps, self.speed, ignore_signals=True)
        self.flow.fill(world)

    def tick(self, world: World) -> str:
        if self.flow is not None:
            self.flow.tick(world)
            self.actor_ids = list(self.flow.ids)
        return DONE if world.route_s() > self.end_s else RUNNING

    def cleanup(self, world: World) -> None:
        if self.flow is not None:
            self.flow.remove_all(world)


@register("SequentialLaneChange")
class SequentialLaneChange(Scenario):
    """Platoons in the lanes the route changes into (module docstring)."""

    trigger_distance_m = 20.0
    timeout_s = 120.0

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        d = world.dense
        i_trig = trigger_index(world, spec)
        i_max = world.route_index_at_s(float(d.s[i_trig]) + SLC_HORIZON_M)
        cmds = d.commands[i_trig : i_max + 1]
        changing = np.isin(cmds, LANE_CHANGE_COMMANDS)
        # the route point just after each run of lane-change commands lies on the target lane
        ends = np.flatnonzero(changing[:-1] & ~changing[1:]) + 1 + i_trig
        self.targets = [int(world.route_nodes[i]) for i in ends.tolist() if world.route_nodes[i] >= 0]
        if not self.targets:
            raise ScenarioLayoutError(f"{spec.name}: the route changes no lane within {SLC_HORIZON_M:.0f} m")
        self.end_s = float(d.s[ends[-1]]) + SLC_END_M
        self.flows: list[ActorFlow] = []

    def on_trigger(self, world: World) -> None:
        g = world.graph
        ego_s = world.route_s()
        for target in self.targets:
            # start the platoon level with the ego: walk back along the target lane by the ego's lag
            lag = float(world.dense.s[world.route_index_near(g.xy[target])]) - ego_s
            start = node_behind(g, target, max(lag, 0.0))
            nodes = g.path_nodes(start, SLC_PLATOON_LENGTH_M)
            speed = SLC_SPEED_FRACTION_OF_LIMIT * float(g.speed_limit[start])
            flow = ActorFlow(
                world, nodes, (SLC_GAP_M, SLC_GAP_M), speed, ignore_signals=False, max_vehicles=SLC_PLATOON
            )
            clear_lane_stretch(world, nodes)
            for k in range(SLC_PLATOON):
                node = node_ahead(g, start, k * SLC_GAP_M)
                idx = np.flatnonzero(nodes == node)
                if idx.size and flow.spawned < SLC_PLATOON:
                    flow.spawn(world, int(idx[0]))
            self.flows.append(flow)

    def tick(self, world: World) -> str:
        for flow in self.flows:
            flow.tick(world)
        self.actor_ids = [aid for flow in self.flows for aid in flow.ids]
        return DONE if world.route_s() > self.end_s else RUNNING

    def cleanup(self, world: World) -> None:
        for flow in self.flows:
            flow.remove_all(world)
