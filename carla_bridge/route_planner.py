"""Dense route planning on a `carla.Map`: CARLA's GlobalRoutePlanner algorithm, done here.

The leaderboard turns a route's keypoints into the dense route an agent follows by running CARLA's
GlobalRoutePlanner between consecutive keypoints at a 1 m hop. This module does the same, offline:

1. Lane graph (`LaneGraph`, built once per map and cached): every driving lane section of the map
   (those of `cmap.get_topology()`, plus lanes linked to nothing, which the topology leaves out)
   sampled every `sampling_resolution_m` along the lane, plus its exact end. Edges: sample -> next
   sample, lane end -> first sample of each successor lane (topology), and lane changes into the
   parallel same-direction driving lane where the lane marking permits (`waypoint.lane_change`, as
   CARLA's `_lane_change_link`; none inside junctions). A lane change goes from a point of a lane
   to any point of the neighbour lane up to `lane_change_max_length_m` ahead along the lane.
2. Localisation: each keypoint is projected onto the nearby lane polylines. Where lanes overlap (the
   connectors at a junction entry) every lane within `lane_candidate_margin_m` of the nearest stays
   a candidate, and the choice is made for the whole route (Viterbi over keypoints), so that a
   keypoint at a junction entry lands on the connector the route actually takes.
3. A* between consecutive keypoints (edge cost = metres driven, plus `lane_change_cost_m` per lane
   change; heuristic = straight-line distance to the nearest candidate, admissible and consistent).
4. The resulting polyline is resampled at `hop_resolution_m` and annotated like CARLA's
   `trace_route`: LANEFOLLOW on lanes; CHANGELANELEFT/RIGHT on lane changes; LEFT/RIGHT/STRAIGHT on
   the whole junction crossing, from the angle between the heading at the junction entry and at its
   exit (`_turn_decision`: below `turn_threshold_deg` STRAIGHT, otherwise compared with the other
   connectors leaving the same lane, else by the sign of the cross product).
5. Speed limits from the map's speed signs (OpenDRIVE signal type "274"): the last sign passed along
   the route (or found upstream of the start) holds; `default_speed_limit_kmh` before any sign.

Coordinates are CARLA world coordinates (left-handed: x forward/east, y right/south); yaw in the
dense route is the lane heading `radians(transform.rotation.yaw)`, also along lane changes.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import carla
import numpy as np
from scipy.spatial import cKDTree

from carla_bridge.errors import RouteError, TakeoverError
from carla_bridge.route import DenseRoute, RoadOption, Route

if TYPE_CHECKING:
    from carla_bridge.maps import MapLibrary

KMH_TO_MS = 1.0 / 3.6
SPEED_SIGN_TYPE = "274"  # OpenDRIVE / StVO "max speed" sign; CARLA reads its value as km/h
# CARLA towns label their speed signs unit="mph" but CARLA applies the value as km/h; we do the same.
SAME_POINT_EPS_M = 1e-6  # two keypoints closer than this are one (the leaderboard skips repeats)
END_POINT_EPS_M = 1e-3  # a lane's exact end is added as a sample unless the last sample is already there
KEYPOINT_OFFSET_COST = 1.0  # metres of route cost per metre a keypoint lies off its lane's centre
GRAPH_CACHE_SIZE = 8  # lane graphs kept in memory (one per map)
LANE_SURVEY_SPACING_M = 1e4  # generate_waypoints spacing that yields about one waypoint per lane section
BISECTION_STEPS = 24  # lane ends found to sampling_resolution / 2**24 (sub-micrometre)
FOLLOW, CHANGE_LEFT, CHANGE_RIGHT = 0, 1, 2  # kinds of the edge leading into a path vertex


@dataclass
class PlannerConfig:
    """How routes are planned (section `planner` of conf/maps.yaml)."""

    sampling_resolution_m: float = 1.0  # lane-graph sample spacing along lanes (CARLA GRP: 1 m)
    hop_resolution_m: float = 1.0  # dense-route spacing (leaderboard interpolate_trajectory: 1 m)
    max_keypoint_offset_m: float = 5.0  # a keypoint farther than this from every lane centre is an error
    keypoint_height_tolerance_m: float = 3.0  # prefer lanes within this height of a keypoint (bridges)
    lane_candidate_margin_m: float = 1.0  # lanes at most this much farther than the nearest stay candidates
    lane_change_cost_m: float = 10.0  # extra cost of one lane change, so routes do not weave
    lane_change_max_length_m: float = 10.0  # longest lane-change manoeuvre, along the lane
    turn_threshold_deg: float = 35.0  # CARLA _turn_decision: smaller heading change = STRAIGHT
    alternative_slack_m: float = 5.0  # cost a keypoint's other candidate lanes up to one lane change + this
    max_detour_ratio: float = 3.0  # a keypoint must be reachable within ratio * straight distance ...
    max_detour_slack_m: float = 200.0  # ... + this slack, else it counts as unreachable
    default_speed_limit_kmh: float = 30.0  # CARLA's urban default where no speed sign applies
    speed_limit_lookback_m: float = 500.0  # how far upstream of the start a speed sign is looked for

    def validate(self) -> None:
        """Raise PlannerConfigError naming the first setting out of range."""
        positive = (
            "sampling_resolution_m",
            "hop_resolution_m",
            "max_keypoint_offset_m",
            "lane_change_max_length_m",
            "turn_threshold_deg",
            "max_detour_ratio",
            "default_speed_limit_kmh",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise PlannerConfigError(
                    f"planner.{name} must be > 0 (got {getattr(self, name)}): fix conf/maps.yaml"
                )
        for name in (
            "keypoint_height_tolerance_m",
            "lane_candidate_margin_m",
            "lane_change_cost_m",
            "alternative_slack_m",
            "max_detour_slack_m",
            "speed_limit_lookback_m",
        ):
            if not getattr(self, name) >= 0:
                raise PlannerConfigError(
                    f"planner.{name} must be >= 0 (got {getattr(self, name)}): fix conf/maps.yaml"
                )


class PlannerConfigError(TakeoverError):
    """A route-planner setting is out of range."""


@dataclass(frozen=True)
class LaneSegment:
    """One driving lane of one lane section: samples `first .. first + count - 1` of the graph."""

    road_id: int
    section_id: int
    lane_id: int
    is_junction: bool
    first: int
    count: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1


@dataclass(frozen=True)
class _LaneChanges:
    """Lane changes in one direction (left or right), as plain lists for the search loop."""

    neighbour_of: list[int]  # per segment: the segment changed into, or -1
    allowed: list[bool]  # per sample: the lane marking permits the change here
    ahead: list[int]  # per sample: first sample of the neighbour lane strictly ahead of it, or -1


@dataclass(frozen=True)
class _Candidate:
    """A keypoint projected onto the piece of lane between samples `node` and `node + 1`."""

    node: int
    t: float  # fraction along the piece
    u: float  # along-lane coordinate (s in the driving direction), for lane changes
    xyz: tuple[float, float, float]
    offset_m: float  # horizontal distance from the keypoint


@dataclass
class _Leg:
    """Search result between the candidates of keypoint k (starts) and keypoint k+1 (goals)."""

    goal_costs: list[float]
    goal_back: list[tuple[int, int, int]]  # per goal: (start index, last graph node or -1, edge kind)
    pred: dict[int, tuple[int, int]]  # graph node -> (previous node or -1 - start index, edge kind)


class LaneGraph:
    """Driving lanes of a map sampled along their length, with follow and lane-change edges."""

    def __init__(self, cmap: carla.Map, sampling_resolution_m: float = 1.0) -> None:
        self.map_name: str = cmap.name
        self.sampling_resolution_m = sampling_resolution_m
        entries: dict[tuple[int, int, int], carla.Waypoint] = {}  # exact start of each lane section
        successor_keys: dict[tuple[int, int, int], list[tuple[int, int, int]]] = {}
        exits: dict[tuple[int, int, int], carla.Waypoint] = {}  # where each lane section ends
        for entry, exit_ in cmap.get_topology():
            for wp in (entry, exit_):
                entries.setdefault(_key(wp), wp)
            key, exit_key = _key(entry), _key(exit_)
            exits.setdefault(key, exit_)
            if exit_key != key:
                successor_keys.setdefault(key, []).append(exit_key)
        # get_topology() leaves out lanes connected to nothing at either end; find them too.
        for wp in cmap.generate_waypoints(LANE_SURVEY_SPACING_M):
            key = _key(wp)
            if key not in entries:
                entries[key] = self._lane_start(wp, key)
        if not entries:
            raise TakeoverError(f"map {cmap.name} has no driving lanes: check its OpenDRIVE file")
        keys = sorted(entries)
        self.segment_index: dict[tuple[int, int, int], int] = {k: i for i, k in enumerate(keys)}
        columns: dict[str, list[float]] = {c: [] for c in ("x", "y", "z", "yaw", "s", "width", "change")}
        self.segments: list[LaneSegment] = []
        middle: list[carla.Waypoint] = []
        for key in keys:
            samples = self._walk(entries[key], exits.get(key), key)
            middle.append(samples[len(samples) // 2][0])
            first = len(columns["x"])
            for wp, loc, yaw, s in samples:
                columns["x"].append(loc.x)
                columns["y"].append(loc.y)
                columns["z"].append(loc.z)
                columns["yaw"].append(math.radians(yaw))
                columns["s"].append(s)
                columns["width"].append(wp.lane_width)
                columns["change"].append(int(wp.lane_change))
            self.segments.append(
                LaneSegment(*key, is_junction=entries[key].is_junction, first=first, count=len(samples))
            )
        self.xyz = np.column_stack([columns["x"], columns["y"], columns["z"]]).astype(np.float64)
        self.yaw = np.asarray(columns["yaw"], dtype=np.float64)
        self.s = np.asarray(columns["s"], dtype=np.float64)
        self.lane_width = np.asarray(columns["width"], dtype=np.float32)
        n = len(self.xyz)
        self.segment_of = np.repeat(np.arange(len(keys)), [seg.count for seg in self.segments])
        self.successors: list[list[int]] = [
            sorted({self.segment_index[k] for k in successor_keys.get(key, [])}) for key in keys
        ]
        self.predecessors: list[list[int]] = [[] for _ in keys]
        for i, succ in enumerate(self.successors):
            for j in succ:
                self.predecessors[j].append(i)
        step = np.zeros(n)
        step[:-1] = np.linalg.norm(np.diff(self.xyz, axis=0), axis=1)
        step[[seg.last for seg in self.segments]] = 0.0  # no piece from a lane's end to the next lane
        self.step = step
        # Along-lane coordinate: s in the driving direction (right lanes, id < 0, run along +s).
        self.u = np.where(self.segment_lane_id() < 0, self.s, -self.s)
        change = np.asarray(columns["change"], dtype=np.int64)
        self.lane_changes: tuple[tuple[int, _LaneChanges], ...] = (
            (CHANGE_LEFT, self._lane_changes(middle, change, int(carla.LaneChange.Left), left=True)),
            (CHANGE_RIGHT, self._lane_changes(middle, change, int(carla.LaneChange.Right), left=False)),
        )
        self.speed_sign_kmh = self._speed_signs(cmap)
        self.tree = cKDTree(self.xyz[:, :2])
        # Plain Python lists: the A* inner loop indexes them far faster than numpy arrays.
        self._x, self._y, self._z = (self.xyz[:, i].tolist() for i in range(3))
        self._step = self.step.tolist()
        self._last = [self.segments[g].last for g in self.segment_of.tolist()]
        self._seg = self.segment_of.tolist()
        self._first_of_successors = [[self.segments[j].first for j in succ] for succ in self.successors]
        self._u = self.u.tolist()

    def segment_lane_id(self) -> np.ndarray:
        """Lane id of the lane under each sample."""
        return np.array([seg.lane_id for seg in self.segments])[self.segment_of]

    def __len__(self) -> int:
        return len(self.xyz)

    def _walk(
        self, entry: carla.Waypoint, exit_: carla.Waypoint | None, key: tuple[int, int, int]
    ) -> list[tuple[carla.Waypoint, carla.Location, float, float]]:
        """Samples of one lane section: every `sampling_resolution_m` from its start, then its end.

        The end is where the topology's successor starts (or the lane's own last waypoint).
        """
        samples = []
        wp: carla.Waypoint | None = entry
        while wp is not None:
            transform = wp.transform
            samples.append((wp, transform.location, transform.rotation.yaw, wp.s))
            wp = _step(wp, key, self.sampling_resolution_m, forward=True)
        last_wp, last_loc, _, last_s = samples[-1]
        if exit_ is None:  # a dead end: its last waypoint lies less than one sample ahead
            exit_ = _farthest(last_wp, key, self.sampling_resolution_m, forward=True)
            if exit_ is None:
                return samples
        end_transform = exit_.transform
        gap = last_loc.distance(end_transform.location)
        if gap > END_POINT_EPS_M:
            direction = 1.0 if key[2] < 0 else -1.0  # right lanes (id < 0) run along +s
            end_s = exit_.s if _key(exit_) == key else last_s + direction * gap
            samples.append((last_wp, end_transform.location, end_transform.rotation.yaw, end_s))
        return samples

    def _lane_start(self, wp: carla.Waypoint, key: tuple[int, int, int]) -> carla.Waypoint:
        """The first waypoint of `wp`'s lane section, walking back against the driving direction."""
        while (previous := _step(wp, key, self.sampling_resolution_m, forward=False)) is not None:
            wp = previous
        return _farthest(wp, key, self.sampling_resolution_m, forward=False) or wp

    def _lane_changes(
        self, middle: list[carla.Waypoint], change: np.ndarray, flag: int, left: bool
    ) -> _LaneChanges:
        """Lane changes to the left (or right) neighbour: same road and section, same direction, driving."""
        neighbour_of = np.full(len(self.segments), -1, dtype=np.int64)
        allowed = np.zeros(len(self.xyz), dtype=bool)
        ahead = np.full(len(self.xyz), -1, dtype=np.int64)
        for index, seg in enumerate(self.segments):
            if seg.is_junction:
                continue  # CARLA links no lane changes inside junctions
            neighbour = middle[index].get_left_lane() if left else middle[index].get_right_lane()
            if (
                neighbour is None
                or neighbour.lane_type != carla.LaneType.Driving
                or neighbour.road_id != seg.road_id
                or neighbour.lane_id * seg.lane_id <= 0  # only lanes of the same direction
            ):
                continue
            target_index = self.segment_index.get(_key(neighbour))
            if target_index is None:
                continue
            neighbour_of[index] = target_index
            target = self.segments[target_index]
            own = slice(seg.first, seg.last + 1)
            allowed[own] = (change[own] & flag) != 0
            above = np.searchsorted(self.u[target.first : target.last + 1], self.u[own], side="right")
            ahead[own] = np.where(above < target.count, target.first + above, -1)
        return _LaneChanges(neighbour_of.tolist(), allowed.tolist(), ahead.tolist())

    def _speed_signs(self, cmap: carla.Map) -> np.ndarray:
        """Per sample: the speed (km/h) of a speed sign passed between the previous sample and this one."""
        signs = np.full(len(self.xyz), np.nan, dtype=np.float32)
        by_road: dict[int, list[LaneSegment]] = {}
        for seg in self.segments:
            by_road.setdefault(seg.road_id, []).append(seg)
        for landmark in cmap.get_all_landmarks_of_type(SPEED_SIGN_TYPE):
            if not math.isfinite(landmark.value) or landmark.value <= 0:
                continue
            validities = landmark.get_lane_validities()
            for seg in by_road.get(landmark.road_id, []):
                if validities:
                    applies = any(min(a, b) <= seg.lane_id <= max(a, b) for a, b in validities)
                else:  # no validity record: the lanes on the sign's side of the reference line
                    applies = (seg.lane_id < 0) == (landmark.t < 0)
                if not applies:
                    continue
                s = self.s[seg.first : seg.last + 1]
                if not s.min() - END_POINT_EPS_M <= landmark.s <= s.max() + END_POINT_EPS_M:
                    continue
                passed = s >= landmark.s if seg.lane_id < 0 else s <= landmark.s
                index = int(np.argmax(passed)) if passed.any() else seg.count - 1
                signs[seg.first + index] = landmark.value
        return signs


