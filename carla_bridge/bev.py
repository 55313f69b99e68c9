"""Bird's-eye-view rasteriser: a WorldSnapshot (+ dense route) as an ego-centred (C, H, W) uint8 image.

Frames and pixels
-----------------
World: CARLA's left-handed frame (x east, y *down* the map, yaw from +x towards +y, radians).
Ego frame: x forward, y to the right of the ego, metres; i.e. the CARLA vehicle frame.
Raster: ego forward points up the image, ego right points right; row index grows downwards.
Pixel coordinates follow OpenCV: integer (u, v) is the *centre* of column u, row v. The ego stands at
``u0 = W/2 - 1/2`` (between the two middle columns) and ``v0 = H/2 - 1/2 + ego_forward_offset_m / res``,
so the image sees ``H/2*res + offset`` metres ahead and ``H/2*res - offset`` behind.

Speed
-----
Static roads are drawn once per (map, resolution) into a world-aligned tile (drivable area from lane
quads of the lane graph, lane markings), cached in-process; each raster warps the tile around the ego
with one ``cv2.warpAffine`` per static channel and draws only the dynamic content (actors, route,
stop lines) with OpenCV primitives in raster pixels.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from carla_bridge.errors import TakeoverError
from carla_bridge.geometry import box_corners
from carla_bridge.snapshot import ActorKind, Pose, TrafficLightState, WorldSnapshot

if TYPE_CHECKING:
    import carla

    from carla_bridge.route import DenseRoute


class BevError(TakeoverError):
    """The BEV rasteriser cannot work: bad configuration, or a snapshot from another map."""


# Channel names a BevConfig may list, in a sensible default order. Each holds 0..255.
CH_DRIVABLE = "drivable"  # drivable lanes of the map
CH_LANE_MARKINGS = "lane_markings"  # solid markings 255, broken ones `broken_marking_value`
CH_ROUTE = "route"  # the dense route ahead of the ego's progress
CH_VEHICLES = "vehicles"
CH_WALKERS = "walkers"
CH_BICYCLES = "bicycles"
CH_STATIC = "static"  # cones, barriers, debris
CH_TL_RED = "tl_red"  # stop lines of lights in that state
CH_TL_YELLOW = "tl_yellow"
CH_TL_GREEN = "tl_green"
CH_STOP_SIGNS = "stop_signs"  # stop lines of stop signs
# Where moving actors will be over the next `motion_horizon_s` at constant velocity: the swept box. A single
# raster shows no motion otherwise, so a policy could not tell a car crossing the junction from a parked one.
CH_ACTOR_MOTION = "actor_motion"
CH_EGO = "ego"  # the ego's own box
CH_EGO_HISTORY = "ego_history"  # the ego's past positions, when given

ALL_CHANNELS: tuple[str, ...] = (
    CH_DRIVABLE,
    CH_LANE_MARKINGS,
    CH_ROUTE,
    CH_VEHICLES,
    CH_WALKERS,
    CH_BICYCLES,
    CH_STATIC,
    CH_TL_RED,
    CH_TL_YELLOW,
    CH_TL_GREEN,
    CH_STOP_SIGNS,
    CH_ACTOR_MOTION,
    CH_EGO,
    CH_EGO_HISTORY,
)
_STATIC_CHANNELS = (CH_DRIVABLE, CH_LANE_MARKINGS)
_ACTOR_CHANNEL = {
    ActorKind.VEHICLE: CH_VEHICLES,
    ActorKind.WALKER: CH_WALKERS,
    ActorKind.BICYCLE: CH_BICYCLES,
    ActorKind.STATIC: CH_STATIC,
}
_LIGHT_CHANNEL = {
    TrafficLightState.RED: CH_TL_RED,
    TrafficLightState.YELLOW: CH_TL_YELLOW,
    TrafficLightState.GREEN: CH_TL_GREEN,
}
# The model input: everything but the ego's own box (constant) and its history (history invites the
# "copycat" shortcut of behaviour cloning, where the policy extrapolates its past instead of reading the scene).
# actor_motion is opt-in: in 3-iteration DAgger + DPO runs it did not beat the channel set without it (README).
DEFAULT_POLICY_CHANNELS: tuple[str, ...] = tuple(
    c for c in ALL_CHANNELS if c not in (CH_ACTOR_MOTION, CH_EGO, CH_EGO_HISTORY)
)
_MOVING_KINDS = (ActorKind.VEHICLE, ActorKind.WALKER, ActorKind.BICYCLE)
_STANDING_MPS = 1e-6  # actor_motion never draws an actor slower than this, even at motion_min_speed_mps = 0

_SHIFT_BITS = 4  # sub-pixel precision of OpenCV drawing: coordinates in 1/16 px
_SHIFT_SCALE = float(1 << _SHIFT_BITS)
_FULL = 255
_MAX_TILE_CACHE = 6  # (map, resolution) tiles kept in memory; a 0.25 m/px Town04 tile is ~26 MB
_MIN_RESOLUTION_M_PER_PX = 0.02
_INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR}


@dataclass
class BevConfig:
    """Geometry and content of one BEV raster. Defaults are the built-in policy's 128 px input."""

    size_px: int = 128  # square raster, H = W
    resolution_m_per_px: float = 0.5  # metres per pixel
    ego_forward_offset_m: float = 16.0  # how far the image centre lies ahead of the ego
    channels: list[str] = field(default_factory=lambda: list(DEFAULT_POLICY_CHANNELS))
    route_ahead_m: float = 60.0  # length of the route drawn ahead of the ego's progress
    route_width_m: float = 1.5  # thickness of the route polyline
    stop_line_thickness_m: float = 1.0
    ego_history_width_m: float = 1.0
    motion_horizon_s: float = 1.0  # actor_motion: the box is swept along its velocity over this time ...
    motion_min_speed_mps: float = 0.5  # ... for actors moving at least this fast
    lane_sample_step_m: float = 1.0  # spacing of lane samples when the map tile is built
    map_margin_m: float = 20.0  # empty border around the map's lanes in the tile
    broken_marking_value: int = 128  # intensity of broken / dotted markings (solid ones are 255)
    interpolation: str = "linear"  # "linear" | "nearest": tile warp; linear keeps thin markings visible


