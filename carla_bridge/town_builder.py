"""Generator of the built-in OpenDRIVE town `Takeover01` and of its built-in Bench2Drive route files.

Run `python -m carla_bridge.town_builder` to (re)write `assets/maps/Takeover01.xodr`,
`assets/routes/builtin_train.xml` and `assets/routes/builtin_eval.xml`; `--check` only verifies that the
committed files equal a fresh generation; `--describe` prints the layout.

Layout (OpenDRIVE frame: x east, y north; CARLA world coordinates are (x, -y)). J = junction id,
numbers on edges = road ids, `==` two lanes per direction, `>>>` one-way three lanes eastbound,
`--`/`|` one lane per direction, corners are 30 m arcs inside the corner roads::

    (0,400)+------10-------J500>>>>>>>4>>>>>>J600-------11-------+(690,400)
           |                 |                 |                 |
          10                 7                 9                11
           |                 |                 |                 |
    (0,200)J100=====1=======J200=====2=======J300======3=======J400
           |                 |                 |                 |
          13                 6                 8                12
           |                 |                 |                 |
      (0,0)+------13-------J700-------5-------J800-------12-------+(690,0)

    J100 unsignalised T      J200 signalised 4-way      J300 unsignalised 4-way, stop signs N/S
    J400 signalised T        J500, J600, J800 unsignalised T      J700 signalised T

The XML is written by this module (no third-party writer) so that sidewalks inside junctions, signal
validities and byte-exact determinism are under our control.
"""

from __future__ import annotations

import argparse
import math
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import carla
import numpy as np
from omegaconf.errors import OmegaConfBaseException

from carla_bridge.config import load_config
from carla_bridge.errors import TakeoverError
from carla_bridge.geometry import wrap_angle_pi_inclusive

TOWN_NAME = "Takeover01"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUILTIN_XODR_PATH = ASSETS_DIR / "maps" / f"{TOWN_NAME}.xodr"
BUILTIN_TRAIN_ROUTES_PATH = ASSETS_DIR / "routes" / "builtin_train.xml"
BUILTIN_EVAL_ROUTES_PATH = ASSETS_DIR / "routes" / "builtin_eval.xml"

# Header date of the layout revision: fixed so that generation is byte-deterministic. Bump on change.
LAYOUT_REVISION_DATE = "2025-01-01T00:00:00"
XODR_DECIMALS = 9  # rounding of every number written to the xodr (m, rad): 1 nm, far below carla's needs
ROUTE_DECIMALS = 1  # Bench2Drive route files use 0.1 m / 0.1 deg
# Bezier handle ratio that makes a cubic match a circular arc of turn angle theta:
# handle = (4/3) tan(theta/4) / tan(theta/2) x tangent-leg length (0.5523 for 90 degrees).
ARC_HANDLE_RATIO_NUMERATOR = 4.0 / 3.0
PARALLEL_SIN_TOLERANCE = 1e-6  # |sin(heading change)| below this: headings parallel, straight connector
CONNECTOR_LENGTH_SUBINTERVALS = 16  # Gauss-Legendre quadrature: subintervals x nodes of the arc length
CONNECTOR_LENGTH_NODES = 16
CURVATURE_SAMPLES = 401  # samples of a connector's curvature when checking the minimum radius


class TownBuildError(TakeoverError):
    """The town or its routes cannot be generated from the given parameters."""


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class TownConfig:
    """Parameters of Takeover01 (conf/town.yaml). Changing them changes the committed assets."""

    town_name: str = TOWN_NAME
    lane_width_m: float = 3.5
    sidewalk_width_m: float = 3.0
    block_dx_m: float = 230.0  # distance between junction centres along x
    block_dy_m: float = 200.0  # distance between junction centres along y
    junction_half_size_m: float = 16.0  # junction centre to the end of each arm road
    corner_radius_m: float = 30.0  # reference-line radius of the corners of the outer ring
    urban_speed_kmh: float = 50.0
    oneway_speed_kmh: float = 70.0
    speed_sign_setback_m: float = 5.0  # speed-limit sign distance after a road's entry
    junction_signal_setback_m: float = 0.5  # traffic light / stop sign distance before the junction entry
    signal_lateral_clearance_m: float = 1.0  # sign post distance beyond the outermost driving lane
    traffic_light_height_m: float = 5.0
    sign_height_m: float = 2.2
    geo_lat0_deg: float = 42.0
    geo_lon0_deg: float = 2.0
    keypoint_spacing_m: float = 2.0  # Bench2Drive keypoint spacing along the lane centre
    min_route_length_m: float = 150.0
    max_route_length_m: float = 300.0
    min_trigger_lead_m: float = 30.0  # route start to trigger point
    max_trigger_lead_m: float = 50.0
    turn_threshold_deg: float = 30.0  # |heading change| over a junction above which a move is a turn


# --------------------------------------------------------------------------------------------------
# Plane geometry (OpenDRIVE frame, headings in radians counter-clockwise from +x)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Roads, lanes, signals
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoadMark:
    type: str  # OpenDRIVE roadMark type: none, solid, broken, "solid solid", curb
    color: str = "standard"
    lane_change: str = "none"  # none, both, increase, decrease


NO_MARK = RoadMark("none")


@dataclass(frozen=True)
class RoadKind:
    """Cross-section of a road: driving lanes per side, sidewalks, centre-line marking."""

    name: str
    left_lanes: int  # driving lanes travelling against the reference line (ids 1..n)
    right_lanes: int  # driving lanes travelling along the reference line (ids -1..-n)
    centre_mark: RoadMark
    sidewalks: bool = True
    centred: bool = True  # laneOffset keeps the carriageway centred on the reference line


TWO_WAY_1X1 = RoadKind("two-way 1+1", 1, 1, RoadMark("broken", "yellow", "both"))
TWO_WAY_2X2 = RoadKind("two-way 2+2", 2, 2, RoadMark("solid solid", "yellow", "none"))
ONE_WAY_3 = RoadKind("one-way 3", 0, 3, RoadMark("solid", "white", "none"))
SAME_DIRECTION_MARK = RoadMark("broken", "white", "both")
EDGE_MARK = RoadMark("solid", "white", "none")


@dataclass(frozen=True)
class RoadLink:
    element_type: Literal["road", "junction"]
    element_id: int
    contact_point: Literal["start", "end"] | None = None


@dataclass(frozen=True)
class Signal:
    id: int
    name: str
    s: float
    t: float
    orientation: Literal["+", "-"]
    dynamic: bool
    type: str  # 1000001 traffic light, 206 stop, 274 maximum speed (CARLA's landmark types)
    value: float
    unit: str
    height_m: float
    valid_lanes: tuple[int, int]  # (fromLane, toLane), fromLane <= toLane