def _key(wp: carla.Waypoint) -> tuple[int, int, int]:
    return (wp.road_id, wp.section_id, wp.lane_id)


def _step(
    wp: carla.Waypoint, key: tuple[int, int, int], distance: float, forward: bool
) -> carla.Waypoint | None:
    """The waypoint `distance` ahead (or behind) on the same lane section, or None past its end."""
    candidates = wp.next(distance) if forward else wp.previous(distance)
    return next((w for w in candidates if _key(w) == key), None)


def _farthest(
    wp: carla.Waypoint, key: tuple[int, int, int], limit: float, forward: bool
) -> carla.Waypoint | None:
    """The end (or start) of the lane section, known to lie less than `limit` ahead (behind), by bisection.

    (`next_until_lane_end` crosses lane sections and fails on dead ends, hence this.)
    """
    low, high, found = 0.0, limit, None
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (low + high)
        candidate = _step(wp, key, middle, forward)
        if candidate is None:
            high = middle
        else:
            low, found = middle, candidate
    return found


_GRAPH_CACHE: dict[tuple[str, str, float], LaneGraph] = {}  # by map content: survives a reloaded map
_GRAPH_BY_MAP: weakref.WeakKeyDictionary[carla.Map, dict[float, LaneGraph]] = weakref.WeakKeyDictionary()


