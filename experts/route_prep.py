"""Route preparation: the dense route turned into the path the expert drives.

From the ~1 m dense route: snap points to their lane centre (outside junctions), smooth the lateral
jumps of lane changes into cosine ramps, pad straight ends, resample at a uniform spacing (so that an
arc length maps to an index by one division), and precompute per point: heading, curvature, speed
limit, command, junction flag, lane width and what lies left and right (same-direction lane, opposite
lane or nothing). Also the allowed-speed profile and the tracker that follows the ego along the path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import carla
import numpy as np

from carla_bridge.errors import RouteError
from carla_bridge.geometry import wrap_angle
from carla_bridge.route import DenseRoute, RoadOption, Route
from experts.config import RoutePrepConfig, SpeedConfig

LANE_CHANGE_DEDUP_M = 5.0  # a smoothed jump this close to a planned lane change is the same one


class NeighbourLane(IntEnum):
    NONE = 0  # no drivable lane (shoulder, sidewalk, junction)
    SAME = 1  # driving lane in the route's direction
    OPPOSITE = 2  # driving lane of oncoming traffic


@dataclass
class PreparedRoute:
    """The expert's path: arrays with one row per point, `spacing_m` apart, point 0 at arc length `s0_m`.

    Arc length s is measured on the path itself (s = 0 at the first dense point). Lateral offsets are
    positive to the right of the path (CARLA frame).
    """

    spacing_m: float
    s0_m: float
    xy: np.ndarray  # (M, 2)
    z: np.ndarray  # (M,)
    yaw: np.ndarray  # (M,) radians
    curvature: np.ndarray  # (M,) 1/m, positive turning right
    speed_limit: np.ndarray  # (M,) m/s
    command: np.ndarray  # (M,) int8 RoadOption
    in_junction: np.ndarray  # (M,) bool
    lane_width: np.ndarray  # (M,) m
    left_lane: np.ndarray  # (M,) int8 NeighbourLane
    right_lane: np.ndarray  # (M,) int8 NeighbourLane
    left_width: np.ndarray  # (M,) m (0 without a lane)
    right_width: np.ndarray  # (M,) m
    junctions: np.ndarray  # (J, 2) s of entry and exit of each junction on the route
    lane_changes: np.ndarray  # (C,) s at the middle of each lane change
    lane_change_windows: np.ndarray  # (W, 3) s where each smoothed lane change starts, ends, its shift (m)
    dense_s: np.ndarray  # (D,) path arc length of each dense route point
    length_m: float  # arc length of the unpadded route

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def s_at(self, index: int) -> float:
        return self.s0_m + index * self.spacing_m

    def index_at(self, s: float) -> int:
        """Nearest point index of arc length s, clipped to the path."""
        i = round((s - self.s0_m) / self.spacing_m)
        return min(max(i, 0), len(self) - 1)

    def indices_at(self, s: np.ndarray) -> np.ndarray:
        i = np.rint((np.asarray(s) - self.s0_m) / self.spacing_m).astype(np.int64)
        return np.clip(i, 0, len(self) - 1)

    def normal(self, index: np.ndarray | int) -> np.ndarray:
        """Unit right normal (-sin yaw, cos yaw) at points."""
        yaw = self.yaw[index]
        return np.stack([-np.sin(yaw), np.cos(yaw)], axis=-1)

    def project(
        self, points: np.ndarray, i0: int, i1: int, stride: int = 5
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Arc length s, lateral offset d (right positive) and path yaw of points (N, 2) on path[i0:i1].

        The nearest of every `stride`-th point is refined by projecting on its tangent:
        s = s_j + (p - p_j) . t_j,  d = (p - p_j) . n_j.
        """
        i0 = max(i0, 0)
        i1 = min(max(i1, i0 + 1), len(self))
        cand = np.arange(i0, i1, max(stride, 1))
        pts = self.xy[cand]
        diff = points[:, None, :] - pts[None, :, :]
        j = cand[np.argmin((diff**2).sum(-1), axis=1)]
        r = points - self.xy[j]
        yaw = self.yaw[j]
        c, s = np.cos(yaw), np.sin(yaw)
        return self.s0_m + j * self.spacing_m + r[:, 0] * c + r[:, 1] * s, -r[:, 0] * s + r[:, 1] * c, yaw

    def next_junction(self, s: float) -> tuple[float, float] | None:
        """(entry, exit) of the first junction whose exit lies ahead of s."""
        if not len(self.junctions):
            return None
        k = int(np.searchsorted(self.junctions[:, 1], s, side="right"))
        return (
            None if k >= len(self.junctions) else (float(self.junctions[k, 0]), float(self.junctions[k, 1]))
        )

    def locate_stop_line(self, x: float, y: float, yaw: float, cfg: RoutePrepConfig) -> float | None:
        """Arc length of a stop line (x, y, lane yaw) on the path, or None when it controls another lane."""
        d2 = (self.xy[:, 0] - x) ** 2 + (self.xy[:, 1] - y) ** 2
        j = int(np.argmin(d2))
        if d2[j] > cfg.stop_line_match_distance_m**2:
            return None
        if abs(float(wrap_angle(self.yaw[j] - yaw))) > math.radians(cfg.stop_line_match_yaw_deg):
            return None
        return float(self.s_at(j))