@dataclass
class Road:
    id: int
    name: str
    kind: RoadKind
    geometries: list[Geometry]
    speed_kmh: float
    lane_width_m: float
    sidewalk_width_m: float
    junction_id: int = -1
    predecessor: RoadLink | None = None
    successor: RoadLink | None = None
    # connecting roads only: lane id -> (predecessor lane id, successor lane id)
    lane_links: dict[int, tuple[int, int]] = field(default_factory=dict)
    connector_sidewalk: bool = False  # connecting roads only: sidewalk lane -2 right of lane -1
    signals: list[Signal] = field(default_factory=list)

    @property
    def length_m(self) -> float:
        return float(sum(g.length_m for g in self.geometries))

    @property
    def is_connector(self) -> bool:
        return self.junction_id >= 0

    @property
    def lane_offset_m(self) -> float:
        """Lateral position of the centre lane that centres the driving lanes on the reference line:
        offset = (n_right - n_left) w / 2."""
        if self.is_connector or not self.kind.centred:
            return 0.0
        return (self.kind.right_lanes - self.kind.left_lanes) * self.lane_width_m / 2.0

    def start_pose(self) -> Pose2D:
        g = self.geometries[0]
        return g.start

    def end_pose(self) -> Pose2D:
        return geometry_end(self.geometries[-1])

    def right_edge_t(self) -> float:
        """t of the outer border of the outermost right driving lane."""
        return self.lane_offset_m - self.kind.right_lanes * self.lane_width_m

    def left_edge_t(self) -> float:
        return self.lane_offset_m + self.kind.left_lanes * self.lane_width_m


Direction = Literal["N", "E", "S", "W"]
DIRECTION_HEADING: dict[str, float] = {"E": 0.0, "N": math.pi / 2.0, "W": math.pi, "S": -math.pi / 2.0}
Control = Literal["signal", "stop", "priority"]
Movement = Literal["straight", "left", "right"]


@dataclass
class Arm:
    """One road end at a junction."""

    road: Road
    contact: Literal["start", "end"]
    direction: Direction  # compass direction of the arm seen from the junction centre

    @property
    def incoming_lanes(self) -> list[int]:
        """Lanes driving into the junction, innermost (next to the centre line) first."""
        if self.contact == "end":
            return [-k for k in range(1, self.road.kind.right_lanes + 1)]
        return list(range(1, self.road.kind.left_lanes + 1))

    @property
    def outgoing_lanes(self) -> list[int]:
        if self.contact == "start":
            return [-k for k in range(1, self.road.kind.right_lanes + 1)]
        return list(range(1, self.road.kind.left_lanes + 1))

    def sidewalk_lane(self, travel: Literal["in", "out"]) -> int:
        """Sidewalk on the driver's right of the incoming / outgoing lanes."""
        along_reference = (self.contact == "end") == (travel == "in")
        if along_reference:
            return -(self.road.kind.right_lanes + 1)
        return self.road.kind.left_lanes + 1

    def lane_border_pose(self, lane: int) -> Pose2D:
        """Driver's-left border of `lane` at the junction, headed in the lane's travel direction: the
        reference line of every connecting road that starts or ends on that lane."""
        w, off = self.road.lane_width_m, self.road.lane_offset_m
        pose = self.road.end_pose() if self.contact == "end" else self.road.start_pose()
        k = abs(lane)
        if lane < 0:
            return pose.shifted_left(off - (k - 1) * w)
        return pose.shifted_left(off + (k - 1) * w).reversed()


def movement_between(arm_in: Arm, arm_out: Arm) -> Movement | None:
    """Turn from an incoming arm to an outgoing arm; None for a U-turn.

    The travel heading entering is the arm's direction + pi; relative = wrap(out direction - that).
    """
    heading_in = DIRECTION_HEADING[arm_in.direction] + math.pi
    rel = wrap_angle_pi_inclusive(DIRECTION_HEADING[arm_out.direction] - heading_in)
    if abs(rel) < math.pi / 4.0:
        return "straight"
    if abs(abs(rel) - math.pi / 2.0) < math.pi / 4.0:
        return "left" if rel > 0.0 else "right"
    return None


def lane_pairs(movement: Movement, lanes_in: list[int], lanes_out: list[int]) -> list[tuple[int, int]]:
    """Lane-to-lane connections of a movement (lane lists innermost first).

    Left turns go innermost to innermost, right turns outermost to outermost; straight pairs lanes
    by rank from the inside, the extra lanes of the wider side merging into / splitting from the
    outermost lane of the narrower side, so every incoming lane leaves and every outgoing lane is fed.
    """
    if movement == "left":
        return [(lanes_in[0], lanes_out[0])]
    if movement == "right":
        return [(lanes_in[-1], lanes_out[-1])]
    n = max(len(lanes_in), len(lanes_out))
    return [(lanes_in[min(i, len(lanes_in) - 1)], lanes_out[min(i, len(lanes_out) - 1)]) for i in range(n)]


@dataclass(frozen=True)
class Connection:
    id: int
    incoming_road: int
    connecting_road: int
    lane_links: tuple[tuple[int, int], ...]  # (incoming lane, connecting-road lane)
    movement: Movement


@dataclass
class Junction:
    id: int
    name: str
    centre: tuple[float, float]
    control: Control
    stop_arms: tuple[Direction, ...] = ()
    arms: list[Arm] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    controllers: list[tuple[int, int]] = field(default_factory=list)  # (controller id, signal id)
    signal_ids: list[int] = field(default_factory=list)  # traffic lights / stop signs of its approaches

    @property
    def kind(self) -> str:
        return f"{'4-way' if len(self.arms) == 4 else 'T'} ({self.control})"


@dataclass
class Town:
    name: str
    roads: list[Road]
    junctions: list[Junction]
    config: TownConfig

    def road(self, road_id: int) -> Road:
        for r in self.roads:
            if r.id == road_id:
                return r
        raise KeyError(road_id)

    def junction(self, junction_id: int) -> Junction:
        for j in self.junctions:
            if j.id == junction_id:
                return j
        raise KeyError(junction_id)


# --------------------------------------------------------------------------------------------------
# The layout of Takeover01 (grid units: column x block_dx, row x block_dy)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JunctionSite:
    id: int
    name: str
    col: int
    row: int
    control: Control
    stop_arms: tuple[Direction, ...] = ()  # approaches with a stop sign (control "stop")


@dataclass(frozen=True)
class RoadSite:
    id: int
    name: str
    kind: RoadKind
    start: tuple[int, Direction]  # (junction id, arm direction) the reference line leaves
    end: tuple[int, Direction]  # (junction id, arm direction) the reference line reaches
    corners: tuple[tuple[int, int], ...] = ()  # grid corners rounded by corner_radius_m
    speed: Literal["urban", "oneway"] = "urban"


JUNCTION_SITES: tuple[JunctionSite, ...] = (
    JunctionSite(100, "T west (unsignalised)", 0, 1, "priority"),
    JunctionSite(200, "crossing west (signalised)", 1, 1, "signal"),
    JunctionSite(300, "crossing east (stop signs)", 2, 1, "stop", stop_arms=("N", "S")),
    JunctionSite(400, "T east (signalised)", 3, 1, "signal"),
    JunctionSite(500, "T north-west (unsignalised)", 1, 2, "priority"),
    JunctionSite(600, "T north-east (unsignalised)", 2, 2, "priority"),
    JunctionSite(700, "T south-west (signalised)", 1, 0, "signal"),
    JunctionSite(800, "T south-east (unsignalised)", 2, 0, "priority"),
)

