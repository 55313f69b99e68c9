"""Route preparation on real CARLA towns (experts/route_prep.py)."""

from __future__ import annotations

import dataclasses
import math

import carla
import numpy as np
import pytest

from carla_bridge.errors import RouteError
from carla_bridge.route import RoadOption, Route
from experts.config import RoutePrepConfig, SpeedConfig
from experts.route_prep import (
    NeighbourLane,
    RouteTracker,
    SpeedCap,
    allowed_speed_profile,
    cosine_ramp,
    prepare_route,
    smooth_lane_changes,
)
from experts.synthetic import lane_route, straight_route

CFG = RoutePrepConfig()
SPEED = SpeedConfig()


@pytest.fixture(scope="module")
def town01(shared_maps_dir) -> carla.Map:
    return carla.Map("Town01", (shared_maps_dir / "Town01.xodr").read_text())


@pytest.fixture(scope="module")
def town04(shared_maps_dir) -> carla.Map:
    return carla.Map("Town04", (shared_maps_dir / "Town04.xodr").read_text())


def _shifted(route: Route, lateral_m: float) -> Route:
    d = route.dense
    xyz = d.xyz.copy()
    xyz[:, 0] -= lateral_m * np.sin(d.yaw)
    xyz[:, 1] += lateral_m * np.cos(d.yaw)
    return dataclasses.replace(route, dense=dataclasses.replace(d, xyz=xyz))


def test_path_is_uniform_and_starts_at_the_first_dense_point(town01):
    route = lane_route(town01, 392.38, 20.0, 150)
    p = prepare_route(route, town01, CFG)
    steps = np.hypot(*np.diff(p.xy, axis=0).T)
    assert steps == pytest.approx(CFG.resample_spacing_m, abs=1e-3)  # chords of the lead-in's bends
    i0 = p.index_at(0.0)
    assert np.hypot(*(p.xy[i0] - route.dense.xyz[0, :2])) < 1e-6
    assert p.length_m == pytest.approx(route.dense.length_m, rel=1e-3)
    # padded both ends: the lane leading in before, straight on after
    assert -CFG.pad_before_m - 1.0 < p.s0_m < -0.9 * CFG.pad_before_m
    assert p.s_at(len(p) - 1) > p.length_m + CFG.pad_after_m - 1.0


def test_lead_in_follows_the_lane_the_route_comes_from(town01):
    # given a route that starts just past a bend (Town01's corner at x ~ 392 m)
    route = lane_route(town01, 392.38, 20.0, 150)
    # when it is prepared
    p = prepare_route(route, town01, CFG)
    # then every point behind the start lies on a driving lane centre, heading along that lane
    behind = np.flatnonzero(p.s_at(np.arange(len(p))) < 0.0)[::20]
    for i in behind:
        wp = town01.get_waypoint(carla.Location(x=float(p.xy[i, 0]), y=float(p.xy[i, 1])))
        loc = wp.transform.location
        assert math.hypot(loc.x - p.xy[i, 0], loc.y - p.xy[i, 1]) < 0.3
        dyaw = math.remainder(math.radians(wp.transform.rotation.yaw) - float(p.yaw[i]), math.tau)
        assert abs(dyaw) < math.radians(10.0)
    # ... and the lead-in turns (a straight pad would leave the lane)
    assert np.ptp(np.unwrap(p.yaw[behind])) > math.radians(45.0)


def test_points_off_the_lane_centre_are_snapped_back(town01):
    centre = lane_route(town01, 392.38, 20.0, 150)
    p = prepare_route(_shifted(centre, 0.6), town01, CFG)
    # the prepared points lie on the lane centre again (CARLA's waypoints), not 0.6 m off it
    for s in (5.0, 40.0, 77.0, 140.0):
        x, y = p.xy[p.index_at(s)]
        wp = town01.get_waypoint(carla.Location(x=float(x), y=float(y), z=0.0))
        assert math.hypot(wp.transform.location.x - x, wp.transform.location.y - y) < 0.05


