"""Planar geometry for the criteria: oriented-box overlap (separating axes), segment crossing, boxes.

Pure numpy functions in CARLA's world frame (x, y in metres, yaw in radians, boxes as half extents).
"""

from __future__ import annotations

import math

import numpy as np


def heading(yaw: float | np.ndarray) -> np.ndarray:
    """Unit forward vector(s) f = (cos yaw, sin yaw); shape (2,) or (N, 2)."""
    if np.ndim(yaw) == 0:
        return np.array([math.cos(yaw), math.sin(yaw)])
    return np.stack([np.cos(yaw), np.sin(yaw)], axis=-1)


def oriented_boxes_overlap(
    center: np.ndarray,
    yaw: float,
    half: np.ndarray,
    centers: np.ndarray,
    yaws: np.ndarray,
    halves: np.ndarray,
) -> np.ndarray:
    """Which of N oriented rectangles overlap rectangle A (separating-axis theorem), vectorised.

    Rectangle A has centre c_a, unit axes u_a = (cos yaw, sin yaw), v_a = (-sin yaw, cos yaw) and half
    extents (h_a1, h_a2); likewise each B. Along an axis L the projection radius is
    r(L) = h_1 |u . L| + h_2 |v . L|. The rectangles are disjoint iff for some L in {u_a, v_a, u_b, v_b}
    |(c_b - c_a) . L| > r_a(L) + r_b(L). Touching (equality) counts as overlap.

    center (2,), half (2,) of A; centers (N, 2), yaws (N,), halves (N, 2) of the Bs -> (N,) bool.
    """
    centers = np.asarray(centers, dtype=float).reshape(-1, 2)
    if centers.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    u_a = heading(float(yaw))
    v_a = np.array([-u_a[1], u_a[0]])
    u_b = heading(np.asarray(yaws, dtype=float))  # (N, 2)
    v_b = np.stack([-u_b[:, 1], u_b[:, 0]], axis=1)
    d = centers - np.asarray(center, dtype=float)[None, :]
    halves = np.asarray(halves, dtype=float).reshape(-1, 2)

    separated = np.zeros(centers.shape[0], dtype=bool)
    for axis in (np.broadcast_to(u_a, u_b.shape), np.broadcast_to(v_a, u_b.shape), u_b, v_b):
        r_a = half[0] * np.abs(axis @ u_a) + half[1] * np.abs(axis @ v_a)
        r_b = halves[:, 0] * np.abs(np.sum(axis * u_b, axis=1)) + halves[:, 1] * np.abs(
            np.sum(axis * v_b, axis=1)
        )
        separated |= np.abs(np.sum(d * axis, axis=1)) > r_a + r_b
    return ~separated


def boxes_may_overlap(
    center: np.ndarray, half: np.ndarray, centers: np.ndarray, halves: np.ndarray
) -> np.ndarray:
    """Cheap bounding-circle pre-test: |c_b - c_a| <= |h_a| + |h_b| (necessary for any overlap)."""
    reach = float(np.hypot(half[0], half[1])) + np.hypot(halves[:, 0], halves[:, 1])
    d = centers - center[None, :]
    return np.einsum("ij,ij->i", d, d) <= reach * reach


def points_in_oriented_box(
    points: np.ndarray, center: np.ndarray, yaw: float, half: np.ndarray
) -> np.ndarray:
    """(K, 2) points -> (K,) bool: |(p - c) . u| <= h_1 and |(p - c) . v| <= h_2 with u, v the box axes."""
    d = np.asarray(points, dtype=float).reshape(-1, 2) - np.asarray(center, dtype=float)[None, :]
    u = heading(float(yaw))
    v = np.array([-u[1], u[0]])
    return (np.abs(d @ u) <= half[0]) & (np.abs(d @ v) <= half[1])


Point = tuple[float, float]


def _cross(o: Point, a: Point, b: Point) -> float:
    """z of (a - o) x (b - o): > 0 when o -> a -> b turns counter-clockwise."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, q: Point, r: Point) -> bool:
    """Collinear point r lies within the bounding box of segment pq."""
    return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether segments p1p2 and q1q2 share a point (orientation test, touching and collinear included).

    They cross iff q1, q2 lie on opposite sides of line p1p2 and p1, p2 on opposite sides of q1q2:
    sign(cross(p1, p2, q1)) != sign(cross(p1, p2, q2)) and sign(cross(q1, q2, p1)) != sign(cross(q1, q2, p2)).
    Plain floats: called a few times per tick, where numpy's per-call overhead would dominate.
    """
    d1 = _cross(q1, q2, p1)
    d2 = _cross(q1, q2, p2)
    d3 = _cross(p1, p2, q1)
    d4 = _cross(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        (d1 == 0 and _on_segment(q1, q2, p1))
        or (d2 == 0 and _on_segment(q1, q2, p2))
        or (d3 == 0 and _on_segment(p1, p2, q1))
        or (d4 == 0 and _on_segment(p1, p2, q2))
    )


def wrap_angle(angle: float | np.ndarray) -> float | np.ndarray:
    """Angle folded into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi
