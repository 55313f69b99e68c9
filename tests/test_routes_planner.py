"""Dense route planning on real CARLA towns and on tiny made-up maps: geometry, commands, speed, errors."""

from __future__ import annotations

import math
from pathlib import Path

import carla
import numpy as np
import pytest

from carla_bridge.errors import RouteError
from carla_bridge.maps import BUILTIN_MAPS_DIR, MapLibrary
from carla_bridge.route import DenseRoute, RoadOption, Route
from carla_bridge.route_planner import (
    KMH_TO_MS,
    PlannerConfig,
    PlannerConfigError,
    lane_graph,
    locate_on_route,
    plan_route,
    prepare_routes,
)
from carla_bridge.route_xml import parse_routes

BUILTIN_ROUTE_FILES = sorted(
    (Path(__file__).resolve().parents[1] / "carla_bridge/assets/routes").glob("*.xml")
)
TURNS = {RoadOption.LEFT, RoadOption.RIGHT, RoadOption.STRAIGHT}
# What each dev route must show, from its scenario and its geometry (checked on a plot of the town).
EXPECTED_COMMANDS = {
    "25783": {RoadOption.LANEFOLLOW},
    "24721": {RoadOption.LANEFOLLOW},
    "25538": {RoadOption.LANEFOLLOW},
    "24944": {RoadOption.LANEFOLLOW, RoadOption.LEFT},  # T_Junction
    "24497": {RoadOption.LANEFOLLOW},
    "334": {RoadOption.LANEFOLLOW, RoadOption.LEFT},  # SignalizedJunctionLeftTurn
    "25051": {RoadOption.LANEFOLLOW, RoadOption.RIGHT},  # T_Junction
    "26023": {RoadOption.LANEFOLLOW, RoadOption.CHANGELANELEFT, RoadOption.LEFT},  # MergerIntoSlowTraffic
    "27870": {RoadOption.LANEFOLLOW, RoadOption.RIGHT},  # VanillaNonSignalizedTurn
    "24207": {RoadOption.LANEFOLLOW, RoadOption.CHANGELANELEFT},  # SequentialLaneChange
    "28147": {RoadOption.LANEFOLLOW, RoadOption.LEFT},  # SignalizedJunctionLeftTurnEnterFlow
    "24948": {RoadOption.LANEFOLLOW, RoadOption.RIGHT},  # SignalizedJunctionRightTurn
    "25134": {RoadOption.LANEFOLLOW, RoadOption.LEFT},  # T_Junction
    "24758": {RoadOption.LANEFOLLOW},
    "25727": {RoadOption.LANEFOLLOW},
    "24955": {RoadOption.LANEFOLLOW},
    "25986": {RoadOption.LANEFOLLOW},
}
LANE_CHANGE_ROUTES = {"26023", "24207"}


def polyline_distance(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """Horizontal distance from each point to the polyline (min over its pieces)."""
    a, b = polyline[:-1, :2], polyline[1:, :2]
    ab = b - a
    length2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12)
    out = []
    for p in np.asarray(points)[:, :2]:
        t = np.clip(np.einsum("ij,ij->i", p - a, ab) / length2, 0.0, 1.0)
        out.append(np.linalg.norm(a + t[:, None] * ab - p, axis=1).min())
    return np.asarray(out)


# --- a tiny made-up town: two straight two-lane roads, optionally connected, with a 50 speed sign ---


