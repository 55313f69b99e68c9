"""Where scenario actors go: poses and polylines relative to the route and the lane graph.

Shared by the Bench2Drive scenario plugins. Conventions (CARLA's left-handed world frame, yaw in radians):

    forward(yaw) = (cos yaw, sin yaw);   right(yaw) = (-sin yaw, cos yaw)
    offset(p, yaw, ahead, right) = p + ahead forward(yaw) + right right(yaw)

"Left"/"right" always mean as seen by a driver heading along the lane or route in question.
Functions here only read the world (no spawning; `clear_lane_stretch` alone removes background
vehicles), so scenarios can compute a layout at set-up and spawn it when they choose. Layout
problems raise `ScenarioLayoutError`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import carla
import numpy as np

from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.errors import TakeoverError
from carla_bridge.route import ScenarioSpec

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

ROUTE_NODE_SEARCH_M = 6.0  # a route point without a lane node takes the nearest node within this
MAX_SIDE_LANES = 8  # lanes walked sideways looking for a sidewalk / the other carriageway
MAX_PATH_SEGMENTS = 64  # breadth-first search depth of segment paths (a junction crossing needs < 10)
SIDEWALK_FALLBACK_OUT_M = 1.5  # no sidewalk: a "sidewalk" point this far beyond the outer lane edge
LANE_CLEAR_RADIUS_M = 2.5  # a background vehicle centred this close to a lane's node is on that lane
LEFT, RIGHT = "left", "right"


class ScenarioLayoutError(TakeoverError, ValueError):
    """A scenario cannot be laid out on this route (no junction ahead, no side lane, ...); the message
    names the scenario, what is missing and how to fix the route.

    Raised from `setup`: the scenario runner logs it, marks that scenario "failed" and the route runs on.
    """


# ---------------------------------------------------------------------- parameters
def direction_param(spec: ScenarioSpec, default: str = RIGHT) -> str:
    """The `direction` parameter (left | right); anything else is a layout error naming the fix."""
    d = (spec.text("direction", default) or default).strip().lower()
    if d not in (LEFT, RIGHT):
        raise ScenarioLayoutError(f"{spec.name}: direction must be 'left' or 'right', got {d!r}")
    return d


def interval_param(spec: ScenarioSpec, tag: str, default: tuple[float, float]) -> tuple[float, float]:
    """A from/to interval parameter (`<tag from=".." to=".."/>` or `<tag value=".."/>`), sorted."""
    value = spec.value(tag, None)
    if value is not None:
        return float(value), float(value)
    lo = spec.value(tag, default[0], "from")
    hi = spec.value(tag, default[1], "to")
    assert lo is not None and hi is not None
    return (float(min(lo, hi)), float(max(lo, hi)))


def location_param(spec: ScenarioSpec, tag: str) -> np.ndarray | None:
    """A location parameter (`<tag x=".." y=".." z=".."/>`) as (x, y), or None when absent."""
    x, y = spec.value(tag, None, "x"), spec.value(tag, None, "y")
    if x is None or y is None:
        return None
    return np.array([float(x), float(y)])


# ---------------------------------------------------------------------- vectors and poses
def forward(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw), math.sin(yaw)])


def right_of(yaw: float) -> np.ndarray:
    """Unit vector to the right of heading `yaw` in CARLA's frame: (-sin yaw, cos yaw)."""
    return np.array([-math.sin(yaw), math.cos(yaw)])


def offset_point(xy: np.ndarray, yaw: float, ahead_m: float, right_m: float) -> np.ndarray:
    """p + ahead forward(yaw) + right right(yaw)."""
    return np.asarray(xy, np.float64)[:2] + ahead_m * forward(yaw) + right_m * right_of(yaw)


def lateral_of(point: np.ndarray, origin: np.ndarray, yaw: float) -> float:
    """Signed distance of `point` to the right of the line through `origin` along `yaw`."""
    return float(np.dot(np.asarray(point)[:2] - np.asarray(origin)[:2], right_of(yaw)))


def wrap(a: float) -> float:
    """Angle wrapped to [-pi, pi): (a + pi) mod 2 pi - pi."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


# ---------------------------------------------------------------------- the route
def trigger_index(world: World, spec: ScenarioSpec) -> int:
    """Dense-route index nearest to the scenario's trigger point."""
    tp = spec.trigger_point
    return world.route_index_near((tp.x, tp.y))


