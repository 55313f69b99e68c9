"""Background traffic: lane-following IDM vehicles on the lane graph, one tick for all vehicles.

A vehicle is (node, next node, fraction along the edge, speed), the successor it chose for the end
of its current lane, and the junction lane it picked for its next junction entry (both drawn from
the episode's Generator). Every tick (`TrafficModel.step`):

1. Occupancy: each vehicle marks its previous, current and next node on a node-sized array;
   obstacles off the graph (the ego, scripted actors, props) mark every node whose lane footprint
   (half a spacing along, the footprint half width across, wider on curves) their box overlaps (separating axes, so
   lanes crossing in front of a stopped car see its corners).
2. Leader: the first marked node along the vehicle's own path (its chosen successor, default
   successors beyond) within `lookahead_m`. Bumper gap = path distance centre-to-centre - hl_i - hl_j.
3. Junction entry ahead (precomputed per node): stop for red (and for yellow when it can stop
   with <= yellow_decel_limit), make a full stop at stop signs, and enter only with a reservation
   of the picked junction lane: granted first come, first served when no conflicting junction lane
   is occupied, reserved, or claimed by the ego, and only if there is room for the whole vehicle
   past the junction lane (no blocking the box) or, for scenario-owned vehicles (actor flows),
   behind a leader driving at least box_follow_speed_mps. A request denied for reservation_patience_s
   claims its lane, and later conflicting requests that can still stop wait for it (no starvation).
   A vehicle held before the line gives its reservation back, so waiting never blocks anyone.
4. IDM against the leader and the stop target:
       a = a_max [1 - (v/v0)^delta - max_k (s*_k / s_k)^2],  s*_k = s0_k + v T + v (v - v_k) / (2 sqrt(a_max b))
   clipped to [-max_decel, a_max]; a hard clamp keeps every gap >= min_safety_gap (never into the ego).
5. Advance along the graph (a few node hops at most per tick) and write poses and controls.

Two implementations of the tick: `step_numpy` (array expressions, strided leader scan; the
reference, always available) and the compiled `traffic_kernel.traffic_step` (numba; exact scan),
chosen by `traffic.backend` (auto = numba when installed).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from carla_bridge.embedded import traffic_kernel
from carla_bridge.embedded.catalogue import VEHICLES, Blueprint, vehicles_of
from carla_bridge.embedded.config import (
    TRAFFIC_BACKENDS,
    IDMConfig,
    SimConfigError,
    TrafficConfig,
    VehicleParams,
)
from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.embedded.signals import ENTRY_LIGHT, ENTRY_STOP, SignalLayout, SignalState
from carla_bridge.embedded.vehicle_model import steer_for_curvature
from carla_bridge.snapshot import ActorKind, ActorRole, TrafficLightState

_RED, _YELLOW, _GREEN = (
    int(TrafficLightState.RED),
    int(TrafficLightState.YELLOW),
    int(TrafficLightState.GREEN),
)
_TWO_PI = 2.0 * np.pi
_BACKGROUND = int(ActorRole.BACKGROUND)
_NO_MARKS = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
_NO_LIGHTS = np.zeros(1, np.int8)
FOOTPRINT_HALF_WIDTH_M = 1.0  # lateral reach of a lane follower around its lane centre
# On a curve a vehicle's box runs straight along the tangent while its path bends away: its front
# corners leave the lane band by about kappa * hl^2 / 2 (hl = half length). Curved lane nodes widen
# their footprint by that for a long vehicle, so a van turning past a stopped car sees its corner.
SWEEP_HALF_LENGTH_M = 3.0  # half length of the longest common vehicles (vans, buses are longer)
MAX_SWEEP_M = 1.5  # cap of the widening on the tightest turns
MAX_HOPS_PER_TICK = 4  # > max speed x dt / min edge length for any sane speed
CANDIDATE_REUSE_M = 3.0  # an obstacle's candidate lane nodes are reused until it moves this far
EGO_OBSTACLE_ID = 0  # cache key of the ego among obstacles (actor ids start at 1)


@dataclass
class Obstacles:
    """Actors off the lane graph that lane followers must not drive into (struct of arrays)."""

    xy: np.ndarray  # (M, 2)
    yaw: np.ndarray  # (M,)
    half_length: np.ndarray  # (M,)
    half_width: np.ndarray  # (M,)
    speed: np.ndarray  # (M,) signed speed along their heading
    ids: np.ndarray  # (M,) int64 stable ids (cache keys for their lane-node candidates)

    @staticmethod
    def empty() -> Obstacles:
        z = np.zeros(0)
        return Obstacles(np.zeros((0, 2)), z, z, z, z, np.zeros(0, np.int64))


def idm_acceleration(
    v: np.ndarray, v0: np.ndarray, gap: np.ndarray, v_lead: np.ndarray, s0: np.ndarray | float, cfg: IDMConfig
) -> np.ndarray:
    """a = a_max [1 - (v/v0)^delta - (s*/s)^2], s* = s0 + v T + v (v - v_lead) / (2 sqrt(a_max b)).

    `gap` may be inf (free road). Returns the unclipped IDM acceleration.
    """
    a, b = cfg.max_accel_mps2, cfg.comfort_decel_mps2
    s_star = np.maximum(s0 + v * cfg.time_headway_s + v * (v - v_lead) / (2.0 * math.sqrt(a * b)), 0.0)
    inter = (s_star / np.maximum(gap, 0.05)) ** 2
    return a * (1.0 - (v / np.maximum(v0, 0.1)) ** cfg.delta - inter)


class TrafficModel:
    """All lane-following vehicles (background and scenario-owned) of one episode."""

    def __init__(
        self,
        graph: LaneGraph,
        layout: SignalLayout,
        cfg: TrafficConfig,
        idm: IDMConfig,
        vehicle_params: VehicleParams,
        rng: np.random.Generator,
    ) -> None:
        self.g = graph
        self.layout = layout
        self.cfg = cfg
        self.idm = idm
        self.rng = rng
        stride = max(1, int(cfg.lookahead_stride_nodes))
        self.stride = stride
        self.steps = max(1, math.ceil(cfg.lookahead_m / (graph.spacing_m * stride)))
        self.max_hops = self.steps * stride + 1
        self.hop_nodes, self.hop_dist = graph.hop_tables(self.max_hops)
        self._hops = (np.arange(1, self.steps + 1) * stride)[None, :]  # (1, K)
        self._rem1 = (
            graph.seg_start[graph.seg] + graph.seg_count[graph.seg] - np.arange(graph.num_nodes)
        ).astype(np.int64)  # hops from a node to its lane end + 1
        self._inv_2sqrt_ab = 1.0 / (2.0 * math.sqrt(idm.max_accel_mps2 * idm.comfort_decel_mps2))
        self._snap_gap = idm.stop_snap_m + idm.stop_line_gap_m
        self._inv_amax = 1.0 / idm.max_accel_mps2
        self._dist_to_end = graph.seg_length[graph.seg] - graph.node_s
        self._lookahead = float(cfg.lookahead_m)
        backend = str(cfg.backend)
        if backend not in TRAFFIC_BACKENDS:
            raise SimConfigError(
                f"traffic.backend={backend!r} is invalid: use one of {', '.join(TRAFFIC_BACKENDS)}"
            )
        if backend == "numba" and not traffic_kernel.AVAILABLE:
            raise SimConfigError(
                "traffic.backend=numba needs the numba package: pip install numba, or set traffic.backend=auto"
            )
        self.use_kernel = backend != "numpy" and traffic_kernel.AVAILABLE
        self._inv_2b = 1.0 / (2.0 * idm.comfort_decel_mps2)
        self._inv_dmax = 1.0 / idm.max_decel_mps2
        self._xyz = np.column_stack([graph.xy, graph.z])
        # per-segment signal arrays with a sentinel at index -1 (= "no junction entry ahead")
        self._entry_kind = np.append(layout.entry_kind, 0).astype(np.int8)
        self._entry_signal = np.append(layout.entry_signal, -1).astype(np.int64)
        self._rows_cache = np.zeros(0, np.int32)
        self._obstacle_cache: dict[int, tuple[float, float, np.ndarray]] = {}
        self._owner_cache: dict[int, np.ndarray] = {}
        self._marks_buf = np.empty(512, np.int64)
        self._node_steer = steer_for_curvature(graph.curvature, vehicle_params).astype(np.float32)
        self._footprint = FOOTPRINT_HALF_WIDTH_M + np.minimum(
            0.5 * np.abs(graph.curvature) * SWEEP_HALF_LENGTH_M**2, MAX_SWEEP_M
        )
        self._occ = np.full(graph.num_nodes, -1, np.int32)
        self._occ_off = np.zeros(graph.num_nodes)
        self._occ_v = np.zeros(graph.num_nodes)
        self._seg_busy = np.zeros(graph.num_segments, np.int32)
        self._seg_claimed = np.zeros(graph.num_segments, np.int32)
        self._last = (graph.seg_start + graph.seg_count - 1).astype(np.int64)
        self._succ_count = np.diff(graph.succ_ptr).astype(np.int64)
        weights = cfg.category_weights
        cats = [c for c in sorted(weights) if weights[c] > 0 and vehicles_of(c)]
        w = np.asarray([weights[c] for c in cats], np.float64)
        self._categories = cats
        self._cat_p = w / w.sum() if w.sum() > 0 else None
        self._paths: dict[int, tuple[dict[int, int], dict[int, tuple[int, int]]]] = {}  # fixed-path holds
        self._alloc(0)

    # ------------------------------------------------------------------ state
    def _alloc(self, n: int) -> None:
        self.id = np.zeros(n, np.int64)
        self.kind = np.zeros(n, np.int8)
        self.role = np.zeros(n, np.int8)
        self.extent = np.zeros((n, 3))
        self.type_id: list[str] = []
        self.node = np.zeros(n, np.int64)
        self.nnode = np.zeros(n, np.int64)
        self.prev_node = np.zeros(n, np.int64)  # the node before `node` on the vehicle's own path
        self.frac = np.zeros(n)
        self.choice = np.zeros(n, np.int64)  # successor segment chosen for the end of the current lane
        self.entry_of_pick = np.full(n, -1, np.int64)  # the next junction entry ahead ...
        self.entry_pick = np.full(n, -1, np.int64)  # ... and the junction lane picked there (drawn early)
        self.v = np.zeros(n)
        self.acc = np.zeros(n)
        self.v_scale = np.ones(
            n
        )  # desired speed = min(limit x v_scale, speed_cap); v_scale = fraction x factor
        self.speed_cap = np.full(n, np.inf)  # m/s: bicycle top speed, or a scenario override
        self.forced_brake = np.zeros(n, bool)  # scenario: brake as hard as allowed
        self.ignore_signals = np.zeros(n, bool)
        self.managed = np.zeros(n, bool)  # True: the density manager may remove it
        self.stopped_at = np.full(n, -1, np.int64)  # entry segment where a stop-sign stop was made
        self.resv_seg = np.full(n, -1, np.int64)  # reserved junction segment
        self.resv_entry = np.full(n, -1, np.int64)
        self.wait_since = np.full(n, np.inf)  # time of the reservation request (FIFO)
        self.claim_until = np.full(n, -np.inf)  # a long-denied request claims its junction lane until then
        self.xyz = np.zeros((n, 3))
        self.yaw = np.zeros(n)
        self.velocity = np.zeros((n, 2))
        self.control = np.zeros((n, 3), np.float32)
        self.remove_requested = np.zeros(n, bool)

    _ARRAYS = (
        "id", "kind", "role", "extent", "node", "nnode", "prev_node", "frac", "choice", "entry_of_pick", "entry_pick", "v", "acc", "v_scale", "speed_cap",
        "forced_brake", "ignore_signals", "managed", "stopped_at", "resv_seg", "resv_entry", "wait_since", "claim_until",
        "xyz", "yaw", "velocity", "control", "remove_requested",
    )  # fmt: skip

    def __len__(self) -> int:
        return int(self.id.shape[0])

    def keep(self, mask: np.ndarray) -> None:
        """Drop every vehicle where `mask` is False."""
        for name in self._ARRAYS:
            setattr(self, name, getattr(self, name)[mask])
        self.type_id = [t for t, k in zip(self.type_id, mask.tolist(), strict=True) if k]

    def index_of(self, actor_id: int) -> int:
        hit = np.flatnonzero(self.id == actor_id)
        return int(hit[0]) if hit.size else -1

    def sample_blueprint(self) -> Blueprint:
        if self._cat_p is None:
            return VEHICLES[0]
        cat = self._categories[int(self.rng.choice(len(self._categories), p=self._cat_p))]
        options = vehicles_of(cat)
        return options[int(self.rng.integers(len(options)))]

    def sample_speed_factor(self) -> float:
        lo, hi = self.cfg.speed_factor_range
        return float(np.clip(1.0 + self.cfg.speed_factor_std * self.rng.standard_normal(), lo, hi))

    def desired_speed(self, node: int, kind: int, speed_factor: float, speed_cap: float = math.inf) -> float:
        """v0 = min(limit(node) x speed_fraction_of_limit x factor, cap), bicycles capped at their top speed."""
        cap = min(speed_cap, self.cfg.bicycle_max_speed_mps) if kind == int(ActorKind.BICYCLE) else speed_cap
        return min(float(self.g.speed_limit[node]) * self.cfg.speed_fraction_of_limit * speed_factor, cap)

    def add(
        self,
        actor_id: int,
        node: int,
        bp: Blueprint,
        speed: float,
        role: ActorRole = ActorRole.BACKGROUND,
        managed: bool = True,
        speed_factor: float = 1.0,
        speed_cap: float = math.inf,
        frac: float = 0.0,
    ) -> int:
        """Append one vehicle at `node` (fraction `frac` towards the next node); returns its row."""
        g = self.g
        seg = int(g.seg[node])
        choice = self._choose(np.asarray([seg]))[0]
        last = int(self._last[seg])
        nnode = node + 1 if node != last else (int(g.seg_start[choice]) if choice >= 0 else node)
        row = {
            "id": actor_id, "kind": int(bp.kind), "role": int(role), "extent": bp.extent, "node": node,
            "nnode": nnode, "entry_of_pick": seg if g.is_entry[seg] else -1,
            "entry_pick": choice if g.is_entry[seg] else -1, "prev_node": node - 1 if g.node_s[node] > 0 else node, "frac": frac, "choice": choice, "v": speed, "acc": 0.0,
            "v_scale": self.cfg.speed_fraction_of_limit * speed_factor,
            "speed_cap": min(speed_cap, self.cfg.bicycle_max_speed_mps) if bp.kind == ActorKind.BICYCLE else speed_cap, "forced_brake": False, "ignore_signals": False, "managed": managed,
            "stopped_at": -1, "resv_seg": -1, "resv_entry": -1, "wait_since": np.inf, "claim_until": -np.inf,
            "xyz": (0.0, 0.0, 0.0), "yaw": 0.0, "velocity": (0.0, 0.0), "control": (0.0, 0.0, 0.0),
            "remove_requested": False,
        }  # fmt: skip
        for name in self._ARRAYS:
            arr = getattr(self, name)
            setattr(
                self,
                name,
                np.concatenate([arr, np.asarray([row[name]], arr.dtype).reshape((1, *arr.shape[1:]))]),
            )
        self.type_id.append(bp.type_id)
        self._write_poses(np.asarray([len(self) - 1]))
        return len(self) - 1

    def set_path_segments(self, actor_id: int, segments: Sequence[int]) -> None:
        """Hold vehicle `actor_id` on a fixed lane-segment path (consecutive successors, its current
        segment among them) instead of random successors; past the last segment it drives on at
        random. The hold lasts while the vehicle exists."""
        g = self.g
        order = [int(x) for x in segments]
        for a, b in itertools.pairwise(order):
            if b not in g.successors(a).tolist():
                raise SimConfigError(f"path segments {a} -> {b} are not consecutive lanes: give successors")
        next_seg = dict(itertools.pairwise(order))
        # for each segment: the next (entry lane, junction lane) pair at or after it
        next_entry: dict[int, tuple[int, int]] = {}
        upcoming: tuple[int, int] | None = None
        for a, b in reversed(list(itertools.pairwise(order))):
            if g.is_entry[a] and g.seg_junction[b] >= 0:
                upcoming = (a, b)
            if upcoming is not None:
                next_entry[a] = upcoming
        self._paths[int(actor_id)] = (next_seg, next_entry)
        row = self.index_of(actor_id)
        if row >= 0:
            self._hold_row(row, next_seg, next_entry)

    def _hold_paths(self) -> None:
        """Write every held vehicle's path choices into its row (the tick draws random ones)."""
        if not self._paths:
            return
        for aid in list(self._paths):
            row = self.index_of(aid)
            if row < 0:
                del self._paths[aid]  # removed
                continue
            self._hold_row(row, *self._paths[aid])

    def _hold_row(self, row: int, next_seg: dict[int, int], next_entry: dict[int, tuple[int, int]]) -> None:
        g = self.g
        node = int(self.node[row])
        seg = int(g.seg[node])
        nxt = next_seg.get(seg)
        if nxt is not None and int(self.choice[row]) != nxt:
            self.choice[row] = nxt
            if node == int(self._last[seg]):
                self.nnode[row] = int(g.seg_start[nxt])
        pick = next_entry.get(seg)
        if pick is not None:
            self.entry_of_pick[row] = pick[0]
            self.entry_pick[row] = pick[1]

    def _choose(self, segs: np.ndarray) -> np.ndarray:
        """Random successor per segment (-1 at dead ends); one Generator draw per segment."""
        cnt = self._succ_count[segs]
        r = self.rng.random(segs.shape[0])
        pick = np.minimum((r * cnt).astype(np.int64), np.maximum(cnt - 1, 0))
        out = np.where(
            cnt > 0, self.g.succ_idx[np.minimum(self.g.succ_ptr[segs] + pick, len(self.g.succ_idx) - 1)], -1
        )
        return out.astype(np.int64)

    # ------------------------------------------------------------------ occupancy
    def _candidates(self, key: int, x: float, y: float, radius: float) -> np.ndarray:
        """Lane nodes within `radius` of (x, y), cached per obstacle until it moves CANDIDATE_REUSE_M."""
        hit = self._obstacle_cache.get(key)
        if hit is not None:
            cx, cy, r, cand = hit
            if r >= radius and (x - cx) ** 2 + (y - cy) ** 2 <= CANDIDATE_REUSE_M**2:
                return cand
        cand = self.g.nodes_near(np.array([x, y]), radius + CANDIDATE_REUSE_M)
        self._obstacle_cache[key] = (x, y, radius, cand)
        return cand

    def _obstacle_candidates(self, obs: Obstacles) -> tuple[np.ndarray, np.ndarray]:
        """(lane nodes, obstacle index) pairs near enough to each obstacle for its footprint test."""
        m = obs.xy.shape[0]
        if m == 0:
            return _NO_MARKS[0], _NO_MARKS[1]
        pad = FOOTPRINT_HALF_WIDTH_M + MAX_SWEEP_M + self.g.spacing_m
        parts, owners = [], []
        for k in range(m):
            r = float(obs.half_length[k]) + float(obs.half_width[k]) + pad
            cand = self._candidates(int(obs.ids[k]), float(obs.xy[k, 0]), float(obs.xy[k, 1]), r)
            parts.append(cand)
            owners.append(self._owner_ids(k, cand.shape[0]))
        if m == 1:
            return parts[0], owners[0]
        return np.concatenate(parts), np.concatenate(owners)

    def _obstacle_marks(self, obs: Obstacles) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Lane nodes whose footprint an off-graph obstacle covers: (nodes, obstacle index, speed along lane)."""
        g = self.g
        cand, own = self._obstacle_candidates(obs)
        if cand.shape[0] == 0:
            return None
        d = g.xy[cand] - obs.xy[own]
        yaw = obs.yaw[own]
        c, s = np.cos(yaw), np.sin(yaw)
        lx = d[:, 0] * c + d[:, 1] * s
        ly = d[:, 1] * c - d[:, 0] * s
        inside = traffic_kernel.covers_lane_node(
            lx,
            ly,
            g.yaw[cand] - yaw,
            obs.half_length[own],
            obs.half_width[own],
            0.5 * g.spacing_m,
            self._footprint[cand],
        )
        if not np.count_nonzero(inside):
            return None
        hit, own = cand[inside], own[inside]
        # pad one node backwards so a strided scan never jumps over an obstacle's first node
        back = g.node_s[hit] > 0.0
        nodes = np.concatenate([hit[back] - 1, hit])
        own = np.concatenate([own[back], own])
        return nodes, own, obs.speed[own] * np.cos(obs.yaw[own] - g.yaw[nodes])

    def _mark_obstacles(self, obs: Obstacles, base: int) -> np.ndarray | None:
        """Write the obstacle marks into the occupancy arrays; returns the marked nodes (for clearing)."""
        marks = self._obstacle_marks(obs)
        if marks is None:
            return None
        nodes, own, speed = marks
        free = self._occ[nodes] < 0  # vehicles on the graph keep their own marks
        nodes, own, speed = nodes[free], own[free], speed[free]
        self._occ[nodes] = base + own
        self._occ_off[nodes] = 0.0
        self._occ_v[nodes] = speed
        return nodes

    # ------------------------------------------------------------------ step
    def step(
        self,
        dt: float,
        time_s: float,
        signals: SignalState,
        obstacles: Obstacles,
        ego_busy_segments: np.ndarray,
    ) -> None:
        """Advance every vehicle by `dt` (module docstring). `ego_busy_segments`: junction segments the ego holds."""
        if len(self) == 0:
            return
        self._hold_paths()
        if self.use_kernel:
            self._step_kernel(dt, time_s, signals, obstacles, ego_busy_segments)
        else:
            self.step_numpy(dt, time_s, signals, obstacles, ego_busy_segments)

    def _step_kernel(
        self, dt, time_s, signals: SignalState, obstacles: Obstacles, ego_busy: np.ndarray
    ) -> None:
        """The compiled tick (traffic_kernel.traffic_step): same model, loops instead of array expressions."""
        g, idm, cfg = self.g, self.idm, self.cfg
        n = len(self)
        cand_nodes, cand_owner = self._obstacle_candidates(obstacles)
        mark_buf = self._mark_buffer(2 * cand_nodes.shape[0])
        rand = self.rng.random((2, n))
        out_xyz = np.empty((n, 3))
        out_yaw = np.empty(n)
        out_vel = np.empty((n, 2))
        out_ctrl = np.empty((n, 3), np.float32)
        self.last_gap_lead = np.empty(n)
        self.last_gap_stop = np.empty(n)
        self.last_leader = np.empty(n, np.int64)
        light_state = signals.state if signals.state.shape[0] else _NO_LIGHTS
        traffic_kernel.traffic_step(
            self._xyz, g.yaw, g.edge_len, g.seg, g.next_node, g.seg_start, g.seg_count, g.succ_ptr, g.succ_idx,
            g.seg_junction, g.conflict_ptr, g.conflict_idx, g.entry_dist, g.entry_seg, g.speed_limit,
            self._node_steer, self._entry_kind, self._entry_signal, light_state, g.seg_length,
            self.id, self.node, self.nnode, self.prev_node, self.frac, self.choice, self.entry_of_pick,
            self.entry_pick, self.v, self.acc, self.v_scale,
            self.speed_cap, self.forced_brake, self.ignore_signals, self.stopped_at, self.resv_seg, self.resv_entry,
            self.wait_since, self.claim_until, self.remove_requested, np.ascontiguousarray(self.extent[:, 0]),
            self.role != _BACKGROUND, rand,
            cand_nodes, cand_owner, obstacles.xy, obstacles.yaw, obstacles.half_length, obstacles.half_width,
            obstacles.speed, g.xy, g.node_s, self._footprint, 0.5 * g.spacing_m, mark_buf,
            np.asarray(ego_busy, np.int64),
            self._occ, self._occ_off, self._occ_v, self._seg_busy, self._seg_claimed,
            dt, time_s, self._lookahead, idm.max_accel_mps2, idm.comfort_decel_mps2, idm.max_decel_mps2,
            idm.min_gap_m, idm.stop_line_gap_m, idm.time_headway_s, idm.delta, self._snap_gap, idm.crawl_speed_mps,
            idm.yellow_decel_limit_mps2, idm.min_safety_gap_m, cfg.reservation_request_m,
            cfg.stop_sign_stop_radius_m, cfg.stopped_speed_mps, cfg.reservation_patience_s,
            cfg.reservation_claim_hold_s, cfg.box_follow_speed_mps, out_xyz, out_yaw, out_vel, out_ctrl, self.last_gap_lead, self.last_gap_stop, self.last_leader,
        )  # fmt: skip
        self.xyz, self.yaw, self.velocity, self.control = out_xyz, out_yaw, out_vel, out_ctrl

    def step_numpy(self, dt, time_s, signals: SignalState, obstacles: Obstacles, ego_busy_segments) -> None:
        """The reference tick in numpy array expressions (used without numba, and to cross-check it)."""
        n = len(self)
        g, idm = self.g, self.idm
        node, nnode, prev, v = self.node, self.nnode, self.prev_node, self.v
        hl = self.extent[:, 0]
        e_len = g.edge_len[node]
        pos = self.frac * e_len  # distance of the centre past `node`

        # 1. occupancy: previous, current and next node of every vehicle (consecutive on its own path,
        #    so a scan with stride 2 cannot step over it), then the off-graph obstacles
        occ, occ_off, occ_v = self._occ, self._occ_off, self._occ_v
        rows = self._rows(n)
        occ[prev] = rows
        occ[node] = rows
        occ[nnode] = rows
        occ_off[prev] = pos + g.edge_len[prev]
        occ_off[node] = pos
        occ_off[nnode] = pos - e_len
        occ_v[prev] = v
        occ_v[node] = v
        occ_v[nnode] = v
        marked = self._mark_obstacles(obstacles, n) if obstacles.xy.shape[0] else None
        hl_all = (
            hl if marked is None else np.concatenate([hl, np.full(obstacles.xy.shape[0], 0.5 * g.spacing_m)])
        )

        # 2. leader: first occupied node along the own path. Hop h < rem + 1 stays in the lane
        #    (node h hops on); later hops continue from the chosen successor's first node.
        rem1 = self._rem1[node][:, None]
        hops = self._hops
        in_lane = hops < rem1
        base = np.where(in_lane, node[:, None], g.seg_start[self.choice][:, None])
        col = np.where(in_lane, hops, hops - rem1)
        path = self.hop_nodes[base, col]
        hit = occ[path]
        first = (hit >= 0).argmax(axis=1)
        lead = hit[rows, first]
        has = lead >= 0
        lead_node = path[rows, first]
        beyond = ~in_lane[rows, first]
        pd = self.hop_dist[base[rows, first], col[rows, first]] + beyond * self._dist_to_end[node]
        if np.count_nonzero(self.choice < 0):  # dead end: nothing lies beyond the lane end
            pd[beyond & (self.choice < 0)] = np.inf
        gap_lead = pd + occ_off[lead_node] - pos - hl - hl_all[lead]
        gap_lead[~has] = np.inf
        v_lead = occ_v[lead_node]

        occ[prev] = -1
        occ[node] = -1
        occ[nnode] = -1
        if marked is not None:
            occ[marked] = -1

        # 3. junction entry ahead
        entry = g.entry_seg[node]
        gap_stop = self._entry_logic(entry, pos, hl, v, gap_lead, v_lead, time_s, signals, ego_busy_segments)

        # 4. IDM against the leader and the stop target (one formula, the stronger interaction wins)
        v0 = np.maximum(np.minimum(g.speed_limit[node] * self.v_scale, self.speed_cap), 0.1)
        vt = v * idm.time_headway_s
        q = v * self._inv_2sqrt_ab
        s_lead = np.maximum(idm.min_gap_m + vt + q * (v - v_lead), 0.0) / np.maximum(gap_lead, 0.05)
        s_stop = (idm.stop_line_gap_m + vt + q * v) / np.maximum(gap_stop, 0.05)
        inter = np.maximum(s_lead, s_stop)
        a = idm.max_accel_mps2 * (1.0 - (v / v0) ** idm.delta - inter * inter)
        a = np.minimum(np.maximum(a, -idm.max_decel_mps2), idm.max_accel_mps2)
        if np.count_nonzero(self.forced_brake):
            a[self.forced_brake] = -idm.max_decel_mps2
        v_new = np.maximum(v + a * dt, 0.0)
        v_new[(gap_stop < self._snap_gap) & (v_new < idm.crawl_speed_mps)] = 0.0
        v_new = np.minimum(v_new, np.maximum(gap_lead - idm.min_safety_gap_m, 0.0) / dt)
        self.last_gap_lead, self.last_gap_stop = gap_lead, gap_stop
        self.last_leader = np.where(has, lead, -1)
        self.acc = (v_new - v) / dt
        self.v = v_new

        # 5. advance
        self._advance(pos + v_new * dt)
        self._release_reservations()
        self._write_poses(None)

    def _owner_ids(self, k: int, count: int) -> np.ndarray:
        """np.full(count, k) without allocating every tick."""
        buf = self._owner_cache.get(k)
        if buf is None or buf.shape[0] < count:
            buf = np.full(max(count, 64) * 2, k, np.int64)
            self._owner_cache[k] = buf
        return buf[:count]

    def _mark_buffer(self, size: int) -> np.ndarray:
        if self._marks_buf.shape[0] < size:
            self._marks_buf = np.empty(max(size, 256) * 2, np.int64)
        return self._marks_buf

    def _rows(self, n: int) -> np.ndarray:
        r = self._rows_cache
        if r.shape[0] != n:
            r = np.arange(n, dtype=np.int32)
            self._rows_cache = r
        return r

    def _entry_logic(
        self, entry, pos, hl, v, gap_lead, v_lead, time_s, signals: SignalState, ego_busy
    ) -> np.ndarray:
        """Gap to the stop target per vehicle (inf when it may pass); updates stop-sign and reservation state."""
        cfg, idm = self.cfg, self.idm
        front_gap = self.g.entry_dist[self.node] - pos - hl  # front bumper to the stop line (inf: none ahead)
        has_entry = entry >= 0
        kind = self._entry_kind[entry]
        sig_stop = np.zeros(entry.shape[0], bool)
        is_light = kind == ENTRY_LIGHT
        if np.count_nonzero(is_light):
            # red, or yellow when stopping needs at most yellow_decel_limit
            st = (
                signals.state[self._entry_signal[entry]]
                if signals.state.shape[0]
                else np.full(entry.shape[0], _GREEN)
            )
            can_stop = v * v <= (2.0 * idm.yellow_decel_limit_mps2) * np.maximum(front_gap, 0.01)
            sig_stop = is_light & ((st == _RED) | ((st == _YELLOW) & can_stop))
        is_stop = kind == ENTRY_STOP
        if np.count_nonzero(is_stop):
            # stop signs: stop once, within the radius, below the stopped speed
            done_now = is_stop & (front_gap <= cfg.stop_sign_stop_radius_m) & (v <= cfg.stopped_speed_mps)
            self.stopped_at[done_now] = entry[done_now]
            sig_stop |= is_stop & (self.stopped_at != entry)
        if np.count_nonzero(self.ignore_signals):
            sig_stop &= ~self.ignore_signals
        # the junction lane taken at the next entry is picked as soon as that entry is ahead
        repick = has_entry & (self.entry_of_pick != entry)
        if np.count_nonzero(repick):
            rows = np.flatnonzero(repick)
            self.entry_of_pick[rows] = entry[rows]
            self.entry_pick[rows] = self._choose(entry[rows])
        reserved = has_entry & (self.resv_entry == entry)
        # don't block the box: enter only with room for the whole vehicle past the junction lane, or
        # (scenario vehicles) behind a leader that drives on briskly
        room = (gap_lead >= front_gap + self.g.seg_length[self.entry_pick] + 2.0 * hl + idm.min_gap_m) | (
            (self.role != _BACKGROUND) & (v_lead >= cfg.box_follow_speed_mps)
        )
        hold = sig_stop | ~room
        # a vehicle held before the line gives its reservation back (no blocking on red or on a full exit)
        drop = reserved & hold & (front_gap > 0.0)
        if np.count_nonzero(drop):
            self.resv_seg[drop] = -1
            self.resv_entry[drop] = -1
            reserved &= ~drop
        # only the first vehicle of a queue asks, on the entry lane, within its request distance
        near = has_entry & ~reserved & ~hold & (front_gap <= cfg.reservation_request_m + v * v * self._inv_2b)
        if np.count_nonzero(near):
            self._grant(np.flatnonzero(near), entry, time_s, ego_busy, v, front_gap)
            reserved = has_entry & (self.resv_entry == entry)
        must_stop = (sig_stop | ~reserved) & (front_gap > -0.5)  # front past the line: committed
        gap = front_gap.copy()
        gap[~must_stop] = np.inf
        return gap

    def _grant(
        self,
        cand: np.ndarray,
        entry: np.ndarray,
        time_s: float,
        ego_busy: np.ndarray,
        v: np.ndarray,
        front_gap: np.ndarray,
    ) -> None:
        """Serve requests first come, first served (ties by id): grant the picked junction lane if no
        conflicting junction lane is occupied or reserved (by traffic, or claimed by the ego).

        Fairness: a request denied after waiting >= reservation_patience_s claims its lane (for
        reservation_claim_hold_s past the last denial); a later request conflicting with a claimed
        lane is denied too when it can still stop before the line (v^2 <= 2 b_comf front_gap).
        Claims only deny, so they never let conflicting vehicles in."""
        g = self.g
        patience = self.cfg.reservation_patience_s
        two_b = 2.0 * self.idm.comfort_decel_mps2
        claimed = self._seg_claimed
        claimed[:] = 0
        asking = np.zeros(len(self), bool)
        asking[cand] = True
        sticky = ~asking & (self.resv_seg < 0) & (self.claim_until >= time_s) & (self.entry_pick >= 0)
        if sticky.any():
            np.add.at(claimed, self.entry_pick[sticky], 1)
        self.wait_since[cand] = np.minimum(self.wait_since[cand], time_s)
        busy = self._seg_busy
        busy[:] = 0
        held = self.resv_seg[self.resv_seg >= 0]
        np.add.at(busy, held, 1)
        inside = g.seg[self.node]
        np.add.at(busy, inside[g.seg_junction[inside] >= 0], 1)
        if ego_busy.size:
            busy[ego_busy] += 1
        order = cand[np.lexsort((self.id[cand], self.wait_since[cand]))]
        for i in order.tolist():
            c = int(self.entry_pick[i])
            if c < 0 or g.seg_junction[c] < 0:
                self.resv_entry[i] = int(entry[i])  # not a junction lane: nothing to reserve
                continue
            conf = g.conflicts(c)
            free = not (conf.size and busy[conf].any())
            if free and v[i] * v[i] <= two_b * max(float(front_gap[i]), 0.0):
                free = not (conf.size and claimed[conf].any())
            if not free:
                if time_s - self.wait_since[i] >= patience:
                    claimed[c] += 1
                    self.claim_until[i] = time_s + self.cfg.reservation_claim_hold_s
                continue
            self.claim_until[i] = -np.inf
            self.resv_seg[i] = c
            self.resv_entry[i] = int(entry[i])
            busy[c] += 1

    def _release_reservations(self) -> None:
        g = self.g
        seg = g.seg[self.node]
        done = (self.resv_entry >= 0) & (seg != self.resv_entry) & (g.seg_junction[seg] < 0)
        if done.any():
            self.resv_seg[done] = -1
            self.resv_entry[done] = -1
            self.wait_since[done] = np.inf
            self.claim_until[done] = -np.inf

    def _advance(self, pos: np.ndarray) -> None:
        """Move every vehicle `pos` metres past its node, hopping nodes (and choosing successors) as needed."""
        g = self.g
        node, nnode = self.node, self.nnode
        e = g.edge_len[node]
        for _ in range(MAX_HOPS_PER_TICK):
            over = pos >= e
            if not np.count_nonzero(over):
                break
            idx = np.flatnonzero(over)
            dead = nnode[idx] == node[idx]  # dead end: stay at the lane end, ask for removal
            if np.count_nonzero(dead):
                d = idx[dead]
                pos[d] = e[d] - 1e-3
                self.v[d] = 0.0
                self.remove_requested[d] = True
                idx = idx[~dead]
                if idx.size == 0:
                    break
            pos[idx] -= e[idx]
            new = nnode[idx]
            entered = g.seg[new] != g.seg[node[idx]]
            self.prev_node[idx] = node[idx]
            node[idx] = new
            if np.count_nonzero(entered):
                ent = idx[entered]
                segs = g.seg[node[ent]].astype(np.int64)
                picked = segs == self.entry_of_pick[ent]  # an entry lane: take the lane picked for it
                self.choice[ent] = np.where(picked, self.entry_pick[ent], self._choose(segs))
            lst = self._last[g.seg[node[idx]]]
            at_last = node[idx] == lst
            ch = self.choice[idx]
            nnode[idx] = np.where(
                at_last, np.where(ch >= 0, g.seg_start[np.maximum(ch, 0)], node[idx]), node[idx] + 1
            )
            e = g.edge_len[node]
        self.frac = np.minimum(np.maximum(pos / e, 0.0), 1.0)

    def _write_poses(self, rows: np.ndarray | None) -> None:
        """Poses by linear interpolation between node and next node (yaw along the shorter arc)."""
        g = self.g
        if rows is None:
            node, nnode, f, v, a = self.node, self.nnode, self.frac, self.v, self.acc
        else:
            node, nnode, f, v, a = (
                self.node[rows],
                self.nnode[rows],
                self.frac[rows],
                self.v[rows],
                self.acc[rows],
            )
        p0 = self._xyz[node]
        xyz = p0 + (self._xyz[nnode] - p0) * f[:, None]
        y0 = g.yaw[node]
        dy = (g.yaw[nnode] - y0 + np.pi) % _TWO_PI - np.pi
        yaw = (y0 + dy * f + np.pi) % _TWO_PI - np.pi
        vel = np.empty((node.shape[0], 2))
        vel[:, 0] = v * np.cos(yaw)
        vel[:, 1] = v * np.sin(yaw)
        ctrl = np.empty((node.shape[0], 3), np.float32)
        ctrl[:, 0] = np.minimum(np.maximum(a * self._inv_amax, 0.0), 1.0)
        ctrl[:, 1] = self._node_steer[node]
        ctrl[:, 2] = np.minimum(np.maximum(a * -self._inv_dmax, 0.0), 1.0)
        if rows is None:
            self.xyz, self.yaw, self.velocity, self.control = xyz, yaw, vel, ctrl
        else:
            self.xyz[rows], self.yaw[rows], self.velocity[rows], self.control[rows] = xyz, yaw, vel, ctrl