def _road(
    rid: int, x0: float, y0: float, pred: int | None, succ: int | None, change: str, signals: str
) -> str:
    def lane(lane_id: int, mark: str) -> str:
        links = (f'<predecessor id="{lane_id}"/>' if pred else "") + (
            f'<successor id="{lane_id}"/>' if succ else ""
        )
        return (
            f'<lane id="{lane_id}" type="driving" level="false"><link>{links}</link>'
            f'<width sOffset="0" a="3.5" b="0" c="0" d="0"/>{mark}</lane>'
        )

    road_links = (
        f'<predecessor elementType="road" elementId="{pred}" contactPoint="end"/>' if pred else ""
    ) + (f'<successor elementType="road" elementId="{succ}" contactPoint="start"/>' if succ else "")
    mark = '<roadMark sOffset="0" type="{}" weight="standard" color="standard" width="0.15" laneChange="{}"/>'
    broken, solid = mark.format("broken", change), mark.format("solid", "none")
    return f"""<road name="r{rid}" length="60" id="{rid}" junction="-1"><link>{road_links}</link>
<planView><geometry s="0" x="{x0}" y="{y0}" hdg="0" length="60"><line/></geometry></planView>
<lanes><laneSection s="0"><center><lane id="0" type="none" level="false">{solid}</lane></center>
<right>{lane(-1, broken)}{lane(-2, solid)}</right></laneSection></lanes><signals>{signals}</signals></road>
"""


def tiny_map(connected: bool = True, lane_change: str = "both") -> carla.Map:
    """Road 1: x 0..60, lanes -1 (CARLA y=1.75) and -2 (y=5.25), speed sign 50 at s=20. Road 2: x 60..120
    (after road 1) or, when not connected, x 0..60 at CARLA y=-40 linked to nothing."""
    sign = (
        '<signal s="20" t="-8" id="9" name="Speed_50" dynamic="no" orientation="+" zOffset="0" '
        'country="OpenDRIVE" type="274" subtype="50" value="50" unit="mph" height="1" width="1">'
        '<validity fromLane="-2" toLane="-1"/></signal>'
    )
    road1 = _road(1, 0, 0, None, 2 if connected else None, lane_change, sign)
    road2 = (
        _road(2, 60, 0, 1, None, lane_change, "")
        if connected
        else _road(2, 0, 40, None, None, lane_change, "")
    )
    text = f"""<?xml version="1.0" standalone="yes"?><OpenDRIVE>
<header revMajor="1" revMinor="4" name="Tiny" version="1">
<geoReference>+lat_0=0 +lon_0=0</geoReference></header>{road1}{road2}</OpenDRIVE>"""
    return carla.Map("Tiny", text)


def _route(points: list[list[float]], town: str = "Tiny", route_id: str = "t1") -> Route:
    return Route(id=route_id, town=town, keypoints=np.asarray(points, dtype=np.float64))


# --- the dev routes on the real towns ---


@pytest.fixture(scope="module")
def library(shared_maps_dir: Path) -> MapLibrary:
    return MapLibrary([shared_maps_dir], use_carla_root=False)


@pytest.fixture(scope="module")
def dev_routes(dev_routes_file: Path, library: MapLibrary) -> dict[str, Route]:
    return {route.id: route for route in prepare_routes(parse_routes(dev_routes_file), library)}


def test_given_the_dev_routes_when_planned_then_every_keypoint_lies_within_1m_of_its_dense_route(
    dev_routes: dict[str, Route],
) -> None:
    worst = {}
    for route in dev_routes.values():
        assert route.dense is not None
        worst[route.id] = float(polyline_distance(route.keypoints, route.dense.xyz).max())

    print("\nroute  town      keypoints  dense m  max keypoint distance m")
    for rid, distance in worst.items():
        route = dev_routes[rid]
        print(
            f"{rid:>6} {route.town:<9} {len(route.keypoints):>9} "
            f"{route.dense.length_m:>8.1f} {distance:>8.3f}"
        )
    assert max(worst.values()) < 1.0, worst


