"""Shared plane geometry (carla_bridge/geometry.py): angles, frames, oriented boxes, segments, polylines.

Hand-computed cases in CARLA's frame: yaw in radians, +y to the right of +x, n = (-sin yaw, cos yaw) right.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from carla_bridge.errors import TakeoverError
from carla_bridge.geometry import (
    GeometryError,
    box_corners,
    box_half_spans,
    boxes_may_overlap,
    boxes_overlap,
    distance_to_polyline,
    ego_to_world,
    heading,
    oriented_boxes_overlap,
    points_in_oriented_box,
    segments_intersect,
    to_local,
    world_to_ego,
    wrap_angle,
    wrap_angle_pi_inclusive,
)
from carla_bridge.snapshot import Pose


def _polygon_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Reference: brute-force SAT on corner polygons (independent of the closed-form radii)."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def _random_boxes(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [
        rng.uniform(-3, 3, n),
        rng.uniform(-3, 3, n),
        rng.uniform(-4, 4, n),
        rng.uniform(0.2, 2.5, n),
        rng.uniform(0.2, 1.2, n),
    ]


# ---- angles ------------------------------------------------------------------------------------------
def test_given_angles_on_the_boundaries_when_wrapped_then_they_land_in_minus_pi_to_pi_open_above():
    a = wrap_angle(np.array([0.0, math.pi, -math.pi, 3 * math.pi, -3 * math.pi, 7.0, -0.5]))
    np.testing.assert_allclose(a, [0.0, -math.pi, -math.pi, -math.pi, -math.pi, 7.0 - 2 * math.pi, -0.5])
    assert np.all(a >= -math.pi) and np.all(a < math.pi)
    assert float(wrap_angle(2 * math.pi + 0.1)) == pytest.approx(0.1)
    assert float(wrap_angle(-2 * math.pi - 0.1)) == pytest.approx(-0.1)


def test_given_angles_on_the_boundaries_when_wrapped_pi_inclusive_then_they_land_in_minus_pi_open_to_pi():
    assert wrap_angle_pi_inclusive(math.pi) == pytest.approx(math.pi)
    assert wrap_angle_pi_inclusive(-math.pi) == pytest.approx(math.pi)
    assert wrap_angle_pi_inclusive(3 * math.pi) == pytest.approx(math.pi)
    assert wrap_angle_pi_inclusive(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert wrap_angle_pi_inclusive(-5 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert wrap_angle_pi_inclusive(0.25) == 0.25


def test_given_a_yaw_when_taking_its_heading_then_scalar_and_array_forms_agree():
    np.testing.assert_allclose(heading(math.pi / 2), [0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(heading(np.array([0.0, math.pi])), [[1.0, 0.0], [-1.0, 0.0]], atol=1e-15)


# ---- frames ------------------------------------------------------------------------------------------
def test_given_an_ego_heading_plus_y_when_mapping_world_points_then_forward_and_right_are_by_hand():
    # heading +y (yaw pi/2): forward is +y and the right, n = (-sin, cos) = (-1, 0), is -x
    ego = Pose(0.0, 0.0, 0.0, math.pi / 2)
    np.testing.assert_allclose(world_to_ego(np.array([0.0, 5.0]), ego), [5.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(world_to_ego(np.array([-3.0, 0.0]), ego), [0.0, 3.0], atol=1e-12)
    f, r = to_local(np.array([0.0]), np.array([1.0]), math.pi / 2)
    assert float(f[0]) == pytest.approx(1.0) and float(r[0]) == pytest.approx(0.0, abs=1e-12)


def test_given_random_points_when_mapped_to_ego_and_back_then_they_return():
    rng = np.random.default_rng(3)
    pose = Pose(12.5, -40.0, 0.3, 2.4)
    pts = rng.uniform(-100, 100, (7, 5, 2))
    np.testing.assert_allclose(ego_to_world(world_to_ego(pts, pose), pose), pts, atol=1e-9)
    # and to_local on offsets is the same map as world_to_ego on points
    f, r = to_local(pts[..., 0] - pose.x, pts[..., 1] - pose.y, pose.yaw)
    np.testing.assert_array_equal(np.stack([f, r], axis=-1), world_to_ego(pts, pose))


# ---- boxes -------------------------------------------------------------------------------------------
def test_given_an_axis_aligned_box_when_taking_corners_then_they_cycle_fl_fr_rr_rl():
    # yaw 0: forward +x, right +y, so front-left is (x + hl, y - hw)
    c = box_corners(1.0, 2.0, 0.0, 2.0, 1.0)
    np.testing.assert_allclose(c, [[3.0, 1.0], [3.0, 3.0], [-1.0, 3.0], [-1.0, 1.0]])


def test_given_boxes_in_batches_when_taking_corners_then_shapes_broadcast():
    c = box_corners(np.zeros((3, 1)), 0.0, np.zeros(4), 1.0, 0.5)
    assert c.shape == (3, 4, 4, 2)


def test_given_a_box_turned_90_deg_when_taking_half_spans_then_length_and_width_swap():
    along, across = box_half_spans(2.0, 1.0, math.pi / 2)
    assert float(along) == pytest.approx(1.0) and float(across) == pytest.approx(2.0)


def test_given_axis_aligned_unit_boxes_when_touching_or_apart_then_touching_counts_as_overlap():
    assert boxes_overlap(0, 0, 0, 1, 1, 2.0, 0, 0, 1, 1)
    assert not boxes_overlap(0, 0, 0, 1, 1, 2.01, 0, 0, 1, 1)
    assert boxes_overlap(0, 0, 0, 1, 1, 0, -2.0, 0, 1, 1)
    assert not boxes_overlap(0, 0, 0, 1, 1, 0, -2.01, 0, 1, 1)


def test_given_a_45_deg_box_on_the_diagonal_when_moved_5_cm_either_way_then_sat_decides():
    # along the diagonal the unit square reaches sqrt(2) (its corner) and the rotated one 1 (its edge),
    # so they touch at centre distance 1 + sqrt(2); only the rotated box's axis separates them beyond
    touch = 1.0 + math.sqrt(2.0)
    far = (touch + 0.05) / math.sqrt(2.0)
    near = (touch - 0.05) / math.sqrt(2.0)
    assert not boxes_overlap(0, 0, 0, 1, 1, far, far, math.pi / 4, 1, 1)
    assert boxes_overlap(0, 0, 0, 1, 1, near, near, math.pi / 4, 1, 1)


def test_given_a_rotated_box_off_the_corner_when_its_aabb_overlaps_then_sat_still_separates_it():
    # a 1 m square at 45 deg centred at (2.6, 1.6), diagonal to the ego corner (2, 1): its axis-aligned
    # bound (half 0.707) reaches x = 1.89 < 2, yet along its own axis (1, 1)/sqrt(2) the centres are
    # 4.2/sqrt(2) = 2.970 m apart while the radii sum to 3/sqrt(2) + 0.5 = 2.621 m; at (2.3, 1.3), 2.546 m
    half = np.array([2.0, 1.0])
    square = np.array([[0.5, 0.5]])
    assert not oriented_boxes_overlap(np.zeros(2), 0.0, half, [[2.6, 1.6]], [math.pi / 4], square)[0]
    assert oriented_boxes_overlap(np.zeros(2), 0.0, half, [[2.3, 1.3]], [math.pi / 4], square)[0]


def test_given_random_box_pairs_when_compared_with_corner_polygon_sat_then_all_agree():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 2000), _random_boxes(rng, 2000)
    fast = boxes_overlap(*a, *b)
    ca, cb = box_corners(*a), box_corners(*b)
    ref = np.array([_polygon_overlap(ca[i], cb[i]) for i in range(len(fast))])
    assert fast.shape == (2000,)
    assert np.array_equal(fast, ref)
    assert 0.1 < ref.mean() < 0.9  # the sample exercises both outcomes


def test_given_one_box_against_many_when_using_the_array_layout_then_it_equals_the_broadcast_form():
    rng = np.random.default_rng(1)
    b = _random_boxes(rng, 500)
    centers, yaws, halves = np.stack(b[:2], axis=1), b[2], np.stack(b[3:], axis=1)
    got = oriented_boxes_overlap(np.array([0.3, -0.2]), 0.7, np.array([2.0, 1.0]), centers, yaws, halves)
    np.testing.assert_array_equal(got, boxes_overlap(0.3, -0.2, 0.7, 2.0, 1.0, *b))
    empty = oriented_boxes_overlap(
        np.zeros(2), 0.0, np.ones(2), np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2))
    )
    assert empty.shape == (0,) and empty.dtype == bool


def test_given_ego_candidates_and_actors_over_time_when_overlapping_then_result_broadcasts():
    # 3 ego forecasts x 5 steps against 4 actors x 5 steps -> (3, 4, 5); only the actor at x = 0 hits
    ex = np.zeros((3, 1, 5))
    ax = np.arange(4.0)[None, :, None] * 10.0 + np.zeros((1, 4, 5))
    out = boxes_overlap(ex, 0.0, 0.0, 2.0, 1.0, ax, 0.0, 0.0, 2.0, 1.0)
    assert out.shape == (3, 4, 5)
    assert out[:, 0].all() and not out[:, 1:].any()


def test_given_boxes_when_prefiltering_by_bounding_circles_then_only_far_ones_drop():
    # reach = |(2, 1)| + |(1, 1)| = 2.236 + 1.414 = 3.650 m
    centers = np.array([[3.6, 0.0], [3.7, 0.0], [0.0, -3.6]])
    got = boxes_may_overlap(np.zeros(2), np.array([2.0, 1.0]), centers, np.ones((3, 2)))
    np.testing.assert_array_equal(got, [True, False, True])


def test_given_a_rotated_box_when_testing_points_then_inside_follows_its_axes():
    # box heading +y, half length 2 along y, half width 1 along x
    pts = np.array([[0.0, 1.9], [0.9, 0.0], [1.5, 0.0], [0.0, 2.1], [1.0, 2.0]])
    got = points_in_oriented_box(pts, np.zeros(2), math.pi / 2, np.array([2.0, 1.0]))
    np.testing.assert_array_equal(got, [True, True, False, False, True])


# ---- segments and polylines -------------------------------------------------------------------------
def test_given_segment_pairs_when_tested_then_crossing_touching_and_collinear_overlap_intersect():
    assert segments_intersect((0, 0), (2, 0), (1, -1), (1, 1))  # crossing
    assert segments_intersect((0, 0), (2, 0), (2, 0), (3, 1))  # sharing an end point
    assert segments_intersect((0, 0), (2, 0), (1, 0), (3, 0))  # collinear, overlapping
    assert not segments_intersect((0, 0), (2, 0), (3, 0), (4, 0))  # collinear, apart
    assert not segments_intersect((0, 0), (2, 0), (0, 1), (2, 1))  # parallel
    assert not segments_intersect((0, 0), (2, 0), (3, -1), (3, 1))


def test_given_an_l_shaped_polyline_when_measuring_points_then_distances_are_by_hand():
    line = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    pts = np.array([[5.0, 2.0], [12.0, 5.0], [-3.0, -4.0], [15.0, 15.0], [10.0, 0.0]])
    np.testing.assert_allclose(distance_to_polyline(pts, line), [2.0, 2.0, 5.0, math.hypot(5, 5), 0.0])


def test_given_points_in_any_leading_shape_when_measured_then_the_shape_is_kept():
    line = np.array([[0.0, 0.0], [10.0, 0.0]])
    pts = np.zeros((3, 4, 2))
    pts[..., 1] = 3.0
    d = distance_to_polyline(pts, line)
    assert d.shape == (3, 4)
    np.testing.assert_allclose(d, 3.0)


def test_given_a_single_vertex_or_a_repeated_vertex_when_measured_then_they_act_as_points():
    np.testing.assert_allclose(distance_to_polyline(np.array([[3.0, 4.0]]), np.array([[0.0, 0.0]])), [5.0])
    repeated = np.array([[0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(distance_to_polyline(np.array([[3.0, 4.0]]), repeated), [5.0])


def test_given_an_empty_polyline_when_measured_then_one_clear_error_names_the_fix():
    with pytest.raises(GeometryError, match=r"at least one \(x, y\) vertex") as info:
        distance_to_polyline(np.zeros((1, 2)), np.zeros((0, 2)))
    assert isinstance(info.value, TakeoverError)