def test_neighbour_lanes_come_from_the_map(town01, town04):
    two_way = prepare_route(lane_route(town01, 392.38, 20.0, 100), town01, CFG)
    mid = two_way.index_at(50.0)
    assert two_way.left_lane[mid] == NeighbourLane.OPPOSITE and two_way.right_lane[mid] == NeighbourLane.NONE
    assert two_way.left_width[mid] == pytest.approx(4.0)
    highway = prepare_route(lane_route(town04, -60.0, 30.37, 100), town04, CFG)
    mid = highway.index_at(50.0)
    assert highway.left_lane[mid] == NeighbourLane.SAME and highway.right_lane[mid] == NeighbourLane.SAME
    assert highway.lane_width[mid] == pytest.approx(3.5)


def test_speed_limit_and_commands_are_carried_to_every_point(town01):
    route = lane_route(town01, 392.38, 20.0, 100, speed_limit_mps=12.0)
    route.dense.speed_limit[60:] = 8.0
    p = prepare_route(route, town01, CFG)
    assert p.speed_limit[p.index_at(30.0)] == pytest.approx(12.0)
    assert p.speed_limit[p.index_at(80.0)] == pytest.approx(8.0)
    assert (p.command == RoadOption.LANEFOLLOW).all()


def test_route_through_a_junction_knows_where_it_is(town01):
    # road 8 lane 1 ends in a junction near y = 320
    route = lane_route(town01, 392.38, 250.0, 150)
    p = prepare_route(route, town01, CFG)
    assert len(p.junctions) >= 1
    entry, exit_ = p.junctions[0]
    assert 50.0 < entry < exit_
    assert p.next_junction(0.0) == pytest.approx((entry, exit_))
    assert p.next_junction(exit_ + 1.0) is None or p.next_junction(exit_ + 1.0)[0] > exit_
    assert p.in_junction[p.index_at(0.5 * (entry + exit_))]
    assert p.left_lane[p.index_at(0.5 * (entry + exit_))] == NeighbourLane.NONE


def test_lane_change_jump_becomes_a_smooth_ramp():
    # given a straight polyline that jumps 3.5 m to the left at x = 50
    x = np.arange(0.0, 101.0)
    y = np.where(x <= 50.0, 0.0, -3.5)
    xy = np.stack([x, y], axis=1)
    out, windows = smooth_lane_changes(xy, np.zeros(len(x)), np.full(len(x), 30.0), 1.0)
    # then the jump is spread over the 30 m window centred on it, monotone, ending in the new lane
    assert windows.shape == (1, 3)
    assert windows[0] == pytest.approx([35.0, 65.0, -3.5], abs=0.6)
    assert np.all(np.diff(out[:, 1]) <= 1e-9)
    assert np.abs(np.diff(out[:, 1])).max() < 0.25
    assert out[0, 1] == 0.0 and out[-1, 1] == -3.5
    assert out[35, 1] == pytest.approx(0.0, abs=0.01) and out[66, 1] == pytest.approx(-3.5, abs=0.01)


def test_planner_lane_change_points_are_resmoothed_longer(town04):
    # given a dense route that changes lane (4 -> 3) over 4 m with CHANGELANELEFT commands
    route = lane_route(town04, -60.0, 30.37, 100, speed_limit_mps=60 / 3.6)
    d = route.dense
    d.xyz[52:, 1] -= 3.5
    d.xyz[48:52, 1] -= np.linspace(0.7, 2.8, 4)
    d.commands[48:52] = RoadOption.CHANGELANELEFT
    p = prepare_route(route, town04, CFG, SPEED)
    assert len(p.lane_changes) == 1 and p.lane_changes[0] == pytest.approx(50.0, abs=2.0)
    assert len(p.lane_change_windows) == 1 and p.lane_change_windows[0, 2] == pytest.approx(-3.5, abs=0.1)
    # the lateral move now takes about duration x cruise speed, well beyond the planner's 4 m
    lat = p.xy[:, 1] - 30.4
    moving = np.flatnonzero((lat < -0.1) & (lat > -3.4))
    length = (moving[-1] - moving[0]) * CFG.resample_spacing_m
    assert length > 15.0
    assert np.abs(p.curvature).max() < 0.05