def test_given_the_dev_routes_then_dense_arrays_are_complete_and_1m_apart(
    dev_routes: dict[str, Route],
) -> None:
    for route in dev_routes.values():
        dense = route.dense
        assert isinstance(dense, DenseRoute)
        m = len(dense)
        assert dense.xyz.shape == (m, 3) and dense.yaw.shape == dense.s.shape == (m,)
        assert dense.commands.dtype == np.int8 and dense.road_id.dtype == np.int32
        assert dense.in_junction.dtype == bool and dense.speed_limit.dtype == np.float32
        ds = np.diff(dense.s)
        np.testing.assert_allclose(ds[:-1], 1.0)
        assert 0.0 < ds[-1] <= 1.0 + 1e-9
        step = np.linalg.norm(np.diff(dense.xyz, axis=0), axis=1)
        assert np.all(step <= ds + 1e-9) and np.all(step > 0.9 * ds)  # chords of the 1 m arc
        np.testing.assert_allclose(dense.xyz[0, :2], route.keypoints[0, :2], atol=1.0)
        np.testing.assert_allclose(dense.xyz[-1, :2], route.keypoints[-1, :2], atol=1.0)
        assert np.all(dense.speed_limit > 0)


def test_given_the_dev_routes_then_yaw_points_along_the_route(dev_routes: dict[str, Route]) -> None:
    for route in dev_routes.values():
        dense = route.dense
        travel = np.diff(dense.xyz[:, :2], axis=0)
        heading = np.arctan2(travel[:, 1], travel[:, 0])
        error = np.abs(np.remainder(heading - dense.yaw[:-1] + np.pi, 2 * np.pi) - np.pi)
        follow = dense.commands == RoadOption.LANEFOLLOW
        lane_following = follow[:-1] & follow[1:]  # lane-change chords point across lanes
        assert np.degrees(error[lane_following]).max() < 15.0, route.id


def test_given_the_dev_routes_then_commands_are_the_expected_ones(dev_routes: dict[str, Route]) -> None:
    for rid, expected in EXPECTED_COMMANDS.items():
        dense = dev_routes[rid].dense
        assert {RoadOption(c) for c in dense.commands} == expected, rid
        turning = np.isin(dense.commands, [int(c) for c in TURNS])
        # A turn command covers exactly the junction crossing.
        np.testing.assert_array_equal(turning, dense.in_junction, err_msg=rid)


def test_given_the_dev_routes_then_speed_limits_come_from_signs_or_the_default(
    dev_routes: dict[str, Route],
) -> None:
    town_sign_values = {30.0, 40.0, 60.0, 90.0}  # every speed sign value of these towns (km/h)
    for route in dev_routes.values():
        kmh = set(np.round(route.dense.speed_limit / KMH_TO_MS, 3).tolist())
        if route.town in ("Town06", "Town10HD"):  # towns without speed signs
            assert kmh == {PlannerConfig().default_speed_limit_kmh}, route.id
        else:
            assert kmh <= town_sign_values, route.id
    assert set(np.round(dev_routes["25727"].dense.speed_limit / KMH_TO_MS).tolist()) == {90.0}  # highway


def test_given_keypoints_inside_junctions_when_replanned_from_the_dense_route_then_it_is_reproduced(
    dev_routes: dict[str, Route], library: MapLibrary
) -> None:
    # Keypoints every 2 m through junctions, where connector lanes overlap: the route-wide choice of
    # lane (not the nearest lane of each keypoint) must find the same crossing again.
    for route in dev_routes.values():
        dense = route.dense
        keypoints = np.vstack([dense.xyz[::2], dense.xyz[-1:]])
        again = plan_route(_route(keypoints.tolist(), route.town, route.id), library.load(route.town))
        tolerance = (
            2.0 if route.id in LANE_CHANGE_ROUTES else 0.05
        )  # keypoints on a lane change move to a lane
        assert polyline_distance(dense.xyz, again.xyz).max() < tolerance, route.id
        assert set(again.commands.tolist()) == set(dense.commands.tolist()), route.id