@dataclass(frozen=True)
class MapTile:
    """The map's static channels drawn once in a world-aligned image.

    Tile pixel (u, v) is the world point (origin_x + u*res, origin_y + v*res).
    """

    name: str
    resolution_m_per_px: float
    origin_x: float
    origin_y: float
    layers: dict[str, np.ndarray]  # channel name -> (h, w) uint8


def validate_bev_config(config: BevConfig) -> None:
    """Raise BevError naming the first bad field and how to fix it."""
    if config.size_px < 8:
        raise BevError(f"bev.size_px={config.size_px} is too small; use 8 px or more (policy default 128)")
    if config.resolution_m_per_px < _MIN_RESOLUTION_M_PER_PX:
        raise BevError(
            f"bev.resolution_m_per_px={config.resolution_m_per_px} must be >= {_MIN_RESOLUTION_M_PER_PX}"
        )
    half_m = config.size_px * config.resolution_m_per_px / 2
    if abs(config.ego_forward_offset_m) >= half_m:
        raise BevError(
            f"bev.ego_forward_offset_m={config.ego_forward_offset_m} puts the ego outside the "
            f"{2 * half_m:.0f} m raster; keep |offset| < {half_m:.1f} m"
        )
    if not config.channels:
        raise BevError("bev.channels is empty; list some of " + ", ".join(ALL_CHANNELS))
    unknown = [c for c in config.channels if c not in ALL_CHANNELS]
    if unknown:
        raise BevError(f"unknown bev.channels {unknown}; valid names: {', '.join(ALL_CHANNELS)}")
    if len(set(config.channels)) != len(config.channels):
        raise BevError(f"bev.channels lists a channel twice: {config.channels}")
    if config.interpolation not in _INTERPOLATIONS:
        raise BevError(f"bev.interpolation={config.interpolation!r}; use one of {sorted(_INTERPOLATIONS)}")
    if not 0 <= config.broken_marking_value <= _FULL:
        raise BevError(f"bev.broken_marking_value={config.broken_marking_value} must be in 0..255")
    if config.motion_min_speed_mps < 0:
        raise BevError(f"bev.motion_min_speed_mps={config.motion_min_speed_mps} must be >= 0")
    for name in (
        "route_ahead_m",
        "route_width_m",
        "stop_line_thickness_m",
        "lane_sample_step_m",
        "motion_horizon_s",
    ):
        if getattr(config, name) <= 0:
            raise BevError(f"bev.{name}={getattr(config, name)} must be > 0")


