"""Lateral manoeuvres: passing blocked lanes, stepping aside for emergency vehicles, dodging invading cars.

The output is a lateral offset profile along the route (a few cosine-ramped "bumps") plus, when a
blocked lane cannot be passed yet, where to wait. Decisions are recomputed every tick from the
snapshot; only an overtake the ego has committed to is kept (it cannot be undone half-way), and the
clearance of the lane it borrows is re-checked every tick until then.

Which lane to borrow follows the map: a nudge inside the own lane first, then a same-direction lane,
then the oncoming lane of a two-way road, and only when that lane is clear for the whole manoeuvre:
    t_pass = time to drive (s_return - s_ego + extra) accelerating to the overtake speed
    every oncoming vehicle j: (s_j_near - s_return) / |v_j| > t_pass + margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from carla_bridge.snapshot import ActorKind, ActorRole
from experts.config import HazardConfig, ObstacleConfig
from experts.route_prep import NeighbourLane, PreparedRoute, cosine_ramp
from experts.scene import RouteFrameActors

# How far behind the ego a vehicle in a lane it wants to borrow is still watched (m).
REAR_WATCH_M = 40.0
# Minimum gap (m) to a vehicle in a borrowed same-direction lane, and the time (s) its closing speed
# must not eat up that gap in.
REAR_MIN_GAP_M = 6.0
REAR_CLOSING_TIME_S = 2.0
# Added to a needed lateral offset so that the corridor at that offset does not touch the obstacle.
NEED_EPS_M = 0.05


@dataclass(frozen=True)
class EgoOnRoute:
    s: float  # arc length of the ego centre
    d: float  # lateral offset of the ego centre, right positive
    v: float  # speed, m/s
    half_length: float
    half_width: float

    @property
    def s_front(self) -> float:
        return self.s + self.half_length


@dataclass(frozen=True)
class Bump:
    """A lateral offset that ramps from 0 to `offset_m` over [s0, s1], holds to s2, returns by s3."""

    s0: float
    s1: float
    s2: float
    s3: float
    offset_m: float

    def evaluate(self, s: np.ndarray) -> np.ndarray:
        up = cosine_ramp((s - self.s0) / max(self.s1 - self.s0, 1e-6))
        down = 1.0 - cosine_ramp((s - self.s2) / max(self.s3 - self.s2, 1e-6))
        return self.offset_m * np.minimum(up, down)


@dataclass(frozen=True)
class LateralPlan:
    bumps: tuple[Bump, ...] = ()
    wait_s: float = math.inf  # near edge of an obstacle the ego waits behind (inf: none)
    wait_gap_m: float = 0.0  # bumper gap to keep there
    wait_actor: int = -1
    wait_reason: str = ""  # "overtake_wait" | "obstacle"
    speed_cap_mps: float = math.inf
    cap_reason: str = ""  # "emergency_vehicle" | "obstacle"
    passing_ids: frozenset[int] = field(default_factory=frozenset)  # obstacles being driven around
    lane_change_active: bool = False  # the ego is or will soon be borrowing another lane
    yielding_to: int = -1  # emergency vehicle the ego is making room for

    def offset(self, s: np.ndarray) -> np.ndarray:
        """Planned offset at s: the bump of largest magnitude wins where bumps overlap."""
        out = np.zeros_like(np.asarray(s, dtype=float))
        for b in self.bumps:
            o = b.evaluate(s)
            out = np.where(np.abs(o) > np.abs(out), o, out)
        return out


@dataclass
class _Manoeuvre:
    """A lateral manoeuvre in progress; geometry fixed when first decided, extended while needed."""

    ids: frozenset[int]  # actors it is about (obstacle cluster members, or the emergency vehicle)
    bump: Bump
    kind: int  # NeighbourLane of the borrowed lane (NONE for a nudge)
    committed: bool = False
    released: bool = False  # emergency vehicle passed: only the ramp back remains


@dataclass(frozen=True)
class _Option:
    offset_m: float
    kind: int  # NeighbourLane.NONE = nudge inside the lane


@dataclass(frozen=True)
class _Cluster:
    s_lo: float  # near edge of the first blocking obstacle
    s_hi: float  # far edge of the last one (extended for moving ones)
    key: int  # id of the first blocking obstacle
    ids: frozenset[int]
    members: np.ndarray  # mask of obstacles near the stretch (they constrain the passing offset)
    blocking: np.ndarray  # mask of obstacles inside the ego corridor


class ObstaclePlanner:
    def __init__(self, cfg: ObstacleConfig, hazards: HazardConfig) -> None:
        self.cfg = cfg
        self.hz = hazards
        self._man: _Manoeuvre | None = None
        self._ev: _Manoeuvre | None = None
        self._deadlocked: frozenset[int] = frozenset()

    def reset(self) -> None:
        self._man = None
        self._ev = None
        self._deadlocked = frozenset()

    # ------------------------------------------------------------------ entry point
    def plan(
        self,
        route: PreparedRoute,
        frame: RouteFrameActors,
        ego: EgoOnRoute,
        cruise_mps: float,
        deadlocked: frozenset[int] = frozenset(),
    ) -> LateralPlan:
        """The tick's lateral plan. `deadlocked`: actors the ego and they have been waiting on each
        other for long (each yielding to the other); they are treated as obstacles wherever they stand."""
        self._deadlocked = deadlocked
        bumps: list[Bump] = []
        cap, cap_reason = math.inf, ""
        lane_change = False
        wait = (math.inf, 0.0, -1, "")
        passing: frozenset[int] = frozenset()

        man, wait = self._plan_obstacles(route, frame, ego, cruise_mps)
        if man is not None:
            bumps.append(man.bump)
            passing = man.ids
            lane_change = man.kind != NeighbourLane.NONE
            if man.kind == NeighbourLane.OPPOSITE:
                cap, cap_reason = self.cfg.overtake_speed_mps, "obstacle"
        ev = self._plan_emergency(route, frame, ego, cruise_mps)
        yielding = -1
        if ev is not None:
            bumps.append(ev.bump)
            lane_change = True
            yielding = -1 if ev.released else next(iter(ev.ids))
        dodge = self._plan_invading(frame, ego)
        if dodge is not None:
            bumps.append(dodge)
        return LateralPlan(
            bumps=tuple(bumps),
            wait_s=wait[0],
            wait_gap_m=wait[1],
            wait_actor=wait[2],
            wait_reason=wait[3],
            speed_cap_mps=cap,
            cap_reason=cap_reason,
            passing_ids=passing,
            lane_change_active=lane_change,
            yielding_to=yielding,
        )

    # ------------------------------------------------------------------ blocked lanes
    def obstacle_mask(self, route: PreparedRoute, frame: RouteFrameActors, cruise_mps: float) -> np.ndarray:
        """Actors that are obstacles to drive around rather than traffic to follow.

        Statics and parked vehicles always; scenario bicycles riding slowly (HazardAtSideLane: background
        cyclists are followed, passing them in the oncoming lane would cost a wrong-lane penalty); and
        any vehicle that has stood still for long with no junction just ahead of it, where a queue
        would be waiting (a broken-down car, or traffic stuck behind an obstacle); and the actors of a
        mutual wait (see `plan`).
        """
        cfg = self.cfg
        static = frame.kind == ActorKind.STATIC
        parked = (frame.role == ActorRole.PARKED) & (frame.kind != ActorKind.WALKER)
        stuck = frame.is_vehicle_like() & (frame.standing_s >= cfg.standing_time_s)
        if stuck.any():
            for entry, exit_ in route.junctions:
                stuck &= (frame.s_far + cfg.queue_junction_margin_m < entry) | (frame.s_near > exit_)
        slow_bike = (
            (frame.kind == ActorKind.BICYCLE)
            & (frame.role != ActorRole.BACKGROUND)
            & (frame.v_along > -cfg.oncoming_min_speed_mps)
            & (frame.speed < cfg.slow_bicycle_ratio * cruise_mps)
        )
        deadlocked = np.isin(frame.id, list(self._deadlocked)) if self._deadlocked else False
        return static | parked | stuck | slow_bike | deadlocked

    def _cluster(
        self, route: PreparedRoute, frame: RouteFrameActors, ego: EgoOnRoute, cruise_mps: float
    ) -> _Cluster | None:
        """The first stretch of obstacles blocking the ego's lane ahead."""
        cfg = self.cfg
        if not len(frame):
            return None
        corridor = ego.half_width + cfg.clearance_m
        obst = self.obstacle_mask(route, frame, cruise_mps)
        ahead = (frame.s_far > ego.s - ego.half_length) & (frame.s_near < ego.s + cfg.lookahead_m)
        lane_w = float(route.lane_width[route.index_at(ego.s)])
        cand = obst & ahead & (np.abs(frame.d) < 2.0 * lane_w)
        blocking = cand & frame.lateral_overlap(0.0, corridor)
        if not blocking.any():
            return None
        idx = np.flatnonzero(blocking)
        idx = idx[np.argsort(frame.s_near[idx])]
        s_lo, s_hi = float(frame.s_near[idx[0]]), float(frame.s_far[idx[0]])
        for k in idx[1:]:
            if frame.s_near[k] - s_hi > cfg.cluster_gap_m:
                break
            s_hi = max(s_hi, float(frame.s_far[k]))
        blocking = blocking & (frame.s_near <= s_hi)
        # Moving obstacles (slow bicycles) travel on while the ego passes them.
        moving = blocking & (frame.v_along > cfg.oncoming_min_speed_mps)
        if moving.any():
            v_obst = float(frame.v_along[moving].max())
            t_pass = (s_hi - ego.s + 2 * ego.half_length + cfg.margin_after_m) / max(cruise_mps - v_obst, 1.0)
            s_hi += v_obst * t_pass
        members = cand & (frame.s_far > s_lo - 1.0) & (frame.s_near < s_hi + 1.0)
        return _Cluster(
            s_lo, s_hi, int(frame.id[idx[0]]), frozenset(int(i) for i in frame.id[members]), members, blocking
        )

    def _plan_obstacles(
        self, route: PreparedRoute, frame: RouteFrameActors, ego: EgoOnRoute, cruise_mps: float
    ) -> tuple[_Manoeuvre | None, tuple[float, float, int, str]]:
        cfg = self.cfg
        no_wait = (math.inf, 0.0, -1, "")
        cluster = self._cluster(route, frame, ego, cruise_mps)
        man = self._man
        if man is not None and man.committed:
            if cluster is not None and cluster.ids & man.ids:
                s2 = max(man.bump.s2, cluster.s_hi + cfg.margin_after_m + ego.half_length)
                ramp = man.bump.s3 - man.bump.s2
                man.bump = Bump(man.bump.s0, man.bump.s1, s2, s2 + ramp, man.bump.offset_m)
                man.ids = man.ids | cluster.ids
            if ego.s <= man.bump.s3:
                return man, no_wait
            self._man = man = None
        if cluster is None:
            self._man = None
            return None, no_wait

        if man is not None and man.ids & cluster.ids and self._past_return(man, ego):
            man.committed = True  # too far into the manoeuvre to abort it: finish it
            return man, no_wait
        ramp = min(max(max(ego.v, 0.5 * cruise_mps) * cfg.ramp_time_s, cfg.ramp_min_m), cfg.ramp_max_m)
        s1 = cluster.s_lo - cfg.margin_before_m - ego.half_length
        s0 = max(s1 - ramp, ego.s)
        if man is not None and man.ids & cluster.ids:
            s0 = man.bump.s0  # keep the ramp decided on first sight
        s1 = max(s1, s0 + 1.0)
        s2 = cluster.s_hi + cfg.margin_after_m + ego.half_length
        s3 = s2 + ramp
        corridor = ego.half_width + cfg.clearance_m
        any_lane_option = False
        pending = man is not None and bool(man.ids & cluster.ids)
        for opt in self._options(route, frame, cluster, ego, s0, s3, corridor):
            any_lane_option |= opt.kind != NeighbourLane.NONE
            if not pending and s1 - ego.s < min_shift_length(
                abs(opt.offset_m - ego.d), cfg.min_turn_radius_m
            ):
                continue  # too close to swerve out: never start it (a started one is only re-checked)
            if not self._lane_clear(
                frame, self.obstacle_mask(route, frame, cruise_mps), ego, opt, s3, cruise_mps
            ):
                continue
            self._man = _Manoeuvre(cluster.ids, Bump(s0, s1, s2, s3, opt.offset_m), opt.kind)
            self._man.committed = opt.kind == NeighbourLane.NONE or self._past_return(self._man, ego)
            return self._man, no_wait
        # Nothing is free now: stay (or come back) in lane and wait behind the first obstacle.
        self._man = None
        return None, (
            cluster.s_lo,
            cfg.wait_gap_m,
            cluster.key,
            "overtake_wait" if any_lane_option else "obstacle",
        )

    def _past_return(self, man: _Manoeuvre, ego: EgoOnRoute) -> bool:
        """The ego has moved over most of the way, or reached the obstacle: no way back."""
        shifted = ego.d / man.bump.offset_m if abs(man.bump.offset_m) > 1e-3 else 1.0
        return shifted > self.cfg.commit_lateral_fraction or ego.s > man.bump.s1

    def _options(
        self,
        route: PreparedRoute,
        frame: RouteFrameActors,
        cluster: _Cluster,
        ego: EgoOnRoute,
        s_from: float,
        s_to: float,
        corridor: float,
    ) -> list[_Option]:
        """Feasible offsets in order of preference: nudges, same-direction lanes, oncoming lanes."""
        cfg = self.cfg
        i0, i1 = route.index_at(s_from), route.index_at(s_to)
        lane_w = float(np.min(route.lane_width[i0 : i1 + 1]))
        need_left = min(0.0, float(frame.d_left[cluster.blocking].min()) - corridor - NEED_EPS_M)
        need_right = max(0.0, float(frame.d_right[cluster.blocking].max()) + corridor + NEED_EPS_M)

        def free(offset: float) -> bool:
            return not (cluster.members & frame.lateral_overlap(offset, corridor)).any()

        options: list[_Option] = []
        for need in sorted((need_left, need_right), key=abs):
            if abs(need) <= cfg.max_in_lane_shift_m and free(need):
                options.append(_Option(need, NeighbourLane.NONE))
        lanes: list[_Option] = []
        for side, need in (("left", need_left), ("right", need_right)):
            codes = (route.left_lane if side == "left" else route.right_lane)[i0 : i1 + 1]
            widths = (route.left_width if side == "left" else route.right_width)[i0 : i1 + 1]
            if not len(codes) or (codes == NeighbourLane.NONE).any():
                continue
            kind = NeighbourLane.OPPOSITE if (codes == NeighbourLane.OPPOSITE).any() else NeighbourLane.SAME
            other_w = float(widths.min())
            sign = -1.0 if side == "left" else 1.0
            centre = sign * 0.5 * (lane_w + other_w)
            limit = sign * (0.5 * lane_w + other_w - ego.half_width - 0.1)
            # A same-direction lane is taken whole (its centre); of an oncoming lane no more is borrowed
            # than the obstacle needs: less exposure, and the ego's centre often stays in its own lane.
            offset = max(centre, need, key=abs) if kind == NeighbourLane.SAME else need
            if abs(offset) > abs(limit) or not free(offset):
                continue
            lanes.append(_Option(offset, int(kind)))
        # Same-direction lanes first, then the oncoming lane; the left side first within a kind.
        lanes.sort(key=lambda o: (o.kind, o.offset_m > 0))
        return options + lanes

    def _lane_clear(
        self,
        frame: RouteFrameActors,
        obst: np.ndarray,
        ego: EgoOnRoute,
        opt: _Option,
        s_return: float,
        cruise_mps: float,
    ) -> bool:
        """Whether the band the ego will drive in is free long enough (re-checked every tick)."""
        cfg = self.cfg
        if opt.kind == NeighbourLane.NONE:
            return True
        band = (
            frame.lateral_overlap(opt.offset_m, ego.half_width + cfg.clearance_m)
            & frame.is_vehicle_like()
            & ~obst
        )
        if not band.any():
            return True
        s_near, s_far, v_al = frame.s_near[band], frame.s_far[band], frame.v_along[band]
        ego_rear, ego_front = ego.s - ego.half_length, ego.s + ego.half_length
        standing_inside = (
            (np.abs(v_al) < cfg.oncoming_min_speed_mps) & (s_near < s_return) & (s_far > ego_front)
        )
        if standing_inside.any() or same_way_blocker(frame, band, ego) >= 0:
            return False
        if opt.kind != NeighbourLane.OPPOSITE:
            return True
        oncoming = (v_al < -cfg.oncoming_min_speed_mps) & (s_far > ego_rear)
        if not oncoming.any():
            return True
        v_pass = min(cfg.overtake_speed_mps, max(cruise_mps, ego.v))
        t_pass = time_to_cover(
            s_return - ego.s + cfg.clearance_extra_m,
            ego.v,
            v_pass,
            cfg.pass_accel_mps2,
        )
        t_arrive = (s_near[oncoming] - s_return) / np.abs(v_al[oncoming])
        return bool((t_arrive > t_pass + cfg.clearance_time_margin_s).all())

    # ------------------------------------------------------------------ emergency vehicles
    def _plan_emergency(
        self, route: PreparedRoute, frame: RouteFrameActors, ego: EgoOnRoute, cruise_mps: float
    ) -> _Manoeuvre | None:
        """Step aside into a neighbour lane while an emergency vehicle comes up behind in the ego's lane."""
        hz = self.hz
        ev = self._ev
        if ev is not None:
            tracked = frame.id == next(iter(ev.ids))
            passed = not tracked.any() or bool(
                (frame.s_near[tracked] > ego.s_front + hz.emergency_pass_margin_m).all()
            )
            b = ev.bump
            if not passed and not ev.released:
                s2 = max(b.s2, ego.s + hz.emergency_hold_m)
                ev.bump = Bump(b.s0, b.s1, s2, s2 + hz.emergency_ramp_m, b.offset_m)
            else:
                ev.released = True
            if ego.s > ev.bump.s3:
                self._ev = ev = None
            else:
                return ev
        i = route.index_at(ego.s)
        lane_w = float(route.lane_width[i])
        behind = (
            frame.is_emergency()
            & (frame.v_along > 0.0)
            & (frame.s < ego.s + ego.half_length)
            & (frame.s > ego.s - hz.emergency_detect_distance_m)
            & (np.abs(frame.d - ego.d) < 0.75 * lane_w)
        )
        if not behind.any():
            return None
        k = int(np.flatnonzero(behind)[np.argmax(frame.s[behind])])
        not_traffic = np.zeros(len(frame), bool)
        not_traffic[k] = True  # the emergency vehicle itself is what the ego makes room for
        for side in ("right", "left"):
            code = int((route.right_lane if side == "right" else route.left_lane)[i])
            if code == NeighbourLane.NONE or (
                hz.emergency_same_direction_only and code != NeighbourLane.SAME
            ):
                continue
            width = float((route.right_width if side == "right" else route.left_width)[i])
            offset = (1.0 if side == "right" else -1.0) * 0.5 * (lane_w + width)
            opt = _Option(offset, code)
            if self._lane_clear(frame, not_traffic, ego, opt, ego.s + hz.emergency_ramp_m, cruise_mps):
                s0 = ego.s
                s1 = s0 + hz.emergency_ramp_m
                s2 = s1 + hz.emergency_hold_m
                self._ev = _Manoeuvre(
                    frozenset({int(frame.id[k])}),
                    Bump(s0, s1, s2, s2 + hz.emergency_ramp_m, offset),
                    code,
                    True,
                )
                return self._ev
        return None

    # ------------------------------------------------------------------ invading oncoming traffic
    def _plan_invading(self, frame: RouteFrameActors, ego: EgoOnRoute) -> Bump | None:
        """Oncoming vehicles cutting into the ego's lane from the left: nudge right inside the lane."""
        cfg = self.cfg
        corridor = ego.half_width + cfg.clearance_m
        # Facing the ego (moving or halted in front of it): its near side is what the ego must clear.
        facing = np.abs(frame.rel_yaw) > np.pi - np.radians(cfg.invading_max_yaw_deg)
        onc = (
            frame.is_vehicle_like()
            & facing
            & (frame.v_along < cfg.oncoming_min_speed_mps)
            & (frame.s_near > ego.s)
            & (frame.s_near < ego.s + cfg.invading_lookahead_m)
            & frame.lateral_overlap(0.0, corridor)
            & (frame.d < 0.0)
        )
        if not onc.any():
            return None
        offset = min(float(frame.d_right[onc].max()) + corridor, cfg.max_in_lane_shift_m)
        # ... but not into whoever walks or rides along the right edge over that stretch
        s_end = float(frame.s_far[onc].max())
        right = (frame.d > 0.0) & (frame.s_far > ego.s - ego.half_length) & (frame.s_near < s_end) & ~onc
        right &= frame.d_left > 0.0
        if right.any():
            offset = min(offset, float(frame.d_left[right].min()) - corridor)
        if offset <= 0.05:
            return None
        # Full offset from the ego on (the expert blends from where the ego actually is).
        ramp = cfg.ramp_min_m
        s2 = max(float(frame.s_far[onc].max()), ego.s + ramp)
        return Bump(ego.s - ramp, ego.s, s2, s2 + ramp, offset)


