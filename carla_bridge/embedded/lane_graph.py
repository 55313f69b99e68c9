"""`LaneGraph`: every driving lane of a carla.Map sampled at ~1 m into flat numpy arrays.

A *segment* is one lane of one lane section (CARLA topology unit: road, section, lane id); its nodes
are evenly spaced from the lane start (node 0) to just before the lane end, and the lane end itself
is the start of each successor segment. A vehicle on the graph is (node, next node, fraction), so
advancing traffic is index arithmetic on arrays instead of waypoint queries.

Per node the graph also stores the distance to the next *junction entry* (the end of a lane whose
successors lie in a junction; that is where stop lines of lights and stop signs sit) and which
entry it is, the speed limit, the curvature, and a spatial hash for geometric look-ups. Junction
connecting segments carry a precomputed conflict list (centre lines that cross or merge), used by
the reservation logic of the traffic model.

Built once per map and cached (`LaneGraph.for_map`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import carla
import numpy as np
from scipy.spatial import cKDTree

from carla_bridge.embedded.config import LaneGraphConfig
from carla_bridge.geometry import wrap_angle

SPEED_SIGN_TYPE = "274"  # OpenDRIVE/CARLA maximum-speed sign; value in km/h
NO_NODE = -1


def _lane_key(wp: carla.Waypoint) -> tuple[int, int, int]:
    return (int(wp.road_id), int(wp.section_id), int(wp.lane_id))


def _take_while_key(wps: list[carla.Waypoint], key: tuple[int, int, int]) -> list[carla.Waypoint]:
    out = []
    for p in wps:
        if _lane_key(p) != key:
            break
        out.append(p)
    return out


@dataclass
class LaneGraph:
    """Flat arrays describing the driving lanes of one map. N nodes, S segments."""

    town: str
    spacing_m: float
    # --- nodes (N,)
    xy: np.ndarray  # (N, 2) float64 world metres
    z: np.ndarray  # (N,) float64
    yaw: np.ndarray  # (N,) float64 radians, lane direction
    width: np.ndarray  # (N,) float32 lane width, m
    road_id: np.ndarray  # (N,) int32
    lane_id: np.ndarray  # (N,) int32
    section_id: np.ndarray  # (N,) int32
    junction_id: np.ndarray  # (N,) int32, -1 outside junctions
    seg: np.ndarray  # (N,) int32 segment of the node
    node_s: np.ndarray  # (N,) float64 distance from the segment start, m
    edge_len: np.ndarray  # (N,) float64 distance to the next node (last node: to the lane end), m
    next_node: (
        np.ndarray
    )  # (N,) int32 next node (lane ends: first node of the default successor; -1 dead end)
    curvature: np.ndarray  # (N,) float64 d yaw / d s, 1/m
    speed_limit: np.ndarray  # (N,) float32 m/s
    entry_dist: np.ndarray  # (N,) float64 distance to the next junction entry (inf beyond the horizon), m
    entry_seg: np.ndarray  # (N,) int32 segment whose end is that entry (-1 none)
    # --- segments (S,)
    seg_start: np.ndarray  # (S,) int32 first node
    seg_count: np.ndarray  # (S,) int32 number of nodes
    seg_length: np.ndarray  # (S,) float64 lane length, m
    seg_end_xy: np.ndarray  # (S, 2) lane end point
    seg_end_yaw: np.ndarray  # (S,) lane direction at the end
    seg_road: np.ndarray  # (S,) int32
    seg_section: np.ndarray  # (S,) int32
    seg_lane: np.ndarray  # (S,) int32
    seg_junction: np.ndarray  # (S,) int32 junction id, -1 for normal lanes
    seg_s0: np.ndarray  # (S,) float64 OpenDRIVE s of the segment start
    seg_s_dir: np.ndarray  # (S,) int8 +1 when the lane runs along increasing s
    succ_ptr: np.ndarray  # (S+1,) CSR into succ_idx
    succ_idx: np.ndarray  # successor segment indices
    pred_ptr: np.ndarray  # (S+1,)
    pred_idx: np.ndarray
    is_entry: np.ndarray  # (S,) bool: a normal lane whose successors lie in a junction
    conflict_ptr: np.ndarray  # (S+1,) CSR of conflicting junction segments
    conflict_idx: np.ndarray
    # --- spatial hash over nodes
    grid_origin: np.ndarray  # (2,)
    grid_cell_m: float
    grid_shape: tuple[int, int]
    grid_ptr: np.ndarray  # (cells+1,) CSR into grid_nodes
    grid_nodes: np.ndarray
    key_to_seg: dict[tuple[int, int, int], int]

    # ------------------------------------------------------------------ construction
    @staticmethod
    def for_map(cmap: carla.Map, config: LaneGraphConfig | None = None) -> LaneGraph:
        """The graph of `cmap`, built on first use and cached per map object and config."""
        cfg = config or LaneGraphConfig()
        key = (id(cmap), cfg.node_spacing_m, cfg.stop_horizon_m, cfg.default_speed_limit_kmh,
               cfg.conflict_clearance_m, cfg.grid_cell_m)  # fmt: skip
        hit = _GRAPH_CACHE.get(key)
        if hit is not None and hit[0] is cmap:
            return hit[1]
        graph = build_lane_graph(cmap, cfg)
        _GRAPH_CACHE[key] = (cmap, graph)  # keep cmap alive so its id() is not reused
        return graph

    # ------------------------------------------------------------------ queries
    @property
    def num_nodes(self) -> int:
        return int(self.xy.shape[0])

    @property
    def num_segments(self) -> int:
        return int(self.seg_start.shape[0])

    def successors(self, seg: int) -> np.ndarray:
        return self.succ_idx[self.succ_ptr[seg] : self.succ_ptr[seg + 1]]

    def predecessors(self, seg: int) -> np.ndarray:
        return self.pred_idx[self.pred_ptr[seg] : self.pred_ptr[seg + 1]]

    def conflicts(self, seg: int) -> np.ndarray:
        return self.conflict_idx[self.conflict_ptr[seg] : self.conflict_ptr[seg + 1]]

    def is_last_node(self, node: np.ndarray | int) -> np.ndarray | bool:
        seg = self.seg[node]
        return node == self.seg_start[seg] + self.seg_count[seg] - 1

    def nodes_near(self, xy: np.ndarray, radius_m: float) -> np.ndarray:
        """Indices of nodes within `radius_m` of `xy` (ascending index order)."""
        lo = np.floor((np.asarray(xy) - radius_m - self.grid_origin) / self.grid_cell_m).astype(int)
        hi = np.floor((np.asarray(xy) + radius_m - self.grid_origin) / self.grid_cell_m).astype(int)
        nx, ny = self.grid_shape
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [nx - 1, ny - 1])
        if lo[0] > hi[0] or lo[1] > hi[1]:
            return np.zeros(0, np.int64)
        parts = []
        for cx in range(int(lo[0]), int(hi[0]) + 1):
            c0 = cx * ny + int(lo[1])
            c1 = cx * ny + int(hi[1])
            a, b = self.grid_ptr[c0], self.grid_ptr[c1 + 1]
            if b > a:
                parts.append(self.grid_nodes[a:b])
        if not parts:
            return np.zeros(0, np.int64)
        cand = np.concatenate(parts) if len(parts) > 1 else parts[0]
        d2 = ((self.xy[cand] - xy) ** 2).sum(axis=1)
        return np.sort(cand[d2 <= radius_m * radius_m])

    def nearest_node(
        self, xy: np.ndarray, yaw: float | None = None, radius_m: float = 4.0, heading_weight_m: float = 2.0
    ) -> int:
        """Closest node to `xy` (ties towards the lane heading `yaw` when given); -1 if none in radius.

        cost = |xy - node| + heading_weight_m x |wrap(yaw - node_yaw)| / pi
        """
        cand = self.nodes_near(xy, radius_m)
        if cand.size == 0:
            return NO_NODE
        cost = np.hypot(*(self.xy[cand] - xy).T)
        if yaw is not None:
            cost = cost + heading_weight_m * np.abs(wrap_angle(yaw - self.yaw[cand])) / np.pi
        return int(cand[int(np.argmin(cost))])

    def node_at(self, road_id: int, section_id: int, lane_id: int, s: float) -> int:
        """Node of lane (road, section, lane) nearest to OpenDRIVE coordinate `s`; -1 if unknown lane."""
        seg = self.key_to_seg.get((road_id, section_id, lane_id))
        if seg is None:
            return NO_NODE
        along = (s - self.seg_s0[seg]) * self.seg_s_dir[seg]
        k = int(np.clip(round(along / self.spacing_m), 0, self.seg_count[seg] - 1))
        return int(self.seg_start[seg] + k)

    def node_of_waypoint(self, wp: carla.Waypoint) -> int:
        return self.node_at(int(wp.road_id), int(wp.section_id), int(wp.lane_id), float(wp.s))

    def path_nodes(self, start_node: int, length_m: float, choose=None) -> np.ndarray:
        """Nodes from `start_node` along the lane for `length_m` (default successor at branches).

        `choose(successors) -> seg` picks the successor at a lane end when given.
        """
        out = [start_node]
        node = start_node
        travelled = 0.0
        while travelled < length_m:
            if self.is_last_node(node):
                succ = self.successors(int(self.seg[node]))
                if succ.size == 0:
                    break
                nseg = int(choose(succ)) if choose is not None else int(succ[0])
                nxt = int(self.seg_start[nseg])
            else:
                nxt = node + 1
            travelled += float(self.edge_len[node])
            node = nxt
            out.append(node)
        return np.asarray(out, np.int64)

    def hop_tables(self, max_hops: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, max_hops + 1) node reached after j hops along default successors, and the distance.

        Column 0 is the node itself (distance 0). Past a dead end the node stays put and the
        distance is inf, so look-ups never index out of the graph.
        """
        tabs = self._tables.get(max_hops)
        if tabs is None:
            n = self.num_nodes
            nodes = np.empty((n, max_hops + 1), np.int32)
            dist = np.empty((n, max_hops + 1), np.float32)
            cur = np.arange(n, dtype=np.int64)
            acc = np.zeros(n)
            nodes[:, 0] = cur
            dist[:, 0] = 0.0
            for j in range(1, max_hops + 1):
                nxt = self.next_node[cur]
                dead = nxt < 0
                acc = np.where(dead, np.inf, acc + self.edge_len[cur])
                cur = np.where(dead, cur, nxt)
                nodes[:, j] = cur
                dist[:, j] = acc
            tabs = (nodes, dist)
            self._tables[max_hops] = tabs
        return tabs

    def __post_init__(self) -> None:
        self._tables: dict = {}