# --------------------------------------------------------------------------------------------------
# The static map tile


_tile_cache: OrderedDict[tuple[str, str, float, float, int], MapTile] = OrderedDict()
_tile_lock = threading.Lock()


def _map_key(cmap: carla.Map) -> tuple[str, str]:
    # Maps are keyed by content too: two different OpenDRIVE files may share a name (tests, edits).
    digest = hashlib.sha1(cmap.to_opendrive().encode("utf-8")).hexdigest()
    return cmap.name, digest


def _marking_value(marking_type: object, broken_value: int) -> int:
    name = str(marking_type)
    if name in ("NONE", "Grass", "Curb", "Other"):
        return 0
    if name in ("Broken", "BrokenBroken", "BottsDots"):
        return broken_value
    return _FULL  # Solid, SolidSolid, SolidBroken, BrokenSolid: may not be crossed from at least one side


def _lane_segments(cmap: carla.Map, step_m: float, broken_value: int) -> dict[str, np.ndarray]:
    """Sample every driving lane and pair each sample with its successors one step on.

    Returns arrays over segments: p0, p1 (N, 2) centres, r0, r1 (N, 2) unit right vectors,
    hw0, hw1 (N,) half widths, left/right marking intensities (N,).
    """
    p0, p1, yaw0, yaw1, hw0, hw1, mark_l, mark_r = ([] for _ in range(8))
    for w in cmap.generate_waypoints(step_m):
        loc = w.transform.location
        marks = (
            _marking_value(w.left_lane_marking.type, broken_value),
            _marking_value(w.right_lane_marking.type, broken_value),
        )
        for n in w.next(step_m):
            nloc = n.transform.location
            # A successor far away is a discontinuity of the lane graph, not a lane piece to fill.
            if (nloc.x - loc.x) ** 2 + (nloc.y - loc.y) ** 2 > (3.0 * step_m) ** 2:
                continue
            p0.append((loc.x, loc.y))
            p1.append((nloc.x, nloc.y))
            yaw0.append(np.radians(w.transform.rotation.yaw))
            yaw1.append(np.radians(n.transform.rotation.yaw))
            hw0.append(0.5 * w.lane_width)
            hw1.append(0.5 * n.lane_width)
            mark_l.append(marks[0])
            mark_r.append(marks[1])
    if not p0:
        raise BevError(f"map {cmap.name!r} has no driving lanes to rasterise; check the OpenDRIVE file")
    y0, y1 = np.asarray(yaw0), np.asarray(yaw1)
    return {
        "p0": np.asarray(p0),
        "p1": np.asarray(p1),
        "r0": np.stack([-np.sin(y0), np.cos(y0)], axis=1),
        "r1": np.stack([-np.sin(y1), np.cos(y1)], axis=1),
        "hw0": np.asarray(hw0),
        "hw1": np.asarray(hw1),
        "mark_l": np.asarray(mark_l, dtype=np.int32),
        "mark_r": np.asarray(mark_r, dtype=np.int32),
    }


def build_map_tile(cmap: carla.Map, config: BevConfig) -> MapTile:
    """Draw the drivable area (one quad per lane segment) and the lane markings in a world-aligned tile."""
    res = config.resolution_m_per_px
    seg = _lane_segments(cmap, config.lane_sample_step_m, config.broken_marking_value)
    left0 = seg["p0"] - seg["r0"] * seg["hw0"][:, None]
    right0 = seg["p0"] + seg["r0"] * seg["hw0"][:, None]
    left1 = seg["p1"] - seg["r1"] * seg["hw1"][:, None]
    right1 = seg["p1"] + seg["r1"] * seg["hw1"][:, None]
    pts = np.concatenate([left0, right0, left1, right1])
    origin = pts.min(axis=0) - config.map_margin_m
    extent = pts.max(axis=0) + config.map_margin_m - origin
    w_px, h_px = (np.ceil(extent / res).astype(int) + 1).tolist()

    def to_px(p: np.ndarray) -> np.ndarray:
        return np.round((p - origin) / res * _SHIFT_SCALE).astype(np.int32)

    layers: dict[str, np.ndarray] = {}
    if CH_DRIVABLE in config.channels:
        drivable = np.zeros((h_px, w_px), np.uint8)
        quads = to_px(np.stack([left0, left1, right1, right0], axis=1))
        # One call per quad: fillPoly over many overlapping polygons uses the even-odd rule and would
        # punch holes where lanes overlap (junctions).
        for q in quads:
            cv2.fillConvexPoly(drivable, q, _FULL, cv2.LINE_8, _SHIFT_BITS)
        layers[CH_DRIVABLE] = drivable
    if CH_LANE_MARKINGS in config.channels:
        markings = np.zeros((h_px, w_px), np.uint8)
        for value in sorted({int(v) for v in np.concatenate([seg["mark_l"], seg["mark_r"]])} - {0}):
            lines = []
            for mask, a, b in (
                (seg["mark_l"] == value, left0, left1),
                (seg["mark_r"] == value, right0, right1),
            ):
                lines.extend(to_px(np.stack([a[mask], b[mask]], axis=1)))
            cv2.polylines(markings, lines, False, value, 1, cv2.LINE_8, _SHIFT_BITS)
        layers[CH_LANE_MARKINGS] = markings
    return MapTile(cmap.name, res, float(origin[0]), float(origin[1]), layers)