def same_way_blocker(
    frame: RouteFrameActors, band: np.ndarray, ego: EgoOnRoute, closing_time_s: float = REAR_CLOSING_TIME_S
) -> int:
    """Id of a vehicle in `band` (a lane the ego is about to move into) that makes the move unsafe, or -1.

    Unsafe: a vehicle alongside the ego, or one coming up from behind faster than the gap allows,
        gap < REAR_MIN_GAP_M + max(v_behind - v_ego, 0) * closing_time_s.
    """
    if not band.any():
        return -1
    ego_rear, ego_front = ego.s - ego.half_length, ego.s + ego.half_length
    alongside = band & (frame.s_far > ego_rear) & (frame.s_near < ego_front)
    gap = ego_rear - frame.s_far
    closing = np.maximum(frame.v_along - ego.v, 0.0)
    behind = (
        band
        & (frame.s_far <= ego_rear)
        & (gap < REAR_WATCH_M)
        & (frame.v_along > 0.0)
        & (gap < REAR_MIN_GAP_M + closing * closing_time_s)
    )
    hit = np.flatnonzero(alongside | behind)
    return int(frame.id[hit[0]]) if len(hit) else -1


def lane_change_blocker(
    route: PreparedRoute,
    frame: RouteFrameActors,
    ego: EgoOnRoute,
    half_width: float,
    look_m: float,
    commit_m: float,
    closing_time_s: float = REAR_CLOSING_TIME_S,
    queue_speed_mps: float = 0.0,
) -> tuple[float, int]:
    """The route's next lane change, when its target lane is not free now: (s where the move starts,
    id of the vehicle in the way); (inf, -1) otherwise.

    The target lane's centre in the path frame is D (1 - w(s)) with w the cosine ramp of the smoothed
    move over [s_start, s_end] and D its lateral shift. A move the ego has begun (front more than
    `commit_m` into it) is not gated any more; moves farther than `look_m` ahead not yet.
    """
    if not len(frame):
        return math.inf, -1
    for lo, hi, shift in route.lane_change_windows:
        if ego.s_front > lo + commit_m or lo - ego.s_front > look_m:
            continue
        centre = shift * (1.0 - cosine_ramp((frame.s - lo) / max(hi - lo, 1e-6)))
        band = frame.lateral_overlap(centre, half_width) & frame.is_vehicle_like()
        # vehicles in the ego's own lane (centre 0 before the move) are the IDM's business
        band &= ~frame.lateral_overlap(0.0, 0.5)
        # a crawling queue is merged into by nosing in (its drivers give way, the forecast keeps the
        # ego off them): waiting for a gap a queue never opens would block the ego for good
        band &= frame.v_along >= queue_speed_mps
        blocker = same_way_blocker(frame, band, ego, closing_time_s)
        if blocker >= 0:
            return float(lo), blocker
    return math.inf, -1


def min_shift_length(shift_m: float, radius_m: float) -> float:
    """Shortest forward distance of a sideways shift made of two opposite arcs of radius R:
    L = 2 sqrt(R D - D^2 / 4) for a shift D <= 2 R (the cosine ramp of that length is about as tight).
    """
    d = min(abs(shift_m), 2.0 * radius_m)
    return 2.0 * math.sqrt(max(radius_m * d - 0.25 * d * d, 0.0))


def time_to_cover(distance: float, v0: float, v_max: float, accel: float) -> float:
    """Time to drive `distance` from v0, accelerating at `accel` up to v_max (then constant)."""
    v_max = max(v_max, v0, 0.1)
    t_acc = (v_max - v0) / accel
    d_acc = (v0 + v_max) * 0.5 * t_acc
    if d_acc >= distance:
        # v0 t + a t^2 / 2 = d
        return (-v0 + math.sqrt(v0 * v0 + 2.0 * accel * distance)) / accel
    return t_acc + (distance - d_acc) / v_max