_GRAPH_CACHE: dict[tuple, tuple[carla.Map, LaneGraph]] = {}


# ---------------------------------------------------------------------- building
def _speed_sign_nodes(cmap: carla.Map, key_to_seg, seg_start, seg_count, seg_s0, seg_s_dir, spacing):
    """(node, limit m/s) for each speed sign reference on a lane, in landmark order."""
    out: list[tuple[int, float]] = []
    for lm in cmap.get_all_landmarks_of_type(SPEED_SIGN_TYPE):
        try:
            kmh = float(lm.value)
        except (TypeError, ValueError):
            continue
        if kmh <= 0:
            continue
        lanes = _landmark_lanes(cmap, lm)
        for lane in lanes:
            wp = cmap.get_waypoint_xodr(int(lm.road_id), lane, float(lm.s))
            if wp is None:
                continue
            seg = key_to_seg.get(_lane_key(wp))
            if seg is None:
                continue
            along = (float(wp.s) - seg_s0[seg]) * seg_s_dir[seg]
            k = int(np.clip(round(along / spacing), 0, seg_count[seg] - 1))
            out.append((int(seg_start[seg] + k), kmh / 3.6))
    return out


def _landmark_lanes(cmap: carla.Map, lm: carla.Landmark) -> list[int]:
    """Lane ids a landmark applies to: its validity ranges, or every driving lane on its side."""
    lanes: list[int] = []
    for lo, hi in lm.get_lane_validities():
        a, b = (lo, hi) if lo <= hi else (hi, lo)
        lanes.extend(i for i in range(int(a), int(b) + 1) if i != 0)
    if not lanes:
        # CARLA's orientation maps onto lane-id sign ("Positive" -> positive ids); probe outward.
        sign = -1 if str(lm.orientation).endswith("Negative") else 1
        for i in range(1, 9):
            if cmap.get_waypoint_xodr(int(lm.road_id), sign * i, float(lm.s)) is not None:
                lanes.append(sign * i)
    return lanes


