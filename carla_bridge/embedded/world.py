"""`World`: the state of one embedded-simulator episode and the API scenarios script it with.

Owns the ego (bicycle state), background traffic (`TrafficModel`), walkers (`WalkerModel`),
scenario-owned actors (`ScriptedActors`), the signal phases, the clock, the route progress and the
episode's single random Generator. The simulator (`EmbeddedSimulator`) drives `World.tick`; the
scenario plugins call the public methods documented in the package docstring.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import carla
import numpy as np

from carla_bridge.embedded.catalogue import Blueprint, blueprint
from carla_bridge.embedded.config import SimConfig
from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.embedded.route_progress import route_locator
from carla_bridge.embedded.scripted import ScriptedActor, ScriptedActors, SpeedProfile
from carla_bridge.embedded.signals import SignalLayout, SignalState
from carla_bridge.embedded.traffic import EGO_OBSTACLE_ID, Obstacles, TrafficModel
from carla_bridge.embedded.vehicle_model import bicycle_step_scalar
from carla_bridge.embedded.walkers import SidewalkNetwork, WalkerModel
from carla_bridge.geometry import boxes_overlap, wrap_angle
from carla_bridge.route import DenseRoute, Route
from carla_bridge.snapshot import ActorKind, ActorRole, Control, Pose, TrafficLightState

log = logging.getLogger(__name__)

EGO_NODE_RADIUS_M = 6.0  # search radius for the lane node under the ego
ROUTE_NODE_RADIUS_M = 3.0
EGO_COMMIT_HORIZON_S = 2.0  # a moving ego holds the junction lanes it reaches within this time
EGO_COMMIT_MIN_SPEED_MPS = 1.0
EGO_STOPPED_NOSE_M = 1.5  # a stopped ego claims no junction lane that only its front this long reaches
FIRST_ACTOR_ID = 1  # actor ids start here on every reset (the ego has no id in the snapshot)
_EGO_IDS = np.array([EGO_OBSTACLE_ID], np.int64)
_NO_SEGMENTS = np.zeros(0, np.int64)
SPAWN_RETRY_MOVE_M = 15.0  # after a spawn round placed nothing, retry once the ego moved this far
SPAWN_RETRY_S = 5.0  # or this much later
SPAWN_PROBES_PER_VEHICLE = 6  # random candidate spots examined per missing vehicle
SPAWN_PROBES_MIN = 20
SPAWN_MATRIX_MAX = 20_000  # candidates x actors distance matrix size above which a loop is used
SPAWN_CACHE_MOVE_M = 10.0  # spawn candidates are re-gathered when the ego moved this far
CONTACT_MAX_VERTICAL_GAP_M = 1.0  # ... and whose box is at most this far above or below the ego's (bridges)
_SOLID = (int(ActorKind.VEHICLE), int(ActorKind.BICYCLE), int(ActorKind.STATIC))


class World:
    """One episode. Build with `World(...)`, then `reset_actors()`; `tick(control)` advances it."""

    def __init__(
        self,
        cfg: SimConfig,
        cmap: carla.Map,
        graph: LaneGraph,
        layout: SignalLayout,
        sidewalks: SidewalkNetwork,
        route: Route,
        seed: int,
        dt: float,
    ) -> None:
        self.cfg = cfg
        self.cmap = cmap
        self.graph = graph
        self.route = route
        self.dense: DenseRoute = route.dense  # type: ignore[assignment]
        self.dt = dt
        self.rng = np.random.default_rng(int(seed) + int(cfg.seed_offset))
        self.time_s = 0.0
        self.frame = 0
        self._next_id = FIRST_ACTOR_ID
        self.signals = SignalState(layout, cfg.signals, self.rng)
        self.traffic = TrafficModel(graph, layout, cfg.traffic, cfg.idm, cfg.vehicle, self.rng)
        self.walkers = WalkerModel(sidewalks, cfg.walkers, self.rng)
        self.scripted = ScriptedActors()
        self.no_spawn = np.zeros(graph.num_nodes, bool)  # nodes scenarios keep free of background traffic
        # nodes background vehicles may not drive on (count of zones per node; see keep_out_background)
        self.keep_out = np.zeros(graph.num_nodes, np.int32)
        self._keep_out_zones = 0
        self._spawn_period = max(1, round(cfg.traffic.density_check_period_s / dt))
        self._spawn_failed_at: tuple[float, float, float] | None = None
        self._spawn_cache: tuple[float, float, np.ndarray] | None = None

        # ego at the start of the dense route
        d = self.dense
        self.ego_extent = np.asarray(cfg.ego_extent_m, np.float64)
        self.ego_type_id = cfg.ego_type_id
        self.ego = (float(d.xyz[0, 0]), float(d.xyz[0, 1]), float(d.yaw[0]), 0.0, 0.0)  # x, y, yaw, v, steer
        self.ego_z = float(d.xyz[0, 2])
        self.ego_velocity = np.zeros(2)
        self.ego_accel = np.zeros(2)
        self.ego_yaw_rate = 0.0
        self.ego_control = Control()
        # Scenarios that disturb the ego (ControlLoss) install a function here; tick() applies it.
        self.control_perturbation: Callable[[Control], Control] | None = None
        self.route_index = 0
        self.route_lateral = 0.0
        self._locate = route_locator()
        # lane segment under every dense route point (for the ego's junction claims and spawn rules)
        self.route_nodes = np.asarray(
            [graph.nearest_node(d.xyz[i, :2], float(d.yaw[i]), ROUTE_NODE_RADIUS_M) for i in range(len(d))],
            np.int64,
        )
        segs = np.where(self.route_nodes >= 0, graph.seg[np.maximum(self.route_nodes, 0)], -1)
        self.route_junction_seg = np.where(
            (segs >= 0) & (graph.seg_junction[np.maximum(segs, 0)] >= 0), segs, -1
        )
        # arc length of the next route point on a junction lane, per dense index (inf: none ahead)
        jpos = np.where(self.route_junction_seg >= 0, d.s, np.inf)
        self.next_junction_s = np.minimum.accumulate(jpos[::-1])[::-1]

    # ------------------------------------------------------------------ ids / lookups
    def next_actor_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    @property
    def ego_pose(self) -> Pose:
        x, y, yaw, _, _ = self.ego
        return Pose(x, y, self.ego_z, yaw)

    @property
    def ego_xy(self) -> np.ndarray:
        return np.array([self.ego[0], self.ego[1]])

    @property
    def ego_speed(self) -> float:
        return float(self.ego[3])

    def set_ego_state(self, x: float, y: float, yaw: float, speed: float = 0.0) -> None:
        """Teleport the ego (scenario set-up, tests); its route progress jumps to the nearest dense point."""
        self.ego = (float(x), float(y), float(yaw), float(speed), 0.0)
        self.ego_velocity = np.array([speed * math.cos(yaw), speed * math.sin(yaw)])
        self.route_index = self.route_index_near((x, y))
        self._update_route_progress()

    def route_s(self) -> float:
        """Arc length of the ego's current dense-route index, m."""
        return float(self.dense.s[self.route_index])

    def route_index_at_s(self, s: float) -> int:
        return int(min(np.searchsorted(self.dense.s, s), len(self.dense) - 1))

    def route_index_near(self, xy: tuple[float, float] | np.ndarray) -> int:
        """Dense-route index closest to a world point."""
        d2 = ((self.dense.xyz[:, :2] - np.asarray(xy)) ** 2).sum(axis=1)
        return int(np.argmin(d2))

    def lane_node(
        self, xy: np.ndarray | tuple[float, float], yaw: float | None = None, radius_m: float = 4.0
    ) -> int:
        """Lane-graph node nearest to `xy` (heading-aware when `yaw` is given); -1 if none."""
        return self.graph.nearest_node(np.asarray(xy, np.float64), yaw, radius_m)

    def waypoint(self, xy: tuple[float, float] | np.ndarray, z: float | None = None) -> carla.Waypoint:
        """The map's waypoint at `xy`; give `z` on maps with roads above roads (else the nearest lane's z)."""
        if z is None:
            node = self.graph.nearest_node(np.asarray(xy, np.float64)[:2], None, 8.0)
            z = float(self.graph.z[node]) if node >= 0 else 0.0
        return self.cmap.get_waypoint(carla.Location(x=float(xy[0]), y=float(xy[1]), z=float(z)))

    def node_pose(self, node: int) -> Pose:
        g = self.graph
        return Pose(float(g.xy[node, 0]), float(g.xy[node, 1]), float(g.z[node]), float(g.yaw[node]))

    # ------------------------------------------------------------------ spawning
    def spawn_lane_vehicle(
        self,
        node: int,
        type_id: str | None = None,
        speed: float = 0.0,
        role: ActorRole = ActorRole.SCENARIO,
        speed_cap: float = math.inf,
        managed: bool = False,
        ignore_signals: bool = False,
        path_segments: Sequence[int] | None = None,
    ) -> int:
        """A vehicle driven by the traffic model (IDM, lights, right of way) at lane node `node`;
        with `path_segments` (consecutive lane segments, `node`'s among them) it keeps to that path
        instead of choosing successors at random."""
        bp = blueprint(type_id) if type_id else self.traffic.sample_blueprint()
        aid = self.next_actor_id()
        row = self.traffic.add(aid, int(node), bp, float(speed), role, managed, 1.0, speed_cap)
        self.traffic.ignore_signals[row] = ignore_signals
        if path_segments is not None:
            self.traffic.set_path_segments(aid, path_segments)
        return aid

    def spawn_scripted(
        self,
        pose: Pose,
        type_id: str,
        role: ActorRole = ActorRole.SCENARIO,
        extent: tuple[float, float, float] | None = None,
        kind: ActorKind | None = None,
    ) -> int:
        """A scenario-owned actor standing at `pose` (vehicle, walker or prop by its type id)."""
        bp: Blueprint = blueprint(type_id)
        aid = self.next_actor_id()
        self.scripted.add(
            ScriptedActor(
                id=aid,
                kind=kind if kind is not None else bp.kind,
                role=role,
                type_id=type_id,
                extent=tuple(extent) if extent is not None else bp.extent,
                x=float(pose.x),
                y=float(pose.y),
                z=float(pose.z),
                yaw=float(pose.yaw),
            )
        )
        return aid

    def spawn_static(self, pose: Pose, type_id: str, extent: tuple[float, float, float] | None = None) -> int:
        """A prop (cone, warning sign, debris) that never moves."""
        return self.spawn_scripted(pose, type_id, ActorRole.SCENARIO, extent, ActorKind.STATIC)

    def spawn_walker(self, pose: Pose, type_id: str = "walker.pedestrian.0001") -> int:
        return self.spawn_scripted(pose, type_id, ActorRole.SCENARIO, None, ActorKind.WALKER)

    def set_path(
        self,
        actor_id: int,
        path_xy: np.ndarray,
        speed: SpeedProfile,
        max_accel_mps2: float | None = None,
        max_decel_mps2: float | None = None,
        remove_at_end: bool = False,
    ) -> None:
        """Make a scripted actor follow `path_xy` ((M, 2) world points) at `speed` (m/s or f(t) -> m/s)."""
        self.scripted.set_path(
            actor_id, path_xy, speed, self.time_s, None, max_accel_mps2, max_decel_mps2, remove_at_end
        )

    def lane_path(self, node: int, length_m: float) -> np.ndarray:
        """(M, 2) lane-centre polyline from `node` along the lane (default successors) for `length_m`."""
        return self.graph.xy[self.graph.path_nodes(int(node), float(length_m))]

    def stop_actor(self, actor_id: int) -> None:
        a = self.scripted.get(actor_id)
        if a is not None:
            a.path_xy = None
            return
        row = self.traffic.index_of(actor_id)
        if row >= 0:
            self.traffic.speed_cap[row] = 0.0

    def open_door(self, actor_id: int, left: bool = True) -> int:
        """Spawn a door-like box on one side of a vehicle; returns the door's actor id."""
        a = self.scripted.get(actor_id)
        if a is None:
            raise KeyError(f"open_door: actor {actor_id} is not scenario-owned")
        hl, hw, _hz = a.extent
        door = blueprint("static.prop.vehicle_door").extent
        side = -1.0 if left else 1.0  # CARLA frame: +y of the vehicle is its right side
        lx, ly = 0.35 * hl, side * (hw + door[0] * 0.7)
        c, s = math.cos(a.yaw), math.sin(a.yaw)
        pose = Pose(a.x + c * lx - s * ly, a.y + s * lx + c * ly, a.z, a.yaw + side * math.radians(60.0))
        return self.spawn_static(pose, "static.prop.vehicle_door", door)

    def remove_actor(self, actor_id: int) -> bool:
        if self.scripted.remove(actor_id):
            return True
        row = self.traffic.index_of(actor_id)
        if row >= 0:
            mask = np.ones(len(self.traffic), bool)
            mask[row] = False
            self.traffic.keep(mask)
            return True
        hit = np.flatnonzero(self.walkers.id == actor_id)
        if hit.size:
            mask = np.ones(len(self.walkers), bool)
            mask[hit] = False
            self.walkers.keep(mask)
            return True
        return False

    def actor_xy(self, actor_id: int) -> np.ndarray | None:
        a = self.scripted.get(actor_id)
        if a is not None:
            return np.array([a.x, a.y])
        row = self.traffic.index_of(actor_id)
        if row >= 0:
            return self.traffic.xyz[row, :2].copy()
        return None

    def actor_speed(self, actor_id: int) -> float | None:
        a = self.scripted.get(actor_id)
        if a is not None:
            return a.speed
        row = self.traffic.index_of(actor_id)
        return float(self.traffic.v[row]) if row >= 0 else None

    def clear_background(self, center: np.ndarray, radius_m: float) -> int:
        """Remove background vehicles within `radius_m` of `center`; returns how many."""
        t = self.traffic
        if len(t) == 0:
            return 0
        d2 = ((t.xyz[:, :2] - center) ** 2).sum(axis=1)
        kill = (d2 <= radius_m**2) & (t.role == int(ActorRole.BACKGROUND))
        if kill.any():
            t.keep(~kill)
        return int(kill.sum())

    def block_spawns(self, nodes: np.ndarray) -> None:
        """Keep background traffic from spawning on these lane nodes for the rest of the episode."""
        self.no_spawn[np.asarray(nodes, np.int64)] = True

    def keep_out_background(self, nodes: np.ndarray) -> np.ndarray:
        """Forbid background vehicles on these lane nodes until `allow_background(token)`: none spawn
        there, and any that drives onto one is removed (the leaderboard's BackgroundActivity
        RemoveRoadLane / ChangeOppositeBehavior for a running scenario). Zones may overlap. Returns the
        token (the unique nodes) to pass to `allow_background`."""
        nodes = np.unique(np.asarray(nodes, np.int64))
        nodes = nodes[nodes >= 0]
        self.keep_out[nodes] += 1
        self._keep_out_zones += 1
        self._remove_kept_out()
        return nodes

    def allow_background(self, token: np.ndarray) -> None:
        """Lift one `keep_out_background` zone."""
        self.keep_out[token] = np.maximum(self.keep_out[token] - 1, 0)
        self._keep_out_zones = max(self._keep_out_zones - 1, 0)

    def _remove_kept_out(self) -> None:
        t = self.traffic
        if len(t) == 0 or self._keep_out_zones == 0:
            return
        out = (self.keep_out[t.node] > 0) & (t.role == int(ActorRole.BACKGROUND))
        if out.any():
            t.keep(~out)

    # ------------------------------------------------------------------ background traffic control
    def brake_vehicles_ahead(self, distance_m: float, corridor_m: float = 2.0) -> list[int]:
        """Make every lane vehicle ahead of the ego on its route (within `distance_m`) brake hard."""
        t = self.traffic
        if len(t) == 0:
            return []
        i0 = self.route_index
        i1 = self.route_index_at_s(self.route_s() + distance_m)
        pts = self.dense.xyz[i0 : i1 + 1, :2]
        d2 = ((t.xyz[:, None, :2] - pts[None]) ** 2).sum(axis=2)
        on = d2.min(axis=1) <= corridor_m**2
        t.forced_brake |= on
        return t.id[on].tolist()

    def release_vehicles(self, ids: list[int]) -> None:
        t = self.traffic
        mask = np.isin(t.id, np.asarray(ids, np.int64))
        t.forced_brake[mask] = False

    def set_light_state(self, light_id: int, state: TrafficLightState, duration_s: float) -> None:
        """Force a traffic light (id as in the snapshot) into `state` for `duration_s` seconds."""
        self.signals.force(light_id, state, duration_s, self.time_s)

    def next_light_on_route(self, max_distance_m: float = 100.0) -> int | None:
        """Id of the first traffic light whose stop line lies on the route ahead, or None."""
        g, lay = self.graph, self.signals.layout
        s0 = self.route_s()
        i1 = self.route_index_at_s(s0 + max_distance_m)
        for node in self.route_nodes[self.route_index : i1 + 1].tolist():
            if node < 0:
                continue
            seg = int(g.seg[node])
            if lay.entry_kind[seg] == 1:  # ENTRY_LIGHT
                return int(lay.light_ids[lay.entry_signal[seg]])
        return None

    # ------------------------------------------------------------------ density management
    def _route_block_nodes(self) -> np.ndarray:
        """Lane nodes on the ego's near route (no spawns there)."""
        cfg = self.cfg.traffic
        i1 = self.route_index_at_s(self.route_s() + cfg.route_clearance_ahead_m)
        nodes = self.route_nodes[max(self.route_index - 5, 0) : i1 + 1]
        return nodes[nodes >= 0]

    def _spawn_backoff(self, ego: np.ndarray) -> bool:
        f = self._spawn_failed_at
        if f is None:
            return False
        if (ego[0] - f[0]) ** 2 + (ego[1] - f[1]) ** 2 > SPAWN_RETRY_MOVE_M**2 or self.time_s - f[
            2
        ] > SPAWN_RETRY_S:
            self._spawn_failed_at = None
            return False
        return True

    def _spawn_ring(self, ego: np.ndarray, radius: float) -> np.ndarray:
        """Non-junction lane nodes within `radius` of the ego (candidates cached while the ego moves little)."""
        c = self._spawn_cache
        if c is None or (ego[0] - c[0]) ** 2 + (ego[1] - c[1]) ** 2 > SPAWN_CACHE_MOVE_M**2:
            g = self.graph
            near = g.nodes_near(ego, radius + SPAWN_CACHE_MOVE_M)
            c = (float(ego[0]), float(ego[1]), near[g.junction_id[near] < 0])
            self._spawn_cache = c
        nodes = c[2]
        d = self.graph.xy[nodes] - ego
        return nodes[d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] <= radius * radius]

    def target_vehicle_count(self, candidate_nodes: np.ndarray) -> int:
        cfg = self.cfg.traffic
        if cfg.density_per_100m > 0:
            lane_m = candidate_nodes.size * self.graph.spacing_m
            return round(cfg.density_per_100m * lane_m / 100.0)
        return int(cfg.count)

    def manage_traffic(self, initial: bool) -> None:
        """Despawn far background vehicles and spawn new ones to keep the target count."""
        cfg = self.cfg.traffic
        t = self.traffic
        g = self.graph
        ego = self.ego_xy
        if len(t):
            d2 = ((t.xyz[:, :2] - ego) ** 2).sum(axis=1)
            drop = t.managed & ((d2 > cfg.despawn_radius_m**2) | t.remove_requested)
            drop |= t.remove_requested & ~t.managed & (t.role == int(ActorRole.BACKGROUND))
            if drop.any():
                t.keep(~drop)
        if not cfg.enabled:
            return
        if not initial and self._spawn_backoff(ego):
            return
        cand = self._spawn_ring(ego, cfg.spawn_radius_m)
        target = self.target_vehicle_count(cand)
        have = int(np.count_nonzero(t.managed))
        need = target - have
        if need <= 0 or cand.size == 0:
            return
        if not initial:
            need = min(need, cfg.max_spawns_per_check)
        inner = cfg.ego_bubble_m if initial else max(cfg.ego_bubble_m, cfg.respawn_min_distance_m)
        dd = np.hypot(*(g.xy[cand] - ego).T)
        ok = (dd >= inner) & ~self.no_spawn[cand] & (self.keep_out[cand] == 0)
        block = self._route_block_nodes()
        if block.size:
            near_route = np.zeros(g.num_nodes, bool)
            near_route[block] = True
            ok &= ~near_route[cand]
        cand = cand[ok]
        if cand.size == 0:
            return
        others = [t.xyz[:, :2], ego[None]]
        if len(self.scripted):
            others.append(np.asarray([(a.x, a.y) for a in self.scripted.actors]))
        occupied = np.concatenate(others)
        # probe a random sample of the candidates (enough for `need` even when many are crowded)
        probe = cand.size if initial else min(cand.size, SPAWN_PROBES_PER_VEHICLE * need + SPAWN_PROBES_MIN)
        picks = cand[self.rng.choice(cand.size, probe, replace=False)]
        pts = g.xy[picks]
        if probe * occupied.shape[0] <= SPAWN_MATRIX_MAX:
            d2 = ((pts[:, None, :] - occupied[None, :, :]) ** 2).sum(axis=2).min(axis=1)
        else:  # many candidates (reset): loop over the few actors instead of one huge matrix
            d2 = np.full(probe, np.inf)
            for q in occupied:
                d2 = np.minimum(d2, (pts[:, 0] - q[0]) ** 2 + (pts[:, 1] - q[1]) ** 2)
        spacing2 = cfg.spawn_min_spacing_m**2
        placed_xy: list[np.ndarray] = []
        for k in np.flatnonzero(d2 >= spacing2).tolist():
            if len(placed_xy) >= need:
                break
            p = pts[k]
            if any((q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2 < spacing2 for q in placed_xy):
                continue
            node = int(picks[k])
            bp = t.sample_blueprint()
            factor = t.sample_speed_factor()
            speed = t.desired_speed(node, int(bp.kind), factor) * float(self.rng.uniform(0.5, 1.0))
            t.add(self.next_actor_id(), node, bp, speed, ActorRole.BACKGROUND, True, factor)
            placed_xy.append(p)
        placed = len(placed_xy)
        if placed == 0:  # nowhere to put one: do not search again until the ego moved or time passed
            self._spawn_failed_at = (float(ego[0]), float(ego[1]), self.time_s)

    def manage_walkers(self, initial: bool) -> None:
        cfg = self.cfg.walkers
        w = self.walkers
        ego = self.ego_xy
        if len(w):
            d2 = ((w.xyz[:, :2] - ego) ** 2).sum(axis=1)
            far = d2 > cfg.despawn_radius_m**2
            if far.any():
                w.keep(~far)
        if not cfg.enabled:
            return
        need = cfg.count - len(w)
        if need > 0:
            inner = cfg.ego_bubble_m if initial else max(cfg.ego_bubble_m, 0.6 * cfg.spawn_radius_m)
            w.spawn_near(
                ego, need if initial else min(need, 2), inner, cfg.spawn_radius_m, self.next_actor_id
            )

    # ------------------------------------------------------------------ tick
    def ego_obstacles(self) -> Obstacles:
        """The ego and the scenario-owned actors as obstacles for lane followers."""
        x, y, yaw, v, _ = self.ego
        ext = self.ego_extent
        if not self.scripted.actors:
            return Obstacles(
                xy=np.array([[x, y]]),
                yaw=np.array([yaw]),
                half_length=ext[:1],
                half_width=ext[1:2],
                speed=np.array([v]),
                ids=_EGO_IDS,
            )
        acts = self.scripted.actors
        return Obstacles(
            xy=np.asarray([(x, y)] + [(a.x, a.y) for a in acts]),
            yaw=np.asarray([yaw] + [a.yaw for a in acts]),
            half_length=np.asarray([ext[0]] + [a.extent[0] for a in acts]),
            half_width=np.asarray([ext[1]] + [a.extent[1] for a in acts]),
            speed=np.asarray([v] + [a.speed for a in acts]),
            ids=np.asarray([EGO_OBSTACLE_ID] + [a.id for a in acts], np.int64),
        )

    def ego_junction_claims(self) -> np.ndarray:
        """Junction lanes (segments) the ego holds: those under its box and, while it moves, those it
        reaches within EGO_COMMIT_HORIZON_S. A stopped ego whose nose only touches a junction holds none
        (its box still blocks lanes geometrically), so waiting at a line never freezes cross traffic."""
        v = self.ego[3]
        hl = float(self.ego_extent[0])
        moving = v > EGO_COMMIT_MIN_SPEED_MPS
        ahead_m = hl + v * EGO_COMMIT_HORIZON_S if moving else hl - EGO_STOPPED_NOSE_M
        back = int(hl + 1.0)
        i0 = max(self.route_index - back, 0)
        s_end = float(self.dense.s[self.route_index]) + ahead_m
        if self.next_junction_s[i0] > s_end:
            return _NO_SEGMENTS  # no junction lane within reach: the common case
        if self.route_lateral > 3.0 * self.cfg.traffic.route_clearance_lateral_m:
            return _NO_SEGMENTS  # far off the route: the route says nothing about the ego
        i1 = self.route_index_at_s(s_end)
        segs = self.route_junction_seg[i0 : i1 + 1]
        return np.unique(segs[segs >= 0])

    def tick(self, control: Control) -> None:
        """Advance the world by dt: ego, scripted actors, signals, traffic, walkers, route progress."""
        dt = self.dt
        if self.control_perturbation is not None:
            control = self.control_perturbation(control)
        x0, y0, yaw0, _v0, _ = self.ego
        vel0 = self.ego_velocity
        self.ego = bicycle_step_scalar(self.ego, control, dt, self.cfg.vehicle)
        if self.cfg.crash_stops_ego:
            self._contact(x0, y0, yaw0)
        x, y, yaw, _v, _ = self.ego
        self.ego_velocity = np.array([(x - x0) / dt, (y - y0) / dt])
        self.ego_accel = (self.ego_velocity - vel0) / dt
        self.ego_yaw_rate = float(wrap_angle(yaw - yaw0)) / dt
        self.ego_control = control
        self.time_s += dt
        self.frame += 1

        self._update_route_progress()
        for aid in self.scripted.step(dt, self.time_s):
            self.scripted.remove(aid)
        self.signals.update(self.time_s)
        self.traffic.step(dt, self.time_s, self.signals, self.ego_obstacles(), self.ego_junction_claims())
        self._remove_kept_out()
        self.walkers.step(dt)
        if self.frame % self._spawn_period == 0:
            self.manage_traffic(initial=False)
            self.manage_walkers(initial=False)

    def _contact(self, x0: float, y0: float, yaw0: float) -> None:
        """A crash stops the car, and the car cannot drive through what it touches.

        Without this the kinematic ego would pass through a queue or a crossing flow, and every car
        on its way would count as one more collision; on a CARLA server the physics stops it at the
        first. The ego's new pose is checked against the solid actors (vehicles, bicycles, statics;
        a walker is knocked aside, as in CARLA) at their poses of the last tick: a new contact keeps
        the pose (the collision is scored) with the speed zeroed; pushing further into an actor it
        already touched keeps the old pose instead (blocked). Backing or steering away is free.
        """
        x, y, yaw, _v, steer = self.ego
        if x == x0 and y == y0 and yaw == yaw0:
            return  # standing still: nothing new to touch, and nothing to stop
        boxes = self._solid_boxes_near(x, y)
        if boxes is None:
            return
        bx, by, byaw, bhl, bhw = boxes
        hl, hw = float(self.ego_extent[0]), float(self.ego_extent[1])
        now = boxes_overlap(x, y, yaw, hl, hw, bx, by, byaw, bhl, bhw)
        if not now.any():
            return
        before = boxes_overlap(x0, y0, yaw0, hl, hw, bx, by, byaw, bhl, bhw)
        self.ego = (x0, y0, yaw0, 0.0, steer) if (now & before).any() else (x, y, yaw, 0.0, steer)

    def _solid_boxes_near(self, x: float, y: float) -> tuple[np.ndarray, ...] | None:
        """(x, y, yaw, half length, half width) of the solid actors whose bounding circle meets the ego's
        on the ego's level (not on a bridge above or a road below it), or None (the common case: a few
        numpy calls on the traffic arrays, this runs every tick)."""
        t = self.traffic
        ego_r = math.hypot(float(self.ego_extent[0]), float(self.ego_extent[1]))
        parts: list[tuple[np.ndarray, ...]] = []
        sources = [(t.xyz, t.yaw, t.extent, None)]
        if self.scripted.actors:
            a = self.scripted.arrays()
            sources.append((a["xyz"], a["yaw"], a["extent"], np.isin(a["kind"], _SOLID)))
        for xyz, yaw, ext, solid in sources:
            if not len(xyz):
                continue
            reach = ego_r + np.hypot(ext[:, 0], ext[:, 1])
            near = (xyz[:, 0] - x) ** 2 + (xyz[:, 1] - y) ** 2 <= reach * reach
            if solid is not None:
                near &= solid
            if not near.any():
                continue
            near &= (
                np.abs(xyz[:, 2] - self.ego_z) <= ext[:, 2] + self.ego_extent[2] + CONTACT_MAX_VERTICAL_GAP_M
            )
            k = np.flatnonzero(near)
            if len(k):
                parts.append((xyz[k, 0], xyz[k, 1], yaw[k], ext[k, 0], ext[k, 1]))
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(cols) for cols in zip(*parts, strict=True))

    def _update_route_progress(self) -> None:
        idx, lat = self._locate(self.dense, self.ego_xy, self.route_index, self.cfg.route_window_m)
        if idx >= self.route_index:
            self.route_index = int(idx)
        self.route_lateral = float(lat)
        self.ego_z = float(self.dense.xyz[self.route_index, 2])
