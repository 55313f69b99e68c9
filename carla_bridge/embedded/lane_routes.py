"""Routes straight from the lane graph: a `DenseRoute` along lanes, for tests, benchmarks and tools.

The product plans routes from leaderboard keypoints with carla_bridge.route_planner; this module
only walks the lane graph from a start node (choosing successors with a callback), which needs no
keypoints and no planner.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.route import DenseRoute, RoadOption, Route

TURN_THRESHOLD_RAD = 0.35  # heading change over a junction lane that makes it LEFT / RIGHT


def dense_route_along_lanes(
    graph: LaneGraph, start_node: int, length_m: float, choose: Callable[[np.ndarray], int] | None = None
) -> DenseRoute:
    """Dense route following the lane from `start_node` for `length_m` (successor picked by `choose`)."""
    nodes = graph.path_nodes(int(start_node), float(length_m), choose)
    xy = graph.xy[nodes]
    seg_len = np.hypot(*np.diff(xy, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg_len)])
    in_j = graph.junction_id[nodes] >= 0
    commands = np.full(nodes.shape[0], int(RoadOption.LANEFOLLOW), np.int8)
    segs = graph.seg[nodes]
    for seg in np.unique(segs[in_j]):
        idx = np.flatnonzero(segs == seg)
        a, b = graph.yaw[nodes[idx[0]]], graph.seg_end_yaw[seg]
        turn = (b - a + np.pi) % (2 * np.pi) - np.pi
        cmd = RoadOption.STRAIGHT
        if turn > TURN_THRESHOLD_RAD:
            cmd = RoadOption.RIGHT  # CARLA frame: positive yaw change turns right
        elif turn < -TURN_THRESHOLD_RAD:
            cmd = RoadOption.LEFT
        commands[idx] = int(cmd)
    return DenseRoute(
        xyz=np.column_stack([xy, graph.z[nodes]]),
        yaw=graph.yaw[nodes].astype(np.float64),
        commands=commands,
        s=s,
        road_id=graph.road_id[nodes].astype(np.int32),
        lane_id=graph.lane_id[nodes].astype(np.int32),
        in_junction=in_j,
        speed_limit=graph.speed_limit[nodes].astype(np.float32),
    )


def route_along_lanes(
    graph: LaneGraph, town: str, start_node: int, length_m: float, route_id: str = "lane_route", choose=None
) -> Route:
    """A `Route` (keypoints every ~2 m, no scenarios) with its dense route already planned."""
    dense = dense_route_along_lanes(graph, start_node, length_m, choose)
    return Route(id=route_id, town=town, keypoints=dense.xyz[::2].copy(), dense=dense)
