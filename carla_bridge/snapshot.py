"""The `WorldSnapshot` contract: one simulator tick, simulator-neutral, plain dataclasses and numpy.

Both backends produce it; the expert, the takeover monitor, the BEV rasteriser, scoring and the clip
store consume it. Conventions: world frame of CARLA (x forward east, y *down* the map as CARLA's
left-handed frame, z up), metres, seconds, m/s, yaw in **radians**, bounding boxes as half extents
(like carla.BoundingBox.extent) centred on the pose.

Other actors live in a struct-of-arrays `ActorTable` so that a tick with 50 vehicles costs a few
array copies, not 50 objects; `ActorTable.get(i)` gives one `ActorState` when a consumer wants one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class ActorKind(IntEnum):
    VEHICLE = 0
    WALKER = 1
    BICYCLE = 2
    STATIC = 3  # cones, barriers, warning signs, debris: anything that never moves


class ActorRole(IntEnum):
    BACKGROUND = 0  # traffic spawned around the ego
    SCENARIO = 1  # scripted by a Bench2Drive scenario
    EMERGENCY = 2  # emergency vehicle with sirens (must be yielded to)
    PARKED = 3  # parked / stopped vehicle that acts as an obstacle


class TrafficLightState(IntEnum):
    """Values as carla.TrafficLightState."""

    RED = 0
    YELLOW = 1
    GREEN = 2
    OFF = 3
    UNKNOWN = 4


@dataclass(frozen=True)
class Control:
    """carla.VehicleControl-like command. throttle, brake in [0, 1]; steer in [-1, 1] (positive = right)."""

    throttle: float = 0.0
    steer: float = 0.0
    brake: float = 0.0
    hand_brake: bool = False
    reverse: bool = False

    def clipped(self) -> Control:
        return Control(
            throttle=float(np.clip(self.throttle, 0.0, 1.0)),
            steer=float(np.clip(self.steer, -1.0, 1.0)),
            brake=float(np.clip(self.brake, 0.0, 1.0)),
            hand_brake=self.hand_brake,
            reverse=self.reverse,
        )


@dataclass(frozen=True)
class Pose:
    x: float
    y: float
    z: float
    yaw: float  # radians

    @property
    def xy(self) -> np.ndarray:
        return np.array([self.x, self.y])


@dataclass(frozen=True)
class EgoState:
    pose: Pose
    velocity: np.ndarray  # (2,) world m/s
    speed: float  # m/s along the heading (signed)
    acceleration: np.ndarray  # (2,) world m/s^2
    yaw_rate: float  # rad/s
    extent: np.ndarray  # (3,) half extents, m
    control: Control  # the control applied on the step that produced this snapshot
    type_id: str = "vehicle.lincoln.mkz_2020"


@dataclass(frozen=True)
class ActorState:
    """One other actor, materialised from an ActorTable row."""

    id: int
    kind: ActorKind
    role: ActorRole
    pose: Pose
    velocity: np.ndarray  # (2,)
    speed: float
    extent: np.ndarray  # (3,)
    control: Control | None  # current control for vehicles/bicycles; None for walkers and statics
    type_id: str


@dataclass
class ActorTable:
    """All actors but the ego, as arrays with one row per actor."""

    id: np.ndarray  # (N,) int64
    kind: np.ndarray  # (N,) int8 ActorKind
    role: np.ndarray  # (N,) int8 ActorRole
    xyz: np.ndarray  # (N, 3) float64
    yaw: np.ndarray  # (N,) float64 radians
    velocity: np.ndarray  # (N, 2) float64 world m/s
    speed: np.ndarray  # (N,) float64 m/s along heading
    extent: np.ndarray  # (N, 3) float64 half extents
    control: np.ndarray  # (N, 3) float32 throttle, steer, brake (NaN where not applicable)
    type_id: tuple[str, ...] = ()

    @staticmethod
    def empty() -> ActorTable:
        return ActorTable(
            id=np.zeros(0, np.int64),
            kind=np.zeros(0, np.int8),
            role=np.zeros(0, np.int8),
            xyz=np.zeros((0, 3)),
            yaw=np.zeros(0),
            velocity=np.zeros((0, 2)),
            speed=np.zeros(0),
            extent=np.zeros((0, 3)),
            control=np.zeros((0, 3), np.float32),
            type_id=(),
        )

    def __len__(self) -> int:
        return int(self.id.shape[0])

    def get(self, i: int) -> ActorState:
        c = self.control[i]
        control = None if np.isnan(c[0]) else Control(float(c[0]), float(c[1]), float(c[2]))
        return ActorState(
            id=int(self.id[i]),
            kind=ActorKind(int(self.kind[i])),
            role=ActorRole(int(self.role[i])),
            pose=Pose(
                float(self.xyz[i, 0]), float(self.xyz[i, 1]), float(self.xyz[i, 2]), float(self.yaw[i])
            ),
            velocity=self.velocity[i].copy(),
            speed=float(self.speed[i]),
            extent=self.extent[i].copy(),
            control=control,
            type_id=self.type_id[i] if self.type_id else "",
        )

    def __iter__(self):
        return (self.get(i) for i in range(len(self)))

    def select(self, mask: np.ndarray) -> ActorTable:
        idx = np.flatnonzero(mask)
        return ActorTable(
            id=self.id[idx],
            kind=self.kind[idx],
            role=self.role[idx],
            xyz=self.xyz[idx],
            yaw=self.yaw[idx],
            velocity=self.velocity[idx],
            speed=self.speed[idx],
            extent=self.extent[idx],
            control=self.control[idx],
            type_id=tuple(self.type_id[i] for i in idx) if self.type_id else (),
        )


@dataclass(frozen=True)
class StopLine:
    """Where vehicles of one lane must stop for a light or a stop sign."""

    x: float
    y: float
    yaw: float  # lane direction, radians
    road_id: int
    lane_id: int  # road_id/lane_id: the approach lane as carla.Map.get_waypoint reports it
    width: float  # lane width, m


@dataclass(frozen=True)
class TrafficLight:
    id: int
    state: TrafficLightState
    pose: Pose  # the light pole (informative)
    stop_lines: tuple[StopLine, ...]  # one per controlled lane
    junction_id: int = -1
    time_in_state: float = 0.0  # seconds since the last state change


@dataclass(frozen=True)
class StopSign:
    id: int
    pose: Pose
    stop_lines: tuple[StopLine, ...]
    junction_id: int = -1


@dataclass(frozen=True)
class RouteProgress:
    """Where the ego stands on the dense route."""

    index: int  # dense route index reached (monotone)
    completed_m: float
    total_m: float
    distance_to_route: float  # lateral distance of the ego to the dense route, m
    command: int  # RoadOption at `index`

    @property
    def completion(self) -> float:
        """Route completion in percent."""
        return 100.0 * self.completed_m / self.total_m if self.total_m > 0 else 100.0


@dataclass(frozen=True)
class ScenarioInfo:
    """A Bench2Drive scenario the simulator knows about (privileged; the expert may use it)."""

    name: str
    type: str
    status: str  # "pending" | "running" | "done" | "skipped" | "timed_out" | "failed"
    trigger_xy: tuple[float, float]
    actor_ids: tuple[int, ...] = ()


class InfractionKind(IntEnum):
    COLLISION_PEDESTRIAN = 0
    COLLISION_VEHICLE = 1
    COLLISION_STATIC = 2
    RED_LIGHT = 3
    STOP_SIGN = 4
    OUTSIDE_ROUTE_LANES = 5
    ROUTE_DEVIATION = 6
    AGENT_BLOCKED = 7
    ROUTE_TIMEOUT = 8
    SCENARIO_TIMEOUT = 9
    YIELD_TO_EMERGENCY_VEHICLE = 10
    MIN_SPEED = 11


@dataclass(frozen=True)
class InfractionEvent:
    kind: InfractionKind
    frame: int
    time_s: float
    x: float
    y: float
    message: str
    actor_id: int = -1
    value: float = 0.0  # kind-specific figure, e.g. percentage for OUTSIDE_ROUTE_LANES


@dataclass(frozen=True)
class WorldSnapshot:
    frame: int
    time_s: float
    town: str
    ego: EgoState
    actors: ActorTable
    traffic_lights: tuple[TrafficLight, ...]
    stop_signs: tuple[StopSign, ...]
    route: RouteProgress
    scenarios: tuple[ScenarioInfo, ...] = ()
    events: tuple[InfractionEvent, ...] = ()  # infractions raised on this tick
    extras: dict[str, float] = field(default_factory=dict)
