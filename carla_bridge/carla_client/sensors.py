"""Sensors of the real CARLA path: collision and lane-invasion events, cameras, leaderboard sensor specs.

Collision-sensor events are counted with the leaderboard's CollisionTest rules, so a contact reported
on several ticks (or with two actors at once) counts once:

- the kind comes from the other actor's type_id: 'static' or 'traffic' (not 'sidewalk') -> layout,
  'vehicle' -> vehicle, 'walker' -> pedestrian, anything else is ignored;
- the actor hit last is ignored for `same_actor_memory_s` after its counted collision;
- a contact within `min_area_m` of a remembered collision place is ignored, and places are forgotten
  once the ego is more than `max_area_m` away (scoring.CollisionConfig, the same numbers as the
  box-overlap criterion of the embedded simulator).

Callbacks run on CARLA's sensor threads: they only append to a lock-protected queue that the
simulator drains after each tick.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import carla

from carla_bridge.carla_client.config import AgentConfig, CameraConfig
from carla_bridge.errors import TakeoverError
from carla_bridge.scoring.config import CollisionConfig
from carla_bridge.scoring.leaderboard import location_text
from carla_bridge.snapshot import InfractionEvent, InfractionKind

COLLISION_SENSOR = "sensor.other.collision"
LANE_INVASION_SENSOR = "sensor.other.lane_invasion"
RGB_CAMERA = "sensor.camera.rgb"
SPEEDOMETER = "sensor.speedometer"
IMU = "sensor.other.imu"
GNSS = "sensor.other.gnss"
SPEED_ID, IMU_ID, GPS_ID = "speed", "imu", "gps"
# Leaderboard 2.0 (SENSORS track): sensor types an agent may ask for, and the farthest mount, m.
LEADERBOARD_SENSOR_TYPES = frozenset(
    {RGB_CAMERA, "sensor.lidar.ray_cast", "sensor.other.radar", GNSS, IMU, SPEEDOMETER}
)
MAX_SENSOR_RADIUS_M = 3.0
EXTRINSIC_KEYS = ("x", "y", "z", "roll", "pitch", "yaw")
CAMERA_KEYS = ("width", "height", "fov")


class SensorSpecError(TakeoverError):
    """A sensor list the leaderboard would refuse (unknown type, duplicate id, missing fields, too far)."""


@dataclass(frozen=True)
class SensorCollision:
    """One collision-sensor callback, reduced to plain values."""

    frame: int
    other_id: int
    other_type_id: str


@dataclass(frozen=True)
class SensorLaneInvasion:
    frame: int
    markings: tuple[str, ...]  # carla.LaneMarkingType names crossed


def collision_kind(type_id: str) -> InfractionKind | None:
    """Leaderboard CollisionTest kind of a collision with an actor of `type_id`, None if not counted."""
    if ("static" in type_id or "traffic" in type_id) and "sidewalk" not in type_id:
        return InfractionKind.COLLISION_STATIC
    if "vehicle" in type_id:
        return InfractionKind.COLLISION_VEHICLE
    if "walker" in type_id:
        return InfractionKind.COLLISION_PEDESTRIAN
    return None


class CollisionFilter:
    """Leaderboard de-duplication of collision-sensor events (module docstring)."""

    def __init__(self, config: CollisionConfig) -> None:
        self.config = config
        self._places: list[tuple[float, float]] = []
        self._last_id: int | None = None
        self._last_time_s = -math.inf

    def update(
        self,
        collisions: Sequence[SensorCollision],
        frame: int,
        time_s: float,
        ego_xyz: tuple[float, float, float],
    ) -> list[InfractionEvent]:
        cfg = self.config
        x, y, z = ego_xyz
        self._places = [p for p in self._places if math.hypot(x - p[0], y - p[1]) <= cfg.max_area_m]
        if self._last_id is not None and time_s - self._last_time_s > cfg.same_actor_memory_s:
            self._last_id = None
        events: list[InfractionEvent] = []
        for hit in collisions:
            kind = collision_kind(hit.other_type_id)
            if kind is None or hit.other_id == self._last_id:
                continue
            if any(math.hypot(x - p[0], y - p[1]) <= cfg.min_area_m for p in self._places):
                continue
            message = (
                f"Agent collided against object with type={hit.other_type_id} and id={hit.other_id} "
                f"at {location_text(x, y, z)}"
            )
            events.append(InfractionEvent(kind, frame, time_s, x, y, message, actor_id=hit.other_id))
            self._places.append((x, y))
            self._last_id = hit.other_id
            self._last_time_s = time_s
        return events


class EventQueue:
    """Thread-safe buffer of sensor callbacks; `drain()` hands over and clears them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def put(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)

    def drain(self) -> list[Any]:
        with self._lock:
            items, self._items = self._items, []
        return items