def route_node(world: World, index: int) -> int:
    """Lane node under dense route point `index` (nearest heading-aware node if the route has none); -1 if none."""
    node = int(world.route_nodes[index])
    if node >= 0:
        return node
    p = world.dense.xyz[index]
    return world.lane_node(p[:2], float(world.dense.yaw[index]), ROUTE_NODE_SEARCH_M)


def route_node_at_s(world: World, s: float) -> tuple[int, int]:
    """(dense index, lane node) at route arc length `s`; raises when no lane lies there."""
    i = world.route_index_at_s(s)
    node = route_node(world, i)
    if node < 0:
        raise ScenarioLayoutError(f"no driving lane under the route at s = {s:.0f} m")
    return i, node


def route_polyline(world: World, s0: float, s1: float) -> tuple[np.ndarray, np.ndarray]:
    """Dense route points (xy (M, 2), yaw (M,)) between arc lengths s0 and s1 (at least two points)."""
    i0 = world.route_index_at_s(s0)
    i1 = max(world.route_index_at_s(s1), min(i0 + 1, len(world.dense) - 1))
    i0 = min(i0, i1 - 1) if i1 > 0 else 0
    d = world.dense
    return d.xyz[i0 : i1 + 1, :2].copy(), d.yaw[i0 : i1 + 1].copy()


def offset_polyline(xy: np.ndarray, yaw: np.ndarray, right_m: float | np.ndarray) -> np.ndarray:
    """Polyline shifted `right_m` to the right of its own headings (scalar or one value per point)."""
    r = np.asarray(right_m, np.float64)
    return np.column_stack([xy[:, 0] - np.sin(yaw) * r, xy[:, 1] + np.cos(yaw) * r])


def ego_time_to_arrival(world: World, point: np.ndarray) -> float:
    """Straight-line distance from the ego to `point` over the ego speed, s (inf when stopped).

    As scenario_runner's InTimeToArrivalToLocation.
    """
    v = world.ego_speed
    d = float(np.hypot(*(np.asarray(point)[:2] - world.ego_xy)))
    return d / v if v > 0.1 else math.inf


# ---------------------------------------------------------------------- lane graph walks
def lane_polyline(graph: LaneGraph, node: int, length_m: float, choose=None) -> tuple[np.ndarray, np.ndarray]:
    """Lane-centre points (xy, yaw) from `node` along the lane for `length_m` (see LaneGraph.path_nodes)."""
    nodes = graph.path_nodes(int(node), float(length_m), choose)
    if nodes.shape[0] < 2:
        raise ScenarioLayoutError(f"lane at node {node} ends before {length_m:.0f} m")
    return graph.xy[nodes].copy(), graph.yaw[nodes].copy()


def node_ahead(graph: LaneGraph, node: int, distance_m: float) -> int:
    """The node `distance_m` along the lane from `node` (default successors; stops at a dead end)."""
    nodes = graph.path_nodes(int(node), float(distance_m))
    return int(nodes[-1])


def node_behind(graph: LaneGraph, node: int, distance_m: float, stop_at_junction: bool = True) -> int:
    """The node `distance_m` upstream of `node` along predecessors (first predecessor at merges).

    With `stop_at_junction`, the walk stops at the first node of the lane after a junction (the
    source of a flow is never placed inside another junction).
    """
    n = int(node)
    travelled = 0.0
    while travelled < distance_m:
        seg = int(graph.seg[n])
        if n > graph.seg_start[seg]:
            travelled += float(graph.edge_len[n - 1])
            n -= 1
            continue
        preds = graph.predecessors(seg)
        if preds.size == 0:
            break
        if stop_at_junction:
            preds = preds[graph.seg_junction[preds] < 0]
            if preds.size == 0:
                break
        p = int(preds[0])
        last = int(graph.seg_start[p] + graph.seg_count[p] - 1)
        travelled += float(graph.edge_len[last])
        n = last
    return n


def seg_path(
    graph: LaneGraph, start_seg: int, goal_seg: int, max_segments: int = MAX_PATH_SEGMENTS
) -> list[int]:
    """Segments from `start_seg` to `goal_seg` along successors (breadth first: fewest segments)."""
    if start_seg == goal_seg:
        return [int(start_seg)]
    back: dict[int, int] = {int(start_seg): -1}
    queue: deque[tuple[int, int]] = deque([(int(start_seg), 0)])
    while queue:
        s, depth = queue.popleft()
        if depth >= max_segments:
            continue
        for nxt in graph.successors(s).tolist():
            if nxt in back:
                continue
            back[nxt] = s
            if nxt == goal_seg:
                path = [nxt]
                while back[path[-1]] != -1:
                    path.append(back[path[-1]])
                return path[::-1]
            queue.append((nxt, depth + 1))
    raise ScenarioLayoutError(f"no lane path from segment {start_seg} to segment {goal_seg}")


