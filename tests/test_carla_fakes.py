"""Stand-ins (not tests) for CARLA actors and a CARLA client/world, holding REAL carla value types.

carla.Transform / Location / Rotation / Vector3D / BoundingBox / VehicleControl / WorldSettings /
Waypoint (from an offline carla.Map) are the real classes; only what needs a server (actors, the
world, the client) is played here, with the same method names the CARLA Python API has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import carla


@dataclass
class FakeActor:
    id: int
    type_id: str
    transform: carla.Transform
    bounding_box: carla.BoundingBox
    velocity: carla.Vector3D = field(default_factory=carla.Vector3D)
    acceleration: carla.Vector3D = field(default_factory=carla.Vector3D)
    angular_velocity: carla.Vector3D = field(default_factory=carla.Vector3D)
    attributes: dict[str, str] = field(default_factory=dict)
    control: carla.VehicleControl = field(default_factory=carla.VehicleControl)
    light_state: carla.VehicleLightState | None = None
    destroyed: bool = False
    autopilot: tuple | None = None

    def get_transform(self) -> carla.Transform:
        return self.transform

    def get_location(self) -> carla.Location:
        return self.transform.location

    def get_velocity(self) -> carla.Vector3D:
        return self.velocity

    def get_acceleration(self) -> carla.Vector3D:
        return self.acceleration

    def get_angular_velocity(self) -> carla.Vector3D:
        return self.angular_velocity

    def get_control(self) -> carla.VehicleControl:
        return self.control

    def apply_control(self, control: carla.VehicleControl) -> None:
        self.control = control

    def set_autopilot(self, enabled: bool, port: int) -> None:
        self.autopilot = (enabled, port)

    def destroy(self) -> bool:
        self.destroyed = True
        return True


class FakeVehicle(FakeActor):
    def get_light_state(self) -> carla.VehicleLightState:
        return self.light_state if self.light_state is not None else carla.VehicleLightState.NONE


@dataclass
class FakeTrafficLight:
    id: int
    transform: carla.Transform
    trigger_volume: carla.BoundingBox
    state: carla.TrafficLightState = carla.TrafficLightState.Red
    elapsed_s: float = 0.0
    stop_waypoints: list | None = None  # None: the light has no get_stop_waypoints (older servers)
    type_id: str = "traffic.traffic_light"
    attributes: dict[str, str] = field(default_factory=dict)

    def get_transform(self) -> carla.Transform:
        return self.transform

    def get_state(self) -> carla.TrafficLightState:
        return self.state

    def get_elapsed_time(self) -> float:
        return self.elapsed_s

    def __getattr__(self, name: str) -> Any:
        if name == "get_stop_waypoints" and self.stop_waypoints is not None:
            return lambda: list(self.stop_waypoints)
        raise AttributeError(name)


@dataclass
class FakeStopSign:
    id: int
    transform: carla.Transform
    trigger_volume: carla.BoundingBox
    type_id: str = "traffic.stop"
    attributes: dict[str, str] = field(default_factory=dict)

    def get_transform(self) -> carla.Transform:
        return self.transform


def vehicle_box(length_m: float = 4.8, width_m: float = 2.0, height_m: float = 1.5) -> carla.BoundingBox:
    return carla.BoundingBox(
        carla.Location(0.0, 0.0, height_m / 2), carla.Vector3D(length_m / 2, width_m / 2, height_m / 2)
    )


def transform(x: float, y: float, z: float = 0.0, yaw_deg: float = 0.0) -> carla.Transform:
    return carla.Transform(carla.Location(x=x, y=y, z=z), carla.Rotation(yaw=yaw_deg))


# ----------------------------------------------------------------------------------- client / world
class FakeAttribute:
    def __init__(self, value: str) -> None:
        self.value = value

    def as_int(self) -> int:
        return int(self.value)


class FakeBlueprint:
    def __init__(self, blueprint_id: str, **attributes: str) -> None:
        self.id = blueprint_id
        self.attributes = dict(attributes)

    def has_attribute(self, name: str) -> bool:
        return name in self.attributes

    def get_attribute(self, name: str) -> FakeAttribute:
        return FakeAttribute(self.attributes[name])

    def set_attribute(self, name: str, value: str) -> None:
        self.attributes[name] = value


class FakeLibrary:
    def __init__(self, blueprints: list[FakeBlueprint]) -> None:
        self._bps = {bp.id: bp for bp in blueprints}

    def find(self, blueprint_id: str) -> FakeBlueprint:
        if blueprint_id not in self._bps:
            raise IndexError(blueprint_id)
        bp = self._bps[blueprint_id]
        return FakeBlueprint(bp.id, **bp.attributes)

    def filter(self, pattern: str) -> list[FakeBlueprint]:
        prefix = pattern.rstrip("*")
        return [
            FakeBlueprint(bp.id, **bp.attributes) for bp in self._bps.values() if bp.id.startswith(prefix)
        ]


class FakeSensor(FakeActor):
    callback: Any = None
    stopped: bool = False

    def listen(self, callback) -> None:
        self.callback = callback

    def stop(self) -> None:
        self.stopped = True


@dataclass
class FakeTimestamp:
    frame: int
    elapsed_seconds: float


@dataclass
class FakeWorldSnapshot:
    timestamp: FakeTimestamp


class FakeTrafficManager:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((name, *args))


class FakeWorld:
    """A world whose ego moves kinematically along its heading (speed += (throttle - brake) dt x 4)."""

    def __init__(self, cmap: carla.Map, crash_at_frame: int | None = None) -> None:
        self.cmap = cmap
        self.settings = carla.WorldSettings()
        self.applied_settings: list[carla.WorldSettings] = []
        self.actors: dict[int, FakeActor] = {}
        self.frame = 100
        self.elapsed_s = 7.0
        self.weather: carla.WeatherParameters | None = None
        self.crash_at_frame = crash_at_frame
        self._next_id = 1
        self.library = FakeLibrary(
            [
                FakeBlueprint("vehicle.lincoln.mkz_2020", number_of_wheels="4", base_type="car"),
                FakeBlueprint("vehicle.audi.a2", number_of_wheels="4", base_type="car"),
                FakeBlueprint("vehicle.bh.crossbike", number_of_wheels="2", base_type="bicycle"),
                FakeBlueprint("sensor.other.collision"),
                FakeBlueprint("sensor.other.lane_invasion"),
                FakeBlueprint("sensor.camera.rgb"),
            ]
        )

    # the API the backend calls
    def get_map(self) -> carla.Map:
        return self.cmap

    def get_settings(self) -> carla.WorldSettings:
        s = carla.WorldSettings()
        s.synchronous_mode = self.settings.synchronous_mode
        s.fixed_delta_seconds = self.settings.fixed_delta_seconds
        s.no_rendering_mode = self.settings.no_rendering_mode
        return s

    def apply_settings(self, settings: carla.WorldSettings) -> int:
        self.settings = settings
        self.applied_settings.append(settings)
        return self.frame

    def get_blueprint_library(self) -> FakeLibrary:
        return self.library

    def set_weather(self, weather: carla.WeatherParameters) -> None:
        self.weather = weather

    def try_spawn_actor(self, blueprint: FakeBlueprint, where: carla.Transform, attach_to=None):
        for actor in self.actors.values():
            if (
                actor.type_id.startswith("vehicle")
                and actor.transform.location.distance(where.location) < 2.0
            ):
                return None
        return self.spawn_actor(blueprint, where, attach_to)

    def spawn_actor(self, blueprint: FakeBlueprint, where: carla.Transform, attach_to=None):
        actor_id = self._next_id
        self._next_id += 1
        attributes = dict(blueprint.attributes)
        if blueprint.id.startswith("sensor"):
            actor: FakeActor = FakeSensor(
                actor_id, blueprint.id, where, carla.BoundingBox(), attributes=attributes
            )
        else:
            actor = FakeVehicle(actor_id, blueprint.id, where, vehicle_box(), attributes=attributes)
        self.actors[actor_id] = actor
        return actor

    def tick(self, timeout_s: float = 10.0) -> int:
        if self.crash_at_frame is not None and self.frame >= self.crash_at_frame:
            raise RuntimeError("time-out of 10000ms while waiting for the simulator")
        self.frame += 1
        self.elapsed_s += self.settings.fixed_delta_seconds or 0.05
        for actor in self.actors.values():
            if actor.attributes.get("role_name") == "hero":
                c = actor.control
                t = actor.transform
                yaw = math.radians(t.rotation.yaw)
                v = math.hypot(actor.velocity.x, actor.velocity.y)
                v = max(0.0, v + (c.throttle - c.brake) * 4.0 * 0.05)
                actor.velocity = carla.Vector3D(v * math.cos(yaw), v * math.sin(yaw), 0.0)
                loc = t.location
                actor.transform = carla.Transform(
                    carla.Location(loc.x + actor.velocity.x * 0.05, loc.y + actor.velocity.y * 0.05, loc.z),
                    t.rotation,
                )
        return self.frame

    def get_snapshot(self) -> FakeWorldSnapshot:
        return FakeWorldSnapshot(FakeTimestamp(self.frame, self.elapsed_s))

    def get_actors(self) -> list[FakeActor]:
        return [a for a in self.actors.values() if not a.destroyed]

    def set_pedestrians_seed(self, seed: int) -> None:
        return None

    def get_random_location_from_navigation(self):
        return None


class FakeClient:
    """carla.Client stand-in bound to one FakeWorld."""

    def __init__(self, world: FakeWorld, server_version: str = "0.9.16") -> None:
        self.world = world
        self.timeouts: list[float] = []
        self.loaded: list[str] = []
        self.server_version = server_version
        self.tm = FakeTrafficManager()
        self.destroyed_ids: list[int] = []

    def __call__(self, host: str, port: int, worker_threads: int = 0) -> FakeClient:
        return self  # the factory the backend calls

    def set_timeout(self, seconds: float) -> None:
        self.timeouts.append(seconds)

    def get_server_version(self) -> str:
        return self.server_version

    def get_client_version(self) -> str:
        return "0.9.16"

    def get_world(self) -> FakeWorld:
        return self.world

    def load_world(self, town: str) -> FakeWorld:
        self.loaded.append(town)
        return self.world

    def get_available_maps(self) -> list[str]:
        return [f"/Game/Carla/Maps/{self.world.cmap.name}"]

    def get_trafficmanager(self, port: int) -> FakeTrafficManager:
        self.tm.calls.append(("port", port))
        return self.tm

    def apply_batch_sync(self, commands: list, do_tick: bool = False) -> list:
        if self.world.crash_at_frame is not None and self.world.frame >= self.world.crash_at_frame:
            raise RuntimeError("time-out of 10000ms while waiting for the simulator")
        for command in commands:
            actor = self.world.actors.get(command.actor_id)
            if actor is not None:
                actor.destroy()
                self.destroyed_ids.append(command.actor_id)
        return []
