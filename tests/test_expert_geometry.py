"""Oriented boxes and separating-axis overlap (experts/geometry.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experts.geometry import box_corners, box_half_spans, boxes_overlap, to_local, wrap_angle


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


def test_wrap_angle_range():
    a = wrap_angle(np.array([0.0, math.pi, -math.pi, 3 * math.pi, 7.0]))
    assert np.all(a >= -math.pi) and np.all(a < math.pi)
    assert float(wrap_angle(2 * math.pi + 0.1)) == pytest.approx(0.1)


def test_corners_of_axis_aligned_box():
    c = box_corners(1.0, 2.0, 0.0, 2.0, 1.0)
    assert c.shape == (4, 2)
    assert set(map(tuple, np.round(c, 9))) == {(3.0, 3.0), (-1.0, 3.0), (-1.0, 1.0), (3.0, 1.0)}


def test_touching_and_separated_axis_aligned():
    assert boxes_overlap(0, 0, 0, 1, 1, 2.0, 0, 0, 1, 1)  # touching counts
    assert not boxes_overlap(0, 0, 0, 1, 1, 2.01, 0, 0, 1, 1)


def test_rotated_box_diagonal_gap_is_detected():
    # given a unit square and a 45-degree unit square on its diagonal: along the diagonal the first
    # reaches sqrt(2) (its corner) and the second 1 (its edge), so they touch at centre distance 1 + sqrt(2)
    touch = 1.0 + math.sqrt(2.0)
    # when 5 cm farther apart they are separated (only the rotated box's axis separates them) ...
    far = (touch + 0.05) / math.sqrt(2.0)
    assert not boxes_overlap(0, 0, 0, 1, 1, far, far, math.pi / 4, 1, 1)
    # ... and when 5 cm closer they overlap
    near = (touch - 0.05) / math.sqrt(2.0)
    assert boxes_overlap(0, 0, 0, 1, 1, near, near, math.pi / 4, 1, 1)


def test_matches_polygon_reference_on_random_boxes():
    # given many random box pairs, when comparing with a corner-polygon SAT, then all agree
    rng = np.random.default_rng(0)
    n = 2000
    a = [
        rng.uniform(-3, 3, n),
        rng.uniform(-3, 3, n),
        rng.uniform(-4, 4, n),
        rng.uniform(0.2, 2.5, n),
        rng.uniform(0.2, 1.2, n),
    ]
    b = [
        rng.uniform(-3, 3, n),
        rng.uniform(-3, 3, n),
        rng.uniform(-4, 4, n),
        rng.uniform(0.2, 2.5, n),
        rng.uniform(0.2, 1.2, n),
    ]
    fast = boxes_overlap(*a, *b)
    ca, cb = box_corners(*a), box_corners(*b)
    ref = np.array([_polygon_overlap(ca[i], cb[i]) for i in range(n)])
    assert fast.shape == (n,)
    assert np.array_equal(fast, ref)
    assert 0.1 < ref.mean() < 0.9  # the sample exercises both outcomes


def test_broadcast_ego_candidates_against_actors_over_time():
    # given 3 ego forecasts x 5 steps and 4 actors x 5 steps, then the result is (3, 4, 5)
    ex = np.zeros((3, 1, 5))
    ax = np.arange(4.0)[None, :, None] * 10.0 + np.zeros((1, 4, 5))
    out = boxes_overlap(ex, 0.0, 0.0, 2.0, 1.0, ax, 0.0, 0.0, 2.0, 1.0)
    assert out.shape == (3, 4, 5)
    assert out[:, 0].all() and not out[:, 1:].any()


def test_local_frame_and_half_spans():
    f, r = to_local(np.array([0.0]), np.array([1.0]), math.pi / 2)
    assert float(f[0]) == pytest.approx(1.0) and float(r[0]) == pytest.approx(0.0, abs=1e-12)
    along, across = box_half_spans(2.0, 1.0, math.pi / 2)
    assert float(along) == pytest.approx(1.0) and float(across) == pytest.approx(2.0)
