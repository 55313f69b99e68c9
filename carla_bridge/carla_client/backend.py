"""`CarlaSimulator`: the Simulator contract on a live CARLA server (0.9.15 / 0.9.16).

reset(route, seed): connect (TCP probe, then an RPC under `client.timeout_s`), load the route's town,
synchronous mode at `world.fixed_delta_s` (20 Hz), the route's weather, the ego ('hero') at the first
dense-route pose lifted by `ego.spawn_height_m`, collision / lane-invasion sensors (and cameras if
configured), background vehicles on Traffic Manager autopilot and walkers with AI controllers, all
seeded; then a few settle ticks. step(control): apply it, tick, and build the WorldSnapshot from the
world's actors (carla_client.snapshot_builder). Frames and times count from the reset (frame 0,
0 s) like the embedded simulator; the server's frame is in `extras['server_frame']`.

Scoring runs `carla_bridge.scoring.RouteCriteria` on the snapshots (the embedded simulator's rules),
plus collision-sensor events against what the snapshot has no box for (buildings, poles, walls),
de-duplicated like the leaderboard's CollisionTest. Bench2Drive's scripted scenarios are not played
by this backend: they need scenario_runner, i.e. the leaderboard path (carla_client.leaderboard).

Errors: an unreachable server or wrong port raises ServerUnreachableError, a server that stops
answering mid-route ServerCrashedError (both SimulatorError). Every actor this backend spawned is
destroyed and the world's settings restored on close(), on the next reset(), and after any error in
reset(); a teardown that cannot reach the server anymore only logs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import carla
import numpy as np

from carla_bridge.carla_client.config import CarlaConfig, load_carla_config
from carla_bridge.carla_client.connection import ClientFactory, connect
from carla_bridge.carla_client.errors import ServerCrashedError
from carla_bridge.carla_client.sensors import (
    COLLISION_SENSOR,
    LANE_INVASION_SENSOR,
    RGB_CAMERA,
    CollisionFilter,
    EventQueue,
    SensorCollision,
    SensorLaneInvasion,
    camera_attributes,
    camera_transform,
    on_collision,
    on_lane_invasion,
)
from carla_bridge.carla_client.snapshot_builder import SnapshotBuilder
from carla_bridge.carla_client.weather import carla_weather, weather_at
from carla_bridge.errors import RouteError, SimulatorError
from carla_bridge.maps import canonical_town
from carla_bridge.route import Route
from carla_bridge.scoring.config import load_scoring_config
from carla_bridge.scoring.criteria import RouteCriteria
from carla_bridge.snapshot import Control, InfractionEvent, WorldSnapshot

log = logging.getLogger(__name__)

WALKER_CONTROLLER = "controller.ai.walker"
WEATHER_UPDATE_PCT = 1.0  # re-apply the interpolated weather every this many percent of the route
NUMBER_OF_WHEELS = "number_of_wheels"
FOUR_WHEELS = 4


def to_carla_control(control: Control) -> carla.VehicleControl:
    c = control.clipped()
    return carla.VehicleControl(
        throttle=c.throttle, steer=c.steer, brake=c.brake, hand_brake=c.hand_brake, reverse=c.reverse
    )


def spawn_transform(route: Route, height_m: float) -> carla.Transform:
    """The first dense-route pose, lifted by `height_m` (the leaderboard's ego start)."""
    assert route.dense is not None
    x, y, z = (float(v) for v in route.dense.xyz[0])
    return carla.Transform(
        carla.Location(x=x, y=y, z=z + height_m), carla.Rotation(yaw=math.degrees(float(route.dense.yaw[0])))
    )


def town_spawn_points(cmap: carla.Map, fallback_spacing_m: float, height_m: float) -> list[carla.Transform]:
    """The town's spawn points; a town without any (a bare OpenDRIVE world) gets lane points every
    `fallback_spacing_m` outside junctions, lifted by `height_m`."""
    points = list(cmap.get_spawn_points())
    if points:
        return points
    return [
        carla.Transform(
            carla.Location(
                x=wp.transform.location.x, y=wp.transform.location.y, z=wp.transform.location.z + height_m
            ),
            wp.transform.rotation,
        )
        for wp in cmap.generate_waypoints(fallback_spacing_m)
        if not wp.is_junction and wp.lane_type == carla.LaneType.Driving
    ]


def background_spawn_points(
    points: list[carla.Transform], route_xy: np.ndarray, radius_m: float, ego_xy: np.ndarray, clear_m: float
) -> list[carla.Transform]:
    """Spawn points within `radius_m` of some route point and farther than `clear_m` from the ego start."""
    kept = []
    for t in points:
        p = np.array([t.location.x, t.location.y])
        if np.linalg.norm(p - ego_xy) <= clear_m:
            continue
        if np.min(np.sum((route_xy - p) ** 2, axis=1)) <= radius_m**2:
            kept.append(t)
    return kept


class CarlaSimulator:
    """Simulator protocol on a CARLA server at `host:port` (config `client`, overridable here)."""

    def __init__(
        self,
        config: CarlaConfig | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        tm_port: int | None = None,
        client_factory: ClientFactory = carla.Client,
    ) -> None:
        self.config = config or load_carla_config()
        self.dt = self.config.world.fixed_delta_s
        self.host = host or self.config.client.host
        self.port = int(port or self.config.client.port)
        self.tm_port = int(tm_port or self.config.traffic.tm_port)
        self._factory = client_factory
        self._client: Any = None
        self._world: Any = None
        self._cmap: carla.Map | None = None
        self._tm: Any = None
        self._original_settings: Any = None
        self._ego: Any = None
        self._sensors: list[Any] = []
        self._actors: list[Any] = []  # background vehicles, walkers
        self._controllers: list[Any] = []  # walker AI controllers
        self._collisions = EventQueue()
        self._invasions = EventQueue()
        self._images: dict[str, EventQueue] = {}
        self._route: Route | None = None
        self._builder: SnapshotBuilder | None = None
        self._criteria: RouteCriteria | None = None
        self._collision_filter: CollisionFilter | None = None
        self._events: list[InfractionEvent] = []
        self._first_frame = 0
        self._first_time_s = 0.0
        self._control = Control()
        self._weather_pct = -math.inf
        self._last: WorldSnapshot | None = None

    # ------------------------------------------------------------------ protocol
    @property
    def map(self) -> carla.Map:
        if self._cmap is None:
            raise SimulatorError("no map loaded yet: call reset(route, seed) first")
        return self._cmap

    @property
    def done(self) -> bool:
        """True once the scoring criteria end the route."""
        return bool(self._criteria is not None and self._criteria.done)

    @property
    def criteria(self) -> RouteCriteria:
        if self._criteria is None:
            raise SimulatorError("the simulator is not running: call reset(route, seed) first")
        return self._criteria

    @property
    def latest_images(self) -> dict[str, Any]:
        """The newest frame of each configured camera (carla.Image), by camera id."""
        out = {}
        for cid, queue in self._images.items():
            frames = queue.drain()
            if frames:
                out[cid] = frames[-1]
        return out

    def reset(self, route: Route, seed: int) -> WorldSnapshot:
        self._teardown()
        try:
            return self._reset(route, seed)
        except BaseException:
            self._teardown()
            raise

    def step(self, control: Control) -> WorldSnapshot:
        if self._ego is None or self._builder is None:
            raise SimulatorError("the simulator is not running: call reset(route, seed) first")
        if not isinstance(control, Control):
            raise SimulatorError(
                f"step() needs a carla_bridge.snapshot.Control, got {type(control).__name__}"
            )
        self._control = control.clipped()
        try:
            self._ego.apply_control(to_carla_control(self._control))
            self._maybe_update_weather()
            self._tick()
        except RuntimeError as exc:
            raise self._crashed(exc) from None
        return self._snapshot()

    def infractions(self) -> list[InfractionEvent]:
        return list(self._events)

    def close(self) -> None:
        self._teardown()
        self._client = None

    def __enter__(self) -> CarlaSimulator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reset
    def _reset(self, route: Route, seed: int) -> WorldSnapshot:
        cfg = self.config
        if self._client is None:
            self._client = connect(
                self.host,
                self.port,
                cfg.client.timeout_s,
                cfg.client.probe_timeout_s,
                cfg.client.worker_threads,
                self._factory,
            )
        try:
            self._world = self._load_town(route.town)
            self._apply_sync_settings()
            self._cmap = self._world.get_map()
            if route.dense is None:
                from carla_bridge.route_planner import plan_route

                route.dense = plan_route(route, self._cmap)
            if len(route.dense) < 2:
                raise RouteError(route.id, "dense route has fewer than two points; check the route keypoints")
            self._route = route
            self._weather_pct = -math.inf
            self._maybe_update_weather(completion_pct=0.0)
            self._ego = self._spawn_ego(route)
            self._attach_sensors()
            self._start_traffic(route, seed)
            for _ in range(cfg.world.settle_ticks):
                self._ego.apply_control(carla.VehicleControl(brake=1.0))
                self._tick()
            self._collisions.drain()  # bumps while settling are not the agent's
            self._invasions.drain()
        except RuntimeError as exc:
            raise self._crashed(exc, during="reset") from None
        self._criteria = RouteCriteria(route, self._cmap, load_scoring_config())
        self._collision_filter = CollisionFilter(self._criteria.config.collision)
        self._builder = SnapshotBuilder(self._cmap, route.town, route.dense, cfg.snapshot)
        self._events = []
        self._control = Control(brake=1.0)
        stamp = self._world.get_snapshot().timestamp
        self._first_frame = int(stamp.frame)
        self._first_time_s = float(stamp.elapsed_seconds)
        return self._snapshot()

    def _load_town(self, town: str):
        cfg = self.config
        client = self._client
        wanted = canonical_town(town)
        world = client.get_world()
        if cfg.world.reload_same_town or canonical_town(world.get_map().name) != wanted:
            client.set_timeout(cfg.client.load_world_timeout_s)
            try:
                world = client.load_world(wanted)
            except RuntimeError as exc:
                if "not found" in str(exc).lower() or "invalid" in str(exc).lower():
                    raise SimulatorError(
                        f"the CARLA server at {self.host}:{self.port} has no town {wanted!r} ({exc}); "
                        f"its towns: {', '.join(client.get_available_maps())}"
                    ) from None
                raise
            finally:
                client.set_timeout(cfg.client.timeout_s)
        return world

    def _apply_sync_settings(self) -> None:
        cfg = self.config.world
        world = self._world
        self._original_settings = world.get_settings()
        settings = world.get_settings()
        settings.synchronous_mode = cfg.synchronous
        settings.fixed_delta_seconds = cfg.fixed_delta_s
        settings.no_rendering_mode = cfg.no_rendering
        settings.substepping = True
        settings.max_substep_delta_time = cfg.max_substep_delta_s
        settings.max_substeps = cfg.max_substeps
        world.apply_settings(settings)

    def _spawn_ego(self, route: Route):
        cfg = self.config.ego
        library = self._world.get_blueprint_library()
        try:
            blueprint = library.find(cfg.blueprint)
        except (IndexError, RuntimeError):
            raise SimulatorError(
                f"the server has no blueprint {cfg.blueprint!r}: fix ego.blueprint in conf/carla.yaml"
            ) from None
        blueprint.set_attribute("role_name", cfg.role_name)
        transform = spawn_transform(route, cfg.spawn_height_m)
        ego = self._world.try_spawn_actor(blueprint, transform)
        if ego is None:
            loc = transform.location
            raise SimulatorError(
                f"route {route.id}: cannot spawn the ego at ({loc.x:.1f}, {loc.y:.1f}, {loc.z:.1f}) on "
                f"{route.town}: the place is occupied or off the map; another client's actors may be left there"
            )
        return ego

    def _attach_sensors(self) -> None:
        cfg = self.config.sensors
        library = self._world.get_blueprint_library()
        at_origin = carla.Transform()
        if cfg.collision:
            sensor = self._world.spawn_actor(library.find(COLLISION_SENSOR), at_origin, attach_to=self._ego)
            self._sensors.append(sensor)
            sensor.listen(on_collision(self._collisions))
        if cfg.lane_invasion:
            sensor = self._world.spawn_actor(
                library.find(LANE_INVASION_SENSOR), at_origin, attach_to=self._ego
            )
            self._sensors.append(sensor)
            sensor.listen(on_lane_invasion(self._invasions))
        for camera in cfg.cameras:
            blueprint = library.find(RGB_CAMERA)
            for name, value in camera_attributes(camera).items():
                blueprint.set_attribute(name, value)
            sensor = self._world.spawn_actor(blueprint, camera_transform(camera), attach_to=self._ego)
            self._sensors.append(sensor)
            queue = self._images.setdefault(camera.id, EventQueue())
            sensor.listen(queue.put)

    def _start_traffic(self, route: Route, seed: int) -> None:
        cfg = self.config.traffic
        rng = np.random.default_rng(seed)
        tm = self._client.get_trafficmanager(self.tm_port)
        self._tm = tm
        tm.set_synchronous_mode(self.config.world.synchronous)
        tm.set_random_device_seed(int(seed))
        tm.set_global_distance_to_leading_vehicle(cfg.distance_to_leading_m)
        tm.global_percentage_speed_difference(cfg.speed_difference_pct)
        if cfg.hybrid_physics:
            tm.set_hybrid_physics_mode(True)
            tm.set_hybrid_physics_radius(cfg.hybrid_physics_radius_m)
        assert route.dense is not None
        library = self._world.get_blueprint_library()
        if cfg.vehicles > 0:
            blueprints = [
                bp
                for bp in library.filter(cfg.vehicle_filter)
                if not cfg.four_wheels_only
                or not bp.has_attribute(NUMBER_OF_WHEELS)
                or bp.get_attribute(NUMBER_OF_WHEELS).as_int() == FOUR_WHEELS
            ]
            if not blueprints:
                raise SimulatorError(
                    f"no vehicle blueprint matches traffic.vehicle_filter={cfg.vehicle_filter!r}"
                )
            points = background_spawn_points(
                town_spawn_points(self._cmap, cfg.fallback_spawn_spacing_m, self.config.ego.spawn_height_m),
                route.dense.xyz[:, :2],
                cfg.spawn_radius_m,
                route.dense.xyz[0, :2],
                cfg.min_distance_to_ego_m,
            )
            order = rng.permutation(len(points))[: cfg.vehicles]
            for k in order.tolist():
                blueprint = blueprints[int(rng.integers(len(blueprints)))]
                blueprint.set_attribute("role_name", "background")
                vehicle = self._world.try_spawn_actor(blueprint, points[k])
                if vehicle is None:
                    continue  # occupied: one vehicle fewer
                self._actors.append(vehicle)
                vehicle.set_autopilot(True, self.tm_port)
        if cfg.walkers > 0:
            self._spawn_walkers(library, rng, seed)

    def _spawn_walkers(self, library, rng: np.random.Generator, seed: int) -> None:
        cfg = self.config.traffic
        self._world.set_pedestrians_seed(int(seed))
        blueprints = list(library.filter(cfg.walker_filter))
        controller_bp = library.find(WALKER_CONTROLLER)
        for _ in range(cfg.walkers):
            location = self._world.get_random_location_from_navigation()
            if location is None:
                continue
            blueprint = blueprints[int(rng.integers(len(blueprints)))]
            walker = self._world.try_spawn_actor(blueprint, carla.Transform(location))
            if walker is None:
                continue
            self._actors.append(walker)
            controller = self._world.spawn_actor(controller_bp, carla.Transform(), attach_to=walker)
            self._controllers.append(controller)
        self._tick()  # controllers need one tick before they accept targets
        for controller in self._controllers:
            controller.start()
            controller.go_to_location(self._world.get_random_location_from_navigation())
            controller.set_max_speed(cfg.walker_max_speed_mps)

    # ------------------------------------------------------------------ per tick
    def _tick(self) -> int:
        return int(self._world.tick(self.config.client.timeout_s))

    def _maybe_update_weather(self, completion_pct: float | None = None) -> None:
        assert self._route is not None
        if completion_pct is None:
            completion_pct = self._last.route.completion if self._last is not None else 0.0
        if completion_pct - self._weather_pct < WEATHER_UPDATE_PCT:
            return
        self._weather_pct = completion_pct
        params = weather_at(self._route.weathers, completion_pct, self._route.id)
        self._world.set_weather(carla_weather(params))

    def _snapshot(self) -> WorldSnapshot:
        assert self._builder is not None and self._criteria is not None and self._collision_filter is not None
        try:
            stamp = self._world.get_snapshot().timestamp
            actors = self._world.get_actors()
        except RuntimeError as exc:
            raise self._crashed(exc) from None
        frame = int(stamp.frame) - self._first_frame
        time_s = float(stamp.elapsed_seconds) - self._first_time_s
        snap = self._builder.build(frame, time_s, actors, self._control)
        sensor_hits: list[SensorCollision] = self._collisions.drain()
        invasions: list[SensorLaneInvasion] = self._invasions.drain()
        in_table = set(snap.actors.id.tolist())
        # Actors with a box in the snapshot are scored by the criteria's box test; the sensor adds the rest.
        geometry = [h for h in sensor_hits if h.other_id not in in_table]
        pose = snap.ego.pose
        events = self._collision_filter.update(geometry, frame, time_s, (pose.x, pose.y, pose.z))
        snap = dataclasses.replace(
            snap,
            events=tuple(events),
            extras={
                **snap.extras,
                "server_frame": float(stamp.frame),
                "lane_invasions": float(len(invasions)),
                "sensor_collisions": float(len(sensor_hits)),
            },
        )
        events += self._criteria.update(snap)
        if events:
            self._events.extend(events)
            snap = dataclasses.replace(snap, events=tuple(events))
        self._last = snap
        return snap

    def _crashed(self, exc: BaseException, during: str = "step") -> SimulatorError:
        route = self._route.id if self._route is not None else "?"
        frame = self._last.frame if self._last is not None else 0
        return ServerCrashedError(
            f"CARLA server {self.host}:{self.port} failed during {during} of route {route} at frame {frame} "
            f"({exc}); the server may have crashed: restart it (CarlaServerPool does) and run the route "
            "again; this episode is discarded"
        )

    # ------------------------------------------------------------------ teardown
    def _teardown(self) -> None:
        """Destroy what this backend spawned and restore the world's settings; never raises."""
        for sensor in self._sensors:
            _quietly(sensor.stop)
        for controller in self._controllers:
            _quietly(controller.stop)
        doomed = [*self._sensors, *self._controllers, *self._actors]
        if self._ego is not None:
            doomed.append(self._ego)
        if doomed and self._client is not None:
            ok = _quietly(
                self._client.apply_batch_sync, [carla.command.DestroyActor(a.id) for a in doomed], False
            )
            if not ok:
                for actor in doomed:
                    _quietly(actor.destroy)
        if self._tm is not None:
            _quietly(self._tm.set_synchronous_mode, False)
        if self._world is not None and self._original_settings is not None:
            _quietly(self._world.apply_settings, self._original_settings)
        self._sensors, self._controllers, self._actors = [], [], []
        self._images = {}
        self._ego = None
        self._tm = None
        self._original_settings = None
        self._builder = None
        self._criteria = None
        self._collision_filter = None
        self._last = None


def _quietly(fn, *args) -> bool:
    """Call fn(*args); log and swallow failures (teardown must go on when the server is gone)."""
    try:
        fn(*args)
    except (RuntimeError, OSError) as exc:
        log.warning("CARLA teardown: %s failed: %s", getattr(fn, "__name__", fn), exc)
        return False
    return True


__all__ = [
    "CarlaSimulator",
    "background_spawn_points",
    "spawn_transform",
    "to_carla_control",
    "town_spawn_points",
]