def test_given_every_junction_connector_of_town01_then_the_crossing_gets_left_right_or_straight(
    library: MapLibrary,
) -> None:
    cmap = library.load("Town01")
    graph = lane_graph(cmap)
    seen = set()
    for segment in graph.segments:
        if not segment.is_junction:
            continue
        entry, leave = graph.yaw[segment.first], graph.yaw[segment.last]
        turn = math.remainder(leave - entry, math.tau)  # CARLA frame: positive = clockwise = right
        if abs(turn) < math.radians(35.0):
            expected = RoadOption.STRAIGHT
        else:
            expected = RoadOption.LEFT if turn < 0 else RoadOption.RIGHT
        before = graph.xyz[segment.first] - 8.0 * np.array([math.cos(entry), math.sin(entry), 0.0])
        after = graph.xyz[segment.last] + 8.0 * np.array([math.cos(leave), math.sin(leave), 0.0])
        dense = plan_route(_route([before.tolist(), after.tolist()], "Town01"), cmap)
        if dense.in_junction[0] or dense.in_junction[-1]:
            continue  # the point 8 m away lies in another junction
        assert {RoadOption(c) for c in dense.commands[dense.in_junction]} == {expected}
        seen.add(expected)
    assert seen == TURNS


@pytest.mark.parametrize("path", BUILTIN_ROUTE_FILES, ids=[p.name for p in BUILTIN_ROUTE_FILES])
def test_given_builtin_routes_when_planned_on_builtin_maps_then_keypoints_lie_on_them(path: Path) -> None:
    routes = prepare_routes(parse_routes(path), MapLibrary([BUILTIN_MAPS_DIR], use_carla_root=False))

    for route in routes:
        assert polyline_distance(route.keypoints, route.dense.xyz).max() < 1.0, route.id


# --- tiny maps: lane changes, speed signs, unreachable keypoints ---


def test_given_two_lanes_with_a_broken_line_then_lane_changes_get_their_commands() -> None:
    cmap = tiny_map()

    right = plan_route(_route([[5, 1.75, 0], [30, 5.25, 0], [50, 5.25, 0]]), cmap)
    left = plan_route(_route([[5, 5.25, 0], [30, 1.75, 0], [50, 1.75, 0]]), cmap)

    assert set(right.commands.tolist()) == {RoadOption.LANEFOLLOW, RoadOption.CHANGELANERIGHT}
    assert set(left.commands.tolist()) == {RoadOption.LANEFOLLOW, RoadOption.CHANGELANELEFT}
    assert right.lane_id[0] == -1 and right.lane_id[-1] == -2
    # The lane change ends at the keypoint after it at the latest, and starts at most 10 m before.
    change = np.flatnonzero(right.commands == RoadOption.CHANGELANERIGHT)
    assert right.xyz[change[0], 0] >= 5.0 and right.xyz[change[-1], 0] <= 30.0
    assert right.xyz[change[-1], 0] - right.xyz[change[0], 0] <= 10.0 + 1.0


def test_given_a_solid_line_then_a_keypoint_on_the_other_lane_is_unreachable() -> None:
    cmap = tiny_map(lane_change="none")

    with pytest.raises(RouteError, match=r"route t1: keypoint 1 \(30.0, 5.2, 0.0\) cannot be reached"):
        plan_route(_route([[5, 1.75, 0], [30, 5.25, 0]]), cmap)


def test_given_a_speed_sign_then_the_limit_changes_where_it_is_passed() -> None:
    cmap = tiny_map()

    dense = plan_route(_route([[5, 1.75, 0], [100, 1.75, 0]]), cmap)
    downstream = plan_route(_route([[70, 1.75, 0], [110, 1.75, 0]]), cmap)

    before, after = dense.xyz[:, 0] < 19.5, dense.xyz[:, 0] > 20.5
    np.testing.assert_allclose(dense.speed_limit[before], 30.0 * KMH_TO_MS, rtol=1e-6)
    np.testing.assert_allclose(dense.speed_limit[after], 50.0 * KMH_TO_MS, rtol=1e-6)
    np.testing.assert_allclose(downstream.speed_limit, 50.0 * KMH_TO_MS, rtol=1e-6)  # sign found upstream
    assert set(dense.road_id.tolist()) == {1, 2}