def lane_graph(cmap: carla.Map, sampling_resolution_m: float = 1.0) -> LaneGraph:
    """The lane graph of `cmap`, built once per map content and sampling (LRU of GRAPH_CACHE_SIZE maps).

    The same carla.Map object finds its graph directly; another object with the same OpenDRIVE
    text finds it by a hash of that text.
    """
    resolution = float(sampling_resolution_m)
    per_map = _GRAPH_BY_MAP.setdefault(cmap, {})
    if resolution in per_map:
        return per_map[resolution]
    digest = hashlib.blake2b(cmap.to_opendrive().encode(), digest_size=16).hexdigest()
    key = (cmap.name, digest, resolution)
    graph = _GRAPH_CACHE.pop(key, None)
    if graph is None:
        graph = LaneGraph(cmap, resolution)
        while len(_GRAPH_CACHE) >= GRAPH_CACHE_SIZE:
            _GRAPH_CACHE.pop(next(iter(_GRAPH_CACHE)))
    _GRAPH_CACHE[key] = graph  # (re)inserted last = most recently used
    per_map[resolution] = graph
    return graph


def _fmt(point: Sequence[float]) -> str:
    return f"({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f})"


def _candidates(
    graph: LaneGraph, point: np.ndarray, config: PlannerConfig, route_id: str, index: int
) -> list[_Candidate]:
    """Lane pieces a keypoint may lie on: the nearest, and those about as near (overlapping lanes).

    Horizontal distance decides; among lanes at several heights (bridges) those within
    `keypoint_height_tolerance_m` of the keypoint are preferred.
    """
    radius = config.max_keypoint_offset_m + graph.sampling_resolution_m
    near = np.asarray(graph.tree.query_ball_point(point[:2], radius), dtype=np.int64)
    starts = np.unique(np.concatenate([near, near - 1])) if near.size else near
    if starts.size:
        starts = starts[(starts >= 0) & (starts < len(graph) - 1)]
        starts = starts[graph.segment_of[starts] == graph.segment_of[starts + 1]]
    if starts.size == 0:
        distance, _ = graph.tree.query(point[:2])
        raise RouteError(
            route_id,
            f"keypoint {index} {_fmt(point)} is {distance:.1f} m from the nearest driving lane of "
            f"{graph.map_name} (at most {config.max_keypoint_offset_m:g} m allowed): fix its coordinates "
            "or check the route's town",
        )
    a, b = graph.xyz[starts], graph.xyz[starts + 1]
    ab = b[:, :2] - a[:, :2]
    length2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12)
    t = np.clip(np.einsum("ij,ij->i", point[:2] - a[:, :2], ab) / length2, 0.0, 1.0)
    projected = a + t[:, None] * (b - a)
    offset = np.linalg.norm(projected[:, :2] - point[:2], axis=1)
    level = np.abs(projected[:, 2] - point[2]) <= config.keypoint_height_tolerance_m
    if level.any():
        starts, t, projected, offset = starts[level], t[level], projected[level], offset[level]
    nearest = float(offset.min())
    if nearest > config.max_keypoint_offset_m:
        raise RouteError(
            route_id,
            f"keypoint {index} {_fmt(point)} is {nearest:.1f} m from the nearest driving lane of "
            f"{graph.map_name} (at most {config.max_keypoint_offset_m:g} m allowed): fix its coordinates "
            "or check the route's town",
        )
    best: dict[int, int] = {}  # segment -> row of its nearest piece
    for row in np.flatnonzero(offset <= nearest + config.lane_candidate_margin_m):
        segment = int(graph.segment_of[starts[row]])
        if segment not in best or offset[row] < offset[best[segment]]:
            best[segment] = int(row)
    return [
        _Candidate(
            node=int(starts[r]),
            t=float(t[r]),
            u=float(graph.u[starts[r]] + t[r] * (graph.u[starts[r] + 1] - graph.u[starts[r]])),
            xyz=tuple(projected[r].tolist()),
            offset_m=float(offset[r]),
        )
        for r in best.values()
    ]


