"""Plane geometry of the expert: angle wrapping, oriented boxes and their overlap (separating axes).

Boxes are (centre x, centre y, yaw, half length, half width) in CARLA's frame (yaw in radians, +yaw
turns right). Every function broadcasts, so one call tests many boxes against many boxes over every
forecast step at once.
"""

from __future__ import annotations

import numpy as np


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Angle wrapped to [-pi, pi): ((a + pi) mod 2 pi) - pi."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


def box_corners(x, y, yaw, half_length, half_width) -> np.ndarray:
    """Corners (..., 4, 2) of oriented boxes, counter-clockwise in the x-right/y-up sense.

    corner = c + (+-hl) u + (+-hw) n with u = (cos yaw, sin yaw), n = (-sin yaw, cos yaw).
    """
    x, y, yaw, hl, hw = np.broadcast_arrays(*map(np.asarray, (x, y, yaw, half_length, half_width)))
    c, s = np.cos(yaw), np.sin(yaw)
    signs = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    dl = signs[:, 0] * hl[..., None]
    dw = signs[:, 1] * hw[..., None]
    cx = x[..., None] + dl * c[..., None] - dw * s[..., None]
    cy = y[..., None] + dl * s[..., None] + dw * c[..., None]
    return np.stack([cx, cy], axis=-1)


def boxes_overlap(ax, ay, ayaw, a_hl, a_hw, bx, by, byaw, b_hl, b_hw) -> np.ndarray:
    """True where oriented box A overlaps box B (separating axis theorem; touching counts as overlap).

    Two rectangles are disjoint iff one of the four edge normals separates them: for axis k,
        |(c_b - c_a) . k| > r_a(k) + r_b(k),   r(k) = hl |u . k| + hw |n . k|
    where u, n are a box's unit axes. On A's own axes r_a is just hl_a or hw_a. All arguments
    broadcast against each other (e.g. ego (K, 1, T) against actors (1, N, T)).
    """
    ca, sa = np.cos(ayaw), np.sin(ayaw)
    cb, sb = np.cos(byaw), np.sin(byaw)
    dx = np.asarray(bx) - ax
    dy = np.asarray(by) - ay
    # Dot products between the axes: ua.ub = cos(dyaw), ua.nb = -sin(dyaw) (in absolute value here).
    cos_d = np.abs(ca * cb + sa * sb)
    sin_d = np.abs(sa * cb - ca * sb)
    # A's axes: ua = (ca, sa), na = (-sa, ca).
    sep = np.abs(dx * ca + dy * sa) > a_hl + b_hl * cos_d + b_hw * sin_d
    sep |= np.abs(-dx * sa + dy * ca) > a_hw + b_hl * sin_d + b_hw * cos_d
    # B's axes: ub = (cb, sb), nb = (-sb, cb).
    sep |= np.abs(dx * cb + dy * sb) > b_hl + a_hl * cos_d + a_hw * sin_d
    sep |= np.abs(-dx * sb + dy * cb) > b_hw + a_hl * sin_d + a_hw * cos_d
    return ~sep


def to_local(dx: np.ndarray, dy: np.ndarray, yaw: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World offset (dx, dy) in a frame heading `yaw`: (forward, right) = R(-yaw) (dx, dy)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return dx * c + dy * s, -dx * s + dy * c


def box_half_spans(half_length, half_width, relative_yaw) -> tuple[np.ndarray, np.ndarray]:
    """Half extent of a box along and across a direction at `relative_yaw` to it.

    along = hl |cos d| + hw |sin d|;  across = hl |sin d| + hw |cos d|.
    """
    c, s = np.abs(np.cos(relative_yaw)), np.abs(np.sin(relative_yaw))
    return half_length * c + half_width * s, half_length * s + half_width * c