ROAD_SITES: tuple[RoadSite, ...] = (
    RoadSite(1, "avenue west", TWO_WAY_2X2, (100, "E"), (200, "W")),
    RoadSite(2, "avenue centre", TWO_WAY_2X2, (200, "E"), (300, "W")),
    RoadSite(3, "avenue east", TWO_WAY_2X2, (300, "E"), (400, "W")),
    RoadSite(4, "one-way boulevard", ONE_WAY_3, (500, "E"), (600, "W"), speed="oneway"),
    RoadSite(5, "south street", TWO_WAY_1X1, (700, "E"), (800, "W")),
    RoadSite(6, "west street south", TWO_WAY_1X1, (700, "N"), (200, "S")),
    RoadSite(7, "west street north", TWO_WAY_1X1, (200, "N"), (500, "S")),
    RoadSite(8, "east street south", TWO_WAY_1X1, (800, "N"), (300, "S")),
    RoadSite(9, "east street north", TWO_WAY_1X1, (300, "N"), (600, "S")),
    RoadSite(10, "ring north-west", TWO_WAY_1X1, (100, "N"), (500, "W"), corners=((0, 2),)),
    RoadSite(11, "ring north-east", TWO_WAY_1X1, (600, "E"), (400, "N"), corners=((3, 2),)),
    RoadSite(12, "ring south-east", TWO_WAY_1X1, (400, "S"), (800, "E"), corners=((3, 0),)),
    RoadSite(13, "ring south-west", TWO_WAY_1X1, (700, "W"), (100, "S"), corners=((0, 0),)),
)

SIGNAL_ID_BASE = 5000
CONTROLLER_ID_BASE = 6000
TRAFFIC_LIGHT_TYPE = "1000001"
STOP_SIGN_TYPE = "206"
SPEED_LIMIT_TYPE = "274"


def build_town(cfg: TownConfig) -> Town:
    """The road network of Takeover01: arm roads, junctions with connecting roads, signals."""
    sites = sorted(JUNCTION_SITES, key=lambda j: j.id)
    centre = {s.id: (s.col * cfg.block_dx_m, s.row * cfg.block_dy_m) for s in sites}
    junctions = {s.id: Junction(s.id, s.name, centre[s.id], s.control, s.stop_arms) for s in sites}

    def arm_point(jid: int, direction: Direction) -> tuple[float, float]:
        cx, cy = centre[jid]
        h = DIRECTION_HEADING[direction]
        r = cfg.junction_half_size_m
        return (cx + r * round(math.cos(h)), cy + r * round(math.sin(h)))

    roads: list[Road] = []
    for site in ROAD_SITES:
        pts = [arm_point(*site.start)]
        pts += [(c * cfg.block_dx_m, r * cfg.block_dy_m) for c, r in site.corners]
        pts.append(arm_point(*site.end))
        speed = cfg.urban_speed_kmh if site.speed == "urban" else cfg.oneway_speed_kmh
        road = Road(
            site.id,
            site.name,
            site.kind,
            fillet_path(pts, cfg.corner_radius_m),
            speed,
            cfg.lane_width_m,
            cfg.sidewalk_width_m,
            predecessor=RoadLink("junction", site.start[0]),
            successor=RoadLink("junction", site.end[0]),
        )
        roads.append(road)
        junctions[site.start[0]].arms.append(Arm(road, "start", site.start[1]))
        junctions[site.end[0]].arms.append(Arm(road, "end", site.end[1]))

    for junction in junctions.values():
        junction.arms.sort(key=lambda a: "NESW".index(a.direction))
        roads += _build_connectors(junction, cfg)

    ids = iter(range(SIGNAL_ID_BASE, SIGNAL_ID_BASE + 10_000))
    controller_ids = iter(range(CONTROLLER_ID_BASE, CONTROLLER_ID_BASE + 10_000))
    for junction in junctions.values():
        _add_junction_signals(junction, cfg, ids, controller_ids)
    for road in roads:
        if not road.is_connector:
            _add_speed_signs(road, cfg, ids)
    town = Town(cfg.town_name, roads, list(junctions.values()), cfg)
    check_town(town)
    return town


def _build_connectors(junction: Junction, cfg: TownConfig) -> list[Road]:
    """One connecting road per lane pair of every legal movement, with a corner sidewalk where the
    connector runs along the junction's kerb (right turns, and straight moves with no road on the right)."""
    connectors: list[Road] = []
    directions = {a.direction for a in junction.arms}
    for arm_in in junction.arms:
        if not arm_in.incoming_lanes:
            continue
        right_of_in = "NESW"[("NESW".index(arm_in.direction) + 3) % 4]  # arm on the right when entering
        for arm_out in junction.arms:
            movement = None if arm_out is arm_in else movement_between(arm_in, arm_out)
            if movement is None or not arm_out.outgoing_lanes:
                continue
            pairs = lane_pairs(movement, arm_in.incoming_lanes, arm_out.outgoing_lanes)
            for lane_in, lane_out in pairs:
                outermost = lane_in == arm_in.incoming_lanes[-1] and lane_out == arm_out.outgoing_lanes[-1]
                along_kerb = movement == "right" or (movement == "straight" and right_of_in not in directions)
                sidewalk = (
                    outermost and along_kerb and arm_in.road.kind.sidewalks and arm_out.road.kind.sidewalks
                )
                curve = connector_curve(arm_in.lane_border_pose(lane_in), arm_out.lane_border_pose(lane_out))
                needed = cfg.lane_width_m + (cfg.sidewalk_width_m if sidewalk else 0.0)
                # the connector's lanes lie right of its reference line: on right turns that is the inside
                if movement == "right" and curve.min_radius_m() <= needed:
                    raise TownBuildError(
                        f"junction {junction.id}: a right turn's radius {curve.min_radius_m():.1f} m is "
                        f"below its lane and sidewalk width {needed:.1f} m: enlarge junction_half_size_m"
                    )
                road_id = junction.id + len(connectors) + 1
                if road_id >= junction.id + 100:
                    raise TownBuildError(f"junction {junction.id} needs more than 99 connecting roads")
                links = {-1: (lane_in, lane_out)}
                lane_links = [(lane_in, -1)]
                if sidewalk:
                    links[-2] = (arm_in.sidewalk_lane("in"), arm_out.sidewalk_lane("out"))
                    lane_links.append((arm_in.sidewalk_lane("in"), -2))
                connectors.append(
                    Road(
                        road_id,
                        f"J{junction.id} {movement} {arm_in.direction} to {arm_out.direction}, "
                        f"lane {lane_in} to {lane_out}",
                        RoadKind("connector", 0, 1, NO_MARK, sidewalks=sidewalk, centred=False),
                        [curve],
                        min(arm_in.road.speed_kmh, arm_out.road.speed_kmh),
                        cfg.lane_width_m,
                        cfg.sidewalk_width_m,
                        junction_id=junction.id,
                        predecessor=RoadLink("road", arm_in.road.id, arm_in.contact),
                        successor=RoadLink("road", arm_out.road.id, arm_out.contact),
                        lane_links=links,
                        connector_sidewalk=sidewalk,
                    )
                )
                junction.connections.append(
                    Connection(
                        len(junction.connections), arm_in.road.id, road_id, tuple(lane_links), movement
                    )
                )
    return connectors


