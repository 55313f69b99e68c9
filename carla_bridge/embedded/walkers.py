"""Walkers on sidewalks: sidewalk polylines of the map and pedestrians pacing along them.

Sidewalks are the lanes of type Sidewalk next to driving lanes (found by walking outward from every
driving lane of the topology). Each sidewalk lane is sampled like the lane graph; a walker is
(sidewalk, arc length s, direction +-1, speed, lateral offset). At a sidewalk end it continues on a
sidewalk that starts or ends within `JOIN_RADIUS_M` (random, seeded), else it turns around.
Crossing streets is left to scenarios (they spawn scripted walkers).

    s' = s + dir x v x dt;  pose = polyline(s') + offset x left normal
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import carla
import numpy as np

from carla_bridge.embedded.catalogue import WALKERS
from carla_bridge.embedded.config import WalkerConfig

JOIN_RADIUS_M = 2.5  # sidewalk ends closer than this are connected
EDGE_MARGIN_M = 0.4  # walkers keep this far from the sidewalk edges
MAX_LANES_OUT = 6  # how far to look sideways from a driving lane for a sidewalk


def _key(w: carla.Waypoint) -> tuple[int, int, int]:
    return (int(w.road_id), int(w.section_id), int(w.lane_id))


@dataclass
class SidewalkNetwork:
    xy: np.ndarray  # (P, 2) points of every sidewalk polyline, concatenated
    z: np.ndarray  # (P,)
    start: np.ndarray  # (W,) first point of each sidewalk
    count: np.ndarray  # (W,) points per sidewalk (>= 2)
    step: np.ndarray  # (W,) spacing of its points, m
    length: np.ndarray  # (W,) m
    width: np.ndarray  # (W,) m
    join_ptr: np.ndarray  # (2W+1,) CSR: for end e = 2w (start) / 2w+1 (end): sidewalks ends touching it
    join_idx: np.ndarray  # encoded 2 x sidewalk + end

    @property
    def num(self) -> int:
        return int(self.start.shape[0])


_CACHE: dict[int, tuple[carla.Map, SidewalkNetwork]] = {}


def sidewalks_for(cmap: carla.Map, spacing_m: float = 1.0) -> SidewalkNetwork:
    hit = _CACHE.get(id(cmap))
    if hit is not None and hit[0] is cmap:
        return hit[1]
    net = build_sidewalks(cmap, spacing_m)
    _CACHE[id(cmap)] = (cmap, net)
    return net


def build_sidewalks(cmap: carla.Map, spacing_m: float) -> SidewalkNetwork:
    found: dict[tuple[int, int, int], carla.Waypoint] = {}
    for a, _b in cmap.get_topology():
        for side in (0, 1):
            w = a
            for _ in range(MAX_LANES_OUT):
                w = w.get_right_lane() if side == 0 else w.get_left_lane()
                if w is None:
                    break
                if w.lane_type == carla.LaneType.Sidewalk:
                    found.setdefault(_key(w), w)
    pts, zs, start, count, step, length, width = [], [], [], [], [], [], []
    for k in sorted(found):
        w = found[k]
        # found beside a driving-lane start, i.e. at the start of the section: walk it to its end
        # (previous_until_lane_start crashes libcarla on sidewalks, so never walk backwards)
        line = [w] + [p for p in w.next_until_lane_end(spacing_m) if _key(p) == k]
        if len(line) < 2:
            continue
        xy = np.asarray([[p.transform.location.x, p.transform.location.y] for p in line])
        seg_len = np.hypot(*np.diff(xy, axis=0).T)
        total = float(seg_len.sum())
        if total < 2.0:
            continue
        n = max(2, round(total / spacing_m) + 1)
        s = np.concatenate([[0.0], np.cumsum(seg_len)])
        u = np.linspace(0.0, total, n)
        start.append(sum(count))
        count.append(n)
        step.append(total / (n - 1))
        length.append(total)
        width.append(float(w.lane_width))
        pts.append(np.column_stack([np.interp(u, s, xy[:, 0]), np.interp(u, s, xy[:, 1])]))
        zs.append(np.interp(u, s, [p.transform.location.z for p in line]))
    W = len(start)
    if W == 0:
        return SidewalkNetwork(np.zeros((0, 2)), np.zeros(0), *(np.zeros(0, np.int64) for _ in range(2)),
                               np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(1, np.int64), np.zeros(0, np.int64))  # fmt: skip
    xy = np.concatenate(pts)
    start_a = np.asarray(start, np.int64)
    count_a = np.asarray(count, np.int64)
    ends = np.concatenate([xy[start_a][:, None], xy[start_a + count_a - 1][:, None]], axis=1).reshape(-1, 2)
    d = np.hypot(*(ends[:, None, :] - ends[None, :, :]).transpose(2, 0, 1))
    joins = [[int(j) for j in np.flatnonzero(d[e] < JOIN_RADIUS_M) if j // 2 != e // 2] for e in range(2 * W)]
    ptr = np.zeros(2 * W + 1, np.int64)
    ptr[1:] = np.cumsum([len(x) for x in joins])
    idx = np.asarray([j for x in joins for j in x], np.int64)
    return SidewalkNetwork(
        xy=xy,
        z=np.concatenate(zs),
        start=start_a,
        count=count_a,
        step=np.asarray(step),
        length=np.asarray(length),
        width=np.asarray(width),
        join_ptr=ptr,
        join_idx=idx,
    )


class WalkerModel:
    """Background pedestrians on the sidewalk network (struct of arrays)."""

    def __init__(self, net: SidewalkNetwork, cfg: WalkerConfig, rng: np.random.Generator) -> None:
        self.net = net
        self.cfg = cfg
        self.rng = rng
        self.id = np.zeros(0, np.int64)
        self.walk = np.zeros(0, np.int64)  # sidewalk index
        self.s = np.zeros(0)
        self.dir = np.zeros(0)
        self.speed = np.zeros(0)
        self.offset = np.zeros(0)
        self.type_id: list[str] = []
        self.xyz = np.zeros((0, 3))
        self.yaw = np.zeros(0)
        self.velocity = np.zeros((0, 2))

    def __len__(self) -> int:
        return int(self.id.shape[0])

    def spawn_near(self, center: np.ndarray, count: int, min_dist: float, max_dist: float, next_id) -> int:
        """Spawn up to `count` walkers on sidewalk points between min_dist and max_dist of `center`."""
        net = self.net
        if net.num == 0 or count <= 0:
            return 0
        d = np.hypot(*(net.xy - center).T)
        cand = np.flatnonzero((d >= min_dist) & (d <= max_dist))
        if cand.size == 0:
            return 0
        picks = self.rng.choice(cand, size=min(count, cand.size), replace=False)
        walk = np.searchsorted(net.start, picks, side="right") - 1
        s = (picks - net.start[walk]) * net.step[walk]
        lo, hi = self.cfg.speed_range_mps
        k = picks.shape[0]
        half = np.maximum(net.width[walk] / 2.0 - EDGE_MARGIN_M, 0.0)
        self.id = np.concatenate([self.id, np.asarray([next_id() for _ in range(k)], np.int64)])
        self.walk = np.concatenate([self.walk, walk])
        self.s = np.concatenate([self.s, s])
        self.dir = np.concatenate([self.dir, np.where(self.rng.random(k) < 0.5, -1.0, 1.0)])
        self.speed = np.concatenate([self.speed, self.rng.uniform(lo, hi, k)])
        self.offset = np.concatenate([self.offset, self.rng.uniform(-1.0, 1.0, k) * half])
        self.type_id += [WALKERS[int(i)].type_id for i in self.rng.integers(len(WALKERS), size=k)]
        self._write_poses()
        return k

    def keep(self, mask: np.ndarray) -> None:
        for name in ("id", "walk", "s", "dir", "speed", "offset", "xyz", "yaw", "velocity"):
            setattr(self, name, getattr(self, name)[mask])
        self.type_id = [t for t, k in zip(self.type_id, mask.tolist(), strict=True) if k]

    def step(self, dt: float) -> None:
        if len(self) == 0:
            return
        net = self.net
        s = self.s + self.dir * self.speed * dt
        length = net.length[self.walk]
        out = np.flatnonzero((s < 0.0) | (s > length))
        for i in out.tolist():  # few walkers reach an end on any tick
            w = int(self.walk[i])
            end = 0 if s[i] < 0.0 else 1
            e = 2 * w + end
            joins = net.join_idx[net.join_ptr[e] : net.join_ptr[e + 1]]
            if joins.size:
                j = int(joins[int(self.rng.integers(joins.size))])
                nw, nend = j // 2, j % 2
                self.walk[i] = nw
                s[i] = 0.0 if nend == 0 else float(net.length[nw])
                self.dir[i] = 1.0 if nend == 0 else -1.0
            else:
                s[i] = min(max(s[i], 0.0), float(length[i]))
                self.dir[i] = -self.dir[i]
        self.s = s
        self._write_poses()

    def _write_poses(self) -> None:
        net = self.net
        walk = self.walk
        u = np.clip(self.s / net.step[walk], 0.0, net.count[walk] - 1.000001)
        k = np.floor(u).astype(np.int64)
        f = u - k
        i0 = net.start[walk] + k
        p0, p1 = net.xy[i0], net.xy[i0 + 1]
        tangent = p1 - p0
        heading = np.arctan2(tangent[:, 1], tangent[:, 0])
        xy = p0 + tangent * f[:, None]
        # left normal in CARLA's frame of the polyline direction; the offset is lateral either way
        xy[:, 0] += -np.sin(heading) * self.offset
        xy[:, 1] += np.cos(heading) * self.offset
        yaw = np.where(self.dir > 0, heading, heading + math.pi)
        self.yaw = (yaw + math.pi) % (2 * math.pi) - math.pi
        self.xyz = np.column_stack([xy, net.z[i0] + (net.z[i0 + 1] - net.z[i0]) * f])
        self.velocity = np.column_stack([np.cos(self.yaw), np.sin(self.yaw)]) * self.speed[:, None]
