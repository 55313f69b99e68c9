"""Plan-view geometry of the built-in town: the three OpenDRIVE primitives it uses and the two constructions
that produce them.

Everything is in the OpenDRIVE frame (x east, y north; CARLA world coordinates are (x, -y)), headings in
radians counter-clockwise from +x. Roads are polylines whose corners are rounded by circular arcs
(`fillet_path`); connecting roads inside junctions are cubic Bezier curves written as paramPoly3
(`connector_curve`), shaped to follow a circular arc so that a turn has no curvature spike. The numerical
tolerances live here because they decide the written bytes of the map.

`TownBuildError` is defined here, the lowest layer of the package, because these constructions are the
first to refuse parameters (a corner radius that does not fit a leg, a junction too small to turn in)
and every later stage raises it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from carla_bridge.errors import TakeoverError
from carla_bridge.geometry import wrap_angle_pi_inclusive

# Bezier handle ratio that makes a cubic match a circular arc of turn angle theta:
# handle = (4/3) tan(theta/4) / tan(theta/2) x tangent-leg length (0.5523 for 90 degrees).
ARC_HANDLE_RATIO_NUMERATOR = 4.0 / 3.0
PARALLEL_SIN_TOLERANCE = 1e-6  # |sin(heading change)| below this: headings parallel, straight connector
CONNECTOR_LENGTH_SUBINTERVALS = 16  # Gauss-Legendre quadrature: subintervals x nodes of the arc length
CONNECTOR_LENGTH_NODES = 16
CURVATURE_SAMPLES = 401  # samples of a connector's curvature when checking the minimum radius


class TownBuildError(TakeoverError):
    """The town or its routes cannot be generated from the given parameters."""


@dataclass(frozen=True)
class Pose2D:
    x: float
    y: float
    hdg: float  # rad

    def shifted_left(self, t: float) -> Pose2D:
        """Point at lateral offset t (positive left of the heading): p + t (-sin h, cos h)."""
        return Pose2D(self.x - t * math.sin(self.hdg), self.y + t * math.cos(self.hdg), self.hdg)

    def reversed(self) -> Pose2D:
        return Pose2D(self.x, self.y, wrap_angle_pi_inclusive(self.hdg + math.pi))


@dataclass(frozen=True)
class LineGeometry:
    start: Pose2D
    length_m: float

    def pose_at(self, s: float) -> Pose2D:
        """p(s) = p0 + s (cos h, sin h)."""
        h = self.start.hdg
        return Pose2D(self.start.x + s * math.cos(h), self.start.y + s * math.sin(h), h)


@dataclass(frozen=True)
class ArcGeometry:
    start: Pose2D
    length_m: float
    curvature_per_m: float  # positive turns left

    def pose_at(self, s: float) -> Pose2D:
        """p(s) = p0 + ((sin(h0 + k s) - sin h0) / k, (cos h0 - cos(h0 + k s)) / k), h(s) = h0 + k s."""
        k, h0 = self.curvature_per_m, self.start.hdg
        h = h0 + k * s
        return Pose2D(
            self.start.x + (math.sin(h) - math.sin(h0)) / k,
            self.start.y + (math.cos(h0) - math.cos(h)) / k,
            wrap_angle_pi_inclusive(h),
        )


@dataclass(frozen=True)
class CubicGeometry:
    """A cubic Bezier from `start` to `end`, written as OpenDRIVE paramPoly3 with normalised p.

    In the start frame (u along the start heading, v to its left) the control points are
    B0 = 0, B1 = (d0, 0), B2 = B3 - d1 (cos dh, sin dh), B3 = end; the polynomial
    u(p) = aU + bU p + cU p^2 + dU p^3 has aU = B0, bU = 3 (B1 - B0), cU = 3 (B0 - 2 B1 + B2),
    dU = -B0 + 3 B1 - 3 B2 + B3 (same for v).
    """

    start: Pose2D
    end: Pose2D
    handle_start_m: float
    handle_end_m: float

    @property
    def control_points_local(self) -> np.ndarray:
        c, s = math.cos(self.start.hdg), math.sin(self.start.hdg)
        dx, dy = self.end.x - self.start.x, self.end.y - self.start.y
        b3 = np.array([c * dx + s * dy, -s * dx + c * dy])
        dh = self.end.hdg - self.start.hdg
        b2 = b3 - self.handle_end_m * np.array([math.cos(dh), math.sin(dh)])
        return np.array([[0.0, 0.0], [self.handle_start_m, 0.0], b2, b3])

    @property
    def coefficients(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        b0, b1, b2, b3 = self.control_points_local
        return b0, 3.0 * (b1 - b0), 3.0 * (b0 - 2.0 * b1 + b2), -b0 + 3.0 * b1 - 3.0 * b2 + b3

    def _derivatives(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, b, c, d = self.coefficients
        p = p[:, None]
        return b + 2.0 * c * p + 3.0 * d * p**2, 2.0 * c + 6.0 * d * p

    @property
    def length_m(self) -> float:
        """Arc length L = integral_0^1 |B'(p)| dp by composite Gauss-Legendre quadrature."""
        nodes, weights = np.polynomial.legendre.leggauss(CONNECTOR_LENGTH_NODES)
        edges = np.linspace(0.0, 1.0, CONNECTOR_LENGTH_SUBINTERVALS + 1)
        half = 0.5 * (edges[1:] - edges[:-1])
        mid = 0.5 * (edges[1:] + edges[:-1])
        p = (mid[:, None] + half[:, None] * nodes[None, :]).ravel()
        w = (half[:, None] * weights[None, :]).ravel()
        d1, _ = self._derivatives(p)
        return float(np.sum(w * np.hypot(d1[:, 0], d1[:, 1])))

    def min_radius_m(self) -> float:
        """min over p of 1 / |kappa|, kappa = (u' v'' - v' u'') / |B'|^3."""
        d1, d2 = self._derivatives(np.linspace(0.0, 1.0, CURVATURE_SAMPLES))
        kappa = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / np.hypot(d1[:, 0], d1[:, 1]) ** 3
        peak = float(np.max(np.abs(kappa)))
        return math.inf if peak == 0.0 else 1.0 / peak