def build_lane_graph(cmap: carla.Map, cfg: LaneGraphConfig) -> LaneGraph:
    """Sample every driving lane of `cmap` (see module docstring)."""
    spacing = float(cfg.node_spacing_m)
    topo = cmap.get_topology()
    key_to_seg: dict[tuple[int, int, int], int] = {}
    starts: list[carla.Waypoint] = []
    edges: list[tuple[int, int]] = []
    dead_end: dict[int, carla.Waypoint] = {}
    for a, b in topo:
        for w in (a, b):
            k = _lane_key(w)
            if k not in key_to_seg:
                key_to_seg[k] = len(starts)
                starts.append(w)
        if _lane_key(a) == _lane_key(b):  # CARLA reports a dead-end lane as (start, end) of itself
            dead_end[key_to_seg[_lane_key(a)]] = b
            continue
        edges.append((key_to_seg[_lane_key(a)], key_to_seg[_lane_key(b)]))

    xs, ys, zs, yaws, widths = [], [], [], [], []
    seg_start, seg_count, seg_end_xy, seg_end_yaw, seg_s0, seg_s_dir, seg_junction = (
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
    first_succ: dict[int, carla.Waypoint] = dict(dead_end)
    for a_seg, b_seg in edges:
        first_succ.setdefault(a_seg, starts[b_seg])
    for i, w in enumerate(starts):
        # next_until_lane_end follows the lane across section borders: keep this section only
        key = _lane_key(w)
        probe = _take_while_key(w.next_until_lane_end(spacing), key)
        tail = probe[-1] if probe else w
        end = first_succ.get(i)
        if end is None:  # dead end: the last probe point is the lane end
            end = tail
        # direction of increasing s; a lane shorter than the spacing follows OpenDRIVE's right-hand rule
        forward = float(tail.s) >= float(w.s) if probe else w.lane_id < 0
        s_dir = 1.0 if forward else -1.0
        length_s = abs(float(tail.s) - float(w.s)) + tail.transform.location.distance(end.transform.location)
        n = max(1, round(length_s / spacing))
        pts = [w]
        for k in range(1, n):
            p = cmap.get_waypoint_xodr(int(w.road_id), int(w.lane_id), float(w.s) + s_dir * k * length_s / n)
            if p is None or _lane_key(p) != _lane_key(w):
                # zero-width stretches (lanes that open or close) are not addressable by s: walk instead
                p = next((c for c in w.next(k * length_s / n) if _lane_key(c) == _lane_key(w)), None)
            if p is not None:
                pts.append(p)
        seg_start.append(len(xs))
        seg_count.append(len(pts))
        for p in pts:
            t = p.transform
            xs.append(t.location.x)
            ys.append(t.location.y)
            zs.append(t.location.z)
            yaws.append(math.radians(t.rotation.yaw))
            widths.append(p.lane_width)
        et = end.transform
        seg_end_xy.append((et.location.x, et.location.y))
        seg_end_yaw.append(math.radians(et.rotation.yaw))
        seg_s0.append(float(w.s))
        seg_s_dir.append(int(s_dir))
        seg_junction.append(int(w.junction_id) if w.is_junction else -1)

    S = len(starts)
    seg_start_a = np.asarray(seg_start, np.int32)
    seg_count_a = np.asarray(seg_count, np.int32)
    N = len(xs)
    xy = np.column_stack([xs, ys]).astype(np.float64)
    yaw = wrap_angle(np.asarray(yaws, np.float64))
    seg_of_node = np.repeat(np.arange(S, dtype=np.int32), seg_count_a)
    seg_end_xy_a = np.asarray(seg_end_xy, np.float64)

    # successor / predecessor CSR (dedup, deterministic order by topology)
    succ: list[list[int]] = [[] for _ in range(S)]
    pred: list[list[int]] = [[] for _ in range(S)]
    for a, b in edges:
        if b not in succ[a]:
            succ[a].append(b)
        if a not in pred[b]:
            pred[b].append(a)
    succ_ptr = np.zeros(S + 1, np.int64)
    succ_ptr[1:] = np.cumsum([len(x) for x in succ])
    succ_idx = np.asarray([b for x in succ for b in x], np.int32)
    pred_ptr = np.zeros(S + 1, np.int64)
    pred_ptr[1:] = np.cumsum([len(x) for x in pred])
    pred_idx = np.asarray([a for x in pred for a in x], np.int32)

    # node links and edge lengths
    last = seg_start_a + seg_count_a - 1
    next_node = np.arange(1, N + 1, dtype=np.int32)
    for s in range(S):
        next_node[last[s]] = seg_start_a[succ[s][0]] if succ[s] else NO_NODE
    edge_len = np.empty(N)
    edge_len[:-1] = np.hypot(*(xy[1:] - xy[:-1]).T)
    edge_len[last] = np.hypot(*(seg_end_xy_a - xy[last]).T)
    edge_len = np.maximum(edge_len, 1e-3)
    node_s = np.zeros(N)
    for s in range(S):
        a, c = seg_start_a[s], seg_count_a[s]
        node_s[a + 1 : a + c] = np.cumsum(edge_len[a : a + c - 1])
    seg_length = node_s[last] + edge_len[last]

    nxt_yaw = np.where(next_node >= 0, yaw[np.maximum(next_node, 0)], yaw)
    nxt_yaw[last] = np.where(next_node[last] >= 0, nxt_yaw[last], np.asarray(seg_end_yaw))
    curvature = wrap_angle(nxt_yaw - yaw) / edge_len

    seg_junction_a = np.asarray(seg_junction, np.int32)
    is_entry = np.array(
        [
            seg_junction_a[s] < 0 and bool(succ[s]) and all(seg_junction_a[b] >= 0 for b in succ[s])
            for s in range(S)
        ]
    )

    # distance from each segment start to the next junction entry, propagated backwards along
    # unique-successor chains (a branch makes the downstream entry depend on the choice: stop there)
    horizon = float(cfg.stop_horizon_m)
    seg_entry = np.full(S, -1, np.int32)
    seg_entry_d = np.full(S, np.inf)
    queue: deque[int] = deque()
    for s in range(S):
        if is_entry[s]:
            seg_entry[s] = s
            seg_entry_d[s] = seg_length[s]
            queue.append(s)
    while queue:
        s = queue.popleft()
        for p in pred[s]:
            if is_entry[p] or len(succ[p]) != 1:
                continue
            d = seg_entry_d[s] + seg_length[p]
            if d - seg_length[p] > horizon or d >= seg_entry_d[p]:
                continue
            seg_entry_d[p] = d
            seg_entry[p] = seg_entry[s]
            queue.append(p)
    entry_dist = seg_entry_d[seg_of_node] - node_s
    entry_dist[entry_dist > horizon] = np.inf
    entry_seg = np.where(np.isfinite(entry_dist), seg_entry[seg_of_node], -1).astype(np.int32)

    # speed limits: town default, overridden downstream of each speed sign until the next one
    default = float(cfg.default_speed_limit_kmh) / 3.6
    speed_limit = np.full(N, np.nan, np.float32)
    signs = _speed_sign_nodes(cmap, key_to_seg, seg_start_a, seg_count_a, seg_s0, seg_s_dir, spacing)
    sign_at = {n: v for n, v in signs}
    bfs: deque[int] = deque()
    for n, v in signs:
        speed_limit[n] = v
        bfs.append(n)
    while bfs:
        n = bfs.popleft()
        v = speed_limit[n]
        nxts = [int(seg_start_a[b]) for b in succ[seg_of_node[n]]] if last[seg_of_node[n]] == n else [n + 1]
        for m in nxts:
            if np.isnan(speed_limit[m]) and m not in sign_at:
                speed_limit[m] = v
                bfs.append(m)
    speed_limit[np.isnan(speed_limit)] = default

    # junction lane conflicts: centre lines within the clearance (crossing, merging, diverging)
    conflict_ptr, conflict_idx = _junction_conflicts(xy, seg_of_node, seg_junction_a, seg_end_xy_a, seg_start_a,
                                                     seg_count_a, float(cfg.conflict_clearance_m))  # fmt: skip

    # spatial hash
    cell = float(cfg.grid_cell_m)
    origin = xy.min(axis=0) - cell
    cxy = np.floor((xy - origin) / cell).astype(np.int64)
    nx, ny = int(cxy[:, 0].max()) + 2, int(cxy[:, 1].max()) + 2
    cid = cxy[:, 0] * ny + cxy[:, 1]
    order = np.argsort(cid, kind="stable")
    counts = np.bincount(cid, minlength=nx * ny)
    grid_ptr = np.zeros(nx * ny + 1, np.int64)
    grid_ptr[1:] = np.cumsum(counts)

    def node_attr(fn) -> np.ndarray:
        return np.asarray([fn(w) for w in starts])[seg_of_node]

    return LaneGraph(
        town=str(cmap.name),
        spacing_m=spacing,
        xy=xy,
        z=np.asarray(zs, np.float64),
        yaw=yaw,
        width=np.asarray(widths, np.float32),
        road_id=node_attr(lambda w: w.road_id).astype(np.int32),
        lane_id=node_attr(lambda w: w.lane_id).astype(np.int32),
        section_id=node_attr(lambda w: w.section_id).astype(np.int32),
        junction_id=seg_junction_a[seg_of_node],
        seg=seg_of_node,
        node_s=node_s,
        edge_len=edge_len,
        next_node=next_node,
        curvature=curvature,
        speed_limit=speed_limit,
        entry_dist=entry_dist,
        entry_seg=entry_seg,
        seg_start=seg_start_a,
        seg_count=seg_count_a,
        seg_length=seg_length,
        seg_end_xy=seg_end_xy_a,
        seg_end_yaw=wrap_angle(np.asarray(seg_end_yaw, np.float64)),
        seg_road=np.asarray([w.road_id for w in starts], np.int32),
        seg_section=np.asarray([w.section_id for w in starts], np.int32),
        seg_lane=np.asarray([w.lane_id for w in starts], np.int32),
        seg_junction=seg_junction_a,
        seg_s0=np.asarray(seg_s0, np.float64),
        seg_s_dir=np.asarray(seg_s_dir, np.int8),
        succ_ptr=succ_ptr,
        succ_idx=succ_idx,
        pred_ptr=pred_ptr,
        pred_idx=pred_idx,
        is_entry=is_entry,
        conflict_ptr=conflict_ptr,
        conflict_idx=conflict_idx,
        grid_origin=origin,
        grid_cell_m=cell,
        grid_shape=(nx, ny),
        grid_ptr=grid_ptr,
        grid_nodes=order.astype(np.int64),
        key_to_seg=key_to_seg,
    )


def _junction_conflicts(xy, seg_of_node, seg_junction, seg_end_xy, seg_start, seg_count, clearance):
    """CSR lists of junction segments whose centre lines (nodes + lane end) come within `clearance`."""
    S = seg_junction.shape[0]
    jsegs = np.flatnonzero(seg_junction >= 0)
    pts, owner = [], []
    for s in jsegs:
        a, c = seg_start[s], seg_count[s]
        pts.append(xy[a : a + c])
        pts.append(seg_end_xy[s][None])
        owner.append(np.full(c + 1, s, np.int32))
    conflicts: list[set[int]] = [set() for _ in range(S)]
    if pts:
        P = np.concatenate(pts)
        O = np.concatenate(owner)
        pairs = cKDTree(P).query_pairs(clearance, output_type="ndarray")
        if pairs.size:
            a, b = O[pairs[:, 0]], O[pairs[:, 1]]
            keep = (a != b) & (seg_junction[a] == seg_junction[b])
            for i, j in zip(a[keep].tolist(), b[keep].tolist(), strict=True):
                conflicts[i].add(j)
                conflicts[j].add(i)
    ptr = np.zeros(S + 1, np.int64)
    ptr[1:] = np.cumsum([len(c) for c in conflicts])
    idx = np.asarray([j for c in conflicts for j in sorted(c)], np.int32)
    return ptr, idx