def on_collision(queue: EventQueue):
    """A carla.CollisionEvent callback feeding `queue` with SensorCollision values."""

    def callback(event) -> None:
        other = event.other_actor
        queue.put(SensorCollision(int(event.frame), int(other.id), str(other.type_id)))

    return callback


def on_lane_invasion(queue: EventQueue):
    def callback(event) -> None:
        names = tuple(str(m.type) for m in event.crossed_lane_markings)
        queue.put(SensorLaneInvasion(int(event.frame), names))

    return callback


def camera_transform(camera: CameraConfig) -> carla.Transform:
    return carla.Transform(
        carla.Location(x=camera.x_m, y=camera.y_m, z=camera.z_m),
        carla.Rotation(pitch=camera.pitch_deg, yaw=camera.yaw_deg, roll=camera.roll_deg),
    )


def camera_attributes(camera: CameraConfig) -> dict[str, str]:
    """Blueprint attributes of an RGB camera (CARLA wants strings)."""
    return {
        "image_size_x": str(camera.width_px),
        "image_size_y": str(camera.height_px),
        "fov": str(camera.fov_deg),
    }


def leaderboard_sensors(config: AgentConfig) -> list[dict[str, Any]]:
    """The agent's `sensors()` list: speedometer, IMU, GNSS (ids speed, imu, gps) and configured cameras."""
    mount = {"x": 0.0, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0, "yaw": 0.0}
    sensors: list[dict[str, Any]] = [
        {"type": SPEEDOMETER, "reading_frequency": config.speed_sensor_hz, "id": SPEED_ID},
        {"type": IMU, **mount, "sensor_tick": config.imu_sensor_tick_s, "id": IMU_ID},
        {"type": GNSS, **mount, "sensor_tick": config.gnss_sensor_tick_s, "id": GPS_ID},
    ]
    for cam in config.cameras:
        sensors.append(
            {
                "type": RGB_CAMERA,
                "x": cam.x_m,
                "y": cam.y_m,
                "z": cam.z_m,
                "roll": cam.roll_deg,
                "pitch": cam.pitch_deg,
                "yaw": cam.yaw_deg,
                "width": cam.width_px,
                "height": cam.height_px,
                "fov": cam.fov_deg,
                "id": cam.id,
            }
        )
    validate_sensor_specs(sensors)
    return sensors


def validate_sensor_specs(sensors: Sequence[dict[str, Any]]) -> None:
    """Raise SensorSpecError where leaderboard 2.0's validate_sensor_configuration would refuse the list."""
    seen: set[str] = set()
    for spec in sensors:
        sid = spec.get("id")
        if not sid:
            raise SensorSpecError(f"sensor {spec} has no 'id'; give every sensor a unique id")
        if sid in seen:
            raise SensorSpecError(f"sensor id {sid!r} is used twice; rename one in the agent config")
        seen.add(sid)
        kind = spec.get("type")
        if kind not in LEADERBOARD_SENSOR_TYPES:
            raise SensorSpecError(
                f"sensor {sid!r} has type {kind!r}, not allowed on the SENSORS track: use one of "
                f"{sorted(LEADERBOARD_SENSOR_TYPES)}"
            )
        if kind != SPEEDOMETER:
            missing = [k for k in EXTRINSIC_KEYS if k not in spec]
            if kind == RGB_CAMERA:
                missing += [k for k in CAMERA_KEYS if k not in spec]
            if missing:
                raise SensorSpecError(f"sensor {sid!r} ({kind}) lacks {missing}")
            radius = math.sqrt(spec["x"] ** 2 + spec["y"] ** 2 + spec["z"] ** 2)
            if radius > MAX_SENSOR_RADIUS_M:
                raise SensorSpecError(
                    f"sensor {sid!r} is mounted {radius:.2f} m from the vehicle origin; the leaderboard "
                    f"allows at most {MAX_SENSOR_RADIUS_M} m: move it closer"
                )