def cosine_ramp(u: np.ndarray) -> np.ndarray:
    """Smooth step 0 -> 1 on u in [0, 1]: (1 - cos(pi u)) / 2, clamped outside."""
    u = np.clip(u, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * u)


def _lane_info(cmap: carla.Map, x: float, y: float, z: float) -> carla.Waypoint | None:
    return cmap.get_waypoint(
        carla.Location(x=x, y=y, z=z), project_to_road=True, lane_type=carla.LaneType.Driving
    )


def _neighbour(wp: carla.Waypoint, side: str) -> tuple[int, float]:
    other = wp.get_left_lane() if side == "left" else wp.get_right_lane()
    if other is None or other.lane_type != carla.LaneType.Driving:
        return NeighbourLane.NONE, 0.0
    same = (other.lane_id > 0) == (wp.lane_id > 0)
    return (NeighbourLane.SAME if same else NeighbourLane.OPPOSITE), float(other.lane_width)


def smooth_lane_changes(
    xy: np.ndarray, yaw: np.ndarray, lengths: np.ndarray, jump_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Replace lateral jumps between consecutive points by cosine ramps centred on the jump.

    For a jump of lateral size D (right positive) between points i and i+1 with ramp length L around
    the midpoint s_c: points before move by +D w(s), points after by -D (1 - w(s)), along their right
    normal, w(s) = cosine_ramp((s - s_c + L/2) / L). Returns the new points and, per jump, its window
    (C, 3): arc length where the move starts and ends, and the lateral shift D.
    """
    seg = np.diff(xy, axis=0)
    c, s = np.cos(yaw[:-1]), np.sin(yaw[:-1])
    lateral = -seg[:, 0] * s + seg[:, 1] * c
    jumps = np.flatnonzero(np.abs(lateral) > jump_m)
    if not len(jumps):
        return xy, np.zeros((0, 3))
    # Arc length along the route ignoring the sideways part of the jumps.
    forward = seg[:, 0] * c + seg[:, 1] * s
    step = np.where(np.abs(lateral) > jump_m, np.abs(forward), np.hypot(seg[:, 0], seg[:, 1]))
    arc = np.concatenate([[0.0], np.cumsum(step)])
    normals = np.stack([-np.sin(yaw), np.cos(yaw)], axis=-1)
    out = xy.copy()
    centres = 0.5 * (arc[jumps] + arc[jumps + 1])
    windows = np.zeros((len(jumps), 3))
    for k, (i, sc) in enumerate(zip(jumps, centres, strict=True)):
        half = 0.5 * lengths[i]
        lo = sc - half if k == 0 else max(sc - half, 0.5 * (centres[k - 1] + sc))
        hi = sc + half if k == len(jumps) - 1 else min(sc + half, 0.5 * (centres[k + 1] + sc))
        w = cosine_ramp((arc - lo) / max(hi - lo, 1e-6))
        before = (arc >= lo) & (np.arange(len(arc)) <= i)
        after = (arc <= hi) & (np.arange(len(arc)) > i)
        out[before] += lateral[i] * w[before, None] * normals[before]
        out[after] -= lateral[i] * (1.0 - w[after, None]) * normals[after]
        windows[k] = (lo, hi, lateral[i])
    return out, windows


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [a, b] of consecutive True values."""
    if not mask.any():
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _lead_in(cmap: carla.Map, start: np.ndarray, yaw: float, cfg: RoutePrepConfig) -> np.ndarray:
    """(M, 2) points, farthest first, `pad_before_m` back from `start` along the lane that leads into
    it (the predecessor that keeps the heading at each step), straight on where the map has no lane."""
    points: list[tuple[float, float]] = []
    wp = _lane_info(cmap, float(start[0]), float(start[1]), float(start[2]))
    max_yaw = math.radians(cfg.snap_max_yaw_deg)
    if (
        wp is not None
        and abs(float(wrap_angle(math.radians(wp.transform.rotation.yaw) - yaw))) < max_yaw
        and wp.transform.location.distance(
            carla.Location(x=float(start[0]), y=float(start[1]), z=float(start[2]))
        )
        < cfg.snap_max_distance_m
    ):
        for _ in range(int(cfg.pad_before_m / cfg.lead_in_step_m)):
            previous = wp.previous(cfg.lead_in_step_m)
            if not previous:
                break
            heading = math.radians(wp.transform.rotation.yaw)
            wp = min(
                previous,
                key=lambda p: abs(float(wrap_angle(math.radians(p.transform.rotation.yaw) - heading))),
            )
            points.append((wp.transform.location.x, wp.transform.location.y))
    end = np.array(points[-1]) if points else np.asarray(start[:2], float)
    covered = len(points) * cfg.lead_in_step_m
    if covered < cfg.pad_before_m:  # straight on from the last lane point (or the start)
        back = yaw if len(points) < 2 else math.atan2(points[-2][1] - end[1], points[-2][0] - end[0])
        end = end - (cfg.pad_before_m - covered) * np.array([math.cos(back), math.sin(back)])
        points.append((float(end[0]), float(end[1])))
    return np.array(points[::-1], float).reshape(-1, 2)


def prepare_route(
    route: Route, cmap: carla.Map, cfg: RoutePrepConfig, speed: SpeedConfig | None = None
) -> PreparedRoute:
    """Build the expert's path from `route.dense` and the map (see module docstring)."""
    dense = route.dense
    if dense is None or len(dense) < 2:
        raise RouteError(
            route.id, "has no dense route; plan it first (carla_bridge.route_planner.prepare_routes)"
        )
    speed = speed or SpeedConfig()
    keep = _kept_points(dense)
    xyz = dense.xyz[keep].astype(float)
    yaw_in = dense.yaw[keep].astype(float)
    in_junction = dense.in_junction[keep].astype(bool)
    n = len(xyz)

    lane_width = np.full(n, cfg.default_lane_width_m)
    left, right = np.zeros(n, np.int8), np.zeros(n, np.int8)
    left_w, right_w = np.zeros(n), np.zeros(n)
    max_yaw = math.radians(cfg.snap_max_yaw_deg)
    for i in range(n):
        wp = _lane_info(cmap, xyz[i, 0], xyz[i, 1], xyz[i, 2])
        if wp is None:
            continue
        loc = wp.transform.location
        wyaw = math.radians(wp.transform.rotation.yaw)
        aligned = abs(float(wrap_angle(wyaw - yaw_in[i]))) < max_yaw
        if not aligned:
            continue
        lane_width[i] = wp.lane_width
        if in_junction[i] or wp.is_junction:
            continue
        if math.hypot(loc.x - xyz[i, 0], loc.y - xyz[i, 1]) < cfg.snap_max_distance_m:
            xyz[i, 0], xyz[i, 1] = loc.x, loc.y
        left[i], left_w[i] = _neighbour(wp, "left")
        right[i], right_w[i] = _neighbour(wp, "right")

    xy = xyz[:, :2]
    limit = dense.speed_limit[keep].astype(float)
    lc_len = np.clip(
        speed.speed_limit_fraction * limit * cfg.lane_change_duration_s,
        cfg.lane_change_min_length_m,
        cfg.lane_change_max_length_m,
    )
    # The lanes' own heading (not the polyline's, which a jump skews) measures the jumps.
    xy, lc_windows = smooth_lane_changes(xy, yaw_in, lc_len, cfg.lane_change_jump_m)
    jump_arc = 0.5 * (lc_windows[:, 0] + lc_windows[:, 1])

    # Pads so that look-ahead never runs off either end; the one before the start follows the lane
    # the ego comes from, so that traffic coming up from behind is forecast along its lane.
    yaw_pts = _polyline_yaw(xy)
    head = _lead_in(cmap, np.array([xy[0, 0], xy[0, 1], xyz[0, 2]]), float(yaw_pts[0]), cfg)
    tail = xy[-1] + cfg.pad_after_m * np.array([math.cos(yaw_pts[-1]), math.sin(yaw_pts[-1])])
    poly = np.vstack([head, xy, tail])
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(poly, axis=0).T))])
    arc -= arc[len(head)]  # s = 0 at the first dense point
    dense_s = arc[len(head) : -1]
    sp = cfg.resample_spacing_m
    s_new = sp * np.arange(math.ceil(arc[0] / sp - 1e-9), math.floor(arc[-1] / sp) + 1)  # s = 0 on the grid
    x_new = np.interp(s_new, arc, poly[:, 0])
    y_new = np.interp(s_new, arc, poly[:, 1])
    src = np.clip(np.searchsorted(dense_s, s_new, side="right") - 1, 0, n - 1)
    xy_new = np.stack([x_new, y_new], axis=1)
    yaw_new = _polyline_yaw(xy_new)
    w = max(round(cfg.curvature_window_m / sp), 1)
    unwrapped = np.unwrap(yaw_new)
    padded = np.concatenate([np.full(w, unwrapped[0]), unwrapped, np.full(w, unwrapped[-1])])
    curvature = (padded[2 * w :] - padded[: -2 * w]) / (2 * w * sp)

    commands = dense.commands[keep].astype(np.int8)[src]
    junc = in_junction[src]
    # Pads carry no junction and follow the lane.
    pad_mask = (s_new < 0.0) | (s_new > dense_s[-1])
    junc = junc & ~pad_mask
    s_arr = s_new
    junctions = np.array([(s_arr[a], s_arr[b]) for a, b in _runs(junc)]).reshape(-1, 2)
    all_s = _dense_index_to_s(keep, dense_s, len(dense))
    lc_mask = np.isin(dense.commands, (RoadOption.CHANGELANELEFT, RoadOption.CHANGELANERIGHT))
    # Lane changes: the planner's CHANGELANE runs, and any other lateral jump that was smoothed.
    lane_changes = [
        0.5 * (all_s[max(a - 1, 0)] + all_s[min(b + 1, len(all_s) - 1)]) for a, b in _runs(lc_mask)
    ]
    lane_changes += [
        float(j) for j in jump_arc if all(abs(j - c) > LANE_CHANGE_DEDUP_M for c in lane_changes)
    ]
    return PreparedRoute(
        spacing_m=sp,
        s0_m=float(s_new[0]),
        xy=xy_new,
        z=xyz[src, 2],
        yaw=yaw_new,
        curvature=curvature,
        speed_limit=limit[src],
        command=commands,
        in_junction=junc,
        lane_width=lane_width[src],
        left_lane=np.where(pad_mask, NeighbourLane.NONE, left[src]).astype(np.int8),
        right_lane=np.where(pad_mask, NeighbourLane.NONE, right[src]).astype(np.int8),
        left_width=left_w[src],
        right_width=right_w[src],
        junctions=junctions,
        lane_changes=np.sort(np.asarray(lane_changes, dtype=float)),
        lane_change_windows=lc_windows,
        dense_s=all_s,
        length_m=float(dense_s[-1]),
    )