Geometry = LineGeometry | ArcGeometry | CubicGeometry


def fillet_path(points: Sequence[tuple[float, float]], radius_m: float) -> list[Geometry]:
    """Polyline with every inner vertex rounded by a circular arc of `radius_m`.

    At a vertex with turn angle theta the tangent legs are T = R tan(|theta| / 2): the line stops T
    before the vertex, the arc of length R |theta| and curvature sign(theta) / R starts there.
    """
    pts = [np.asarray(p, dtype=float) for p in points]
    geoms: list[Geometry] = []
    cursor = pts[0]
    for i in range(1, len(pts)):
        seg = pts[i] - cursor
        hdg = math.atan2(seg[1], seg[0])
        trim_end = 0.0
        arc: tuple[float, float] | None = None
        if i < len(pts) - 1:
            nxt = pts[i + 1] - pts[i]
            theta = wrap_angle_pi_inclusive(math.atan2(nxt[1], nxt[0]) - hdg)
            trim_end = radius_m * math.tan(abs(theta) / 2.0)
            arc = (radius_m * abs(theta), math.copysign(1.0 / radius_m, theta))
        line_len = float(np.hypot(*(pts[i] - cursor))) - trim_end
        if line_len < 0.0:
            raise TownBuildError(
                f"corner radius {radius_m} m does not fit the road leg of {line_len + trim_end:.1f} m: "
                "lower corner_radius_m or enlarge the blocks in conf/town.yaml"
            )
        start = Pose2D(float(cursor[0]), float(cursor[1]), hdg)
        line = LineGeometry(start, line_len)
        geoms.append(line)
        if arc is not None:
            arc_geom = ArcGeometry(line.pose_at(line_len), arc[0], arc[1])
            geoms.append(arc_geom)
            end = arc_geom.pose_at(arc[0])
            cursor = np.array([end.x, end.y])
    return geoms


def geometry_end(geom: Geometry) -> Pose2D:
    if isinstance(geom, CubicGeometry):
        return geom.end
    return geom.pose_at(geom.length_m)


def connector_curve(start: Pose2D, end: Pose2D) -> CubicGeometry:
    """Cubic from `start` to `end` approximating a circular arc where the tangent legs allow.

    Tangent legs a, b solve start + a u0 = end - b u1; the handles are r a and r b with
    r = (4/3) tan(theta/4) / tan(theta/2) (theta the heading change). Parallel headings (straight or
    lane-shifting connectors) use handles of a third of the chord.
    """
    u0 = np.array([math.cos(start.hdg), math.sin(start.hdg)])
    u1 = np.array([math.cos(end.hdg), math.sin(end.hdg)])
    delta = np.array([end.x - start.x, end.y - start.y])
    theta = wrap_angle_pi_inclusive(end.hdg - start.hdg)
    if abs(math.sin(theta)) < PARALLEL_SIN_TOLERANCE:
        third = float(np.hypot(*delta)) / 3.0
        return CubicGeometry(start, end, third, third)
    # [u0, u1] [a, b]^T = delta
    a, b = np.linalg.solve(np.column_stack([u0, u1]), delta)
    if a <= 0.0 or b <= 0.0:
        raise TownBuildError(
            f"junction connector from ({start.x:.1f}, {start.y:.1f}) to ({end.x:.1f}, {end.y:.1f}) bends "
            "backwards: enlarge junction_half_size_m in conf/town.yaml"
        )
    ratio = ARC_HANDLE_RATIO_NUMERATOR * math.tan(abs(theta) / 4.0) / math.tan(abs(theta) / 2.0)
    return CubicGeometry(start, end, float(a) * ratio, float(b) * ratio)
