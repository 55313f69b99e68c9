"""The road network of Takeover01 as a model, the rules that build it from `TownConfig`, and the checks
that keep it drivable.

The model (roads with their cross-sections, junction arms, connecting roads, signals) is kept apart from
the OpenDRIVE writer so that the layout rules and invariants (every incoming lane leaves its junction,
every outgoing lane is fed, the lane graph is strongly connected) are checked on our own bookkeeping
before any XML exists.

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
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from carla_bridge.geometry import wrap_angle_pi_inclusive
from carla_bridge.town.geometry import (
    Geometry,
    Pose2D,
    TownBuildError,
    connector_curve,
    fillet_path,
    geometry_end,
)

TOWN_NAME = "Takeover01"


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