def _kept_points(dense: DenseRoute) -> np.ndarray:
    """Indices of the dense points the path is built from.

    Duplicates of their predecessor go, and so do the points of a lane-change manoeuvre (CHANGELANE
    commands): the lateral jump they leave is smoothed again over a length fitted to the speed.
    """
    d = np.hypot(*np.diff(dense.xyz[:, :2], axis=0).T)
    keep = np.concatenate([[True], d > 1e-3])
    lc = np.isin(dense.commands, (RoadOption.CHANGELANELEFT, RoadOption.CHANGELANERIGHT))
    for a, b in _runs(lc):
        if a > 0 and b < len(dense) - 1:
            keep[a : b + 1] = False
    return np.flatnonzero(keep)


def _dense_index_to_s(keep: np.ndarray, dense_s: np.ndarray, n_dense: int) -> np.ndarray:
    """Path arc length of every original dense index (duplicates share their predecessor's)."""
    pos = np.searchsorted(keep, np.arange(n_dense), side="right") - 1
    return dense_s[np.clip(pos, 0, len(dense_s) - 1)]


def _polyline_yaw(xy: np.ndarray) -> np.ndarray:
    """Heading of each point from the central difference of its neighbours."""
    if len(xy) < 2:
        return np.zeros(len(xy))
    g = np.gradient(xy, axis=0)
    return np.arctan2(g[:, 1], g[:, 0])