def _approach_signal_pose(
    arm: Arm, cfg: TownConfig
) -> tuple[float, float, Literal["+", "-"], tuple[int, int]]:
    """(s, t, orientation, validity) of a sign at the junction entry of an arm's incoming lanes."""
    road = arm.road
    lanes = arm.incoming_lanes
    if arm.contact == "end":
        s = road.length_m - cfg.junction_signal_setback_m
        t = road.right_edge_t() - cfg.signal_lateral_clearance_m
        return s, t, "+", (min(lanes), max(lanes))
    s = cfg.junction_signal_setback_m
    t = road.left_edge_t() + cfg.signal_lateral_clearance_m
    return s, t, "-", (min(lanes), max(lanes))


def _add_junction_signals(
    junction: Junction, cfg: TownConfig, ids: Iterator[int], controller_ids: Iterator[int]
) -> None:
    """Traffic lights on every approach of signalised junctions (one controller each, cycled in arm
    order as CARLA's towns do), stop signs on the `stop_arms` approaches of stop junctions."""
    if junction.control == "priority":
        return
    for arm in junction.arms:
        if not arm.incoming_lanes:
            continue
        if junction.control == "stop" and arm.direction not in junction.stop_arms:
            continue
        s, t, orientation, validity = _approach_signal_pose(arm, cfg)
        light = junction.control == "signal"
        signal = Signal(
            next(ids),
            "Signal_3Light_Post01" if light else "Sign_Stop",
            s,
            t,
            orientation,
            light,
            TRAFFIC_LIGHT_TYPE if light else STOP_SIGN_TYPE,
            -1.0,
            "",
            cfg.traffic_light_height_m if light else cfg.sign_height_m,
            validity,
        )
        arm.road.signals.append(signal)
        junction.signal_ids.append(signal.id)
        if light:
            junction.controllers.append((next(controller_ids), signal.id))


def _add_speed_signs(road: Road, cfg: TownConfig, ids: Iterator[int]) -> None:
    """A maximum-speed sign (value in km/h) after the entry of each travel direction of a road."""
    n_right, n_left = road.kind.right_lanes, road.kind.left_lanes
    if n_right:
        road.signals.append(
            Signal(
                next(ids),
                f"Speed_{road.speed_kmh:g}",
                cfg.speed_sign_setback_m,
                road.right_edge_t() - cfg.signal_lateral_clearance_m,
                "+",
                False,
                SPEED_LIMIT_TYPE,
                road.speed_kmh,
                "km/h",
                cfg.sign_height_m,
                (-n_right, -1),
            )
        )
    if n_left:
        road.signals.append(
            Signal(
                next(ids),
                f"Speed_{road.speed_kmh:g}",
                road.length_m - cfg.speed_sign_setback_m,
                road.left_edge_t() + cfg.signal_lateral_clearance_m,
                "-",
                False,
                SPEED_LIMIT_TYPE,
                road.speed_kmh,
                "km/h",
                cfg.sign_height_m,
                (1, n_left),
            )
        )


def check_town(town: Town) -> None:
    """Structural invariants: unique ids, every incoming lane leaves its junction, every outgoing lane
    is fed, and the road network is strongly connected over lane-to-lane links."""
    ids = [r.id for r in town.roads]
    if len(ids) != len(set(ids)):
        raise TownBuildError("duplicate road ids in the town layout")
    for junction in town.junctions:
        for arm in junction.arms:
            left = {c.lane_links[0][0] for c in junction.connections if c.incoming_road == arm.road.id}
            fed = {
                town.road(c.connecting_road).lane_links[-1][1]
                for c in junction.connections
                if town.road(c.connecting_road).successor == RoadLink("road", arm.road.id, arm.contact)
            }
            if set(arm.incoming_lanes) - left or set(arm.outgoing_lanes) - fed:
                raise TownBuildError(
                    f"junction {junction.id}, road {arm.road.id}: lanes {sorted(set(arm.incoming_lanes) - left)} "
                    f"have no exit and {sorted(set(arm.outgoing_lanes) - fed)} are never entered"
                )
    graph = lane_graph(town)
    if not _strongly_connected(graph):
        raise TownBuildError("the driving-lane graph of the town is not strongly connected")


def lane_graph(town: Town) -> dict[tuple[int, int], set[tuple[int, int]]]:
    """Directed graph of driving lanes (road id, lane id) -> successors, from the junction connections."""
    graph: dict[tuple[int, int], set[tuple[int, int]]] = {}
    for road in town.roads:
        if road.is_connector:
            graph.setdefault((road.id, -1), set())
        else:
            for lane in [-k for k in range(1, road.kind.right_lanes + 1)]:
                graph.setdefault((road.id, lane), set())
            for lane in range(1, road.kind.left_lanes + 1):
                graph.setdefault((road.id, lane), set())
    for road in town.roads:
        if not road.is_connector:
            continue
        pred, succ = road.lane_links[-1]
        assert road.predecessor is not None and road.successor is not None
        graph[(road.predecessor.element_id, pred)].add((road.id, -1))
        graph[(road.id, -1)].add((road.successor.element_id, succ))
    return graph


def _strongly_connected(graph: dict[tuple[int, int], set[tuple[int, int]]]) -> bool:
    """Every node reaches every other: one DFS on the graph and one on its transpose from any node."""
    nodes = list(graph)
    if not nodes:
        return False
    reverse: dict[tuple[int, int], set[tuple[int, int]]] = {n: set() for n in nodes}
    for n, succs in graph.items():
        for m in succs:
            reverse[m].add(n)

    def reach(g: dict[tuple[int, int], set[tuple[int, int]]]) -> int:
        seen, stack = {nodes[0]}, [nodes[0]]
        while stack:
            for m in g[stack.pop()]:
                if m not in seen:
                    seen.add(m)
                    stack.append(m)
        return len(seen)

    return reach(graph) == len(nodes) and reach(reverse) == len(nodes)


# --------------------------------------------------------------------------------------------------
# OpenDRIVE writer
# --------------------------------------------------------------------------------------------------


def _num(v: float) -> str:
    """Fixed-decimal text of a number, trailing zeros stripped, no negative zero: deterministic bytes."""
    text = f"{round(v, XODR_DECIMALS) + 0.0:.{XODR_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _sub(parent: ET.Element, tag: str, **attrs: str | float | int) -> ET.Element:
    return ET.SubElement(
        parent, tag, {k: (_num(v) if isinstance(v, float) else str(v)) for k, v in attrs.items()}
    )


def _write_geometry(plan: ET.Element, s: float, geom: Geometry) -> None:
    start = geom.start
    el = _sub(plan, "geometry", s=s, x=start.x, y=start.y, hdg=start.hdg, length=geom.length_m)
    if isinstance(geom, LineGeometry):
        _sub(el, "line")
    elif isinstance(geom, ArcGeometry):
        _sub(el, "arc", curvature=geom.curvature_per_m)
    else:
        a, b, c, d = geom.coefficients
        _sub(
            el,
            "paramPoly3",
            aU=float(a[0]),
            bU=float(b[0]),
            cU=float(c[0]),
            dU=float(d[0]),
            aV=float(a[1]),
            bV=float(b[1]),
            cV=float(c[1]),
            dV=float(d[1]),
            pRange="normalized",
        )


