"""Hand-built scenes for the expert's tests and benchmarks: dense routes walked along real map lanes,
and WorldSnapshots with chosen actors. Nothing here is used while driving.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import carla
import numpy as np

from carla_bridge.route import DenseRoute, RoadOption, Route
from carla_bridge.snapshot import (
    ActorKind,
    ActorRole,
    ActorTable,
    Control,
    EgoState,
    Pose,
    RouteProgress,
    StopSign,
    TrafficLight,
    WorldSnapshot,
)

EGO_EXTENT = (2.44, 1.06, 0.76)  # Lincoln MKZ half extents, m
CAR_EXTENT = (2.3, 1.0, 0.8)
WALKER_EXTENT = (0.3, 0.3, 0.9)


def lane_route(
    cmap: carla.Map,
    x: float,
    y: float,
    length_m: float,
    speed_limit_mps: float = 30.0 / 3.6,
    turn: int = 0,
    route_id: str = "synthetic",
) -> Route:
    """A Route whose dense route follows the lane under (x, y) for `length_m` at 1 m spacing.

    At forks `turn` picks the successor: 0 the straightest, -1 the leftmost, +1 the rightmost.
    """
    wp = cmap.get_waypoint(
        carla.Location(x=x, y=y, z=0.0), project_to_road=True, lane_type=carla.LaneType.Driving
    )
    if wp is None:
        raise ValueError(f"no driving lane near ({x}, {y})")
    wps = [wp]
    for _ in range(int(length_m)):
        nxt = wps[-1].next(1.0)
        if not nxt:
            break
        wps.append(_pick(wps[-1], nxt, turn))
    xyz = np.array([[w.transform.location.x, w.transform.location.y, w.transform.location.z] for w in wps])
    yaw = np.radians([w.transform.rotation.yaw for w in wps])
    junction = np.array([w.is_junction for w in wps])
    commands = np.full(len(wps), RoadOption.LANEFOLLOW, np.int8)
    commands[junction] = (
        RoadOption.STRAIGHT if turn == 0 else (RoadOption.LEFT if turn < 0 else RoadOption.RIGHT)
    )
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xyz[:, :2], axis=0).T))])
    dense = DenseRoute(
        xyz=xyz,
        yaw=yaw,
        commands=commands,
        s=s,
        road_id=np.array([w.road_id for w in wps], np.int32),
        lane_id=np.array([w.lane_id for w in wps], np.int32),
        in_junction=junction,
        speed_limit=np.full(len(wps), speed_limit_mps, np.float32),
    )
    return Route(id=route_id, town=cmap.name, keypoints=xyz[[0, -1]], dense=dense)


def _pick(current: carla.Waypoint, options: list[carla.Waypoint], turn: int) -> carla.Waypoint:
    if len(options) == 1:
        return options[0]
    yaw0 = current.transform.rotation.yaw
    # Heading change over a few metres decides left / right / straight.
    changes = []
    for o in options:
        ahead = o.next(8.0)
        w = ahead[0] if ahead else o
        changes.append(((w.transform.rotation.yaw - yaw0 + 180.0) % 360.0) - 180.0)
    if turn == 0:
        return options[int(np.argmin(np.abs(changes)))]
    return options[int(np.argmin(changes) if turn < 0 else np.argmax(changes))]


def straight_route(length_m: float, speed_limit_mps: float = 30.0 / 3.6, y: float = 0.0) -> Route:
    """A map-free straight dense route along +x (for maths-only tests)."""
    n = int(length_m) + 1
    xyz = np.stack([np.arange(n, dtype=float), np.full(n, y), np.zeros(n)], axis=1)
    dense = DenseRoute(
        xyz=xyz,
        yaw=np.zeros(n),
        commands=np.full(n, RoadOption.LANEFOLLOW, np.int8),
        s=np.arange(n, dtype=float),
        road_id=np.zeros(n, np.int32),
        lane_id=np.full(n, -1, np.int32),
        in_junction=np.zeros(n, bool),
        speed_limit=np.full(n, speed_limit_mps, np.float32),
    )
    return Route(id="straight", town="none", keypoints=xyz[[0, -1]], dense=dense)


@dataclass(frozen=True)
class ActorSpec:
    id: int
    kind: ActorKind
    x: float
    y: float
    yaw: float = 0.0  # radians
    speed: float = 0.0  # m/s along the heading
    role: ActorRole = ActorRole.BACKGROUND
    extent: tuple[float, float, float] = CAR_EXTENT
    control: tuple[float, float, float] | None = None  # throttle, steer, brake
    z: float | None = None  # None: at the ego's height


def actor_table(specs: Sequence[ActorSpec], ground_z: float = 0.0) -> ActorTable:
    if not specs:
        return ActorTable.empty()
    yaw = np.array([a.yaw for a in specs])
    speed = np.array([a.speed for a in specs])
    control = np.array([a.control if a.control is not None else (np.nan,) * 3 for a in specs], np.float32)
    return ActorTable(
        id=np.array([a.id for a in specs], np.int64),
        kind=np.array([a.kind for a in specs], np.int8),
        role=np.array([a.role for a in specs], np.int8),
        xyz=np.array([[a.x, a.y, ground_z if a.z is None else a.z] for a in specs]),
        yaw=yaw,
        velocity=np.stack([speed * np.cos(yaw), speed * np.sin(yaw)], axis=1),
        speed=speed,
        extent=np.array([a.extent for a in specs], float),
        control=control,
        type_id=tuple("vehicle.synthetic" for _ in specs),
    )


def snapshot(
    x: float,
    y: float,
    yaw: float,
    speed: float,
    actors: Sequence[ActorSpec] = (),
    lights: Sequence[TrafficLight] = (),
    stop_signs: Sequence[StopSign] = (),
    time_s: float = 0.0,
    frame: int = 0,
    route_index: int = 0,
    route_total_m: float = 100.0,
    z: float = 0.0,
) -> WorldSnapshot:
    """A WorldSnapshot with the ego at (x, y, z, yaw) driving at `speed`."""
    ego = EgoState(
        pose=Pose(x, y, z, yaw),
        velocity=np.array([speed * math.cos(yaw), speed * math.sin(yaw)]),
        speed=speed,
        acceleration=np.zeros(2),
        yaw_rate=0.0,
        extent=np.array(EGO_EXTENT),
        control=Control(),
    )
    return WorldSnapshot(
        frame=frame,
        time_s=time_s,
        town="synthetic",
        ego=ego,
        actors=actor_table(actors, z),
        traffic_lights=tuple(lights),
        stop_signs=tuple(stop_signs),
        route=RouteProgress(route_index, 0.0, route_total_m, 0.0, int(RoadOption.LANEFOLLOW)),
    )


def point_on_route(route: Route, s_m: float, lateral_m: float = 0.0) -> tuple[float, float, float]:
    """(x, y, yaw) at arc length s of a dense route (linear between points), `lateral_m` to its right."""
    d = route.dense
    i = int(np.clip(np.searchsorted(d.s, s_m, side="right") - 1, 0, len(d) - 2))
    w = float(np.clip((s_m - d.s[i]) / max(d.s[i + 1] - d.s[i], 1e-9), 0.0, 1.0))
    x = float(d.xyz[i, 0] + w * (d.xyz[i + 1, 0] - d.xyz[i, 0]))
    y = float(d.xyz[i, 1] + w * (d.xyz[i + 1, 1] - d.xyz[i, 1]))
    yaw = math.atan2(d.xyz[i + 1, 1] - d.xyz[i, 1], d.xyz[i + 1, 0] - d.xyz[i, 0])
    return x - lateral_m * math.sin(yaw), y + lateral_m * math.cos(yaw), yaw
