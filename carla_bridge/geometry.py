"""Plane geometry shared by the expert, the scoring criteria, the monitor, the BEV and the clip renderer.

Convention (CARLA's world frame): x and y in metres, y pointing to the RIGHT of x (left-handed seen from
above, z up), yaw in radians, positive yaw turning from +x towards +y, i.e. to the right. A pose with yaw
psi has the unit forward vector u = (cos psi, sin psi) and the unit right vector n = (-sin psi, cos psi).
The ego frame is x forward, y right. Boxes are (centre x, centre y, yaw, half length, half width).

Functions are pure numpy and broadcast over their array arguments unless a docstring says otherwise,
so one call tests many boxes against many boxes over every forecast step at once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from carla_bridge.errors import TakeoverError

if TYPE_CHECKING:
    from carla_bridge.snapshot import Pose

MIN_PIECE_LENGTH2_M2 = 1e-12  # squared length below which a polyline piece counts as a point

Point = tuple[float, float]


class GeometryError(TakeoverError):
    """A geometry function was given input it cannot work with (e.g. an empty polyline)."""


# --------------------------------------------------------------------------------------------------
# Angles


def wrap_angle(a: ArrayLike) -> np.ndarray | float:
    """Angle(s) wrapped to [-pi, pi): ((a + pi) mod 2 pi) - pi. Broadcasts; a scalar gives a numpy scalar."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


def wrap_angle_pi_inclusive(a: float) -> float:
    """One angle wrapped to (-pi, pi]: a - 2 pi ceil((a - pi) / (2 pi)). Plain float.

    The town builder needs this interval: a heading reversed from 0 or a U-turn of exactly pi must stay
    +pi (the OpenDRIVE text of the built-in town, and left-vs-right turn classification, depend on it).
    """
    return a - 2.0 * math.pi * math.ceil((a - math.pi) / (2.0 * math.pi))


def heading(yaw: float | np.ndarray) -> np.ndarray:
    """Unit forward vector(s) u = (cos yaw, sin yaw): shape (2,) for a scalar yaw, else (..., 2)."""
    if np.ndim(yaw) == 0:
        # One float per tick in the criteria: math avoids numpy's per-call overhead.
        return np.array([math.cos(yaw), math.sin(yaw)])
    return np.stack([np.cos(yaw), np.sin(yaw)], axis=-1)


# --------------------------------------------------------------------------------------------------
# Frames