def _search_leg(
    graph: LaneGraph,
    starts: list[_Candidate],
    start_costs: list[float],
    goals: list[_Candidate],
    bound: float,
    config: PlannerConfig,
) -> _Leg:
    """Multi-source, multi-goal A* from the start candidates (with their costs so far) to the goals.

    Cost = metres driven (3D) + `lane_change_cost_m` per lane change; heuristic = straight-line
    distance to the nearest goal. A lane change goes from a point of a lane to any point of the
    neighbour lane 0 < du <= `lane_change_max_length_m` ahead (du along the lane), so it also fits
    between keypoints a metre apart. The search goes on `lane_change_cost_m + alternative_slack_m`
    past the first goal reached, so that the other candidates of the keypoint (overlapping lanes,
    the neighbour lane) get their cost too; it stops at `bound`. Goals not reached cost infinity.
    """
    x, y, z, u, step, last = graph._x, graph._y, graph._z, graph._u, graph._step, graph._last
    seg_of, first_of_successors = graph._seg, graph._first_of_successors
    max_du = config.lane_change_max_length_m
    lc_cost = config.lane_change_cost_m
    goal_points = [g.xyz for g in goals]
    goals_on_piece: dict[int, list[int]] = {}
    goals_on_segment: dict[int, list[int]] = {}
    for k, goal in enumerate(goals):
        goals_on_piece.setdefault(goal.node, []).append(k)
        goals_on_segment.setdefault(seg_of[goal.node], []).append(k)

    def heuristic(n: int) -> float:
        return min(math.hypot(x[n] - gx, y[n] - gy, z[n] - gz) for gx, gy, gz in goal_points)

    cost: dict[int, float] = {}
    pred: dict[int, tuple[int, int]] = {}
    heap: list[tuple[float, float, int]] = []
    goal_costs = [math.inf] * len(goals)
    goal_back: list[tuple[int, int, int]] = [(-1, -1, FOLLOW)] * len(goals)

    def reach_goal(k: int, value: float, back: tuple[int, int, int]) -> None:
        if value < goal_costs[k]:
            goal_costs[k] = value
            goal_back[k] = back
            heapq.heappush(heap, (value, value, -1 - k))

    def relax(n: int, value: float, previous: int, kind: int) -> None:
        if value < cost.get(n, math.inf):
            cost[n] = value
            pred[n] = (previous, kind)
            heapq.heappush(heap, (value + heuristic(n), value, n))

    def change_lanes(
        origin: tuple[float, float, float], u0: float, sample: int, value: float, previous: int
    ) -> None:
        """Lane changes from a point at along-coordinate u0 (permitted by the marking at `sample`).

        `previous` is the graph node the change starts from, or -1 - k for start candidate k.
        """
        ox, oy, oz = origin
        goal_back = (-1 - previous, -1) if previous < 0 else (-1, previous)
        for kind, changes in graph.lane_changes:
            if not changes.allowed[sample]:
                continue
            m = changes.ahead[sample]
            end = last[m] if m >= 0 else -1
            while 0 <= m <= end and u[m] - u0 <= max_du:
                relax(m, value + math.hypot(x[m] - ox, y[m] - oy, z[m] - oz) + lc_cost, previous, kind)
                m += 1
            for g in goals_on_segment.get(changes.neighbour_of[seg_of[sample]], ()):
                if 0.0 < goals[g].u - u0 <= max_du:
                    gx, gy, gz = goals[g].xyz
                    hop = math.hypot(gx - ox, gy - oy, gz - oz)
                    reach_goal(g, value + hop + lc_cost, (*goal_back, kind))

    base = min(start_costs)
    for k, (start, start_cost) in enumerate(zip(starts, start_costs, strict=True)):
        if math.isinf(start_cost):
            continue
        offset = start_cost - base
        for g in goals_on_piece.get(start.node, []):
            if goals[g].t >= start.t:
                reach_goal(g, offset + (goals[g].t - start.t) * step[start.node], (k, -1, FOLLOW))
        relax(start.node + 1, offset + (1.0 - start.t) * step[start.node], -1 - k, FOLLOW)
        change_lanes(start.xyz, start.u, start.node, offset, -1 - k)

    settled = [False] * len(goals)
    stop = bound
    while heap:
        f, value, n = heapq.heappop(heap)
        if f > stop:
            break
        if n < 0:
            k = -1 - n
            if value > goal_costs[k] or settled[k]:
                continue
            settled[k] = True
            stop = min(stop, value + lc_cost + config.alternative_slack_m)
            if all(settled):
                break
            continue
        if value > cost[n]:
            continue
        for g in goals_on_piece.get(n, ()):
            reach_goal(g, value + goals[g].t * step[n], (-1, n, FOLLOW))
        if n < last[n]:
            relax(n + 1, value + step[n], n, FOLLOW)
        else:
            for m in first_of_successors[seg_of[n]]:
                relax(m, value + math.hypot(x[m] - x[n], y[m] - y[n], z[m] - z[n]), n, FOLLOW)
        change_lanes((x[n], y[n], z[n]), u[n], n, value, n)
    costs = [(c + base) if s else math.inf for c, s in zip(goal_costs, settled, strict=True)]
    # Name, for every goal, the start candidate its path began at.
    back = [(b[0] if b[1] < 0 else _start_of(pred, b[1]), b[1], b[2]) for b in goal_back]
    return _Leg(costs, back, pred)