def path_nodes_of_segments(graph: LaneGraph, segs: list[int], start_node: int, end_node: int) -> np.ndarray:
    """Every node along a segment path, from `start_node` (in segs[0]) to `end_node` (in segs[-1])."""
    parts = []
    for k, s in enumerate(segs):
        a = int(graph.seg_start[s])
        b = a + int(graph.seg_count[s])
        if k == 0:
            a = int(start_node)
        if k == len(segs) - 1:
            b = int(end_node) + 1
        parts.append(np.arange(a, max(b, a + 1), dtype=np.int64))
    return np.concatenate(parts)


# ---------------------------------------------------------------------- lanes beside a lane
def lanes_outward(wp: carla.Waypoint, side: str) -> list[carla.Waypoint]:
    """Lanes beside `wp` on `side` (as seen along wp), outward, across the centre line if need be.

    CARLA's left/right are relative to each lane's own direction, so after crossing the centre line
    (lane-id sign change) the walk continues with the opposite call.
    """
    out: list[carla.Waypoint] = []
    go_left = side == LEFT
    cur = wp
    for _ in range(MAX_SIDE_LANES):
        nxt = cur.get_left_lane() if go_left else cur.get_right_lane()
        if nxt is None or (out and nxt.id == out[-1].id):
            break
        if (nxt.lane_id > 0) != (cur.lane_id > 0):
            go_left = not go_left
        out.append(nxt)
        cur = nxt
    return out


def node_waypoint(world: World, node: int) -> carla.Waypoint:
    g = world.graph
    return world.waypoint(g.xy[node], float(g.z[node]))


def side_lane_node(world: World, node: int, side: str) -> int:
    """The same-direction driving lane next to `node` on `side`; -1 when there is none."""
    wp = node_waypoint(world, node)
    for lane in lanes_outward(wp, side)[:1]:
        if lane.lane_type == carla.LaneType.Driving and lane.lane_id * wp.lane_id > 0:
            return world.graph.node_of_waypoint(lane)
    return -1


def opposite_lane_node(world: World, node: int) -> int:
    """The nearest driving lane of the other direction on the left of `node`; -1 when there is none."""
    wp = node_waypoint(world, node)
    for lane in lanes_outward(wp, LEFT):
        if lane.lane_type == carla.LaneType.Driving and lane.lane_id * wp.lane_id < 0:
            return world.graph.node_of_waypoint(lane)
    return -1


def sidewalk_point(world: World, node: int, side: str) -> tuple[np.ndarray, float, int]:
    """Centre of the sidewalk beside `node` on `side` -> (xy, sidewalk width m, driving lanes crossed).

    Walks outward over driving/shoulder/parking lanes to the first sidewalk (scenario_runner does the
    same for its crossing walkers); without one, a point SIDEWALK_FALLBACK_OUT_M beyond the outer lane
    edge stands in. The count is the number of driving lanes between `node`'s lane and the sidewalk.
    """
    g = world.graph
    wp = node_waypoint(world, node)
    yaw = float(g.yaw[node])
    crossed = 0
    last = wp
    for lane in lanes_outward(wp, side):
        if lane.lane_type == carla.LaneType.Sidewalk:
            loc = lane.transform.location
            return np.array([loc.x, loc.y]), float(lane.lane_width), crossed
        if lane.lane_type == carla.LaneType.Driving:
            crossed += 1
        last = lane
    loc = last.transform.location
    sign = 1.0 if side == RIGHT else -1.0
    out = sign * (float(last.lane_width) / 2.0 + SIDEWALK_FALLBACK_OUT_M)
    return offset_point(np.array([loc.x, loc.y]), yaw, 0.0, out), 2.0 * SIDEWALK_FALLBACK_OUT_M, crossed


def clear_lane_stretch(world: World, nodes: np.ndarray, clear_radius_m: float = LANE_CLEAR_RADIUS_M) -> None:
    """Keep background traffic off `nodes` for the episode and remove the background vehicles now
    within `clear_radius_m` of them (the default takes that lane only, not its neighbours)."""
    nodes = np.asarray(nodes, np.int64)
    nodes = nodes[nodes >= 0]
    if nodes.size == 0:
        return
    world.block_spawns(nodes)
    g = world.graph
    step = max(1, int(clear_radius_m / max(g.spacing_m, 1e-3)))
    for n in nodes[::step].tolist():
        world.clear_background(g.xy[n], clear_radius_m)
