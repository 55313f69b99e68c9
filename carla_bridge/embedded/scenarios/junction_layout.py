"""The junction a route crosses after a trigger point: the ego's way through it, the other approaches,
their connecting lanes, lights and where paths cross. Read-only analysis of the lane graph.

Sides are seen from the ego's entry lane: an approach whose lane heading differs from the ego's by

    d = wrap(yaw_approach - yaw_ego):  |d| <= 45 deg -> "ego" (same direction), |d| >= 135 deg -> "opposite",
    d < 0 -> "right" (it comes from the ego's right, heading left), d > 0 -> "left"

(CARLA's yaw grows clockwise seen from above, so a right turn increases yaw.) A connecting lane is a
"left", "right" or "straight" turn by the same rule on its own heading change (|change| < 45 deg: straight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.embedded.scenarios.placement import ScenarioLayoutError, wrap
from carla_bridge.embedded.signals import ENTRY_LIGHT, ENTRY_STOP
from carla_bridge.snapshot import TrafficLightState

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

SAME_DIRECTION_RAD = math.radians(45.0)
OPPOSITE_DIRECTION_RAD = math.radians(135.0)
STRAIGHT_TURN_RAD = math.radians(45.0)
JUNCTION_SEARCH_M = 150.0  # the junction must start within this route distance after the trigger
EGO, OPPOSITE, LEFT, RIGHT, STRAIGHT = "ego", "opposite", "left", "right", "straight"


def turn_of(graph: LaneGraph, connector: int) -> str:
    """left | right | straight for a junction lane, from its heading change start -> end."""
    start = float(graph.yaw[graph.seg_start[connector]])
    change = wrap(float(graph.seg_end_yaw[connector]) - start)
    if abs(change) < STRAIGHT_TURN_RAD:
        return STRAIGHT
    return RIGHT if change > 0 else LEFT


def side_of(ego_yaw: float, approach_yaw: float) -> str:
    d = wrap(approach_yaw - ego_yaw)
    if abs(d) <= SAME_DIRECTION_RAD:
        return EGO
    if abs(d) >= OPPOSITE_DIRECTION_RAD:
        return OPPOSITE
    return RIGHT if d < 0 else LEFT


def seg_last_node(graph: LaneGraph, seg: int) -> int:
    return int(graph.seg_start[seg] + graph.seg_count[seg] - 1)


def connector_polyline(graph: LaneGraph, connector: int) -> np.ndarray:
    """(M, 2) centre line of a junction lane, its end point included."""
    a = int(graph.seg_start[connector])
    pts = graph.xy[a : a + int(graph.seg_count[connector])]
    return np.vstack([pts, graph.seg_end_xy[connector][None]])


@dataclass(frozen=True)
class Approach:
    """One lane that enters the junction (its end is the stop line)."""

    entry_seg: int
    side: str  # ego | opposite | left | right
    connectors: tuple[int, ...]  # junction lanes leaving this entry
    light_index: int  # index into the signal layout (-1: no light)
    has_stop_sign: bool

    def connector(self, graph: LaneGraph, turn: str) -> int:
        """The connecting lane of this approach that makes `turn`; -1 if none."""
        for c in self.connectors:
            if turn_of(graph, c) == turn:
                return c
        return -1


@dataclass(frozen=True)
class JunctionCrossing:
    """The ego's way through the first junction after a route index."""

    junction_id: int
    enter_index: int  # first dense-route index on a junction lane
    exit_index: int  # first dense-route index after the junction
    ego_entry_seg: int
    ego_connector: int
    ego_exit_seg: int
    turn: str  # left | right | straight
    approaches: tuple[Approach, ...]

    def on_side(self, side: str) -> list[Approach]:
        return [a for a in self.approaches if a.side == side]

    @property
    def ego_approach(self) -> Approach:
        return next(a for a in self.approaches if a.entry_seg == self.ego_entry_seg)