def _start_of(pred: dict[int, tuple[int, int]], node: int) -> int:
    """Index of the start candidate a search path to `node` began at."""
    while node >= 0:
        node = pred[node][0]
    return -1 - node


@dataclass
class _Path:
    """The planned polyline: vertices with the lane sample each lies on and the edge kind into it."""

    xyz: list[tuple[float, float, float]]
    yaw: list[float]
    node: list[int]  # graph sample of the vertex, or of the piece start for projected keypoints
    on_graph: list[bool]  # vertex is a graph sample (speed signs apply) rather than a projected keypoint
    kind: list[int]

    def add(self, xyz: tuple[float, float, float], yaw: float, node: int, on_graph: bool, kind: int) -> None:
        self.xyz.append(xyz)
        self.yaw.append(yaw)
        self.node.append(node)
        self.on_graph.append(on_graph)
        self.kind.append(kind)


def _lerp_angle(a: float, b: float, t: float) -> float:
    """Angle between a and b at fraction t, the short way round: a + t * wrap(b - a)."""
    return a + t * math.remainder(b - a, math.tau)


def _candidate_yaw(graph: LaneGraph, c: _Candidate) -> float:
    return _lerp_angle(float(graph.yaw[c.node]), float(graph.yaw[c.node + 1]), c.t)