def _write_lane(
    parent: ET.Element,
    lane_id: int,
    lane_type: str,
    width: float | None,
    mark: RoadMark,
    link: tuple[int, int] | None = None,
) -> None:
    """One <lane>; `width` None for the centre lane, which has none in OpenDRIVE."""
    lane = _sub(parent, "lane", id=lane_id, type=lane_type, level="false")
    if link is not None:
        link_el = _sub(lane, "link")
        _sub(link_el, "predecessor", id=link[0])
        _sub(link_el, "successor", id=link[1])
    if width is not None:
        _sub(lane, "width", sOffset=0.0, a=width, b=0.0, c=0.0, d=0.0)
    _sub(
        lane,
        "roadMark",
        sOffset=0.0,
        type=mark.type,
        material="standard",
        color=mark.color,
        width=0.15 if mark.type != "none" else 0.0,
        laneChange=mark.lane_change,
    )


def _write_lanes(road_el: ET.Element, road: Road) -> None:
    lanes = _sub(road_el, "lanes")
    _sub(lanes, "laneOffset", s=0.0, a=road.lane_offset_m, b=0.0, c=0.0, d=0.0)
    section = _sub(lanes, "laneSection", s=0.0)
    w, sw = road.lane_width_m, road.sidewalk_width_m
    kind = road.kind
    if kind.left_lanes or (kind.sidewalks and not road.is_connector):
        left = _sub(section, "left")
        if kind.sidewalks and not road.is_connector:
            _write_lane(left, kind.left_lanes + 1, "sidewalk", sw, NO_MARK)
        for k in range(kind.left_lanes, 0, -1):
            _write_lane(left, k, "driving", w, EDGE_MARK if k == kind.left_lanes else SAME_DIRECTION_MARK)
    center = _sub(section, "center")
    _write_lane(center, 0, "none", None, kind.centre_mark)
    right = _sub(section, "right")
    for k in range(1, kind.right_lanes + 1):
        mark = NO_MARK if road.is_connector else EDGE_MARK if k == kind.right_lanes else SAME_DIRECTION_MARK
        _write_lane(right, -k, "driving", w, mark, road.lane_links.get(-k))
    if kind.sidewalks:
        _write_lane(right, -(kind.right_lanes + 1), "sidewalk", sw, NO_MARK, road.lane_links.get(-2))


def _write_signal(signals: ET.Element, sig: Signal) -> None:
    el = _sub(
        signals,
        "signal",
        id=sig.id,
        name=sig.name,
        s=sig.s,
        t=sig.t,
        zOffset=sig.height_m,
        # the sign's face turned towards the traffic it addresses (as in CARLA's towns)
        hOffset=-math.pi if sig.orientation == "+" else 0.0,
        roll=0.0,
        pitch=0.0,
        orientation=sig.orientation,
        dynamic="yes" if sig.dynamic else "no",
        country="OpenDRIVE",
        type=sig.type,
        subtype="-1",
        value=sig.value,
        unit=sig.unit,
        text="",
        height=1.0,
        width=0.5,
    )
    if not sig.unit:
        del el.attrib["unit"]
    _sub(el, "validity", fromLane=sig.valid_lanes[0], toLane=sig.valid_lanes[1])


def _bounds(town: Town) -> tuple[float, float, float, float]:
    """(north, south, east, west): geometry end points padded by the widest road half-width."""
    xs: list[float] = []
    ys: list[float] = []
    pad = 0.0
    for road in town.roads:
        pad = max(pad, abs(road.left_edge_t()), abs(road.right_edge_t()))
        for g in road.geometries:
            for p in (g.start, geometry_end(g)):
                xs.append(p.x)
                ys.append(p.y)
    pad += town.config.sidewalk_width_m
    return max(ys) + pad, min(ys) - pad, max(xs) + pad, min(xs) - pad


def geo_reference(cfg: TownConfig) -> str:
    return (
        f"+proj=tmerc +lat_0={cfg.geo_lat0_deg:g} +lon_0={cfg.geo_lon0_deg:g} +k=1 +x_0=0 +y_0=0 "
        "+datum=WGS84 +units=m +geoidgrids=egm96_15.gtx +vunits=m +no_defs"
    )


def town_to_xodr(town: Town) -> str:
    """The OpenDRIVE 1.4 text of a town (deterministic: fixed ordering and number formatting)."""
    root = ET.Element("OpenDRIVE")
    north, south, east, west = _bounds(town)
    header = _sub(
        root,
        "header",
        revMajor=1,
        revMinor=4,
        name=town.name,
        version="1",
        date=LAYOUT_REVISION_DATE,
        north=north,
        south=south,
        east=east,
        west=west,
        vendor="takeover",
    )
    _sub(header, "geoReference").text = "@GEOREFERENCE@"
    for road in sorted(town.roads, key=lambda r: r.id):
        el = _sub(root, "road", name=road.name, length=road.length_m, id=road.id, junction=road.junction_id)
        link = _sub(el, "link")
        for tag, rl in (("predecessor", road.predecessor), ("successor", road.successor)):
            if rl is None:
                continue
            attrs: dict[str, str | int] = {"elementType": rl.element_type, "elementId": rl.element_id}
            if rl.contact_point is not None:
                attrs["contactPoint"] = rl.contact_point
            _sub(link, tag, **attrs)
        road_type = _sub(el, "type", s=0.0, type="town")
        _sub(road_type, "speed", max=f"{road.speed_kmh:g}", unit="km/h")
        plan = _sub(el, "planView")
        s = 0.0
        for g in road.geometries:
            _write_geometry(plan, s, g)
            s += g.length_m
        elevation = _sub(el, "elevationProfile")
        _sub(elevation, "elevation", s=0.0, a=0.0, b=0.0, c=0.0, d=0.0)
        _sub(el, "lateralProfile")
        _write_lanes(el, road)
        if road.signals:
            signals = _sub(el, "signals")
            for sig in road.signals:
                _write_signal(signals, sig)
    for junction in town.junctions:
        for cid, sid in junction.controllers:
            ctrl = _sub(root, "controller", name=f"ctrl{cid}", id=cid, sequence=0)
            _sub(ctrl, "control", signalId=sid, type="0")
    for junction in town.junctions:
        jel = _sub(root, "junction", id=junction.id, name=f"junction{junction.id} {junction.name}")
        for c in junction.connections:
            cel = _sub(
                jel,
                "connection",
                id=c.id,
                incomingRoad=c.incoming_road,
                connectingRoad=c.connecting_road,
                contactPoint="start",
            )
            for lane_from, lane_to in c.lane_links:
                _sub(cel, "laneLink", **{"from": lane_from, "to": lane_to})
        for seq, (cid, _) in enumerate(junction.controllers):
            _sub(jel, "controller", id=cid, type="0", sequence=seq)
    ET.indent(root, space="    ")
    text = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    text = text.replace("@GEOREFERENCE@", f"<![CDATA[{geo_reference(town.config)}]]>")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"


# --------------------------------------------------------------------------------------------------
# Built-in Bench2Drive routes
# --------------------------------------------------------------------------------------------------

Ability = Literal["overtaking", "merging", "emergency_brake", "give_way", "traffic_signs"]

