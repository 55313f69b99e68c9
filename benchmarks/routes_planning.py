"""Route planning speed: lane-graph build per town, dev routes, and random 200 m routes (dense/sparse keypoints).

Usage: python benchmarks/routes_planning.py [--maps DIR] [--routes FILE] [--samples N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from carla_bridge import route_planner
from carla_bridge.maps import MapLibrary
from carla_bridge.route import Route
from carla_bridge.route_planner import LaneGraph, lane_graph, plan_route
from carla_bridge.route_xml import parse_routes

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ROUTE_LENGTH_M = 200.0
DENSE_KEYPOINT_SPACING_M = 2.0  # Bench2Drive route files


def random_route(graph: LaneGraph, rng: np.random.Generator, length_m: float) -> np.ndarray:
    """Polyline of graph samples `length_m` long from a random non-junction sample, random successors."""
    while True:
        node = int(rng.integers(len(graph)))
        if graph.segments[graph.segment_of[node]].is_junction:
            continue
        points, travelled = [graph.xyz[node]], 0.0
        while travelled < length_m:
            segment = graph.segments[graph.segment_of[node]]
            if node < segment.last:
                nxt = node + 1
            else:
                successors = graph.successors[graph.segment_of[node]]
                if not successors:
                    break
                nxt = graph.segments[int(rng.choice(successors))].first
            travelled += float(np.linalg.norm(graph.xyz[nxt] - graph.xyz[node]))
            node = nxt
            points.append(graph.xyz[node])
        if travelled >= length_m:
            return np.asarray(points)


def resample(points: np.ndarray, spacing: float) -> np.ndarray:
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    keep = np.searchsorted(s, np.arange(0.0, s[-1], spacing))
    return np.vstack([points[np.unique(keep)], points[-1:]])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--maps", type=Path, default=SHARED / "carla_maps")
    parser.add_argument("--routes", type=Path, default=SHARED / "bench2drive" / "routes_dev.xml")
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    library = MapLibrary([args.maps])
    rng = np.random.default_rng(0)

    print(f"{'town':<10} {'samples':>8} {'lanes':>6} {'graph build s':>14}")
    for town in library.towns():
        cmap = library.load(town)
        route_planner._GRAPH_CACHE.clear()
        route_planner._GRAPH_BY_MAP.clear()
        build = timed(lambda cmap=cmap: lane_graph(cmap))
        graph = lane_graph(cmap)
        print(f"{town:<10} {len(graph):>8} {len(graph.segments):>6} {build:>14.3f}")

    print(f"\n{'dev route':<10} {'town':<9} {'keypoints':>9} {'length m':>9} {'plan ms (graph cached)':>23}")
    for route in parse_routes(args.routes):
        cmap = library.load(route.town)
        lane_graph(cmap)
        dense = None

        def run(route=route, cmap=cmap):
            nonlocal dense
            dense = plan_route(route, cmap)

        ms = 1000 * timed(run)
        print(f"{route.id:<10} {route.town:<9} {len(route.keypoints):>9} {dense.length_m:>9.1f} {ms:>23.1f}")

    print(
        f"\nrandom {ROUTE_LENGTH_M:.0f} m routes, {args.samples} per row (graph cached; cold = + graph build)"
    )
    print(f"{'town':<10} {'keypoints':<22} {'mean ms':>8} {'p95 ms':>8} {'max ms':>8} {'cold ms':>8}")
    for town in ("Town04", "Town10HD", "Town01"):
        if town not in library.towns():
            continue
        cmap = library.load(town)
        graph = lane_graph(cmap)
        polylines = [random_route(graph, rng, ROUTE_LENGTH_M) for _ in range(args.samples)]
        for label, make in (
            (f"every {DENSE_KEYPOINT_SPACING_M:g} m", lambda p: resample(p, DENSE_KEYPOINT_SPACING_M)),
            ("start and end only", lambda p: p[[0, -1]]),
        ):
            times = []
            for i, polyline in enumerate(polylines):
                route = Route(id=f"r{i}", town=town, keypoints=make(polyline))
                times.append(1000 * timed(lambda route=route, cmap=cmap: plan_route(route, cmap)))
            route_planner._GRAPH_CACHE.clear()
            route_planner._GRAPH_BY_MAP.clear()
            cold = 1000 * timed(lambda route=route, cmap=cmap: plan_route(route, cmap))
            p95 = statistics.quantiles(times, n=20)[-1]
            print(
                f"{town:<10} {label:<22} {statistics.mean(times):>8.1f} {p95:>8.1f} {max(times):>8.1f} {cold:>8.1f}"
            )


if __name__ == "__main__":
    main()