def _trace(graph: LaneGraph, candidates: list[list[_Candidate]], legs: list[_Leg], final: int) -> _Path:
    """Polyline from the first to the last keypoint following the chosen candidates back."""
    pieces: list[list[tuple[int, int]]] = []  # per leg, graph (node, kind) in driving order
    goal_kinds: list[int] = []  # per leg, kind of the edge into its goal
    chosen = [final]
    for leg in reversed(legs):
        start, node, goal_kind = leg.goal_back[chosen[-1]]
        goal_kinds.append(goal_kind)
        nodes: list[tuple[int, int]] = []
        while node >= 0:
            previous, kind = leg.pred[node]
            nodes.append((node, kind))
            node = previous
        pieces.append(nodes[::-1])
        chosen.append(start)
    pieces.reverse()
    chosen.reverse()
    goal_kinds.reverse()
    path = _Path([], [], [], [], [])
    first = candidates[0][chosen[0]]
    path.add(first.xyz, _candidate_yaw(graph, first), first.node, False, FOLLOW)
    for leg_index, nodes in enumerate(pieces):
        for node, kind in nodes:
            path.add(tuple(graph.xyz[node].tolist()), float(graph.yaw[node]), node, True, kind)
        goal = candidates[leg_index + 1][chosen[leg_index + 1]]
        path.add(goal.xyz, _candidate_yaw(graph, goal), goal.node, False, goal_kinds[leg_index])
    return path


def _turn_decision(graph: LaneGraph, before: int, first: int, last: int, threshold_rad: float) -> RoadOption:
    """RoadOption of a junction crossing, as CARLA's GlobalRoutePlanner._turn_decision.

    cv = heading entering the junction (start of its first connector), nv = heading leaving it (end of
    its last connector); deviation = acos(cv . nv). Below the threshold STRAIGHT; otherwise compare
    next_cross = (cv x nv)_z with the crosses of cv and the other connectors leaving the same lane
    (unit vectors from their start to their end): below all of them LEFT, above all RIGHT, else by
    sign (CARLA's frame is left-handed, so a negative cross is a left turn).
    """
    entry_yaw = graph.yaw[graph.segments[first].first]
    exit_yaw = graph.yaw[graph.segments[last].last]
    cv = np.array([math.cos(entry_yaw), math.sin(entry_yaw), 0.0])
    nv = np.array([math.cos(exit_yaw), math.sin(exit_yaw), 0.0])
    crosses = []
    for other in graph.successors[before]:
        if other == first:
            continue
        seg = graph.segments[other]
        net = graph.xyz[seg.last] - graph.xyz[seg.first]
        norm = float(np.linalg.norm(net)) + np.finfo(float).eps
        crosses.append(float(np.cross(cv, net / norm)[2]))
    crosses = crosses or [0.0]
    next_cross = float(np.cross(cv, nv)[2])
    deviation = math.acos(float(np.clip(np.dot(cv, nv), -1.0, 1.0)))
    if deviation < threshold_rad:
        return RoadOption.STRAIGHT
    if next_cross < min(crosses):
        return RoadOption.LEFT
    if next_cross > max(crosses):
        return RoadOption.RIGHT
    # CARLA leaves an exact zero (a perfect U-turn) undecided; a U-turn goes left in right-hand traffic.
    return RoadOption.RIGHT if next_cross > 0 else RoadOption.LEFT


