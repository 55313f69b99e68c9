"""Pure geometry and layout rules of the built-in town generator (no carla.Map involved)."""

from __future__ import annotations

import itertools
import math

import pytest

from carla_bridge.errors import TakeoverError
from carla_bridge.geometry import wrap_angle_pi_inclusive
from carla_bridge.town import (
    ArcGeometry,
    LineGeometry,
    Pose2D,
    TownBuildError,
    TownConfig,
    build_town,
    check_town,
    connector_curve,
    fillet_path,
    geometry_end,
    lane_pairs,
)
from carla_bridge.town.xodr import _num


def test_wrap_angle_maps_into_half_open_interval():
    # given angles on and beyond the boundaries, when wrapped, then they land in (-pi, pi]
    assert wrap_angle_pi_inclusive(math.pi) == pytest.approx(math.pi)
    assert wrap_angle_pi_inclusive(-math.pi) == pytest.approx(math.pi)
    assert wrap_angle_pi_inclusive(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert wrap_angle_pi_inclusive(-5 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert wrap_angle_pi_inclusive(0.25) == pytest.approx(0.25)


def test_arc_quarter_turn_ends_at_the_circle_point():
    # given a left quarter arc of radius 10 m starting east at the origin
    arc = ArcGeometry(Pose2D(0.0, 0.0, 0.0), 10.0 * math.pi / 2, 0.1)
    # when evaluated at its end, then it is at (10, 10) heading north
    end = arc.pose_at(arc.length_m)
    assert (end.x, end.y, end.hdg) == pytest.approx((10.0, 10.0, math.pi / 2))


def test_fillet_path_rounds_a_corner_with_tangent_continuity():
    # given an L-shaped polyline 100 m east then 80 m south, and a 20 m corner radius
    geoms = fillet_path([(0.0, 0.0), (100.0, 0.0), (100.0, -80.0)], 20.0)
    # then it is line + right arc + line, of total length 100 + 80 - 2 R + pi R / 2
    assert [type(g) for g in geoms] == [LineGeometry, ArcGeometry, LineGeometry]
    assert geoms[1].curvature_per_m == pytest.approx(-1.0 / 20.0)
    total = sum(g.length_m for g in geoms)
    assert total == pytest.approx(180.0 - 40.0 + math.pi * 10.0)
    # and each piece starts where (and headed as) the previous one ends
    for a, b in itertools.pairwise(geoms):
        ea = geometry_end(a)
        assert (ea.x, ea.y) == pytest.approx((b.start.x, b.start.y), abs=1e-9)
        assert wrap_angle_pi_inclusive(ea.hdg - b.start.hdg) == pytest.approx(0.0, abs=1e-12)
    end = geometry_end(geoms[-1])
    assert (end.x, end.y, end.hdg) == pytest.approx((100.0, -80.0, -math.pi / 2))


def test_fillet_path_rejects_a_corner_that_does_not_fit():
    with pytest.raises(TownBuildError, match="corner_radius_m"):
        fillet_path([(0.0, 0.0), (10.0, 0.0), (10.0, -50.0)], 20.0)


def test_connector_curve_matches_end_poses_and_approximates_a_circle():
    # given a left quarter turn of radius 16 m (the reference line of a 4-way left turn)
    start, end = Pose2D(-16.0, 0.0, 0.0), Pose2D(0.0, 16.0, math.pi / 2)
    curve = connector_curve(start, end)
    a, b, c, d = curve.coefficients
    # then p = 0 is the start and p = 1 the end (in the start frame, as paramPoly3 needs)
    assert tuple(a) == pytest.approx((0.0, 0.0))
    assert tuple(a + b + c + d) == pytest.approx((16.0, 16.0))
    # the start tangent is along the start heading and the end tangent along the end heading
    assert b[1] == pytest.approx(0.0)
    end_tangent = b + 2 * c + 3 * d
    assert end_tangent[0] == pytest.approx(0.0, abs=1e-9) and end_tangent[1] > 0
    # and its length and tightest radius are those of the circle within 0.1 % and 2 %
    assert curve.length_m == pytest.approx(16.0 * math.pi / 2, rel=1e-3)
    assert curve.min_radius_m() == pytest.approx(16.0, rel=0.02)


def test_connector_curve_for_a_lane_shift_is_an_s_curve_of_the_right_length():
    # given parallel headings 30 m apart with a 3.5 m lateral shift
    curve = connector_curve(Pose2D(0.0, 0.0, 0.0), Pose2D(30.0, -3.5, 0.0))
    # then the curve length exceeds the chord only slightly
    assert math.hypot(30.0, 3.5) < curve.length_m < math.hypot(30.0, 3.5) * 1.01


def test_connector_curve_refuses_to_bend_backwards():
    # given an end behind the start for a right-angle turn
    with pytest.raises(TownBuildError, match="junction_half_size_m"):
        connector_curve(Pose2D(0.0, 0.0, 0.0), Pose2D(-5.0, 10.0, math.pi / 2))


@pytest.mark.parametrize(
    ("movement", "lanes_in", "lanes_out", "expected"),
    [
        ("left", [-1, -2], [1, 2], [(-1, 1)]),
        ("right", [-1, -2], [-1], [(-2, -1)]),
        ("straight", [-1, -2], [-1, -2], [(-1, -1), (-2, -2)]),
        ("straight", [-1, -2, -3], [1], [(-1, 1), (-2, 1), (-3, 1)]),  # merge of the one-way
        ("straight", [1], [-1, -2, -3], [(1, -1), (1, -2), (1, -3)]),  # split into the one-way
    ],
)
def test_lane_pairs_rules(movement, lanes_in, lanes_out, expected):
    assert lane_pairs(movement, lanes_in, lanes_out) == expected


def test_number_format_is_fixed_and_never_negative_zero():
    assert _num(-1e-12) == "0"
    assert _num(229.99999999999997) == "230"
    assert _num(0.5) == "0.5"
    assert _num(-3.5) == "-3.5"


def test_town_junctions_have_every_legal_movement():
    # given the default town
    town = build_town(TownConfig())
    moves = {j.id: sorted(c.movement for c in j.connections) for j in town.junctions}
    # then the signalised 4-way (2+2 avenue x 1+1 street) has 6 straight, 4 left, 4 right connectors
    assert moves[200].count("straight") == 6
    assert moves[200].count("left") == 4 and moves[200].count("right") == 4
    # and a 1+1 T junction has the six movements of a T
    assert sorted(moves[800]) == ["left", "left", "right", "right", "straight", "straight"]
    # and the one-way's T junctions forbid entering it backwards: no connector ends on road 4 at J600
    assert all(town.road(c.connecting_road).successor.element_id != 4 for c in town.junction(600).connections)


def test_check_town_detects_a_lane_that_cannot_leave_its_junction():
    # given the default town with the connectors leaving road 5 at junction 800 removed
    town = build_town(TownConfig())
    j800 = town.junction(800)
    dropped = {c.connecting_road for c in j800.connections if c.incoming_road == 5}
    j800.connections = [c for c in j800.connections if c.connecting_road not in dropped]
    town.roads = [r for r in town.roads if r.id not in dropped]
    # when checked, then the dead end is named
    with pytest.raises(TownBuildError, match="road 5"):
        check_town(town)


def test_too_small_junction_is_one_clear_error():
    with pytest.raises(TakeoverError, match="junction_half_size_m"):
        build_town(TownConfig(junction_half_size_m=9.0))
