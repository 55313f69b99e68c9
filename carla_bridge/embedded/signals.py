"""Traffic lights and stop signs of a map: where they are, which lanes they control, and light phases.

Lights come from the map's signal landmarks (type "1000001"), one light per landmark id; stop signs
from type "206" (and landmarks named like CARLA's "stencil_stop"/"STOP"). Each landmark reference
controls the lanes of its validity range; the stop line of a lane is the junction entry of that lane
(the lane end before the junction), as in the leaderboard's red-light test. Per junction the lights
are grouped by approach axis (opposite approaches share a green) and cycle
green -> yellow -> all-red through the groups:

    C_j = n_groups x (green + yellow + all_red);  t = (time + offset_j - group x slot) mod C_j
    state = GREEN if t < green, YELLOW if t < green + yellow, else RED.

Scenarios may force a light (`force`) for a while. Everything the traffic model needs per tick is a
handful of arrays indexed by segment (`entry_kind`, `entry_signal`) and by light (`state`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import carla
import numpy as np

from carla_bridge.embedded.config import SignalConfig
from carla_bridge.embedded.lane_graph import LaneGraph, _landmark_lanes
from carla_bridge.geometry import wrap_angle
from carla_bridge.snapshot import Pose, StopLine, StopSign, TrafficLight, TrafficLightState

LIGHT_TYPE = "1000001"
STOP_SIGN_TYPE = "206"
STOP_SIGN_NAMES = ("stencil_stop", "stop")
SYNTHETIC_LIGHT_ID_BASE = 900_000  # ids of lights generated for junctions without landmarks

ENTRY_NONE = 0
ENTRY_LIGHT = 1
ENTRY_STOP = 2

_GREEN, _YELLOW, _RED = (
    int(TrafficLightState.GREEN),
    int(TrafficLightState.YELLOW),
    int(TrafficLightState.RED),
)
_STATES = {int(s): s for s in TrafficLightState}
NEAR_CACHE_MARGIN_M = 5.0  # lights/stop signs near the ego are re-gathered after it moved this far


@dataclass
class SignalLayout:
    """Static part (per map): lights, stop signs and the entries (segments) they control."""

    light_ids: np.ndarray  # (L,) int64
    light_pose: list[Pose]
    light_junction: np.ndarray  # (L,) int32
    light_group: np.ndarray  # (L,) int32 green group within the junction
    light_groups_in_junction: np.ndarray  # (L,) int32 number of groups of its junction
    light_entries: list[np.ndarray]  # per light: entry segments
    light_stop_lines: list[tuple[StopLine, ...]]
    light_center: np.ndarray  # (L, 2) centroid of the stop lines (snapshot radius test)
    stop_ids: np.ndarray  # (K,) int64
    stop_pose: list[Pose]
    stop_junction: np.ndarray
    stop_entries: list[np.ndarray]
    stop_stop_lines: list[tuple[StopLine, ...]]
    stop_center: np.ndarray  # (K, 2)
    entry_kind: np.ndarray  # (S,) int8 ENTRY_* per segment (only junction entries are set)
    entry_signal: np.ndarray  # (S,) int32 light or stop-sign index

    @property
    def num_lights(self) -> int:
        return int(self.light_ids.shape[0])


def _stop_line(graph: LaneGraph, seg: int) -> StopLine:
    last = int(graph.seg_start[seg] + graph.seg_count[seg] - 1)
    ex, ey = graph.seg_end_xy[seg]
    return StopLine(
        x=float(ex),
        y=float(ey),
        yaw=float(graph.yaw[last]),
        road_id=int(graph.seg_road[seg]),
        lane_id=int(graph.seg_lane[seg]),
        width=float(graph.width[last]),
    )


def _entries_of_landmark(cmap: carla.Map, graph: LaneGraph, lm: carla.Landmark) -> list[int]:
    """Junction-entry segments controlled by one landmark reference."""
    out: list[int] = []
    for lane in _landmark_lanes(cmap, lm):
        wp = cmap.get_waypoint_xodr(int(lm.road_id), int(lane), float(lm.s))
        if wp is None:
            continue
        node = graph.node_of_waypoint(wp)
        if node < 0:
            continue
        seg = int(graph.seg[node])
        if graph.seg_junction[seg] >= 0:
            cands = [int(p) for p in graph.predecessors(seg) if graph.is_entry[p]]
        elif graph.is_entry[seg]:
            cands = [seg]
        else:
            e = int(graph.entry_seg[node])
            cands = [e] if e >= 0 else []
        out.extend(c for c in cands if c not in out)
    return out


def _pose(lm: carla.Landmark) -> Pose:
    t = lm.transform
    return Pose(float(t.location.x), float(t.location.y), float(t.location.z), math.radians(t.rotation.yaw))


def _junction_of_entries(graph: LaneGraph, entries: list[int]) -> int:
    for e in entries:
        for s in graph.successors(e):
            if graph.seg_junction[s] >= 0:
                return int(graph.seg_junction[s])
    return -1


def _group_by_axis(yaws: list[float], tol_rad: float) -> list[int]:
    """Group index per approach: approaches whose directions are equal or opposite (within tol) share one."""
    groups: list[int] = []
    axes: list[float] = []
    for y in yaws:
        for g, a in enumerate(axes):
            d = abs(wrap_angle(y - a))
            if d <= tol_rad or abs(d - math.pi) <= tol_rad:
                groups.append(g)
                break
        else:
            axes.append(y)
            groups.append(len(axes) - 1)
    return groups


def build_signal_layout(cmap: carla.Map, graph: LaneGraph, cfg: SignalConfig) -> SignalLayout:
    """Lights and stop signs of `cmap` attached to the lane graph (module docstring)."""
    light_refs: dict[int, list[carla.Landmark]] = {}
    stop_refs: dict[int, list[carla.Landmark]] = {}
    for lm in cmap.get_all_landmarks():
        name = str(lm.name).lower()
        if str(lm.type) == LIGHT_TYPE:
            light_refs.setdefault(int(lm.id), []).append(lm)
        elif str(lm.type) == STOP_SIGN_TYPE or any(name.startswith(n) for n in STOP_SIGN_NAMES):
            stop_refs.setdefault(int(lm.id), []).append(lm)

    S = graph.num_segments
    entry_kind = np.zeros(S, np.int8)
    entry_signal = np.full(S, -1, np.int32)

    lights: list[tuple[int, Pose, list[int]]] = []
    for lid in sorted(light_refs):
        entries: list[int] = []
        for lm in light_refs[lid]:
            entries.extend(e for e in _entries_of_landmark(cmap, graph, lm) if e not in entries)
        entries = [e for e in entries if entry_kind[e] == ENTRY_NONE]  # first light wins a lane
        if not entries:
            continue
        for e in entries:
            entry_kind[e] = ENTRY_LIGHT
            entry_signal[e] = len(lights)
        lights.append((lid, _pose(light_refs[lid][0]), entries))

    stops: list[tuple[int, Pose, list[int]]] = []
    for sid in sorted(stop_refs):
        entries = []
        for lm in stop_refs[sid]:
            entries.extend(e for e in _entries_of_landmark(cmap, graph, lm) if e not in entries)
        entries = [e for e in entries if entry_kind[e] == ENTRY_NONE]
        if not entries:
            continue
        for e in entries:
            entry_kind[e] = ENTRY_STOP
            entry_signal[e] = len(stops)
        stops.append((sid, _pose(stop_refs[sid][0]), entries))

    if cfg.generate_missing_lights:
        lights.extend(_synthetic_lights(graph, entry_kind, entry_signal, len(lights)))

    tol = math.radians(cfg.approach_group_tolerance_deg)
    light_junction = np.asarray([_junction_of_entries(graph, e) for _, _, e in lights], np.int32)
    light_group = np.zeros(len(lights), np.int32)
    n_groups = np.ones(len(lights), np.int32)
    for j in sorted(set(light_junction.tolist())):
        members = np.flatnonzero(light_junction == j)
        if j < 0:
            continue
        yaws = []
        for m in members:
            e = lights[m][2][0]
            yaws.append(float(graph.yaw[graph.seg_start[e] + graph.seg_count[e] - 1]))
        groups = _group_by_axis(yaws, tol)
        light_group[members] = groups
        n_groups[members] = max(groups) + 1

    light_lines = [tuple(_stop_line(graph, e) for e in ent) for _, _, ent in lights]
    stop_lines = [tuple(_stop_line(graph, e) for e in ent) for _, _, ent in stops]

    def centers(lines: list[tuple[StopLine, ...]]) -> np.ndarray:
        if not lines:
            return np.zeros((0, 2))
        return np.asarray([[np.mean([sl.x for sl in ls]), np.mean([sl.y for sl in ls])] for ls in lines])

    return SignalLayout(
        light_ids=np.asarray([lid for lid, _, _ in lights], np.int64),
        light_pose=[p for _, p, _ in lights],
        light_junction=light_junction,
        light_group=light_group,
        light_groups_in_junction=n_groups,
        light_entries=[np.asarray(e, np.int32) for _, _, e in lights],
        light_stop_lines=light_lines,
        light_center=centers(light_lines),
        stop_ids=np.asarray([sid for sid, _, _ in stops], np.int64),
        stop_pose=[p for _, p, _ in stops],
        stop_junction=np.asarray([_junction_of_entries(graph, e) for _, _, e in stops], np.int32),
        stop_entries=[np.asarray(e, np.int32) for _, _, e in stops],
        stop_stop_lines=stop_lines,
        stop_center=centers(stop_lines),
        entry_kind=entry_kind,
        entry_signal=entry_signal,
    )


def _synthetic_lights(graph: LaneGraph, entry_kind, entry_signal, first_index: int):
    """One light per approach of every 4-way junction that has no light or stop sign at all."""
    out: list[tuple[int, Pose, list[int]]] = []
    by_junction: dict[int, list[int]] = {}
    for e in np.flatnonzero(graph.is_entry):
        j = _junction_of_entries(graph, [int(e)])
        by_junction.setdefault(j, []).append(int(e))
    for j in sorted(by_junction):
        entries = by_junction[j]
        if j < 0 or any(entry_kind[e] != ENTRY_NONE for e in entries):
            continue
        yaws = [float(graph.yaw[graph.seg_start[e] + graph.seg_count[e] - 1]) for e in entries]
        # approaches = distinct directions (same heading within 30 deg)
        approaches: list[list[int]] = []
        heads: list[float] = []
        for e, y in zip(entries, yaws, strict=True):
            for k, h in enumerate(heads):
                if abs(wrap_angle(y - h)) < math.radians(30.0):
                    approaches[k].append(e)
                    break
            else:
                heads.append(y)
                approaches.append([e])
        if len(approaches) != 4:
            continue
        for k, ents in enumerate(approaches):
            idx = first_index + len(out)
            for e in ents:
                entry_kind[e] = ENTRY_LIGHT
                entry_signal[e] = idx
            ex, ey = graph.seg_end_xy[ents[0]]
            out.append(
                (SYNTHETIC_LIGHT_ID_BASE + 10 * j + k, Pose(float(ex), float(ey), 0.0, heads[k]), ents)
            )
    return out


class SignalState:
    """Dynamic part: phase clock per light, forced states, and snapshot tuples."""

    def __init__(self, layout: SignalLayout, cfg: SignalConfig, rng: np.random.Generator) -> None:
        self.layout = layout
        self.cfg = cfg
        L = layout.num_lights
        slot = cfg.green_s + cfg.yellow_s + cfg.all_red_s
        self._slot = slot
        self._cycle = layout.light_groups_in_junction.astype(np.float64) * slot
        junctions = sorted(set(layout.light_junction.tolist()))
        offs = {j: (float(rng.uniform(0.0, 1.0)) if cfg.randomize_phase else 0.0) for j in junctions}
        self._offset = np.asarray([offs[j] for j in layout.light_junction.tolist()], np.float64) * self._cycle
        self._group_start = layout.light_group.astype(np.float64) * slot
        self._forced_state = np.full(L, -1, np.int8)
        self._forced_until = np.zeros(L)
        self._forced_since = np.zeros(L)
        self._id_to_index = {int(i): k for k, i in enumerate(layout.light_ids.tolist())}
        self._near_cache: dict[str, tuple[float, float, list[tuple[int, float, float]]]] = {}
        self._light_fields: dict[int, dict] = {}
        self.state = np.full(L, _RED, np.int8)
        self.time_in_state = np.zeros(L)
        self._last_t = 0.0
        self._valid_until = -np.inf  # forces a full evaluation
        self.update(0.0)

    def update(self, time_s: float) -> None:
        """Advance the phase clocks to `time_s` (closed form, see module docstring).

        Between two phase changes only the time in state grows, so the full evaluation runs only
        when some light (or a forced hold) reaches its next boundary.
        """
        if self.layout.num_lights == 0:
            return
        if self._last_t <= time_s < self._valid_until:
            self.time_in_state = self.time_in_state + (time_s - self._last_t)
            self._last_t = time_s
            return
        c = self.cfg
        t = (time_s + self._offset - self._group_start) % self._cycle
        green = t < c.green_s
        yellow = ~green & (t < c.green_s + c.yellow_s)
        state = np.where(green, _GREEN, np.where(yellow, _YELLOW, _RED)).astype(np.int8)
        # red lasts from green + yellow to the end of the cycle (t is relative to the group's slot)
        tis = np.where(green, t, np.where(yellow, t - c.green_s, t - c.green_s - c.yellow_s))
        boundary = np.where(green, c.green_s, np.where(yellow, c.green_s + c.yellow_s, self._cycle))
        valid_until = time_s + float((boundary - t).min())
        forced = (self._forced_state >= 0) & (time_s < self._forced_until)
        if forced.any():
            state = np.where(forced, self._forced_state, state)
            tis = np.where(forced, time_s - self._forced_since, tis)
            valid_until = min(valid_until, float(self._forced_until[forced].min()))
        self._forced_state[(self._forced_state >= 0) & ~forced] = -1
        self.state = state
        self.time_in_state = tis
        self._last_t = time_s
        self._valid_until = valid_until

    def force(self, light_id: int, state: TrafficLightState, duration_s: float, time_s: float) -> None:
        """Hold light `light_id` in `state` from `time_s` for `duration_s` seconds."""
        k = self._id_to_index.get(int(light_id))
        if k is None:
            raise KeyError(f"no traffic light with id {light_id} on this map")
        self._forced_state[k] = int(state)
        self._forced_since[k] = time_s
        self._forced_until[k] = time_s + float(duration_s)
        self._valid_until = -np.inf
        self.update(time_s)

    def index_of(self, light_id: int) -> int:
        return self._id_to_index[int(light_id)]

    def _near(self, centers: np.ndarray, ego_xy: np.ndarray, cache_key: str) -> list[int]:
        """Indices of `centers` within the snapshot radius of the ego, in index order.

        Candidates within radius + NEAR_CACHE_MARGIN_M are gathered when the ego has moved more than
        the margin; the exact test then runs on those few only.
        """
        x, y = float(ego_xy[0]), float(ego_xy[1])
        hit = self._near_cache.get(cache_key)
        if hit is None or (x - hit[0]) ** 2 + (y - hit[1]) ** 2 > NEAR_CACHE_MARGIN_M**2:
            reach = self.cfg.snapshot_radius_m + 2.0 * NEAR_CACHE_MARGIN_M
            d2 = ((centers - ego_xy) ** 2).sum(axis=1) if centers.shape[0] else np.zeros(0)
            cand = [
                (int(k), float(centers[k, 0]), float(centers[k, 1]))
                for k in np.flatnonzero(d2 <= reach * reach)
            ]
            hit = (x, y, cand)
            self._near_cache[cache_key] = hit
        r2 = self.cfg.snapshot_radius_m**2
        return [k for k, cx, cy in hit[2] if (cx - x) ** 2 + (cy - y) ** 2 <= r2]

    def snapshot_lights(self, ego_xy: np.ndarray) -> tuple[TrafficLight, ...]:
        lay = self.layout
        if lay.num_lights == 0:
            return ()
        near = self._near(lay.light_center, ego_xy, "lights")
        if not near:
            return ()
        st = self.state
        tis = self.time_in_state
        return tuple(self._light(k, int(st[k]), float(tis[k])) for k in near)

    def _light(self, k: int, state: int, time_in_state: float) -> TrafficLight:
        """TrafficLight k with the current state: the frozen dataclass is filled from a cached field
        dict (4x cheaper than its __init__; dozens of lights are built every tick)."""
        base = self._light_fields.get(k)
        if base is None:
            lay = self.layout
            base = {
                "id": int(lay.light_ids[k]),
                "state": TrafficLightState.RED,
                "pose": lay.light_pose[k],
                "stop_lines": lay.light_stop_lines[k],
                "junction_id": int(lay.light_junction[k]),
                "time_in_state": 0.0,
            }
            self._light_fields[k] = base
        fields = base.copy()
        fields["state"] = _STATES[state]
        fields["time_in_state"] = time_in_state
        light = object.__new__(TrafficLight)
        light.__dict__.update(fields)
        return light

    def snapshot_stop_signs(self, ego_xy: np.ndarray) -> tuple[StopSign, ...]:
        lay = self.layout
        if lay.stop_ids.shape[0] == 0:
            return ()
        return tuple(self._stop_sign(k) for k in self._near(lay.stop_center, ego_xy, "stops"))

    def _stop_sign(self, k: int) -> StopSign:
        cache = self.__dict__.setdefault("_stop_cache", {})
        s = cache.get(k)
        if s is None:
            lay = self.layout
            s = StopSign(
                id=int(lay.stop_ids[k]),
                pose=lay.stop_pose[k],
                stop_lines=lay.stop_stop_lines[k],
                junction_id=int(lay.stop_junction[k]),
            )
            cache[k] = s
        return s


_LAYOUT_CACHE: dict[tuple, tuple[carla.Map, SignalLayout]] = {}


def signal_layout_for(cmap: carla.Map, graph: LaneGraph, cfg: SignalConfig) -> SignalLayout:
    """Cached `build_signal_layout` per map object and grouping settings."""
    key = (id(cmap), id(graph), cfg.approach_group_tolerance_deg, cfg.generate_missing_lights)
    hit = _LAYOUT_CACHE.get(key)
    if hit is not None and hit[0] is cmap:
        return hit[1]
    layout = build_signal_layout(cmap, graph, cfg)
    _LAYOUT_CACHE[key] = (cmap, layout)
    return layout