def _vertex_commands(graph: LaneGraph, path: _Path, config: PlannerConfig) -> np.ndarray:
    """Command of the piece starting at each vertex (the last vertex repeats the one before)."""
    segment = graph.segment_of[np.asarray(path.node)]
    junction = np.array([graph.segments[g].is_junction for g in segment.tolist()])
    count = len(path.node)
    commands = np.full(count, int(RoadOption.LANEFOLLOW), dtype=np.int8)
    kinds = np.asarray(path.kind)
    commands[:-1][kinds[1:] == CHANGE_LEFT] = int(RoadOption.CHANGELANELEFT)
    commands[:-1][kinds[1:] == CHANGE_RIGHT] = int(RoadOption.CHANGELANERIGHT)
    threshold = math.radians(config.turn_threshold_deg)
    index = 0
    while index < count:
        if not junction[index]:
            index += 1
            continue
        end = index
        while end + 1 < count and junction[end + 1]:
            end += 1
        if index > 0:  # a route starting inside a junction keeps LANEFOLLOW there, as CARLA's
            decision = _turn_decision(
                graph, int(segment[index - 1]), int(segment[index]), int(segment[end]), threshold
            )
            commands[index : end + 1] = int(decision)
        index = end + 1
    if count > 1:
        commands[-1] = commands[-2]
    return commands


def _initial_speed_limit(graph: LaneGraph, node: int, config: PlannerConfig) -> float:
    """km/h of the nearest speed sign upstream of sample `node` (inclusive) along the lanes, else default."""
    seen: dict[int, float] = {node: 0.0}
    heap = [(0.0, node)]
    while heap:
        distance, n = heapq.heappop(heap)
        if distance > seen.get(n, math.inf) or distance > config.speed_limit_lookback_m:
            continue
        sign = graph.speed_sign_kmh[n]
        if not math.isnan(sign):
            return float(sign)
        segment = graph.segments[graph._seg[n]]
        previous = (
            [n - 1]
            if n > segment.first
            else [graph.segments[p].last for p in graph.predecessors[graph._seg[n]]]
        )
        for p in previous:
            d = distance + float(np.linalg.norm(graph.xyz[n] - graph.xyz[p]))
            if d < seen.get(p, math.inf):
                seen[p] = d
                heapq.heappush(heap, (d, p))
    return config.default_speed_limit_kmh


def _densify(graph: LaneGraph, path: _Path, config: PlannerConfig) -> DenseRoute:
    """Resample the path polyline every `hop_resolution_m` (and at its end) and annotate it."""
    xyz = np.asarray(path.xyz, dtype=np.float64)
    nodes = np.asarray(path.node)
    yaw = np.asarray(path.yaw, dtype=np.float64)
    lengths = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    total = float(cumulative[-1])
    s = np.arange(0.0, total, config.hop_resolution_m) if total > 0 else np.zeros(1)
    if total - s[-1] > SAME_POINT_EPS_M:
        s = np.append(s, total)
    piece = np.clip(np.searchsorted(cumulative, s, side="right") - 1, 0, len(xyz) - 2)
    span = lengths[piece]
    t = np.where(span > 0, (s - cumulative[piece]) / np.where(span > 0, span, 1.0), 0.0)
    points = xyz[piece] + t[:, None] * (xyz[piece + 1] - xyz[piece])
    turn = np.remainder(yaw[piece + 1] - yaw[piece] + math.pi, math.tau) - math.pi
    headings = np.remainder(yaw[piece] + t * turn + math.pi, math.tau) - math.pi
    # A point belongs to the lane of its piece; on a lane change, to the lane it is nearer to.
    changing = np.asarray(path.kind)[piece + 1] != FOLLOW
    owner = np.where(changing & (t >= 0.5), piece + 1, piece)
    segment = graph.segment_of[nodes[owner]]
    vertex_commands = _vertex_commands(graph, path, config)
    # Speed limit in force at each vertex: the sign last passed, starting from the one upstream.
    limit_kmh = np.empty(len(xyz), dtype=np.float64)
    current = _initial_speed_limit(graph, int(nodes[0]), config)
    for i, (node, on_graph) in enumerate(zip(path.node, path.on_graph, strict=True)):
        sign = graph.speed_sign_kmh[node] if on_graph else math.nan
        if not math.isnan(sign):
            current = float(sign)
        limit_kmh[i] = current
    return DenseRoute(
        xyz=points,
        yaw=headings,
        commands=vertex_commands[piece].astype(np.int8),
        s=s,
        road_id=np.array([graph.segments[g].road_id for g in segment.tolist()], dtype=np.int32),
        lane_id=np.array([graph.segments[g].lane_id for g in segment.tolist()], dtype=np.int32),
        in_junction=np.array([graph.segments[g].is_junction for g in segment.tolist()], dtype=bool),
        speed_limit=(limit_kmh[piece] * KMH_TO_MS).astype(np.float32),
    )