def junction_after(
    world: World, from_index: int, max_distance_m: float = JUNCTION_SEARCH_M
) -> JunctionCrossing:
    """The first junction the route enters after dense index `from_index` (within `max_distance_m`)."""
    g = world.graph
    d = world.dense
    s_max = float(d.s[from_index]) + max_distance_m
    jseg = world.route_junction_seg
    enter = -1
    for i in range(max(from_index, 1), len(d)):
        if float(d.s[i]) > s_max:
            break
        if jseg[i] >= 0:
            enter = i
            break
    if enter < 0:
        raise ScenarioLayoutError(f"no junction on the route within {max_distance_m:.0f} m of the trigger")
    connector = int(jseg[enter])
    jid = int(g.seg_junction[connector])
    exit_index = enter
    while exit_index < len(d) - 1:
        n = int(world.route_nodes[exit_index])
        if n >= 0 and int(g.seg_junction[g.seg[n]]) != jid:
            break
        exit_index += 1
    exit_node = int(world.route_nodes[exit_index])
    entries = [int(p) for p in g.predecessors(connector) if g.is_entry[p]]
    before = int(world.route_nodes[max(enter - 1, 0)])
    if before >= 0 and int(g.seg[before]) in entries:
        ego_entry = int(g.seg[before])
    elif entries:
        ego_entry = entries[0]
    else:
        raise ScenarioLayoutError(f"junction {jid}: the route enters it from no entry lane")
    # the last junction lane of the route inside this junction decides the exit
    last_conn = connector
    for i in range(enter, exit_index):
        if jseg[i] >= 0 and int(g.seg_junction[jseg[i]]) == jid:
            last_conn = int(jseg[i])
    exit_seg = int(g.seg[exit_node]) if exit_node >= 0 else -1
    if exit_seg < 0 or int(g.seg_junction[exit_seg]) == jid:
        succ = g.successors(last_conn)
        exit_seg = int(succ[0]) if succ.size else -1
    ego_yaw = float(g.yaw[seg_last_node(g, ego_entry)])
    turn_change = wrap(float(d.yaw[exit_index]) - float(d.yaw[max(enter - 1, 0)]))
    turn = STRAIGHT if abs(turn_change) < STRAIGHT_TURN_RAD else (RIGHT if turn_change > 0 else LEFT)
    approaches = tuple(_approaches(world, jid, ego_entry, ego_yaw))
    # junction lanes of one entry overlap where they start, so the lane nearest to the first route
    # points inside may be a sibling: the ego's lane is the one of its entry that leads to its exit
    ego_approach = next(a for a in approaches if a.entry_seg == ego_entry)
    into_exit = connector_into(g, ego_approach, exit_seg) if exit_seg >= 0 else -1
    return JunctionCrossing(
        junction_id=jid,
        enter_index=enter,
        exit_index=exit_index,
        ego_entry_seg=ego_entry,
        ego_connector=into_exit if into_exit >= 0 else connector,
        ego_exit_seg=exit_seg,
        turn=turn,
        approaches=approaches,
    )


def _approaches(world: World, jid: int, ego_entry: int, ego_yaw: float) -> list[Approach]:
    g = world.graph
    lay = world.signals.layout
    out = []
    for e in np.flatnonzero(g.is_entry).tolist():
        conns = tuple(int(c) for c in g.successors(e) if int(g.seg_junction[c]) == jid)
        if not conns:
            continue
        yaw = float(g.yaw[seg_last_node(g, e)])
        side = EGO if e == ego_entry else side_of(ego_yaw, yaw)
        kind = int(lay.entry_kind[e])
        out.append(
            Approach(
                entry_seg=int(e),
                side=side,
                connectors=conns,
                light_index=int(lay.entry_signal[e]) if kind == ENTRY_LIGHT else -1,
                has_stop_sign=kind == ENTRY_STOP,
            )
        )
    return out


def crossing_point(graph: LaneGraph, conn_a: int, conn_b: int) -> np.ndarray:
    """Where two junction lanes come closest (their crossing, or where they merge), on lane a."""
    a = connector_polyline(graph, conn_a)
    b = connector_polyline(graph, conn_b)
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    i = int(np.unravel_index(int(np.argmin(d2)), d2.shape)[0])
    return a[i].copy()


def connector_into(graph: LaneGraph, approach: Approach, exit_seg: int) -> int:
    """The approach's junction lane that leads into `exit_seg`'s road in its direction; -1 if none.

    Prefers the lane into `exit_seg` itself, then any lane of the same road and travel direction."""
    road = int(graph.seg_road[exit_seg])
    sign = int(np.sign(graph.seg_lane[exit_seg]))
    fallback = -1
    for c in approach.connectors:
        for s in graph.successors(c).tolist():
            if s == exit_seg:
                return c
            if int(graph.seg_road[s]) == road and int(np.sign(graph.seg_lane[s])) == sign and fallback < 0:
                fallback = c
    return fallback


def light_ids_of_junction(world: World, jid: int) -> list[int]:
    lay = world.signals.layout
    return [int(lay.light_ids[k]) for k in np.flatnonzero(lay.light_junction == jid).tolist()]


def light_id(world: World, light_index: int) -> int:
    return int(world.signals.layout.light_ids[light_index])


def freeze_lights(world: World, states: dict[int, TrafficLightState], jid: int, duration_s: float) -> None:
    """Hold every light of junction `jid`: those in `states` (by id) as given, the others red.

    scenario_runner's TrafficLightFreezer; duration 0 releases them back to their cycle."""
    for lid in light_ids_of_junction(world, jid):
        world.set_light_state(lid, states.get(lid, TrafficLightState.RED), duration_s)