def get_map_tile(cmap: carla.Map, config: BevConfig) -> MapTile:
    """The cached tile of this map at this resolution, built on first use (0.1-1 s for a town)."""
    name, digest = _map_key(cmap)
    key = (name, digest, config.resolution_m_per_px, config.lane_sample_step_m, config.broken_marking_value)
    with _tile_lock:
        tile = _tile_cache.get(key)
        if tile is not None and all(c in tile.layers for c in config.channels if c in _STATIC_CHANNELS):
            _tile_cache.move_to_end(key)
            return tile
    # Build with every static channel so that configs differing only in channels share one tile.
    full = replace(config, channels=list(_STATIC_CHANNELS))
    tile = build_map_tile(cmap, full)
    with _tile_lock:
        _tile_cache[key] = tile
        while len(_tile_cache) > _MAX_TILE_CACHE:
            _tile_cache.popitem(last=False)
    return tile


# --------------------------------------------------------------------------------------------------
# The rasteriser


# RGB colours of render_rgb, painted in this order (later ones on top).
_RENDER_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    (CH_DRIVABLE, (70, 70, 70)),
    (CH_LANE_MARKINGS, (230, 230, 230)),
    (CH_ROUTE, (60, 110, 200)),
    (CH_EGO_HISTORY, (150, 150, 255)),
    (CH_STOP_SIGNS, (255, 0, 200)),
    (CH_TL_GREEN, (0, 200, 0)),
    (CH_TL_YELLOW, (255, 220, 0)),
    (CH_TL_RED, (255, 0, 0)),
    (CH_STATIC, (255, 140, 0)),
    (CH_ACTOR_MOTION, (0, 70, 130)),
    (CH_VEHICLES, (0, 140, 255)),
    (CH_BICYCLES, (0, 230, 230)),
    (CH_WALKERS, (230, 0, 230)),
    (CH_EGO, (255, 255, 255)),
)
PLAN_COLOURS: dict[str, tuple[int, int, int]] = {"policy": (255, 40, 40), "expert": (40, 255, 40)}
_EXTRA_PLAN_COLOURS = ((255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 160, 0))
_TEXT_SCALE_PER_PX = 0.8 / 512  # cv2 font scale per raster pixel: legible at 512 px without covering much
_MIN_TEXT_SCALE = 0.3