def test_allowed_speed_brakes_ahead_of_a_lower_limit():
    route = straight_route(300.0, speed_limit_mps=20.0)
    route.dense.speed_limit[200:] = 10.0
    cfg = SpeedConfig()
    from experts.route_prep import PreparedRoute  # noqa: F401  (type of the result)

    p = _prepare_map_free(route)
    v, cause = allowed_speed_profile(p, cfg)
    high, low = cfg.speed_limit_fraction * 20.0, cfg.speed_limit_fraction * 10.0
    s = p.s0_m + np.arange(len(p)) * p.spacing_m
    # far before the change: the base speed; at and after it: the lower one
    assert v[p.index_at(50.0)] == pytest.approx(high)
    assert v[p.index_at(250.0)] == pytest.approx(low)
    # in between: never more than the comfortable deceleration allows
    j = int(np.argmax(p.speed_limit < 15.0))
    reach = np.sqrt(low**2 + 2 * cfg.curve_decel_mps2 * np.maximum(s[j] - s, 0.0))
    assert np.all(v[:j] <= reach[:j] + 1e-6)
    assert cause[p.index_at(190.0)] == SpeedCap.SPEED_LIMIT and cause[p.index_at(50.0)] == SpeedCap.BASE


def test_curves_cap_the_speed(town01):
    route = lane_route(town01, 392.38, 250.0, 150, speed_limit_mps=20.0)
    p = prepare_route(route, town01, CFG)
    v, cause = allowed_speed_profile(p, SPEED)
    k = int(np.argmax(np.abs(p.curvature)))
    assert v[k] == pytest.approx(math.sqrt(SPEED.max_lateral_accel_mps2 / abs(p.curvature[k])), rel=1e-6)
    assert cause[k] == SpeedCap.CURVE


def test_stop_lines_are_located_on_the_route_only_in_its_direction(town01):
    route = lane_route(town01, 392.38, 20.0, 100)
    p = prepare_route(route, town01, CFG)
    x, y = route.dense.xyz[40, :2]
    assert p.locate_stop_line(x, y, math.pi / 2, CFG) == pytest.approx(40.0, abs=0.1)
    assert p.locate_stop_line(x, y, -math.pi / 2, CFG) is None  # the oncoming lane's line
    assert p.locate_stop_line(x + 4.0, y, math.pi / 2, CFG) is None  # another lane


def test_tracker_follows_forward_and_never_goes_back(town01):
    route = lane_route(town01, 392.38, 20.0, 100)
    p = prepare_route(route, town01, CFG)
    tracker = RouteTracker(p, CFG)
    x, y = route.dense.xyz[10, :2]
    i = tracker.update(x, y, hint_s=10.0)
    assert p.s_at(i) == pytest.approx(10.0, abs=0.1)
    x, y = route.dense.xyz[12, :2]
    j = tracker.update(x, y)
    assert p.s_at(j) == pytest.approx(12.0, abs=0.1)
    x, y = route.dense.xyz[5, :2]
    assert tracker.update(x, y) >= j


def test_missing_dense_route_is_one_clear_error(town01):
    route = lane_route(town01, 392.38, 20.0, 50)
    with pytest.raises(RouteError, match="no dense route"):
        prepare_route(dataclasses.replace(route, dense=None), town01, CFG)


def test_cosine_ramp_is_a_smooth_step():
    u = np.linspace(-0.5, 1.5, 41)
    w = cosine_ramp(u)
    assert w[0] == 0.0 and w[-1] == 1.0
    assert cosine_ramp(np.array([0.5]))[0] == pytest.approx(0.5)
    assert np.all(np.diff(w) >= 0.0)


class _NoMap:
    """A map with no lanes: prepare_route then keeps the dense points as they are."""

    name = "none"

    def get_waypoint(self, *args, **kwargs):
        return None


def _prepare_map_free(route: Route):
    return prepare_route(route, _NoMap(), CFG)  # type: ignore[arg-type]