def test_given_two_disconnected_roads_then_a_keypoint_on_the_other_road_is_unreachable() -> None:
    cmap = tiny_map(connected=False)

    with pytest.raises(RouteError) as error:
        plan_route(_route([[5, 1.75, 0], [50, 1.75, 0], [10, -38.25, 0]], route_id="r7"), cmap)

    message = str(error.value)
    assert message.startswith("route r7: keypoint 2 (10.0, -38.2, 0.0) cannot be reached from keypoint 1")
    assert "not connected" in message


def test_given_a_keypoint_in_the_middle_of_nowhere_then_the_error_gives_its_distance() -> None:
    cmap = tiny_map()

    with pytest.raises(
        RouteError, match=r"route t1: keypoint 1 \(30.0, 60.0, 0.0\) is 54.8 m from the nearest"
    ):
        plan_route(_route([[5, 1.75, 0], [30, 60, 0], [50, 1.75, 0]]), cmap)


def test_given_a_single_keypoint_then_planning_says_two_are_needed() -> None:
    with pytest.raises(RouteError, match="at least two distinct keypoints"):
        plan_route(_route([[5, 1.75, 0], [5, 1.75, 0]]), tiny_map())


def test_given_a_non_finite_keypoint_then_planning_names_it() -> None:
    with pytest.raises(RouteError, match="keypoint 1 has a non-finite coordinate"):
        plan_route(_route([[5, 1.75, 0], [math.nan, 1.75, 0]]), tiny_map())


def test_given_an_out_of_range_setting_then_planning_names_it() -> None:
    with pytest.raises(PlannerConfigError, match=r"planner.hop_resolution_m must be > 0 \(got 0.0\)"):
        plan_route(_route([[5, 1.75, 0], [50, 1.75, 0]]), tiny_map(), PlannerConfig(hop_resolution_m=0.0))


def test_given_a_keypoint_on_the_opposite_lane_of_a_real_town_then_it_is_unreachable(
    dev_routes: dict[str, Route], library: MapLibrary
) -> None:
    route = dev_routes["24721"]  # Town01, straight along lane -1
    cmap = library.load("Town01")
    ahead = cmap.get_waypoint(carla.Location(*route.keypoints[10])).next(2.0)[0].get_left_lane()
    assert ahead.lane_id == 1  # the opposite-direction lane
    location = ahead.transform.location
    keypoints = np.vstack([route.keypoints[:11], [[location.x, location.y, location.z]]])

    with pytest.raises(RouteError, match=r"route opp: keypoint 11 .* cannot be reached from keypoint 10"):
        plan_route(_route(keypoints.tolist(), "Town01", "opp"), cmap)


def test_given_a_route_on_an_unknown_town_when_prepared_then_the_error_names_route_and_town(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARLA_ROOT", raising=False)
    route = _route([[0, 0, 0], [5, 0, 0]], town="Town99", route_id="42")

    with pytest.raises(RouteError, match=r"route 42: no OpenDRIVE file for town 'Town99'.*--maps DIR"):
        prepare_routes([route], MapLibrary([tmp_path]))


def test_given_the_same_map_twice_then_its_lane_graph_is_built_once() -> None:
    assert lane_graph(tiny_map()) is lane_graph(tiny_map())
    assert lane_graph(tiny_map()) is not lane_graph(tiny_map(connected=False))


# --- progress along a dense route ---


def test_given_a_point_beside_the_route_then_locate_finds_its_index_and_lateral_distance() -> None:
    dense = plan_route(_route([[5, 1.75, 0], [100, 1.75, 0]]), tiny_map())

    index, lateral = locate_on_route(dense, (40.2, 2.75), start_index=10, window=50)

    assert index == 35 and lateral == pytest.approx(1.0)
    assert locate_on_route(dense, (40.2, 2.75), start_index=0, window=5) == (
        5,
        pytest.approx(math.hypot(30.2, 1.0)),
    )
    assert locate_on_route(dense, (10.0, 1.75), start_index=60, window=10)[0] == 60  # never searches back
    assert locate_on_route(dense, (500.0, 1.75), start_index=len(dense) - 1)[0] == len(dense) - 1