# Bench2Drive abilities of each scenario type used here (research/bench2drive.md).
SCENARIO_ABILITIES: dict[str, tuple[Ability, ...]] = {
    "Accident": ("overtaking",),
    "AccidentTwoWays": ("overtaking",),
    "ConstructionObstacle": ("overtaking",),
    "ParkedObstacle": ("overtaking",),
    "ParkedObstacleTwoWays": ("overtaking",),
    "SignalizedJunctionLeftTurn": ("merging", "traffic_signs"),
    "SignalizedJunctionRightTurn": ("merging", "traffic_signs"),
    "NonSignalizedJunctionLeftTurn": ("merging", "traffic_signs"),
    "HardBreakRoute": ("emergency_brake",),
    "DynamicObjectCrossing": ("emergency_brake",),
    "PedestrianCrossing": ("emergency_brake", "traffic_signs"),
    "StaticCutIn": ("emergency_brake",),
    "OppositeVehicleRunningRedLight": ("emergency_brake", "traffic_signs"),
    "ControlLoss": ("emergency_brake",),
    "InvadingTurn": ("give_way",),
    "YieldToEmergencyVehicle": ("give_way",),
    "T_Junction": ("traffic_signs",),
    "VanillaSignalizedTurnEncounterRedLight": ("traffic_signs",),
    "VanillaSignalizedTurnEncounterGreenLight": ("traffic_signs",),
    "VanillaNonSignalizedTurnEncounterStopsign": ("traffic_signs",),
}

# carla.WeatherParameters presets written as Bench2Drive <weather> attributes (percent, degrees).
WEATHER_FIELDS: tuple[str, ...] = (
    "cloudiness",
    "precipitation",
    "precipitation_deposits",
    "wetness",
    "wind_intensity",
    "sun_azimuth_angle",
    "sun_altitude_angle",
    "fog_density",
)
# fmt: off
WEATHER_PRESETS: dict[str, tuple[float, ...]] = {
    "clear_noon":     (5.0,  0.0,  0.0,  0.0,  10.0, -1.0,  45.0,  2.0),
    "cloudy_sunset":  (60.0, 0.0,  0.0,  0.0,  10.0, 180.0, 15.0,  2.0),
    "wet_noon":       (20.0, 0.0,  50.0, 50.0, 10.0, 90.0,  60.0,  3.0),
    "soft_rain_noon": (70.0, 15.0, 50.0, 50.0, 35.0, 0.0,   50.0,  5.0),
    "clear_night":    (10.0, 0.0,  0.0,  0.0,  10.0, 0.0,   -80.0, 5.0),
}
# fmt: on


@dataclass(frozen=True)
class RouteSpec:
    """A built-in route: where it starts, which way it turns, its scenario.

    `start` is (road id, lane id, distance in metres from the lane's entry along its travel
    direction); `turns` names the movement at each junction met, in order ("straight", "left",
    "right", with ":<lane id>" to pick the exit lane where a move splits into several lanes).
    """

    id: int
    split: Literal["train", "eval"]
    scenario: str
    start: tuple[int, int, float]
    turns: tuple[str, ...]
    length_m: float
    trigger_lead_m: float  # route start to trigger point
    weather: str
    parameters: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()


def _p(**tags: str | tuple[str, str]) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """Scenario parameters: value=... for strings, (from, to) for intervals."""
    out = []
    for tag, v in tags.items():
        out.append((tag, (("from", v[0]), ("to", v[1])) if isinstance(v, tuple) else (("value", v),)))
    return tuple(out)


TRAIN_ROUTE_ID_BASE = 1000
EVAL_ROUTE_ID_BASE = 2000
ROUTE_ID_BLOCK = 1000  # ids of a split lie in [base, base + block)


def _route(
    route_id: int,
    scenario: str,
    start: tuple[int, int, float],
    turns: str,
    length_m: float,
    lead_m: float,
    weather: str,
    **parameters: str | tuple[str, str],
) -> RouteSpec:
    """A RouteSpec from one table row; `turns` is space-separated, ids 1000.. train, 2000.. eval."""
    split: Literal["train", "eval"] = "train" if route_id < EVAL_ROUTE_ID_BASE else "eval"
    return RouteSpec(
        route_id, split, scenario, start, tuple(turns.split()), length_m, lead_m, weather, _p(**parameters)
    )


VENDING = "static.prop.vendingmachine"
FLOW_2W = ("50", "150")  # m between oncoming vehicles (Bench2Drive `frequency` from/to)
PARKED_FLOW_2W = ("60", "180")
SIG_FLOW = ("20", "30")  # m between flow vehicles (Bench2Drive `source_dist_interval` from/to)

# start = (road, lane, metres along the lane from its entry); road and junction ids as in the sketch.
# fmt: off
ROUTE_SPECS: tuple[RouteSpec, ...] = (
    # training: every scenario type once
    _route(1000, "Accident",                 (1, -2, 10.0),  "straight", 250, 40, "clear_noon",
           distance="70", direction="right", speed="50"),
    _route(1001, "AccidentTwoWays",          (5, -1, 10.0),  "straight", 240, 40, "cloudy_sunset",
           distance="50", frequency=FLOW_2W),
    _route(1002, "ConstructionObstacle",     (3, -2, 10.0),  "right",    250, 45, "wet_noon",
           distance="60", direction="right", speed="50"),
    _route(1003, "ParkedObstacle",           (2, -2, 20.0),  "straight", 230, 40, "soft_rain_noon",
           distance="60", direction="right", speed="50"),
    _route(1004, "ParkedObstacleTwoWays",    (6, 1, 10.0),   "left",     250, 40, "clear_night",
           distance="55", frequency=PARKED_FLOW_2W),
    _route(1005, "SignalizedJunctionLeftTurn",  (6, -1, 103.0), "left",  200, 40, "clear_noon",
           flow_speed="12", source_dist_interval=SIG_FLOW),
    _route(1006, "SignalizedJunctionRightTurn", (2, 2, 133.0),  "right", 200, 40, "cloudy_sunset",
           flow_speed="13", source_dist_interval=("21", "34")),
    _route(1007, "NonSignalizedJunctionLeftTurn", (5, -1, 133.0), "left", 200, 40, "wet_noon",
           flow_speed="10", source_dist_interval=("25", "35")),
    _route(1008, "HardBreakRoute",           (4, -2, 10.0),  "straight", 230, 40, "soft_rain_noon"),
    _route(1009, "DynamicObjectCrossing",    (12, -1, 10.0), "",         200, 40, "clear_night",
           distance="45", direction="right", blocker_model=VENDING, crossing_angle="0"),
    _route(1010, "PedestrianCrossing",       (2, -1, 128.0), "straight", 180, 40, "clear_noon"),
    _route(1011, "StaticCutIn",              (3, 1, 10.0),   "straight", 230, 40, "cloudy_sunset",
           distance="60", direction="right"),
    _route(1012, "OppositeVehicleRunningRedLight", (1, -1, 133.0), "straight", 200, 40, "wet_noon",
           direction="right"),
    _route(1013, "ControlLoss",              (11, -1, 10.0), "",         220, 45, "soft_rain_noon"),
    _route(1014, "InvadingTurn",             (13, -1, 80.0), "",         200, 40, "clear_noon",
           distance="100", offset="0.3"),
    _route(1015, "YieldToEmergencyVehicle",  (4, -1, 10.0),  "straight", 240, 45, "cloudy_sunset",
           distance="30"),
    _route(1016, "T_Junction",               (10, 1, 320.0), "left",     200, 40, "wet_noon"),
    _route(1017, "VanillaSignalizedTurnEncounterRedLight",    (11, -1, 320.0), "right", 200, 40, "clear_night"),
    _route(1018, "VanillaSignalizedTurnEncounterGreenLight",  (13, 1, 320.0),  "left",  200, 40, "clear_noon"),
    _route(1019, "VanillaNonSignalizedTurnEncounterStopsign", (8, -1, 103.0),  "right", 200, 40, "soft_rain_noon"),
    # evaluation: other roads, directions and junction approaches
    _route(2000, "Accident",                 (1, 2, 10.0),   "right",    250, 50, "cloudy_sunset",
           distance="60", direction="right", speed="50"),
    _route(2001, "ParkedObstacleTwoWays",    (9, -1, 10.0),  "right",    230, 50, "wet_noon",
           distance="50", frequency=PARKED_FLOW_2W),
    _route(2002, "SignalizedJunctionLeftTurn", (12, 1, 320.0), "left",   200, 40, "soft_rain_noon",
           flow_speed="12", source_dist_interval=SIG_FLOW),
    _route(2003, "NonSignalizedJunctionLeftTurn", (11, 1, 320.0), "left", 200, 40, "clear_noon",
           flow_speed="10", source_dist_interval=("25", "35")),
    _route(2004, "DynamicObjectCrossing",    (10, 1, 10.0),  "",         200, 45, "clear_night",
           distance="50", direction="right", blocker_model=VENDING, crossing_angle="0"),
    _route(2005, "OppositeVehicleRunningRedLight", (5, 1, 133.0), "straight", 200, 40, "cloudy_sunset",
           direction="right"),
    _route(2006, "YieldToEmergencyVehicle",  (1, 1, 10.0),   "left",     240, 40, "wet_noon",
           distance="35"),
    _route(2007, "InvadingTurn",             (12, 1, 80.0),  "",         200, 40, "soft_rain_noon",
           distance="100", offset="0.3"),
    _route(2008, "VanillaNonSignalizedTurnEncounterStopsign", (9, 1, 103.0), "left", 200, 40, "clear_noon"),
    _route(2009, "VanillaSignalizedTurnEncounterRedLight",    (7, 1, 103.0), "left", 200, 40, "cloudy_sunset"),
)
# fmt: on


