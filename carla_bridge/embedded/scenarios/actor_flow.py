"""`ActorFlow`: a stream of lane vehicles from a source to a sink along one fixed lane path.

scenario_runner's ActorFlow: a new vehicle appears at the source whenever the last one is a gap
`U(gap_from, gap_to)` (metres, one draw per vehicle from the episode Generator) away from it; each
drives the path at `speed` (the traffic model's IDM: it follows the vehicle ahead, keeps junction
right of way and, unless `ignore_signals`, lights) and is removed at the sink. `fill()` seeds the
whole path at the same gaps, as the leaderboard's `add_initial_actors`. `max_vehicles` caps the
number of vehicles a flow ever spawns (a platoon instead of an endless stream).

The traffic model picks successors at random; flow vehicles are spawned with the path's lane
segments (``spawn_lane_vehicle(..., path_segments=...)``), which holds them on it.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

from carla_bridge.embedded.catalogue import vehicles_of
from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.embedded.scenarios.placement import node_behind, opposite_lane_node
from carla_bridge.snapshot import ActorRole

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

SOURCE_CLEARANCE_M = 9.0  # no spawn while any vehicle (or the ego) is this close to the source
RETRY_S = 0.5  # blocked source: look again this much later
SPEED_SCALE_UNLIMITED = 100.0  # v_scale that takes the speed limit out of min(limit x scale, cap)
FLOW_CATEGORY = "car"  # scenario_runner flows use base_type car
ONCOMING_SPEED_FRACTION_OF_LIMIT = 0.7  # oncoming flows drive like background traffic
ONCOMING_REMOVE_BEHIND_EGO_M = 30.0


class ActorFlow:
    """Lane vehicles along `nodes` (source first, sink last); see the module docstring."""

    def __init__(
        self,
        world: World,
        nodes: np.ndarray,
        gap_range_m: tuple[float, float],
        speed_mps: float,
        ignore_signals: bool = True,
        role: ActorRole = ActorRole.SCENARIO,
        remove_behind_ego_m: float = math.inf,
        max_vehicles: int | None = None,
    ) -> None:
        g = world.graph
        self.graph: LaneGraph = g
        self.nodes = np.asarray(nodes, np.int64)
        if self.nodes.shape[0] < 2:
            raise ValueError("an actor flow needs a path of at least two nodes")
        self.gap_range_m = (float(gap_range_m[0]), float(gap_range_m[1]))
        self.speed_mps = float(speed_mps)
        self.ignore_signals = ignore_signals
        self.role = role
        self.remove_behind_ego_m = remove_behind_ego_m
        self.max_vehicles = max_vehicles  # total spawns over the flow's life (None: unlimited)
        self.ids: list[int] = []
        self.spawned = 0
        edge = g.edge_len[self.nodes[:-1]]
        self.s = np.concatenate([[0.0], np.cumsum(edge)])  # arc length of each path node
        self._index = {int(n): k for k, n in enumerate(self.nodes.tolist())}
        segs = g.seg[self.nodes]
        self.segments = [int(segs[0])] + [int(s) for a, s in itertools.pairwise(segs) if s != a]
        self._seg_index = {seg: k for k, seg in enumerate(self.segments)}
        self._cars = vehicles_of(FLOW_CATEGORY)
        self._last_id = -1
        self._next_gap = self._draw_gap(world)
        self._retry_at = -math.inf

    # ------------------------------------------------------------------ public
    @property
    def length_m(self) -> float:
        return float(self.s[-1])

    def fill(self, world: World) -> None:
        """Seed the path from sink to source with vehicles at the flow's gaps (the first at the sink end)."""
        pos = self.length_m - self._draw_gap(world) / 2.0
        while pos > 0.0 and (self.max_vehicles is None or self.spawned < self.max_vehicles):
            k = min(int(np.searchsorted(self.s, pos)), self.nodes.shape[0] - 2)
            if self._clear(world, int(self.nodes[k])):
                self.spawn(world, k)
            pos -= self._draw_gap(world)
        self._next_gap = self._draw_gap(world)

    def tick(self, world: World) -> None:
        """Remove vehicles at the sink, hold the rest on the path, spawn at the source when due."""
        t = world.traffic
        alive = set(t.id.tolist())
        self.ids = [a for a in self.ids if a in alive]
        for aid in list(self.ids):
            row = t.index_of(aid)
            node = int(t.node[row])
            k = self._index.get(node, -1)
            if (
                k < 0
                or k >= self.nodes.shape[0] - 1
                or t.remove_requested[row]
                or self._far_behind(world, row)
            ):
                world.remove_actor(aid)
                self.ids.remove(aid)
        self._maybe_spawn(world)

    def remove_all(self, world: World) -> None:
        for aid in self.ids:
            world.remove_actor(aid)
        self.ids = []

    def position_of(self, world: World, actor_id: int) -> float | None:
        """Arc length of a flow vehicle along the path, m (None when gone)."""
        row = world.traffic.index_of(actor_id)
        if row < 0:
            return None
        k = self._index.get(int(world.traffic.node[row]), -1)
        return float(self.s[k]) if k >= 0 else None

    # ------------------------------------------------------------------ internals
    def _draw_gap(self, world: World) -> float:
        lo, hi = self.gap_range_m
        return float(world.rng.uniform(lo, hi)) if hi > lo else lo

    def _far_behind(self, world: World, row: int) -> bool:
        if not math.isfinite(self.remove_behind_ego_m):
            return False
        rel = world.traffic.xyz[row, :2] - world.ego_xy
        yaw = world.ego[2]
        return rel[0] * math.cos(yaw) + rel[1] * math.sin(yaw) < -self.remove_behind_ego_m

    def _clear(self, world: World, node: int) -> bool:
        xy = self.graph.xy[node]
        t = world.traffic
        r2 = SOURCE_CLEARANCE_M**2
        if len(t) and (((t.xyz[:, :2] - xy) ** 2).sum(axis=1) < r2).any():
            return False
        if ((world.ego_xy - xy) ** 2).sum() < r2:
            return False
        return all((a.x - xy[0]) ** 2 + (a.y - xy[1]) ** 2 >= r2 for a in world.scripted.actors)

    def _maybe_spawn(self, world: World) -> None:
        if world.time_s < self._retry_at or (
            self.max_vehicles is not None and self.spawned >= self.max_vehicles
        ):
            return
        if self._last_id in self.ids:
            pos = self.position_of(world, self._last_id)
            if pos is not None and pos < self._next_gap:
                return
        if not self._clear(world, int(self.nodes[0])):
            self._retry_at = world.time_s + RETRY_S
            return
        self.spawn(world, 0)
        self._next_gap = self._draw_gap(world)

    def spawn(self, world: World, k: int, type_id: str | None = None) -> int:
        """Spawn one flow vehicle at path node index `k` (a random car unless `type_id`); returns its id."""
        if type_id is None:
            type_id = self._cars[int(world.rng.integers(len(self._cars)))].type_id
        node = int(self.nodes[k])
        aid = world.spawn_lane_vehicle(
            node,
            type_id,
            self.speed_mps,
            self.role,
            speed_cap=self.speed_mps,
            ignore_signals=self.ignore_signals,
            path_segments=self.segments[self._seg_index[int(self.graph.seg[node])] :],
        )
        t = world.traffic
        t.v_scale[t.index_of(aid)] = SPEED_SCALE_UNLIMITED
        self.ids.append(aid)
        self._last_id = aid
        self.spawned += 1
        return aid


def oncoming_flow(
    world: World, node: int, ahead_m: float, length_m: float, gap_range_m: tuple[float, float]
) -> ActorFlow | None:
    """A flow on the nearest lane of the other direction left of `node`, starting `ahead_m` beyond it
    (in the ego's direction of travel) and driving `length_m` towards and past the ego; None without
    such a lane. Its vehicles vanish ONCOMING_REMOVE_BEHIND_EGO_M behind the ego."""
    opp = opposite_lane_node(world, node)
    if opp < 0:
        return None
    g = world.graph
    src = node_behind(g, opp, ahead_m)
    path = g.path_nodes(src, length_m)
    if path.shape[0] < 2:
        return None
    speed = float(g.speed_limit[src]) * ONCOMING_SPEED_FRACTION_OF_LIMIT
    return ActorFlow(
        world,
        path,
        gap_range_m,
        speed,
        ignore_signals=False,
        remove_behind_ego_m=ONCOMING_REMOVE_BEHIND_EGO_M,
    )
