"""Scenario layout helpers on the built-in town: lanes beside lanes, junction analysis, actor flows,
parameters, and the small pure functions the scenario types share."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from test_scenarios_builtin import make_sim

from carla_bridge.embedded.scenarios.actor_flow import ActorFlow
from carla_bridge.embedded.scenarios.control_loss import perturbed
from carla_bridge.embedded.scenarios.cut_in import cut_in_path, smoothstep
from carla_bridge.embedded.scenarios.invading_turn import invasion_shift
from carla_bridge.embedded.scenarios.junction_layout import (
    LEFT,
    OPPOSITE,
    RIGHT,
    STRAIGHT,
    connector_into,
    junction_after,
    side_of,
    turn_of,
)
from carla_bridge.embedded.scenarios.placement import (
    ScenarioLayoutError,
    direction_param,
    interval_param,
    lanes_outward,
    node_waypoint,
    opposite_lane_node,
    path_nodes_of_segments,
    route_node_at_s,
    seg_path,
    side_lane_node,
    sidewalk_point,
)
from carla_bridge.maps import MapLibrary
from carla_bridge.route import ScenarioSpec, TriggerPoint
from carla_bridge.route_planner import prepare_routes
from carla_bridge.route_sets import load_route_set
from carla_bridge.snapshot import Control

TP = TriggerPoint(0.0, 0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def maps() -> MapLibrary:
    return MapLibrary(use_carla_root=False)


@pytest.fixture(scope="module")
def routes(maps):
    return {r.id: r for r in prepare_routes(load_route_set("builtin"), maps)}


def world_of(maps, route):
    sim = make_sim(maps)
    sim.reset(route, 0)
    return sim, sim.world


# ---------------------------------------------------------------------- parameters
def test_direction_parameter_defaults_and_rejects_nonsense():
    assert direction_param(ScenarioSpec("a", "T", TP)) == "right"
    assert direction_param(ScenarioSpec("a", "T", TP, {"direction": {"value": "Left"}})) == "left"
    with pytest.raises(ScenarioLayoutError, match="direction must be 'left' or 'right'"):
        direction_param(ScenarioSpec("a", "T", TP, {"direction": {"value": "up"}}))


def test_interval_parameter_reads_from_to_or_a_single_value():
    spec = ScenarioSpec("a", "T", TP, {"frequency": {"from": "150", "to": "50"}, "gap": {"value": "30"}})
    assert interval_param(spec, "frequency", (1.0, 2.0)) == (50.0, 150.0)
    assert interval_param(spec, "gap", (1.0, 2.0)) == (30.0, 30.0)
    assert interval_param(spec, "missing", (1.0, 2.0)) == (1.0, 2.0)


# ---------------------------------------------------------------------- lanes beside lanes
def test_lanes_outward_crosses_the_centre_line_and_ends_at_the_sidewalk(maps, routes):
    _, w = world_of(maps, routes["1001"])  # road 5: one lane per direction
    node = route_node_at_s(w, 60.0)[1]
    wp = node_waypoint(w, node)
    left = lanes_outward(wp, LEFT)
    assert left[0].lane_id == -wp.lane_id  # the opposite lane first
    assert len({(x.road_id, x.lane_id) for x in left}) == len(left)  # never back and forth
    assert str(left[-1].lane_type) == "Sidewalk"
    assert str(lanes_outward(wp, RIGHT)[0].lane_type) == "Sidewalk"
    assert side_lane_node(w, node, LEFT) == -1 and side_lane_node(w, node, RIGHT) == -1
    opp = opposite_lane_node(w, node)
    assert opp >= 0 and math.cos(w.graph.yaw[opp] - w.graph.yaw[node]) < -0.99
    assert np.hypot(*(w.graph.xy[opp] - w.graph.xy[node])) == pytest.approx(
        float(w.graph.width[node]), abs=0.1
    )


def test_side_lane_of_a_two_lane_road_and_its_sidewalks(maps, routes):
    _, w = world_of(maps, routes["1000"])  # road 1, ego in the right lane of two
    node = route_node_at_s(w, 60.0)[1]
    g = w.graph
    left = side_lane_node(w, node, LEFT)
    assert left >= 0 and math.cos(g.yaw[left] - g.yaw[node]) > 0.99
    assert side_lane_node(w, node, RIGHT) == -1
    xy, width, crossed = sidewalk_point(w, node, RIGHT)
    assert crossed == 0 and width > 1.0
    far, _, crossed_far = sidewalk_point(w, node, LEFT)
    assert crossed_far == 3  # the other lane of this direction and both opposite lanes
    assert np.hypot(*(far - xy)) > 4 * float(g.width[node])


def test_segment_paths_follow_successors_or_fail_clearly(maps, routes):
    _, w = world_of(maps, routes["1000"])
    g = w.graph
    segs = [int(g.seg[n]) for n in w.route_nodes if n >= 0]
    path = seg_path(g, segs[0], segs[-1])
    assert path[0] == segs[0] and path[-1] == segs[-1]
    for a, b in itertools.pairwise(path):
        assert b in g.successors(a).tolist()
    with pytest.raises(ScenarioLayoutError, match="no lane path"):
        seg_path(g, segs[-1], segs[0], max_segments=3)


# ---------------------------------------------------------------------- junctions
def test_junction_after_the_trigger_describes_the_ego_left_turn(maps, routes):
    _, w = world_of(maps, routes["1005"])
    j = junction_after(w, 0)
    g = w.graph
    assert j.turn == LEFT and turn_of(g, j.ego_connector) == LEFT
    assert int(g.seg_junction[j.ego_connector]) == j.junction_id
    assert j.ego_exit_seg in g.successors(j.ego_connector).tolist()
    assert {a.side for a in j.approaches} == {"ego", LEFT, RIGHT, OPPOSITE}
    opposite = j.on_side(OPPOSITE)[0]
    straight = opposite.connector(g, STRAIGHT)
    assert straight >= 0 and straight in g.conflicts(j.ego_connector).tolist()
    assert connector_into(g, j.ego_approach, j.ego_exit_seg) == j.ego_connector


def test_no_junction_ahead_is_a_layout_error(maps, routes):
    _, w = world_of(maps, routes["1013"])  # a straight stretch after the trigger
    with pytest.raises(ScenarioLayoutError, match="no junction on the route"):
        junction_after(w, w.route_index_at_s(40.0), max_distance_m=100.0)


def test_side_of_an_approach_from_its_heading():
    assert side_of(0.0, 0.1) == "ego"
    assert side_of(0.0, math.pi) == OPPOSITE
    assert side_of(0.0, -math.pi / 2) == RIGHT  # heading "left" in CARLA's frame: it comes from the right
    assert side_of(0.0, math.pi / 2) == LEFT


def test_layout_error_fails_the_scenario_but_not_the_route(maps, routes, caplog):
    route = routes["1001"]  # one lane per direction: no neighbour lane for a static cut-in
    spec = ScenarioSpec("StaticCutIn_9", "StaticCutIn", route.scenarios[0].trigger_point)
    keep = route.scenarios
    route.scenarios = [spec]
    try:
        sim = make_sim(maps)
        snap = sim.reset(route, 0)
        assert snap.scenarios[0].status == "failed"
        assert any(
            "StaticCutIn needs a road with two lanes per direction" in r.message for r in caplog.records
        )
        assert sim.step(Control()).scenarios[0].status == "failed"
    finally:
        route.scenarios = keep


# ---------------------------------------------------------------------- actor flows
def test_actor_flow_holds_vehicles_on_a_turning_path_and_removes_them_at_the_sink(maps, routes):
    sim, w = world_of(maps, routes["1005"])
    g = w.graph
    j = junction_after(w, 0)
    # the ego's own left turn as the flow's path: from 40 m before the stop line to 20 m past the exit
    i0 = w.route_index_at_s(float(w.dense.s[j.enter_index]) - 40.0)
    i1 = w.route_index_at_s(float(w.dense.s[j.exit_index]) + 20.0)
    segs = []
    for n in w.route_nodes[i0 : i1 + 1]:
        if n >= 0 and (not segs or segs[-1] != int(g.seg[n])):
            segs.append(int(g.seg[n]))
    segs = [s for s in segs if s != j.ego_connector and int(g.seg_junction[s]) < 0]
    entry_i = segs.index(j.ego_entry_seg)
    path_segs = [*segs[: entry_i + 1], j.ego_connector, *segs[entry_i + 1 :]]
    start, end = int(w.route_nodes[i0]), int(w.route_nodes[i1])
    nodes = path_nodes_of_segments(g, path_segs, start, end)
    w.set_ego_state(*w.dense.xyz[-1, :2], 0.0, 0.0)  # out of the way
    flow = ActorFlow(w, nodes, (15.0, 15.0), 8.0, ignore_signals=True, max_vehicles=3)
    flow.tick(w)  # the first vehicle appears at the source, the next ones 15 m behind each other
    assert flow.spawned == 1
    visited: set[int] = set()
    for _ in range(800):
        sim.step(Control(brake=1.0))
        flow.tick(w)
        t = w.traffic
        for aid in flow.ids:
            visited.add(int(g.seg[t.node[t.index_of(aid)]]))
    assert flow.spawned == 3
    assert j.ego_connector in visited  # they turned left with the path
    assert visited <= set(path_segs)
    assert flow.ids == [] and len(w.traffic) == 0  # gone at the sink, none respawned (max 3)


# ---------------------------------------------------------------------- small pure functions
def test_smoothstep_profile_and_cut_in_path_ends_on_the_route(maps, routes):
    assert smoothstep(np.array([-1.0, 0.0, 0.5, 1.0, 2.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    _, w = world_of(maps, routes["1011"])
    i = w.route_index_at_s(100.0)
    yaw = float(w.dense.yaw[i])
    start = w.dense.xyz[i, :2] + 3.5 * np.array([-math.sin(yaw), math.cos(yaw)])
    path = cut_in_path(w, start, 100.0, 12.0, 30.0)
    assert np.hypot(*(path[0] - start)) < 0.1
    end_i = w.route_index_near(path[-1])
    assert np.hypot(*(path[-1] - w.dense.xyz[end_i, :2])) < 0.1


def test_invasion_shift_puts_the_near_side_offset_widths_into_the_other_lane():
    width, half, offset = 3.5, 1.0, 0.3
    shift = invasion_shift(width, half, offset)
    near_side_from_line = shift + half - width / 2.0  # past the shared lane line
    assert near_side_from_line == pytest.approx(offset * width)


def test_perturbed_control_adds_noise_and_clips():
    c = perturbed(Control(throttle=0.95, steer=-0.99, brake=0.2), 0.1, -0.05)
    assert c.throttle == 1.0 and c.steer == -1.0 and c.brake == 0.2
    c = perturbed(Control(throttle=0.3, steer=0.1), 0.05, 0.04)
    assert c.throttle == pytest.approx(0.35) and c.steer == pytest.approx(0.14)