def plan_route(route: Route, cmap: carla.Map, config: PlannerConfig | None = None) -> DenseRoute:
    """The dense route through `route.keypoints` on `cmap` (see the module docstring for the algorithm).

    Raises RouteError (naming the route and the keypoint) when a keypoint is farther than
    `max_keypoint_offset_m` from every driving lane, or cannot be reached from the previous one
    in the direction of travel within the detour bound.
    """
    config = config or PlannerConfig()
    config.validate()
    keypoints = np.asarray(route.keypoints, dtype=np.float64).reshape(-1, 3)
    not_finite = np.flatnonzero(~np.isfinite(keypoints).all(axis=1))
    if not_finite.size:
        raise RouteError(route.id, f"keypoint {not_finite[0]} has a non-finite coordinate: fix the route")
    distinct = [0] + [
        i
        for i in range(1, len(keypoints))
        if np.linalg.norm(keypoints[i] - keypoints[i - 1]) > SAME_POINT_EPS_M
    ]
    if len(distinct) < 2:
        raise RouteError(route.id, "needs at least two distinct keypoints to plan a route between them")
    graph = lane_graph(cmap, config.sampling_resolution_m)
    candidates = [_candidates(graph, keypoints[i], config, route.id, i) for i in distinct]
    costs = [c.offset_m * KEYPOINT_OFFSET_COST for c in candidates[0]]
    legs: list[_Leg] = []
    for leg_index in range(len(distinct) - 1):
        a, b = keypoints[distinct[leg_index]], keypoints[distinct[leg_index + 1]]
        straight = float(np.linalg.norm(b[:2] - a[:2]))
        bound = config.max_detour_ratio * straight + config.max_detour_slack_m
        leg = _search_leg(graph, candidates[leg_index], costs, candidates[leg_index + 1], bound, config)
        if all(math.isinf(c) for c in leg.goal_costs):
            raise RouteError(
                route.id,
                f"keypoint {distinct[leg_index + 1]} {_fmt(b)} cannot be reached from keypoint "
                f"{distinct[leg_index]} {_fmt(a)} along driving lanes in the direction of travel "
                f"within {bound:.0f} m (planner max_detour_ratio x straight distance + max_detour_slack_m): "
                "is it on an opposite-direction lane, on a road not connected to the previous one, or "
                "are the keypoints out of order?",
            )
        goals = candidates[leg_index + 1]
        costs = [c + g.offset_m * KEYPOINT_OFFSET_COST for c, g in zip(leg.goal_costs, goals, strict=True)]
        legs.append(leg)
    final = int(np.argmin(costs))
    path = _trace(graph, candidates, legs, final)
    return _densify(graph, path, config)


def prepare_routes(
    routes: Sequence[Route], maps: MapLibrary, config: PlannerConfig | None = None
) -> list[Route]:
    """Plan every route on its town (sets `route.dense`) and return the routes.

    Raises RouteError naming the route when its town is unknown or planning fails.
    """
    for route in routes:
        try:
            cmap = maps.load(route.town)
        except TakeoverError as exc:
            raise RouteError(route.id, str(exc)) from exc
        route.dense = plan_route(route, cmap, config)
    return list(routes)


def locate_on_route(
    dense: DenseRoute, xy: Sequence[float] | np.ndarray, start_index: int = 0, window: int = 50
) -> tuple[int, float]:
    """Where `xy` is along the dense route, searching `window` points ahead of `start_index` only.

    Projects xy onto each piece p_i -> p_{i+1} in the window (t = clamp((x - p_i).(p_{i+1} - p_i) /
    |p_{i+1} - p_i|^2, 0, 1)) and returns (index of the dense point nearest the closest projection,
    horizontal distance from xy to the route there, in metres).
    """
    count = len(dense)
    if count == 0:
        raise ValueError("locate_on_route: the dense route is empty")
    start = int(np.clip(start_index, 0, count - 1))
    stop = min(count, start + max(int(window), 1) + 1)
    points = dense.xyz[start:stop, :2]
    target = np.asarray(xy, dtype=np.float64)[:2]
    if len(points) == 1:
        return start, float(np.linalg.norm(target - points[0]))
    a, b = points[:-1], points[1:]
    ab = b - a
    length2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12)
    t = np.clip(np.einsum("ij,ij->i", target - a, ab) / length2, 0.0, 1.0)
    distance = np.linalg.norm(a + t[:, None] * ab - target, axis=1)
    best = int(np.argmin(distance))
    return start + best + int(t[best] >= 0.5), float(distance[best])
