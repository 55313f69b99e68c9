"""The leaderboard agent's data: sensor input_data, the global plan, the ego from sensors, metric info.

input_data (leaderboard 2.0 AgentWrapper / Bench2Drive), each entry ``id: (frame, data)``:
    speed  {'speed': v}                 signed speed along the heading, m/s (pseudo-sensor speedometer)
    imu    array(7): ax, ay, az, gx, gy, gz, compass   accelerometer m/s^2 in the vehicle frame (x fwd,
           y right, z up; gravity included), gyroscope rad/s, compass rad clockwise from north
    gps    array(3): lat, lon, alt      degrees, degrees, metres
    <camera id>  uint8 (H, W, 4) BGRA

CARLA's north is -y, so compass = yaw + pi/2 and yaw = compass - pi/2 (yaw of the world frame, where
+yaw turns towards +y). GNSS positions go back to world x, y with carla_bridge.geo's Mercator inverse
around the map's geo reference. The global plan is the leaderboard's: world_route = [(carla.Transform,
RoadOption)] at ~1 m, gps_route = [({'lat', 'lon', 'z'}, RoadOption)].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import carla
import numpy as np

from carla_bridge.carla_client.sensors import GPS_ID, IMU_ID, SPEED_ID
from carla_bridge.errors import RouteError, TakeoverError
from carla_bridge.geo import gps_route, gps_to_location, locations_to_gps
from carla_bridge.route import DenseRoute, RoadOption, Route
from carla_bridge.route_planner import KMH_TO_MS, SPEED_SIGN_TYPE, PlannerConfig
from carla_bridge.snapshot import Control, EgoState, Pose

GRAVITY_MPS2 = 9.81
IMU_LENGTH = 7
GPS_LENGTH = 3
MIN_PLAN_POINTS = 2


class AgentInputError(TakeoverError):
    """input_data or the global plan lacks what the agent needs (a sensor missing, a malformed reading)."""


@dataclass(frozen=True)
class LeaderboardInputs:
    frame: int
    speed_mps: float
    accelerometer: np.ndarray  # (3,) vehicle frame, m/s^2
    gyroscope: np.ndarray  # (3,) rad/s
    compass_rad: float
    gps: np.ndarray  # (3,) lat deg, lon deg, alt m
    images: dict[str, np.ndarray] = field(default_factory=dict)


def yaw_from_compass(compass_rad: float) -> float:
    """World yaw (rad, in (-pi, pi]) of a compass reading: yaw = compass - pi/2."""
    return math.atan2(math.sin(compass_rad - math.pi / 2), math.cos(compass_rad - math.pi / 2))


def compass_from_yaw(yaw_rad: float) -> float:
    """Compass reading (rad, in [0, 2 pi)) of a world yaw: compass = yaw + pi/2."""
    return (yaw_rad + math.pi / 2) % (2 * math.pi)


def _reading(input_data: Mapping[str, Any], key: str) -> tuple[int, Any]:
    if key not in input_data:
        raise AgentInputError(
            f"input_data has no '{key}' reading (got {sorted(input_data)}): the agent's sensors() must "
            "declare it and the evaluator must attach it"
        )
    item = input_data[key]
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise AgentInputError(f"input_data['{key}'] must be (frame, data), got {type(item).__name__}")
    return int(item[0]), item[1]


def decode_input_data(input_data: Mapping[str, Any], camera_ids: Sequence[str] = ()) -> LeaderboardInputs:
    """The readings the agent uses, checked (AgentInputError naming the sensor on bad data)."""
    frame, speed = _reading(input_data, SPEED_ID)
    if not isinstance(speed, Mapping) or "speed" not in speed:
        raise AgentInputError(f"input_data['{SPEED_ID}'] must hold {{'speed': m/s}}, got {speed!r}")
    _, imu = _reading(input_data, IMU_ID)
    imu = np.asarray(imu, dtype=np.float64).reshape(-1)
    if imu.shape[0] != IMU_LENGTH:
        raise AgentInputError(f"input_data['{IMU_ID}'] must hold {IMU_LENGTH} numbers, got {imu.shape[0]}")
    _, gps = _reading(input_data, GPS_ID)
    gps = np.asarray(gps, dtype=np.float64).reshape(-1)
    if gps.shape[0] != GPS_LENGTH or not np.isfinite(gps).all():
        raise AgentInputError(f"input_data['{GPS_ID}'] must hold finite lat, lon, alt; got {gps}")
    images = {cid: np.asarray(_reading(input_data, cid)[1]) for cid in camera_ids}
    return LeaderboardInputs(
        frame=frame,
        speed_mps=float(speed["speed"]),
        accelerometer=imu[0:3].copy(),
        gyroscope=imu[3:6].copy(),
        compass_rad=float(imu[6]),
        gps=gps,
        images=images,
    )


def encode_input_data(
    ego: EgoState,
    frame: int,
    lat_ref: float,
    lon_ref: float,
    cameras: Mapping[str, tuple[int, int]] = {},
) -> dict[str, tuple[int, Any]]:
    """input_data of one tick from an ego state (what the leaderboard's sensors would report, noise-free).

    accelerometer = R(-yaw) a_world (+ gravity on z), gyroscope = (0, 0, yaw_rate), compass from yaw;
    cameras (id -> (width, height)) are black BGRA images.
    """
    yaw = ego.pose.yaw
    c, s = math.cos(yaw), math.sin(yaw)
    ax, ay = float(ego.acceleration[0]), float(ego.acceleration[1])
    accel = (c * ax + s * ay, -s * ax + c * ay, GRAVITY_MPS2)
    imu = np.array([*accel, 0.0, 0.0, float(ego.yaw_rate), compass_from_yaw(yaw)], dtype=np.float64)
    lat, lon, alt = locations_to_gps(np.array([ego.pose.x, ego.pose.y, ego.pose.z]), lat_ref, lon_ref)[0]
    data: dict[str, tuple[int, Any]] = {
        SPEED_ID: (frame, {"speed": float(ego.speed)}),
        IMU_ID: (frame, imu),
        GPS_ID: (frame, np.array([lat, lon, alt], dtype=np.float64)),
    }
    for cid, (width, height) in cameras.items():
        data[cid] = (frame, np.zeros((height, width, 4), np.uint8))
    return data


def ego_from_sensors(
    inputs: LeaderboardInputs,
    lat_ref: float,
    lon_ref: float,
    extent: np.ndarray,
    type_id: str,
    control: Control,
    fallback_yaw: float,
) -> EgoState:
    """EgoState from GNSS (position), compass (heading; `fallback_yaw` while it reads NaN), speedometer
    (speed, velocity = v (cos yaw, sin yaw)), gyroscope z (yaw rate) and accelerometer (x, y rotated to
    the world: a = R(yaw) (ax, ay))."""
    x, y, z = gps_to_location(
        float(inputs.gps[0]), float(inputs.gps[1]), float(inputs.gps[2]), lat_ref, lon_ref
    )
    yaw = yaw_from_compass(inputs.compass_rad) if math.isfinite(inputs.compass_rad) else fallback_yaw
    c, s = math.cos(yaw), math.sin(yaw)
    ax, ay = float(inputs.accelerometer[0]), float(inputs.accelerometer[1])
    v = inputs.speed_mps
    yaw_rate = float(inputs.gyroscope[2]) if math.isfinite(inputs.gyroscope[2]) else 0.0
    return EgoState(
        pose=Pose(float(x), float(y), float(z), yaw),
        velocity=np.array([v * c, v * s]),
        speed=v,
        acceleration=np.array([c * ax - s * ay, s * ax + c * ay]),
        yaw_rate=yaw_rate,
        extent=np.asarray(extent, dtype=np.float64).copy(),
        control=control,
        type_id=type_id,
    )


def global_plan(
    dense: DenseRoute, lat_ref: float, lon_ref: float
) -> tuple[list[tuple[dict[str, float], RoadOption]], list[tuple[carla.Transform, RoadOption]]]:
    """(gps_route, world_route) of a dense route, as the leaderboard hands them to set_global_plan."""
    world = [
        (
            carla.Transform(
                carla.Location(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                carla.Rotation(yaw=math.degrees(float(yaw))),
            ),
            RoadOption(int(cmd)),
        )
        for p, yaw, cmd in zip(dense.xyz, dense.yaw, dense.commands, strict=True)
    ]
    return gps_route(dense, lat_ref, lon_ref), world


def _road_option(value: Any) -> int:
    """RoadOption value of the leaderboard's enum (agents.navigation.local_planner.RoadOption) or ours."""
    raw = getattr(value, "value", value)
    return int(RoadOption(int(raw)))


def plan_speed_limits(
    waypoints: Sequence[carla.Waypoint], s: np.ndarray, config: PlannerConfig
) -> np.ndarray:
    """Speed limit (m/s) at each plan point: the map's speed sign (type 274) last passed along the plan.

    Before the first sign: the nearest sign within `speed_limit_lookback_m` upstream of the start,
    else `default_speed_limit_kmh`. Signs between point i and i + 1 apply from i + 1 on.
    """
    limit = config.default_speed_limit_kmh
    start = waypoints[0]
    behind = start.previous(config.speed_limit_lookback_m) if config.speed_limit_lookback_m > 0 else []
    best = -1.0
    for wp in behind:
        for sign in wp.get_landmarks_of_type(config.speed_limit_lookback_m, SPEED_SIGN_TYPE, False):
            if sign.distance <= config.speed_limit_lookback_m and sign.distance > best and sign.value > 0:
                best, limit = float(sign.distance), float(sign.value)
    out = np.empty(len(waypoints), dtype=np.float32)
    out[0] = limit * KMH_TO_MS
    for i in range(len(waypoints) - 1):
        hop = float(s[i + 1] - s[i])
        if hop > 0:
            passed = [
                sign
                for sign in waypoints[i].get_landmarks_of_type(hop, SPEED_SIGN_TYPE, False)
                if sign.distance < hop and sign.value > 0
            ]
            if passed:
                limit = float(max(passed, key=lambda sign: sign.distance).value)
        out[i + 1] = limit * KMH_TO_MS
    return out


def route_from_global_plan(
    world_route: Sequence[tuple[Any, Any]],
    cmap: carla.Map,
    route_id: str,
    town: str,
    planner: PlannerConfig | None = None,
) -> Route:
    """A Route whose dense route is the leaderboard's plan: its points, headings and commands, with
    lanes, junctions and speed limits looked up on `cmap`."""
    if len(world_route) < MIN_PLAN_POINTS:
        raise RouteError(
            route_id, f"the global plan has {len(world_route)} point(s); the agent needs two or more"
        )
    planner = planner or PlannerConfig()
    xyz = np.array([[t.location.x, t.location.y, t.location.z] for t, _ in world_route], dtype=np.float64)
    yaw = np.radians([float(t.rotation.yaw) for t, _ in world_route])
    yaw = np.arctan2(np.sin(yaw), np.cos(yaw))
    commands = np.array([_road_option(option) for _, option in world_route], dtype=np.int8)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xyz[:, :2], axis=0), axis=1))])
    waypoints = []
    for t, _ in world_route:
        wp = cmap.get_waypoint(t.location, project_to_road=True, lane_type=carla.LaneType.Driving)
        if wp is None:
            raise RouteError(
                route_id,
                f"plan point ({t.location.x:.1f}, {t.location.y:.1f}) is on no driving lane of {town}",
            )
        waypoints.append(wp)
    dense = DenseRoute(
        xyz=xyz,
        yaw=yaw,
        commands=commands,
        s=s,
        road_id=np.array([wp.road_id for wp in waypoints], dtype=np.int32),
        lane_id=np.array([wp.lane_id for wp in waypoints], dtype=np.int32),
        in_junction=np.array([wp.is_junction for wp in waypoints], dtype=bool),
        speed_limit=plan_speed_limits(waypoints, s, planner),
    )
    keypoints = xyz[[0, -1]] if len(xyz) > 1 else xyz
    return Route(id=route_id, town=town, keypoints=keypoints.copy(), dense=dense)


def metric_info(ego: EgoState) -> dict[str, list[float]]:
    """Bench2Drive's per-step metric info of the ego (what its efficiency / smoothness tools read).

    Vectors as [x, y, z]; rotation as [roll, pitch, yaw] in degrees; angular velocity in deg/s as CARLA
    reports it. The snapshot is planar: z components and roll / pitch are 0.
    """
    pose = ego.pose
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    return {
        "acceleration": [float(ego.acceleration[0]), float(ego.acceleration[1]), 0.0],
        "angular_velocity": [0.0, 0.0, math.degrees(ego.yaw_rate)],
        "forward_vector": [c, s, 0.0],
        "right_vector": [-s, c, 0.0],
        "location": [pose.x, pose.y, pose.z],
        "rotation": [0.0, 0.0, math.degrees(pose.yaw)],
        "velocity": [float(ego.velocity[0]), float(ego.velocity[1]), 0.0],
    }