class BevRasterizer:
    """Ego-centred BEV rasters of one map. Build once per map (the tile is cached per map anyway)."""

    def __init__(self, config: BevConfig, cmap: carla.Map) -> None:
        validate_bev_config(config)
        self.config = config
        self.cmap = cmap
        self.channels: tuple[str, ...] = tuple(config.channels)
        self.index: dict[str, int] = {c: i for i, c in enumerate(self.channels)}
        self.size = config.size_px
        self.res = config.resolution_m_per_px
        self.u0 = self.size / 2 - 0.5
        self.v0 = self.size / 2 - 0.5 + config.ego_forward_offset_m / self.res
        # Actors farther than this from the ego cannot touch the raster.
        self._view_radius_m = np.hypot(
            self.size * self.res / 2, self.size * self.res / 2 + abs(config.ego_forward_offset_m)
        )
        self._interp = _INTERPOLATIONS[config.interpolation]
        self._tile = get_map_tile(cmap, config) if any(c in _STATIC_CHANNELS for c in self.channels) else None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.channels), self.size, self.size)

    # -- frames ---------------------------------------------------------------------------------

    def world_to_pixel_matrix(self, ego_pose: Pose) -> np.ndarray:
        """2x3 affine A with [u, v] = A [x, y, 1]: u = u0 + y_e / res, v = v0 - x_e / res."""
        c, s = np.cos(ego_pose.yaw), np.sin(ego_pose.yaw)
        k = 1.0 / self.res
        # x_e = c dx + s dy ; y_e = -s dx + c dy
        a = np.array([[-s * k, c * k], [-c * k, -s * k]])
        t = np.array([self.u0, self.v0]) - a @ np.array([ego_pose.x, ego_pose.y])
        return np.hstack([a, t[:, None]])

    def ego_to_pixel(self, xy_ego: np.ndarray) -> np.ndarray:
        """Ego-frame points (..., 2) to raster pixel coordinates (..., 2) as (u, v)."""
        xy_ego = np.asarray(xy_ego, dtype=np.float64)
        return np.stack([self.u0 + xy_ego[..., 1] / self.res, self.v0 - xy_ego[..., 0] / self.res], axis=-1)

    def pixel_to_ego(self, uv: np.ndarray) -> np.ndarray:
        """Raster pixel coordinates (..., 2) back to the ego frame (..., 2)."""
        uv = np.asarray(uv, dtype=np.float64)
        return np.stack([(self.v0 - uv[..., 1]) * self.res, (uv[..., 0] - self.u0) * self.res], axis=-1)

    # -- rasterising ----------------------------------------------------------------------------

    def rasterize(
        self,
        snapshot: WorldSnapshot,
        dense: DenseRoute | None = None,
        ego_history_xy: np.ndarray | None = None,
    ) -> np.ndarray:
        """The (C, H, W) uint8 raster of `snapshot`; `dense` feeds the route channel (from
        `snapshot.route.index` on), `ego_history_xy` (T, 2) world points the history channel."""
        self._check_town(snapshot.town)
        pose = snapshot.ego.pose
        raster = np.zeros(self.shape, np.uint8)
        a = self.world_to_pixel_matrix(pose)
        if self._tile is not None:
            self._warp_static(raster, pose)
        if CH_ROUTE in self.index and dense is not None and len(dense):
            self._draw_route(raster[self.index[CH_ROUTE]], a, dense, snapshot.route.index)
        self._draw_actors(raster, a, snapshot)
        self._draw_stop_lines(raster, a, snapshot)
        if CH_EGO in self.index:
            e = snapshot.ego
            self._fill_boxes(
                raster[self.index[CH_EGO]],
                a,
                np.array([[pose.x, pose.y]]),
                np.array([pose.yaw]),
                e.extent[:1],
                e.extent[1:2],
            )
        if CH_EGO_HISTORY in self.index and ego_history_xy is not None and len(ego_history_xy) > 1:
            width = max(1, round(self.config.ego_history_width_m / self.res))
            pts = self._to_shifted_px(a, np.asarray(ego_history_xy, dtype=np.float64)[:, :2])
            cv2.polylines(
                raster[self.index[CH_EGO_HISTORY]], [pts], False, _FULL, width, cv2.LINE_8, _SHIFT_BITS
            )
        return raster

    def _check_town(self, town: str) -> None:
        mine = self.cmap.name.rsplit("/", 1)[-1]
        theirs = town.rsplit("/", 1)[-1]
        if town and mine and mine != theirs:
            raise BevError(
                f"snapshot of town {town!r} given to the BEV rasteriser of map {self.cmap.name!r}; "
                "build a BevRasterizer with that town's carla.Map"
            )

    def _warp_static(self, raster: np.ndarray, pose: Pose) -> None:
        tile = self._tile
        assert tile is not None
        # Raster pixel (u, v) -> ego (x_e, y_e) -> world -> tile pixel: affine, used as an inverse map.
        c, s = np.cos(pose.yaw), np.sin(pose.yaw)
        r = self.res
        # x_e = (v0 - v) r, y_e = (u - u0) r ; x_w = px + c x_e - s y_e ; y_w = py + s x_e + c y_e
        m = np.array(
            [
                [-s * r, -c * r, pose.x + c * self.v0 * r + s * self.u0 * r],
                [c * r, -s * r, pose.y + s * self.v0 * r - c * self.u0 * r],
            ]
        )
        m[:, 2] -= (tile.origin_x, tile.origin_y)
        m /= tile.resolution_m_per_px
        for name in _STATIC_CHANNELS:
            if name in self.index:
                cv2.warpAffine(
                    tile.layers[name],
                    m,
                    (self.size, self.size),
                    dst=raster[self.index[name]],
                    flags=self._interp | cv2.WARP_INVERSE_MAP,
                    borderMode=cv2.BORDER_CONSTANT,
                    borderValue=0,
                )

    @staticmethod
    def _to_shifted_px(a: np.ndarray, xy: np.ndarray) -> np.ndarray:
        uv = xy @ a[:, :2].T + a[:, 2]
        # Clip far-away points so that the fixed-point coordinates cannot overflow int32.
        return np.round(np.clip(uv, -1e5, 1e5) * _SHIFT_SCALE).astype(np.int32)

    def _fill_boxes(
        self,
        channel: np.ndarray,
        a: np.ndarray,
        xy: np.ndarray,
        yaw: np.ndarray,
        half_l: np.ndarray,
        half_w: np.ndarray,
    ) -> None:
        # OpenCV fills every pixel a polygon's edge touches, which grows boxes by up to a pixel per side;
        # shrinking by half a pixel makes the drawn area match the box (and tiny boxes stay one pixel).
        inset = 0.5 * self.res
        corners = box_corners(
            xy[:, 0], xy[:, 1], yaw, np.maximum(half_l - inset, 0.0), np.maximum(half_w - inset, 0.0)
        )
        for quad in self._to_shifted_px(a, corners.reshape(-1, 2)).reshape(-1, 4, 2):
            cv2.fillConvexPoly(channel, quad, _FULL, cv2.LINE_8, _SHIFT_BITS)

    def _draw_actors(self, raster: np.ndarray, a: np.ndarray, snapshot: WorldSnapshot) -> None:
        actors = snapshot.actors
        if not len(actors):
            return
        ego = snapshot.ego.pose
        near = np.hypot(actors.xyz[:, 0] - ego.x, actors.xyz[:, 1] - ego.y) <= (
            self._view_radius_m + np.hypot(actors.extent[:, 0], actors.extent[:, 1])
        )
        for kind, name in _ACTOR_CHANNEL.items():
            if name not in self.index:
                continue
            sel = near & (actors.kind == int(kind))
            if not sel.any():
                continue
            self._fill_boxes(
                raster[self.index[name]],
                a,
                actors.xyz[sel, :2],
                actors.yaw[sel],
                actors.extent[sel, 0],
                actors.extent[sel, 1],
            )
        if CH_ACTOR_MOTION in self.index:
            self._draw_motion(raster[self.index[CH_ACTOR_MOTION]], a, snapshot, near)

    def _draw_motion(
        self, channel: np.ndarray, a: np.ndarray, snapshot: WorldSnapshot, near: np.ndarray
    ) -> None:
        """Swept boxes of moving actors: each box from its pose now to its pose after `motion_horizon_s`
        at constant velocity, x(t) = x0 + v t, drawn as one box whose length grows by |v| tau."""
        actors = snapshot.actors
        speed = np.hypot(actors.velocity[:, 0], actors.velocity[:, 1])
        sel = near & np.isin(actors.kind, [int(k) for k in _MOVING_KINDS])
        sel &= speed >= max(self.config.motion_min_speed_mps, _STANDING_MPS)
        if not sel.any():
            return
        v = actors.velocity[sel, :2]
        half_sweep = 0.5 * self.config.motion_horizon_s * speed[sel]
        centre = actors.xyz[sel, :2] + 0.5 * self.config.motion_horizon_s * v
        heading = np.arctan2(v[:, 1], v[:, 0])
        # The actor's box measured along its motion (a walker may move sideways to its yaw).
        rel = actors.yaw[sel] - heading
        hl, hw = actors.extent[sel, 0], actors.extent[sel, 1]
        along = np.abs(np.cos(rel)) * hl + np.abs(np.sin(rel)) * hw
        across = np.abs(np.sin(rel)) * hl + np.abs(np.cos(rel)) * hw
        self._fill_boxes(channel, a, centre, heading, along + half_sweep, across)

    def _draw_route(self, channel: np.ndarray, a: np.ndarray, dense: DenseRoute, index: int) -> None:
        start = int(np.clip(index, 0, len(dense) - 1))
        stop = int(np.searchsorted(dense.s, dense.s[start] + self.config.route_ahead_m, side="right"))
        pts = dense.xyz[start : max(stop, start + 1), :2]
        width = max(1, round(self.config.route_width_m / self.res))
        px = self._to_shifted_px(a, pts)
        if len(px) == 1:
            cv2.circle(
                channel,
                tuple(int(v) for v in px[0]),
                width * int(_SHIFT_SCALE) // 2,
                _FULL,
                -1,
                cv2.LINE_8,
                _SHIFT_BITS,
            )
        else:
            cv2.polylines(channel, [px], False, _FULL, width, cv2.LINE_8, _SHIFT_BITS)

    def _draw_stop_lines(self, raster: np.ndarray, a: np.ndarray, snapshot: WorldSnapshot) -> None:
        thickness = max(1, round(self.config.stop_line_thickness_m / self.res))
        groups: list[tuple[str, tuple]] = [
            (_LIGHT_CHANNEL[light.state], light.stop_lines)
            for light in snapshot.traffic_lights
            if light.state in _LIGHT_CHANNEL
        ]
        groups += [(CH_STOP_SIGNS, sign.stop_lines) for sign in snapshot.stop_signs]
        for name, stop_lines in groups:
            if name not in self.index or not stop_lines:
                continue
            segments = []
            for line in stop_lines:
                right = np.array([-np.sin(line.yaw), np.cos(line.yaw)]) * (0.5 * line.width)
                centre = np.array([line.x, line.y])
                segments.append(self._to_shifted_px(a, np.stack([centre - right, centre + right])))
            cv2.polylines(
                raster[self.index[name]], segments, False, _FULL, thickness, cv2.LINE_8, _SHIFT_BITS
            )

    # -- colour rendering -----------------------------------------------------------------------

    def render_rgb(
        self,
        raster: np.ndarray,
        plans: dict[str, np.ndarray] | None = None,
        text: str = "",
    ) -> np.ndarray:
        """An (H, W, 3) uint8 **RGB** picture of `raster` (convert to BGR for cv2.VideoWriter).

        `plans` maps a name to ego-frame waypoints (K, 2) in metres, drawn as a polyline with dots
        ("policy" red, "expert" green, others from a fixed palette); `text` is written on top.
        """
        if raster.shape != self.shape:
            raise BevError(f"raster of shape {raster.shape} given to a rasteriser of shape {self.shape}")
        img = np.zeros((self.size * self.size, 3), np.float32)
        for name, colour in _RENDER_COLOURS:
            if name not in self.index:
                continue
            # Channels are sparse: blend only the pixels they cover.
            values = raster[self.index[name]].ravel()
            nz = np.flatnonzero(values)
            if nz.size:
                alpha = values[nz].astype(np.float32)[:, None] * (1.0 / _FULL)
                img[nz] += alpha * (np.asarray(colour, np.float32) - img[nz])
        img = img.reshape(self.size, self.size, 3)
        out = np.ascontiguousarray(img.round().astype(np.uint8))
        dot = max(1, self.size // 128)
        extra = iter(_EXTRA_PLAN_COLOURS * 8)
        for name, waypoints in (plans or {}).items():
            wp = np.asarray(waypoints, dtype=np.float64).reshape(-1, 2)
            if not len(wp):
                continue
            colour = PLAN_COLOURS.get(name) or next(extra)
            pts = np.round(self.ego_to_pixel(np.vstack([[0.0, 0.0], wp])) * _SHIFT_SCALE).astype(np.int32)
            cv2.polylines(out, [pts], False, colour, dot, cv2.LINE_AA, _SHIFT_BITS)
            for p in pts[1:]:
                cv2.circle(
                    out,
                    (int(p[0]), int(p[1])),
                    (dot + 1) * int(_SHIFT_SCALE),
                    colour,
                    -1,
                    cv2.LINE_AA,
                    _SHIFT_BITS,
                )
        if text:
            scale = max(_MIN_TEXT_SCALE, self.size * _TEXT_SCALE_PER_PX)
            (_, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            cv2.putText(
                out, text, (4, text_h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
            )
        return out