@dataclass(frozen=True)
class BuiltRoute:
    spec: RouteSpec
    keypoints: list[tuple[float, float, float]]  # CARLA world metres
    trigger: tuple[float, float, float, float]  # x, y, z, yaw (deg)
    road_ids: tuple[int, ...]  # roads visited, in order (connecting roads included)


def _lane_start_s(road: Road, lane_id: int, distance_m: float) -> float:
    """Reference-line s of a point `distance_m` along a lane's travel direction."""
    return distance_m if lane_id < 0 else road.length_m - distance_m


def _lane_end(wp: carla.Waypoint) -> carla.Waypoint:
    ahead = wp.next_until_lane_end(1.0)
    return ahead[-1] if ahead else wp


def _junction_move(wp_in: carla.Waypoint, candidate: carla.Waypoint, threshold_deg: float) -> Movement:
    """Movement of a connecting lane: heading change from entering it to its end (CARLA yaw grows
    clockwise seen from above, so a right turn is a positive change)."""
    end = _lane_end(candidate)
    delta = wrap_angle_pi_inclusive(math.radians(end.transform.rotation.yaw - wp_in.transform.rotation.yaw))
    if abs(math.degrees(delta)) < threshold_deg:
        return "straight"
    return "right" if delta > 0 else "left"


def build_route(carla_map: carla.Map, town: Town, spec: RouteSpec) -> BuiltRoute:
    """Walk the lane centre in `keypoint_spacing_m` steps with carla's waypoint.next from the start,
    taking the named movement at each junction, until `length_m`."""
    cfg = town.config
    road_id, lane_id, distance = spec.start
    road = town.road(road_id)
    wp = carla_map.get_waypoint_xodr(road_id, lane_id, _lane_start_s(road, lane_id, distance))
    if wp is None:
        raise TownBuildError(f"route {spec.id}: no lane {lane_id} on road {road_id}")
    step = cfg.keypoint_spacing_m
    turns = list(spec.turns)
    points = [wp]
    n_points = round(spec.length_m / step) + 1
    while len(points) < n_points:
        options = wp.next(step)
        if not options:
            raise TownBuildError(f"route {spec.id}: dead end at road {wp.road_id} lane {wp.lane_id}")
        entering = [o for o in options if o.is_junction and o.road_id != wp.road_id]
        if len(options) > 1 or (entering and not wp.is_junction):
            if not turns:
                raise TownBuildError(
                    f"route {spec.id}: reaches junction {entering[0].junction_id} with no turn left"
                )
            want = turns.pop(0)
            move, _, exit_lane = want.partition(":")
            chosen = [o for o in options if _junction_move(wp, o, cfg.turn_threshold_deg) == move]
            if exit_lane:
                chosen = [o for o in chosen if _lane_end(o).next(1.0)[0].lane_id == int(exit_lane)]
            if len(chosen) != 1:
                raise TownBuildError(
                    f"route {spec.id}: movement '{want}' matches {len(chosen)} lanes at junction "
                    f"{options[0].junction_id}: name the exit lane as '{move}:<lane id>'"
                )
            wp = chosen[0]
        else:
            wp = options[0]
        points.append(wp)
    if turns:
        raise TownBuildError(f"route {spec.id}: ends before using the turns {turns}")
    keypoints = [
        (
            round(p.transform.location.x, ROUTE_DECIMALS) + 0.0,
            round(p.transform.location.y, ROUTE_DECIMALS) + 0.0,
            round(p.transform.location.z, ROUTE_DECIMALS) + 0.0,
        )
        for p in points
    ]
    trig = points[round(spec.trigger_lead_m / step)]
    yaw = round(trig.transform.rotation.yaw, ROUTE_DECIMALS) + 0.0
    trigger = (*keypoints[round(spec.trigger_lead_m / step)], yaw)
    visited: list[int] = []
    for p in points:
        if not visited or visited[-1] != p.road_id:
            visited.append(p.road_id)
    return BuiltRoute(spec, keypoints, trigger, tuple(visited))


def _fmt_route(v: float) -> str:
    text = f"{v:.{ROUTE_DECIMALS}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def routes_to_xml(town_name: str, routes: Sequence[BuiltRoute]) -> str:
    """Bench2Drive route XML (the layout of routes_dev.xml)."""
    root = ET.Element("routes")
    for route in routes:
        spec = route.spec
        rel = ET.SubElement(root, "route", {"id": str(spec.id), "town": town_name})
        wps = ET.SubElement(rel, "waypoints")
        for x, y, z in route.keypoints:
            ET.SubElement(wps, "position", {"x": _fmt_route(x), "y": _fmt_route(y), "z": _fmt_route(z)})
        scenarios = ET.SubElement(rel, "scenarios")
        sc = ET.SubElement(scenarios, "scenario", {"name": f"{spec.scenario}_1", "type": spec.scenario})
        x, y, z, yaw = route.trigger
        ET.SubElement(
            sc,
            "trigger_point",
            {"x": _fmt_route(x), "y": _fmt_route(y), "z": _fmt_route(z), "yaw": _fmt_route(yaw)},
        )
        for tag, attrs in spec.parameters:
            ET.SubElement(sc, tag, dict(attrs))
        weathers = ET.SubElement(rel, "weathers")
        for pct in ("0", "100"):
            attrs = {"route_percentage": pct}
            attrs.update(
                {k: f"{v:.1f}" for k, v in zip(WEATHER_FIELDS, WEATHER_PRESETS[spec.weather], strict=True)}
            )
            ET.SubElement(weathers, "weather", attrs)
    ET.indent(root, space="  ")
    return "<?xml version='1.0' encoding='utf-8'?>\n" + ET.tostring(root, encoding="unicode") + "\n"