class SpeedCap(IntEnum):
    """What sets the allowed speed at a point."""

    BASE = 0  # fraction of the local speed limit
    SPEED_LIMIT = 1  # a lower speed limit ahead
    CURVE = 2
    JUNCTION = 3


def allowed_speed_profile(route: PreparedRoute, cfg: SpeedConfig) -> tuple[np.ndarray, np.ndarray]:
    """Cruise speed each point allows, looking ahead with a comfortable deceleration, and its cause.

    v_point = min(f v_limit, v_max, sqrt(a_lat / |kappa|), v_junction within the junction cap distance);
    v_allowed(s_i) = min_j>=i sqrt(v_point(s_j)^2 + 2 b (s_j - s_i))   (backward pass).
    Returns (v_allowed (M,), SpeedCap codes (M,)).
    """
    base = np.minimum(cfg.speed_limit_fraction * route.speed_limit, cfg.max_speed_mps)
    cause = np.full(len(route), SpeedCap.BASE, np.int8)
    curve = np.sqrt(cfg.max_lateral_accel_mps2 / np.maximum(np.abs(route.curvature), 1e-6))
    v = np.minimum(base, curve)
    cause[curve < base] = SpeedCap.CURVE
    if len(route.junctions):
        s = route.s0_m + np.arange(len(route)) * route.spacing_m
        near = np.zeros(len(route), bool)
        for entry, exit_ in route.junctions:
            near |= (s >= entry - cfg.junction_cap_distance_m) & (s <= exit_)
        capped = near & (cfg.junction_speed_mps < v)
        v = np.where(capped, cfg.junction_speed_mps, v)
        cause[capped] = SpeedCap.JUNCTION
    # Backward pass: v_i^2 <= v_{i+1}^2 + 2 b ds; a bound inherited from ahead keeps its cause
    # (a base bound from ahead is a lower speed limit ahead).
    v2 = (v**2).tolist()
    causes = cause.tolist()
    inc = 2.0 * cfg.curve_decel_mps2 * route.spacing_m
    for i in range(len(v2) - 2, -1, -1):
        if v2[i] > v2[i + 1] + inc:
            v2[i] = v2[i + 1] + inc
            c = causes[i + 1]
            causes[i] = SpeedCap.SPEED_LIMIT if c == SpeedCap.BASE else c
    return np.sqrt(np.asarray(v2)), np.asarray(causes, np.int8)


class RouteTracker:
    """Follows the ego along the path: nearest point in a short window ahead, never going back."""

    def __init__(self, route: PreparedRoute, cfg: RoutePrepConfig) -> None:
        self.route = route
        self.window = max(int(cfg.track_search_ahead_m / route.spacing_m), 2)
        self.index: int | None = None

    def reset(self) -> None:
        self.index = None

    def update(self, x: float, y: float, hint_s: float | None = None) -> int:
        """Index of the ego's point. The first call searches around `hint_s` (or the whole path)."""
        r = self.route
        if self.index is None:
            if hint_s is None:
                lo, hi = 0, len(r)
            else:
                c = r.index_at(hint_s)
                span = int(20.0 / r.spacing_m)
                lo, hi = max(c - span, 0), min(c + span, len(r))
        else:
            lo, hi = self.index, min(self.index + self.window, len(r))
        d2 = (r.xy[lo:hi, 0] - x) ** 2 + (r.xy[lo:hi, 1] - y) ** 2
        self.index = lo + int(np.argmin(d2))
        return self.index