def to_local(dx: ArrayLike, dy: ArrayLike, yaw: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """World offset(s) (dx, dy) expressed in a frame heading `yaw`: (forward, right) = R(-yaw) (dx, dy).

    forward = cos(yaw) dx + sin(yaw) dy;  right = -sin(yaw) dx + cos(yaw) dy.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    return dx * c + dy * s, -dx * s + dy * c


def world_to_ego(xy: ArrayLike, ego_pose: Pose) -> np.ndarray:
    """World points (..., 2) to the ego frame (x forward, y right).

    With d = p - p_ego and heading psi: x_e = cos(psi) d_x + sin(psi) d_y, y_e = -sin(psi) d_x + cos(psi) d_y.
    """
    xy = np.asarray(xy, dtype=np.float64)
    forward, right = to_local(xy[..., 0] - ego_pose.x, xy[..., 1] - ego_pose.y, ego_pose.yaw)
    return np.stack([forward, right], axis=-1)


def ego_to_world(xy: ArrayLike, ego_pose: Pose) -> np.ndarray:
    """Ego-frame points (..., 2) to world: p = p_ego + R(psi) [x_e, y_e], R = [[c, -s], [s, c]]."""
    xy = np.asarray(xy, dtype=np.float64)
    c, s = np.cos(ego_pose.yaw), np.sin(ego_pose.yaw)
    x, y = xy[..., 0], xy[..., 1]
    return np.stack([ego_pose.x + c * x - s * y, ego_pose.y + s * x + c * y], axis=-1)


# --------------------------------------------------------------------------------------------------
# Oriented boxes

# (along, across) signs of the corners: front-left, front-right, rear-right, rear-left (a cycle).
_CORNER_SIGNS = np.array([[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]])


def box_corners(
    x: ArrayLike, y: ArrayLike, yaw: ArrayLike, half_length: ArrayLike, half_width: ArrayLike
) -> np.ndarray:
    """Corners (..., 4, 2) of oriented boxes in the order front-left, front-right, rear-right, rear-left.

    corner = c + (+-hl) u + (+-hw) n with u = (cos yaw, sin yaw) forward and n = (-sin yaw, cos yaw) right.
    Scalars give (4, 2); arguments broadcast against each other.
    """
    x, y, yaw, hl, hw = np.broadcast_arrays(*map(np.asarray, (x, y, yaw, half_length, half_width)))
    c, s = np.cos(yaw), np.sin(yaw)
    dl = _CORNER_SIGNS[:, 0] * hl[..., None]
    dw = _CORNER_SIGNS[:, 1] * hw[..., None]
    cx = x[..., None] + dl * c[..., None] - dw * s[..., None]
    cy = y[..., None] + dl * s[..., None] + dw * c[..., None]
    return np.stack([cx, cy], axis=-1)


def box_half_spans(
    half_length: ArrayLike, half_width: ArrayLike, relative_yaw: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Half extent of a box along and across a direction at `relative_yaw` to it.

    along = hl |cos d| + hw |sin d|;  across = hl |sin d| + hw |cos d|.
    """
    c, s = np.abs(np.cos(relative_yaw)), np.abs(np.sin(relative_yaw))
    return half_length * c + half_width * s, half_length * s + half_width * c


def boxes_overlap(
    ax: ArrayLike,
    ay: ArrayLike,
    ayaw: ArrayLike,
    a_hl: ArrayLike,
    a_hw: ArrayLike,
    bx: ArrayLike,
    by: ArrayLike,
    byaw: ArrayLike,
    b_hl: ArrayLike,
    b_hw: ArrayLike,
) -> np.ndarray:
    """True where oriented box A overlaps box B (separating axis theorem; touching counts as overlap).

    Two rectangles are disjoint iff one of the four edge normals separates them: for axis k,
        |(c_b - c_a) . k| > r_a(k) + r_b(k),   r(k) = hl |u . k| + hw |n . k|
    where u, n are a box's unit axes. On A's own axes r_a is just hl_a or hw_a, and the cross terms
    are |u_a . u_b| = |cos(dyaw)|, |u_a . n_b| = |sin(dyaw)|. All arguments broadcast against each other
    (e.g. ego (K, 1, T) against actors (1, N, T)); the result has the broadcast shape.
    """
    ca, sa = np.cos(ayaw), np.sin(ayaw)
    cb, sb = np.cos(byaw), np.sin(byaw)
    dx = np.asarray(bx) - ax
    dy = np.asarray(by) - ay
    cos_d = np.abs(ca * cb + sa * sb)
    sin_d = np.abs(sa * cb - ca * sb)
    # A's axes: ua = (ca, sa), na = (-sa, ca).
    sep = np.abs(dx * ca + dy * sa) > a_hl + b_hl * cos_d + b_hw * sin_d
    sep |= np.abs(-dx * sa + dy * ca) > a_hw + b_hl * sin_d + b_hw * cos_d
    # B's axes: ub = (cb, sb), nb = (-sb, cb).
    sep |= np.abs(dx * cb + dy * sb) > b_hl + a_hl * cos_d + a_hw * sin_d
    sep |= np.abs(-dx * sb + dy * cb) > b_hw + a_hl * sin_d + a_hw * cos_d
    return ~sep


def oriented_boxes_overlap(
    center: ArrayLike,
    yaw: float,
    half: ArrayLike,
    centers: ArrayLike,
    yaws: ArrayLike,
    halves: ArrayLike,
) -> np.ndarray:
    """Which of N boxes overlap box A: boxes_overlap in the one-against-many array layout.

    center (2,), yaw, half (2,) = (hl, hw) of A; centers (N, 2), yaws (N,), halves (N, 2) -> (N,) bool.
    """
    a_x, a_y = np.asarray(center, dtype=float)
    a_hl, a_hw = np.asarray(half, dtype=float)
    b = np.asarray(centers, dtype=float).reshape(-1, 2)
    b_half = np.asarray(halves, dtype=float).reshape(-1, 2)
    b_yaw = np.asarray(yaws, dtype=float).reshape(-1)
    hit = boxes_overlap(a_x, a_y, float(yaw), a_hl, a_hw, b[:, 0], b[:, 1], b_yaw, b_half[:, 0], b_half[:, 1])
    return np.asarray(hit, dtype=bool)


def boxes_may_overlap(
    center: np.ndarray, half: np.ndarray, centers: np.ndarray, halves: np.ndarray
) -> np.ndarray:
    """Cheap bounding-circle pre-test (N,): |c_b - c_a| <= |h_a| + |h_b| (necessary for any overlap)."""
    reach = float(np.hypot(half[0], half[1])) + np.hypot(halves[:, 0], halves[:, 1])
    d = centers - center[None, :]
    return np.einsum("ij,ij->i", d, d) <= reach * reach


def points_in_oriented_box(points: ArrayLike, center: ArrayLike, yaw: float, half: np.ndarray) -> np.ndarray:
    """(K, 2) points -> (K,) bool: |(p - c) . u| <= h_1 and |(p - c) . n| <= h_2 with u, n the box axes."""
    d = np.asarray(points, dtype=float).reshape(-1, 2) - np.asarray(center, dtype=float)[None, :]
    u = heading(float(yaw))
    n = np.array([-u[1], u[0]])
    return (np.abs(d @ u) <= half[0]) & (np.abs(d @ n) <= half[1])


# --------------------------------------------------------------------------------------------------
# Segments and polylines


def _cross(o: Point, a: Point, b: Point) -> float:
    """z of (a - o) x (b - o): its sign tells on which side of line o -> a the point b lies."""
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


def distance_to_polyline(points: ArrayLike, polyline: ArrayLike) -> np.ndarray:
    """Distance (...,) from points (..., 2) to the nearest piece of a polyline (M, 2), M >= 1:

        min_i | p - (a_i + clip((p - a_i) . d_i / |d_i|^2, 0, 1) d_i) |,   d_i = a_{i+1} - a_i

    (|d_i|^2 floored at MIN_PIECE_LENGTH2_M2 so a repeated vertex acts as a point); a single vertex gives
    the distance to that point. The minimum is taken on squared distances (sqrt is monotone).
    """
    points = np.asarray(points, dtype=float)
    polyline = np.asarray(polyline, dtype=float)
    if polyline.ndim != 2 or polyline.shape[1] != 2 or len(polyline) == 0:
        raise GeometryError(
            f"distance_to_polyline needs a polyline of shape (M >= 1, 2), got {polyline.shape}; "
            "pass at least one (x, y) vertex"
        )
    if len(polyline) == 1:
        return np.hypot(points[..., 0] - polyline[0, 0], points[..., 1] - polyline[0, 1])
    ax, ay = polyline[:-1, 0], polyline[:-1, 1]
    dx, dy = polyline[1:, 0] - ax, polyline[1:, 1] - ay
    length2 = np.maximum(dx * dx + dy * dy, MIN_PIECE_LENGTH2_M2)
    px = points[..., 0, None] - ax
    py = points[..., 1, None] - ay
    t = np.clip((px * dx + py * dy) / length2, 0.0, 1.0)
    ex = px - t * dx
    ey = py - t * dy
    return np.sqrt((ex * ex + ey * ey).min(axis=-1))