def check_route_specs(specs: Sequence[RouteSpec], cfg: TownConfig) -> None:
    """The built-in route set rules: unique ids, lengths and trigger leads in range, every eval
    scenario type trained on, all five Bench2Drive abilities covered by each split."""
    ids = [s.id for s in specs]
    if len(ids) != len(set(ids)):
        raise TownBuildError(f"duplicate built-in route ids: {sorted(i for i in ids if ids.count(i) > 1)}")
    for s in specs:
        base = TRAIN_ROUTE_ID_BASE if s.split == "train" else EVAL_ROUTE_ID_BASE
        if not base <= s.id < base + ROUTE_ID_BLOCK:
            raise TownBuildError(
                f"route {s.id}: {s.split} route ids lie in [{base}, {base + ROUTE_ID_BLOCK})"
            )
        if s.scenario not in SCENARIO_ABILITIES:
            raise TownBuildError(
                f"route {s.id}: scenario type {s.scenario} has no ability in SCENARIO_ABILITIES"
            )
        if not cfg.min_route_length_m <= s.length_m <= cfg.max_route_length_m:
            raise TownBuildError(f"route {s.id}: length {s.length_m} m is outside the built-in range")
        if not cfg.min_trigger_lead_m <= s.trigger_lead_m <= cfg.max_trigger_lead_m:
            raise TownBuildError(
                f"route {s.id}: trigger lead {s.trigger_lead_m} m is outside the built-in range"
            )
        if s.weather not in WEATHER_PRESETS:
            raise TownBuildError(f"route {s.id}: unknown weather preset {s.weather}")
    train = {s.scenario for s in specs if s.split == "train"}
    untrained = {s.scenario for s in specs if s.split == "eval"} - train
    if untrained:
        raise TownBuildError(f"evaluation scenario types never trained on: {sorted(untrained)}")
    all_abilities = set(Ability.__args__)  # type: ignore[attr-defined]
    for split in ("train", "eval"):
        covered = {a for s in specs if s.split == split for a in SCENARIO_ABILITIES[s.scenario]}
        if covered != all_abilities:
            raise TownBuildError(f"{split} routes miss the abilities {sorted(all_abilities - covered)}")


def build_routes(carla_map: carla.Map, town: Town, specs: Sequence[RouteSpec]) -> list[BuiltRoute]:
    """Every route of `specs` walked on `carla_map`; trigger points and route ends lie outside junctions."""
    check_route_specs(specs, town.config)
    routes = []
    for spec in specs:
        route = build_route(carla_map, town, spec)
        for label, (x, y, z) in (("trigger point", route.trigger[:3]), ("end", route.keypoints[-1])):
            wp = carla_map.get_waypoint(carla.Location(x=x, y=y, z=z))
            if wp.is_junction:
                raise TownBuildError(f"route {spec.id}: its {label} lies inside junction {wp.junction_id}")
        routes.append(route)
    return routes


@dataclass(frozen=True)
class BuiltinAssets:
    town: Town
    routes: list[BuiltRoute]
    files: dict[Path, str]  # text of every asset, keyed by its path relative to the assets folder


def generate_assets(cfg: TownConfig) -> BuiltinAssets:
    """The town, its routes walked on the generated map, and the text of the three asset files."""
    town = build_town(cfg)
    xodr = town_to_xodr(town)
    routes = build_routes(carla.Map(cfg.town_name, xodr), town, ROUTE_SPECS)
    files = {
        Path("maps") / f"{cfg.town_name}.xodr": xodr,
        Path("routes") / BUILTIN_TRAIN_ROUTES_PATH.name: routes_to_xml(
            cfg.town_name, [r for r in routes if r.spec.split == "train"]
        ),
        Path("routes") / BUILTIN_EVAL_ROUTES_PATH.name: routes_to_xml(
            cfg.town_name, [r for r in routes if r.spec.split == "eval"]
        ),
    }
    return BuiltinAssets(town, routes, files)


def describe(town: Town, routes: Sequence[BuiltRoute] = ()) -> str:
    """Plain-text tables of the roads, junctions and routes."""
    lines = [f"Town {town.name}", "", "road  kind          lanes(L+R)  length_m  speed_kmh  name"]
    for r in town.roads:
        if not r.is_connector:
            lanes = f"{r.kind.left_lanes}+{r.kind.right_lanes}"
            lines.append(
                f"{r.id:>4}  {r.kind.name:<12}  {lanes:>10}  {r.length_m:>8.1f}  {r.speed_kmh:>9g}  {r.name}"
            )
    lines += ["", "junction  kind               centre_m        connectors  signals  name"]
    for j in town.junctions:
        signals = len(j.signal_ids)
        centre = f"({j.centre[0]:g}, {j.centre[1]:g})"
        lines.append(
            f"{j.id:>8}  {j.kind:<17}  {centre:<14}  {len(j.connections):>10}  {signals:>7}  {j.name}"
        )
    if routes:
        lines += ["", "route  split  scenario                                    length_m  roads"]
        for r in routes:
            length = (len(r.keypoints) - 1) * town.config.keypoint_spacing_m
            roads = ">".join(str(i) for i in r.road_ids)
            lines.append(f"{r.spec.id:>5}  {r.spec.split:<5}  {r.spec.scenario:<42}  {length:>8.0f}  {roads}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m carla_bridge.town_builder",
        description="Generate the built-in town Takeover01 (OpenDRIVE) and its Bench2Drive route files.",
    )
    parser.add_argument("--out-dir", type=Path, default=ASSETS_DIR, help="assets folder (maps/, routes/)")
    parser.add_argument("--check", action="store_true", help="only verify the files equal a fresh generation")
    parser.add_argument("--describe", action="store_true", help="print the roads, junctions and routes")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. lane_width_m=3.5")
    args = parser.parse_args(argv)
    try:
        try:
            cfg = load_config(TownConfig, "town", args.overrides)
        except OmegaConfBaseException as exc:
            raise TownBuildError(
                f"bad town config override {args.overrides}: {str(exc).splitlines()[0]}"
            ) from exc
        assets = generate_assets(cfg)
    except TakeoverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.describe:
        print(describe(assets.town, assets.routes))
        return 0
    stale = []
    for rel, text in assets.files.items():
        path = args.out_dir / rel
        data = text.encode("utf-8")
        if path.exists() and path.read_bytes() == data:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if args.check and stale:
        names = ", ".join(str(p) for p in stale)
        print(f"stale: {names} (regenerate with python -m carla_bridge.town_builder)", file=sys.stderr)
        return 1
    print(("wrote: " + ", ".join(str(p) for p in stale)) if stale and not args.check else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
