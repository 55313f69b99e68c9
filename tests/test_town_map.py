"""The committed Takeover01.xodr as carla.Map sees it: roads, lanes, junctions, signals, connectivity.

Expectations come from the brief (junction kinds, lane counts, signal types), checked through the
carla waypoint/landmark API only, so a generator bug cannot hide behind its own bookkeeping.
"""

from __future__ import annotations

import math
from collections import defaultdict

import carla
import pytest

from carla_bridge.town import BUILTIN_XODR_PATH, TOWN_NAME

SIGNALISED = {200, 400, 700}
STOP_JUNCTION = 300
LIGHT, STOP, SPEED = "1000001", "206", "274"
LANE_WIDTH_M = 3.5


@pytest.fixture(scope="module")
def cmap() -> carla.Map:
    return carla.Map(TOWN_NAME, BUILTIN_XODR_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def junctions(cmap: carla.Map) -> dict[int, list[tuple[carla.Waypoint, carla.Waypoint]]]:
    """Junction id -> (entry, exit) waypoint pairs of its connecting driving lanes."""
    found: dict[int, list[tuple[carla.Waypoint, carla.Waypoint]]] = {}
    for wp in cmap.generate_waypoints(5.0):
        if wp.is_junction and wp.junction_id not in found:
            found[wp.junction_id] = wp.get_junction().get_waypoints(carla.LaneType.Driving)
    return found


def _incoming(entry: carla.Waypoint) -> carla.Waypoint:
    """The arm lane 10 m before a connecting lane's entry."""
    before = entry.previous(10.0)
    assert before, f"connecting road {entry.road_id} has no predecessor lane"
    return before[0]


def _arms(pairs: list[tuple[carla.Waypoint, carla.Waypoint]]) -> set[int]:
    roads = {_incoming(entry).road_id for entry, _ in pairs}
    for _, exit_wp in pairs:
        roads |= {w.road_id for w in exit_wp.next(5.0)}
    return roads


def test_map_loads_with_topology_and_geo_reference(cmap):
    # given the committed xodr, when loaded offline, then it has a lane graph and CARLA's geo origin
    assert cmap.name.endswith(TOWN_NAME)
    assert len(cmap.get_topology()) > 50
    geo = cmap.transform_to_geolocation(carla.Location(0.0, 0.0, 0.0))
    assert (geo.latitude, geo.longitude) == pytest.approx((42.0, 2.0))
    assert "+lat_0=42 +lon_0=2" in BUILTIN_XODR_PATH.read_text(encoding="utf-8")


def test_junction_kinds(junctions):
    # given the junctions carla finds, when counting their arms, then there are two 4-ways and six Ts
    arms = {jid: len(_arms(pairs)) for jid, pairs in junctions.items()}
    assert sorted(arms.values()) == [3, 3, 3, 3, 3, 3, 4, 4]
    assert arms[200] == 4 and arms[STOP_JUNCTION] == 4
    assert {arms[j] for j in (400, 700)} == {3}  # the signalised Ts


def test_all_landmarks_by_type(cmap):
    # 10 lights (4-way 4 + two Ts 3 each), 2 stop signs, one speed sign per travel direction of each
    # of the 13 roads but the one-way (25); each light is its own controller group, as in CARLA towns
    landmarks = cmap.get_all_landmarks()
    counts = defaultdict(int)
    for lm in landmarks:
        counts[lm.type] += 1
    assert dict(counts) == {LIGHT: 10, STOP: 2, SPEED: 25}
    for lm in landmarks:
        assert lm.get_lane_validities(), lm.id
        if lm.type == LIGHT:
            assert lm.is_dynamic and [g.id for g in cmap.get_landmark_group(lm)] == [lm.id]


def test_signalised_junctions_have_a_light_valid_on_every_incoming_lane(junctions):
    for jid, pairs in junctions.items():
        for entry, _ in pairs:
            lane = _incoming(entry)
            lights = [
                lm
                for lm in lane.get_landmarks_of_type(15.0, LIGHT)
                if lm.road_id == lane.road_id
                and any(lo <= lane.lane_id <= hi for lo, hi in lm.get_lane_validities())
            ]
            if jid in SIGNALISED:
                # then the light stands at the junction entry, 10 m ahead (0.5 m setback)
                assert lights, f"junction {jid}: no light for road {lane.road_id} lane {lane.lane_id}"
                assert lights[0].distance == pytest.approx(9.5, abs=0.6)
            else:
                assert not lights, f"unsignalised junction {jid} has a light on road {lane.road_id}"


def test_stop_signs_guard_the_minor_approaches_of_the_stop_junction(junctions):
    stops_by_junction: dict[int, set[int]] = defaultdict(set)
    for jid, pairs in junctions.items():
        for entry, _ in pairs:
            lane = _incoming(entry)
            for lm in lane.get_landmarks_of_type(15.0, STOP):
                if lm.road_id == lane.road_id:
                    stops_by_junction[jid].add(lane.road_id)
    # then only junction 300 has stop signs, on its north (9) and south (8) streets, not the avenue
    assert dict(stops_by_junction) == {STOP_JUNCTION: {8, 9}}


def test_speed_limit_signs_50_urban_70_on_the_one_way(cmap):
    for road_id, lanes in {1: (-2, -1, 1, 2), 4: (-3, -2, -1), 5: (-1, 1), 12: (-1, 1)}.items():
        road_end_s = cmap.get_waypoint_xodr(road_id, -1, 0.5).next_until_lane_end(1.0)[-1].s
        for lane_id in lanes:
            # given the entry of each lane in its travel direction (s = 0 for right lanes, else the end)
            entry = cmap.get_waypoint_xodr(road_id, lane_id, 0.5 if lane_id < 0 else road_end_s - 0.5)
            # then a maximum-speed sign valid for it stands within 10 m
            signs = [
                lm
                for lm in entry.get_landmarks_of_type(10.0, SPEED)
                if lm.road_id == road_id and any(lo <= lane_id <= hi for lo, hi in lm.get_lane_validities())
            ]
            assert signs, f"road {road_id} lane {lane_id}: no speed sign after its entry"
            assert signs[0].value == (70.0 if road_id == 4 else 50.0)
            assert signs[0].unit == "km/h"


def _cross_section(cmap: carla.Map, road_id: int, s: float) -> dict[int, carla.LaneType]:
    lanes = {}
    for lane_id in range(-6, 7):
        wp = cmap.get_waypoint_xodr(road_id, lane_id, s)
        if wp is not None and lane_id != 0:
            lanes[lane_id] = wp.lane_type
    return lanes


@pytest.mark.parametrize(
    ("road_id", "left", "right"),
    [(1, 2, 2), (2, 2, 2), (3, 2, 2), (4, 0, 3), (5, 1, 1), (6, 1, 1), (10, 1, 1), (13, 1, 1)],
)
def test_lane_counts_per_road_kind_with_sidewalks(cmap, road_id, left, right):
    lanes = _cross_section(cmap, road_id, 100.0)
    driving = carla.LaneType.Driving
    assert sorted(k for k, t in lanes.items() if t == driving) == [*range(-right, 0), *range(1, left + 1)]
    # sidewalks outside the outermost driving lanes on both sides (walkers use them)
    assert lanes[-(right + 1)] == carla.LaneType.Sidewalk
    assert lanes[left + 1] == carla.LaneType.Sidewalk
    for lane_id, lane_type in lanes.items():
        if lane_type == driving:
            assert cmap.get_waypoint_xodr(road_id, lane_id, 100.0).lane_width == pytest.approx(LANE_WIDTH_M)


def test_lane_markings_allow_overtaking_only_where_scenarios_need_it(cmap):
    # 1+1 streets: broken centre line (TwoWays scenarios borrow the oncoming lane)
    assert cmap.get_waypoint_xodr(5, -1, 100.0).lane_change == carla.LaneChange.Left
    # 2+2 avenue: inner lane may only move right (double solid centre line), outer lane only left
    assert cmap.get_waypoint_xodr(1, -1, 100.0).lane_change == carla.LaneChange.Right
    assert cmap.get_waypoint_xodr(1, -2, 100.0).lane_change == carla.LaneChange.Left
    # one-way: the middle lane may change either way
    assert cmap.get_waypoint_xodr(4, -2, 100.0).lane_change == carla.LaneChange.Both


@pytest.mark.parametrize("road_id", [1, 2, 3, 4, 5, 6, 7, 8, 9])
def test_straight_stretches_of_at_least_150_m(cmap, road_id):
    wp = cmap.get_waypoint_xodr(road_id, -1, 0.5)
    ahead = wp.next_until_lane_end(5.0)
    length = wp.transform.location.distance(ahead[-1].transform.location)
    yaws = {round(w.transform.rotation.yaw % 360.0, 3) for w in [wp, *ahead]}
    assert length >= 150.0
    assert len(yaws) == 1, f"road {road_id} is not straight"


def test_every_lane_end_has_successors_and_every_connector_is_entered_and_left(cmap, junctions):
    # every driving lane end outside junctions continues into a junction (no dead ends)
    for _, end in cmap.get_topology():
        if not end.is_junction:
            assert end.next(2.0), f"dead end at road {end.road_id} lane {end.lane_id}"
    # every connection crosses its junction with waypoint.next, from the incoming lane to an arm lane
    for jid, pairs in junctions.items():
        for entry, exit_wp in pairs:
            lane = _incoming(entry)
            reached = lane.next(10.0 + 1.0)
            assert any(w.road_id == entry.road_id and w.lane_id == entry.lane_id for w in reached), (
                f"junction {jid}: connector {entry.road_id} not reachable from road {lane.road_id}"
            )
            after = exit_wp.next(2.0)
            assert after and all(not w.is_junction for w in after), f"junction {jid}: {exit_wp.road_id} ends"


def test_driving_lanes_are_strongly_connected(cmap):
    # given carla's topology (lane segments and their successor links)
    def key(wp: carla.Waypoint) -> tuple[int, int, int]:
        return (wp.road_id, wp.section_id, wp.lane_id)

    graph: dict[tuple[int, int, int], set[tuple[int, int, int]]] = defaultdict(set)
    for start, end in cmap.get_topology():
        graph[key(start)]
        for nxt in end.next(1.0):
            graph[key(start)].add(key(nxt))
    nodes = set(graph) | {n for succ in graph.values() for n in succ}

    def reach(g: dict, origin) -> set:
        seen, stack = {origin}, [origin]
        while stack:
            for n in g.get(stack.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        return seen

    reverse: dict = defaultdict(set)
    for a, succ in graph.items():
        for b in succ:
            reverse[b].add(a)
    origin = next(iter(sorted(nodes)))
    # then every lane reaches every other lane and is reached from it
    assert reach(graph, origin) == nodes
    assert reach(reverse, origin) == nodes


def test_sidewalks_continue_around_junction_corners(cmap):
    # given the south sidewalk of the avenue's eastbound lanes, walking east into junction 200
    wp = cmap.get_waypoint_xodr(1, -3, 190.0)
    assert wp.lane_type == carla.LaneType.Sidewalk
    corner = wp.next(15.0)
    # then it continues on a junction sidewalk that bends south onto street 6's sidewalk
    assert corner and corner[0].is_junction and corner[0].lane_type == carla.LaneType.Sidewalk
    beyond = corner[0].next(30.0)
    assert beyond and beyond[0].road_id == 6 and beyond[0].lane_type == carla.LaneType.Sidewalk
    heading_change = (beyond[0].transform.rotation.yaw - wp.transform.rotation.yaw) % 360.0
    assert math.isclose(heading_change, 90.0, abs_tol=1.0)  # CARLA yaw grows clockwise: a right turn
