"""The built-in Bench2Drive route files on the built-in town: format, lanes, connectivity, scenarios."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass

import carla
import numpy as np
import pytest

from carla_bridge.town import (
    BUILTIN_EVAL_ROUTES_PATH,
    BUILTIN_TRAIN_ROUTES_PATH,
    BUILTIN_XODR_PATH,
    SCENARIO_ABILITIES,
    TOWN_NAME,
)

# The scenario types the built-in routes must cover (brief), and Bench2Drive's five abilities.
REQUIRED_TYPES = {
    "HardBreakRoute", "ConstructionObstacle", "Accident", "AccidentTwoWays", "ParkedObstacle",
    "ParkedObstacleTwoWays", "PedestrianCrossing", "DynamicObjectCrossing", "StaticCutIn",
    "SignalizedJunctionLeftTurn", "SignalizedJunctionRightTurn", "VanillaSignalizedTurnEncounterRedLight",
    "VanillaSignalizedTurnEncounterGreenLight", "VanillaNonSignalizedTurnEncounterStopsign",
    "NonSignalizedJunctionLeftTurn", "OppositeVehicleRunningRedLight", "YieldToEmergencyVehicle",
    "T_Junction", "InvadingTurn", "ControlLoss",
}  # fmt: skip
ABILITIES = {"overtaking", "merging", "emergency_brake", "give_way", "traffic_signs"}
REQUIRED_PARAMETERS = {
    "AccidentTwoWays": {"distance", "frequency"},
    "ParkedObstacleTwoWays": {"distance", "frequency"},
    "StaticCutIn": {"distance", "direction"},
    "SignalizedJunctionLeftTurn": {"flow_speed", "source_dist_interval"},
    "SignalizedJunctionRightTurn": {"flow_speed", "source_dist_interval"},
    "NonSignalizedJunctionLeftTurn": {"flow_speed", "source_dist_interval"},
    "YieldToEmergencyVehicle": {"distance"},
    "InvadingTurn": {"distance", "offset"},
    "Accident": {"distance"},
    "ConstructionObstacle": {"distance"},
    "ParkedObstacle": {"distance"},
    "DynamicObjectCrossing": {"distance", "direction"},
}
# junction scenarios: (control of the junction met after the trigger, movement there)
JUNCTION_SCENARIOS = {
    "SignalizedJunctionLeftTurn": ("signal", "left"),
    "SignalizedJunctionRightTurn": ("signal", "right"),
    "VanillaSignalizedTurnEncounterRedLight": ("signal", "turn"),
    "VanillaSignalizedTurnEncounterGreenLight": ("signal", "turn"),
    "OppositeVehicleRunningRedLight": ("signal", "straight"),
    "VanillaNonSignalizedTurnEncounterStopsign": ("stop", "turn"),
    "NonSignalizedJunctionLeftTurn": ("priority", "left"),
    "T_Junction": ("priority", "turn"),
    "PedestrianCrossing": ("any", "any"),
}
SAME_DIRECTION_NEIGHBOUR = {"Accident", "ConstructionObstacle", "ParkedObstacle", "YieldToEmergencyVehicle"}
TWO_WAY_ROAD = {"AccidentTwoWays", "ParkedObstacleTwoWays", "InvadingTurn"}
ON_LANE_TOLERANCE_M = 0.5
KEYPOINT_SPACING_M = 2.0
JUNCTION_WITHIN_M = 40.0  # a junction scenario's junction starts this close after its trigger


@dataclass
class XmlRoute:
    id: int
    town: str
    keypoints: np.ndarray
    scenario: ET.Element
    weathers: list[ET.Element]


def _read(path) -> list[XmlRoute]:
    routes = []
    for el in ET.parse(path).getroot().findall("route"):
        kps = np.array([[float(p.get(a)) for a in "xyz"] for p in el.find("waypoints").findall("position")])
        scenarios = el.find("scenarios").findall("scenario")
        assert len(scenarios) == 1, f"route {el.get('id')} has {len(scenarios)} scenarios"
        routes.append(XmlRoute(int(el.get("id")), el.get("town"), kps, scenarios[0], el.find("weathers")[:]))
    return routes


@pytest.fixture(scope="module")
def cmap() -> carla.Map:
    return carla.Map(TOWN_NAME, BUILTIN_XODR_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def train() -> list[XmlRoute]:
    return _read(BUILTIN_TRAIN_ROUTES_PATH)


@pytest.fixture(scope="module")
def evaluation() -> list[XmlRoute]:
    return _read(BUILTIN_EVAL_ROUTES_PATH)


@pytest.fixture(scope="module")
def all_routes(train, evaluation) -> list[XmlRoute]:
    return train + evaluation


def _loc(p: np.ndarray) -> carla.Location:
    return carla.Location(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def _trigger(route: XmlRoute) -> tuple[np.ndarray, float]:
    tp = route.scenario.find("trigger_point")
    return np.array([float(tp.get(a)) for a in "xyz"]), float(tp.get("yaw"))


def _trigger_index(route: XmlRoute) -> int:
    xyz, _ = _trigger(route)
    d = np.linalg.norm(route.keypoints - xyz, axis=1)
    assert d.min() < 1e-6, f"route {route.id}: trigger point is not one of its keypoints"
    return int(d.argmin())


def test_route_files_sizes_ids_and_town(train, evaluation):
    # given both built-in files, then train meets every scenario type two or three times (59 routes)
    # and eval holds 8-10 routes, ids unique across both
    per_type = Counter(r.scenario.get("type") for r in train)
    assert len(train) == 59 and set(per_type.values()) <= {2, 3} and 8 <= len(evaluation) <= 10
    ids = [r.id for r in train + evaluation]
    assert len(ids) == len(set(ids))
    assert all(1000 <= r.id < 1100 for r in train) and all(2000 <= r.id < 2100 for r in evaluation)
    assert {r.town for r in train + evaluation} == {TOWN_NAME}


def test_each_route_has_weathers_at_0_and_100(all_routes):
    for r in all_routes:
        assert [w.get("route_percentage") for w in r.weathers] == ["0", "100"], r.id
        assert all(float(w.get("sun_altitude_angle")) >= -90.0 for w in r.weathers)


def test_keypoints_2m_apart_route_150_to_300m_trigger_30_to_50m_after_start(all_routes):
    for r in all_routes:
        steps = np.linalg.norm(np.diff(r.keypoints, axis=0), axis=1)
        # ~2 m along the lane centre (less/more on the inner/outer side of junction turns)
        assert steps.min() > 1.6 and steps.max() < 2.4, r.id
        assert 150.0 <= steps.sum() <= 300.0, r.id
        lead = steps[: _trigger_index(r)].sum()
        assert 30.0 <= lead <= 50.0, r.id


def test_keypoints_lie_on_driving_lane_centres(cmap, all_routes):
    for r in all_routes:
        for p in r.keypoints:
            wp = cmap.get_waypoint(_loc(p), project_to_road=True, lane_type=carla.LaneType.Driving)
            assert wp.transform.location.distance(_loc(p)) < ON_LANE_TOLERANCE_M, (r.id, p)


def _follow(cmap: carla.Map, route: XmlRoute) -> list[carla.Waypoint]:
    """The lane waypoints of a route, reaching each keypoint from the previous one with waypoint.next.

    Where lanes overlap (connectors at a junction entry) every lane within tolerance of a keypoint
    stays a candidate; a candidate survives only if the next keypoint is reachable from it.
    """
    layers: list[list[tuple[carla.Waypoint, int]]] = [[(cmap.get_waypoint(_loc(route.keypoints[0])), -1)]]
    for p in route.keypoints[1:]:
        target = _loc(p)
        best: dict[tuple[int, int], tuple[float, carla.Waypoint, int]] = {}
        for parent, (current, _) in enumerate(layers[-1]):
            step = max(current.transform.location.distance(target), 0.1)
            for option in current.next(step):
                gap = option.transform.location.distance(target)
                key = (option.road_id, option.lane_id)
                if gap < ON_LANE_TOLERANCE_M and (key not in best or gap < best[key][0]):
                    best[key] = (gap, option, parent)
        assert best, f"route {route.id}: keypoint {p} is not reachable from the previous one"
        layers.append([(wp, parent) for _, wp, parent in best.values()])
    path, index = [], 0
    for layer in reversed(layers):
        wp, parent = layer[index]
        path.append(wp)
        index = parent
    return path[::-1]


def test_consecutive_keypoints_are_connected_by_waypoint_next(cmap, all_routes):
    for r in all_routes:
        path = _follow(cmap, r)
        assert len(path) == len(r.keypoints)


def test_scenario_types_cover_the_brief_and_all_abilities(train, evaluation):
    train_types = {r.scenario.get("type") for r in train}
    eval_types = {r.scenario.get("type") for r in evaluation}
    assert train_types == REQUIRED_TYPES
    assert eval_types <= train_types  # held-out routes, shared scenario types
    for routes in (train, evaluation):
        covered = {a for r in routes for a in SCENARIO_ABILITIES[r.scenario.get("type")]}
        assert covered == ABILITIES
    for r in train + evaluation:
        assert r.scenario.get("name") == f"{r.scenario.get('type')}_1"


def test_evaluation_routes_start_elsewhere_than_training_routes(train, evaluation):
    # given each eval route's start, then no training route starts within 20 m in the same direction
    for e in evaluation:
        for t in train:
            same_place = np.linalg.norm(e.keypoints[0] - t.keypoints[0]) < 20.0
            same_heading = np.dot(e.keypoints[1] - e.keypoints[0], t.keypoints[1] - t.keypoints[0]) > 0
            assert not (same_place and same_heading), (e.id, t.id)


def test_scenario_parameters_present(all_routes):
    for r in all_routes:
        tags = {child.tag for child in r.scenario} - {"trigger_point"}
        needed = REQUIRED_PARAMETERS.get(r.scenario.get("type"), set())
        assert needed <= tags, (r.id, needed - tags)
        for tag in ("frequency", "source_dist_interval"):
            el = r.scenario.find(tag)
            if el is not None:
                assert float(el.get("from")) < float(el.get("to")), r.id


def _heading(a: np.ndarray, b: np.ndarray) -> float:
    return math.atan2(b[1] - a[1], b[0] - a[0])


def _junction_after_trigger(cmap: carla.Map, route: XmlRoute, path: list[carla.Waypoint]):
    """(index of the first junction keypoint after the trigger, its junction id, heading change in deg)."""
    start = _trigger_index(route)
    inside = [i for i in range(start, len(path)) if path[i].is_junction]
    if not inside:
        return None
    first = inside[0]
    last = first
    while last + 1 < len(path) and path[last + 1].is_junction:
        last += 1
    kp = route.keypoints
    before = _heading(kp[first - 2], kp[first - 1])
    after = _heading(kp[last + 1], kp[min(last + 2, len(kp) - 1)])
    change = math.degrees((after - before + math.pi) % (2 * math.pi) - math.pi)
    return first, path[first].junction_id, change


def test_junction_scenarios_meet_the_right_junction_and_movement(cmap, all_routes):
    for r in all_routes:
        kind = r.scenario.get("type")
        if kind not in JUNCTION_SCENARIOS:
            continue
        control, movement = JUNCTION_SCENARIOS[kind]
        path = _follow(cmap, r)
        found = _junction_after_trigger(cmap, r, path)
        assert found is not None, f"route {r.id} ({kind}) meets no junction after its trigger"
        first, _, change = found
        gap = np.linalg.norm(np.diff(r.keypoints[_trigger_index(r) : first + 1], axis=0), axis=1).sum()
        assert gap <= JUNCTION_WITHIN_M, (r.id, gap)
        approach = path[first - 1]
        lights = [
            lm for lm in approach.get_landmarks_of_type(3.0, "1000001") if lm.road_id == approach.road_id
        ]
        stops = [lm for lm in approach.get_landmarks_of_type(3.0, "206") if lm.road_id == approach.road_id]
        actual_control = "signal" if lights else "stop" if stops else "priority"
        if control != "any":
            assert actual_control == control, (r.id, kind, actual_control)
        # CARLA yaw grows clockwise seen from above: a right turn is a positive heading change
        actual_move = "straight" if abs(change) < 30.0 else "right" if change > 0 else "left"
        if movement == "turn":
            assert actual_move in ("left", "right"), (r.id, kind, change)
        elif movement != "any":
            assert actual_move == movement, (r.id, kind, change)
        if kind == "T_Junction":
            junction = path[first].get_junction()
            arms = {w.previous(5.0)[0].road_id for w, _ in junction.get_waypoints(carla.LaneType.Driving)}
            arms |= {w.next(5.0)[0].road_id for _, w in junction.get_waypoints(carla.LaneType.Driving)}
            assert len(arms) == 3, (r.id, arms)


def _same_direction(a: carla.Waypoint, b: carla.Waypoint | None) -> bool:
    return b is not None and b.lane_type == carla.LaneType.Driving and (a.lane_id > 0) == (b.lane_id > 0)


def test_lane_layout_at_the_trigger_suits_the_scenario(cmap, all_routes):
    for r in all_routes:
        kind = r.scenario.get("type")
        wp = _follow(cmap, r)[_trigger_index(r)]
        assert not wp.is_junction, r.id
        left, right = wp.get_left_lane(), wp.get_right_lane()
        if kind in SAME_DIRECTION_NEIGHBOUR:
            assert _same_direction(wp, left) or _same_direction(wp, right), (r.id, kind)
        if kind == "StaticCutIn":
            assert _same_direction(wp, right), r.id  # the cut-in vehicle waits in the lane on the right
        if kind in TWO_WAY_ROAD:
            # a 1+1 road: the lane on the left is the oncoming one, none beside in our direction
            assert (
                left is not None
                and left.lane_type == carla.LaneType.Driving
                and not _same_direction(wp, left)
            )
            assert not _same_direction(wp, right), r.id


def test_obstacles_and_invasions_lie_on_the_route_after_the_trigger(cmap, all_routes):
    for r in all_routes:
        kind = r.scenario.get("type")
        distance = r.scenario.find("distance")
        if distance is None or kind == "YieldToEmergencyVehicle":  # the ambulance comes from behind
            continue
        steps = np.linalg.norm(np.diff(r.keypoints, axis=0), axis=1)
        along = np.concatenate([[0.0], np.cumsum(steps)])
        at = along[_trigger_index(r)] + float(distance.get("value"))
        assert at <= along[-1] - 20.0, f"route {r.id}: its {kind} lies past the route end"
        if kind == "InvadingTurn":
            # the oncoming vehicles invade on a bend: the route turns by >= 60 deg after the trigger
            kp = r.keypoints[_trigger_index(r) :]
            yaw = np.unwrap(np.arctan2(np.diff(kp[:, 1]), np.diff(kp[:, 0])))
            assert abs(math.degrees(yaw[-1] - yaw[0])) >= 60.0, r.id


def test_routes_parse_and_plan_with_the_project_route_planner(cmap):
    route_xml = pytest.importorskip("carla_bridge.route_xml")
    planner = pytest.importorskip("carla_bridge.route_planner")
    for path in (BUILTIN_TRAIN_ROUTES_PATH, BUILTIN_EVAL_ROUTES_PATH):
        routes = route_xml.parse_routes(path)
        assert routes
        for route in routes:
            dense = planner.plan_route(route, cmap)
            polyline = np.linalg.norm(np.diff(route.keypoints, axis=0), axis=1).sum()
            # the dense route follows the keypoints: same length within 2 %
            assert dense.length_m == pytest.approx(polyline, rel=0.02), route.id
            limits = set(np.round(dense.speed_limit * 3.6).tolist())
            assert limits <= {50.0, 70.0}, (route.id, limits)
            assert route.scenarios[0].trigger_point is not None


def test_routes_prepare_with_the_project_map_library():
    # given the default map library (it searches the built-in maps folder), when the built-in routes
    # are prepared, then every one gets a dense route on Takeover01
    maps = pytest.importorskip("carla_bridge.maps")
    route_xml = pytest.importorskip("carla_bridge.route_xml")
    planner = pytest.importorskip("carla_bridge.route_planner")
    routes = [
        *route_xml.parse_routes(BUILTIN_TRAIN_ROUTES_PATH),
        *route_xml.parse_routes(BUILTIN_EVAL_ROUTES_PATH),
    ]
    prepared = planner.prepare_routes(routes, maps.MapLibrary(use_carla_root=False))
    assert len(prepared) == len(routes)
    assert all(r.town == TOWN_NAME and r.dense is not None and r.dense.length_m > 140.0 for r in prepared)


def _spec(turns: tuple[str, ...]):
    from carla_bridge.town import RouteSpec

    # ring road 10 eastbound into junction 500, where straight on splits into the one-way's 3 lanes
    return RouteSpec(9000, "train", "HardBreakRoute", (10, -1, 320.0), turns, 150.0, 40.0, "clear_noon")


def test_route_walker_needs_the_exit_lane_where_straight_on_splits(cmap):
    from carla_bridge.town import TownBuildError, TownConfig, build_route, build_town

    town = build_town(TownConfig())
    # given an ambiguous straight move, then the error asks for the exit lane
    with pytest.raises(TownBuildError, match=r"straight:<lane id>"):
        build_route(cmap, town, _spec(("straight",)))
    # given a move the junction does not offer (no left arm at junction 500), then it is refused
    with pytest.raises(TownBuildError, match="matches 0 lanes"):
        build_route(cmap, town, _spec(("left",)))
    # given the exit lane, then the route ends on that lane of the one-way
    route = build_route(cmap, town, _spec(("straight:-2",)))
    end = cmap.get_waypoint(_loc(np.array(route.keypoints[-1])))
    assert (end.road_id, end.lane_id) == (4, -2)
    assert len(route.keypoints) == 76  # 150 m at 2 m
