"""CarlaSimulator against a stand-in client/world (and real sockets for the unreachable cases)."""

from __future__ import annotations

import math
import socket
import threading

import pytest
from test_carla_fakes import FakeClient, FakeWorld

from carla_bridge.carla_client.backend import (
    CarlaSimulator,
    background_spawn_points,
    spawn_transform,
    town_spawn_points,
)
from carla_bridge.carla_client.config import CarlaConfig
from carla_bridge.carla_client.connection import connect
from carla_bridge.carla_client.errors import ServerCrashedError, ServerUnreachableError
from carla_bridge.carla_client.weather import weather_at
from carla_bridge.errors import SimulatorError
from carla_bridge.maps import MapLibrary
from carla_bridge.route_planner import plan_route
from carla_bridge.route_sets import load_route_set
from carla_bridge.simulator import Simulator
from carla_bridge.snapshot import Control


@pytest.fixture(scope="module")
def cmap():
    return MapLibrary().load("Takeover01")


@pytest.fixture
def route(cmap):
    route = load_route_set("builtin:eval")[0]
    route.dense = plan_route(route, cmap)
    return route


def config(vehicles: int = 5) -> CarlaConfig:
    cfg = CarlaConfig()
    cfg.traffic.vehicles = vehicles
    cfg.world.settle_ticks = 2
    return cfg


def listening_port() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


def test_reset_sets_up_a_synchronous_seeded_world_and_the_ego_at_the_route_start(cmap, route):
    # given a server stand-in with the route's town
    world = FakeWorld(cmap)
    client = FakeClient(world)
    with listening_port() as port_socket:
        sim = CarlaSimulator(config(), port=port_socket.getsockname()[1], tm_port=8123, client_factory=client)
        # when the route is reset
        snap = sim.reset(route, seed=7)
    assert isinstance(sim, Simulator)
    # then: the town loaded, synchronous 20 Hz, weather applied, TM synchronous and seeded
    assert client.loaded == ["Takeover01"]
    assert world.settings.synchronous_mode and world.settings.fixed_delta_seconds == pytest.approx(0.05)
    expected = weather_at(route.weathers, 0.0)
    assert world.weather is not None
    assert world.weather.sun_altitude_angle == pytest.approx(expected["sun_altitude_angle"])
    assert world.weather.cloudiness == pytest.approx(expected["cloudiness"])
    assert ("set_synchronous_mode", True) in client.tm.calls
    assert ("set_random_device_seed", 7) in client.tm.calls
    # the ego stands at the first dense point, heading along the route, with its sensors
    heroes = [a for a in world.actors.values() if a.attributes.get("role_name") == "hero"]
    assert len(heroes) == 1
    assert math.hypot(snap.ego.pose.x - route.dense.xyz[0, 0], snap.ego.pose.y - route.dense.xyz[0, 1]) < 0.5
    assert abs(math.remainder(snap.ego.pose.yaw - route.dense.yaw[0], math.tau)) < 1e-3
    sensors = sorted(a.type_id for a in world.actors.values() if a.type_id.startswith("sensor"))
    assert sensors == ["sensor.other.collision", "sensor.other.lane_invasion"]
    # background vehicles on autopilot with the server's TM port, and episode time from 0
    background = [a for a in world.actors.values() if a.attributes.get("role_name") == "background"]
    assert 0 < len(background) <= 5 and all(a.autopilot == (True, 8123) for a in background)
    near = [
        a.id for a in background
        if math.hypot(a.transform.location.x - snap.ego.pose.x, a.transform.location.y - snap.ego.pose.y) <= 120.0
    ]  # fmt: skip
    assert sorted(snap.actors.id.tolist()) == sorted(near)
    assert snap.frame == 0 and snap.time_s == 0.0
    sim.close()


def test_step_applies_the_control_and_advances_20_hz(cmap, route):
    world = FakeWorld(cmap)
    with listening_port() as port_socket:
        sim = CarlaSimulator(config(0), port=port_socket.getsockname()[1], client_factory=FakeClient(world))
        first = sim.reset(route, seed=0)
    for _ in range(20):
        snap = sim.step(Control(throttle=1.0))
    assert snap.frame == 20 and snap.time_s == pytest.approx(1.0)
    assert snap.ego.speed > 3.0 and snap.ego.control.throttle == 1.0
    assert snap.route.completed_m > first.route.completed_m
    assert "server_frame" in snap.extras
    sim.close()


def test_same_seed_spawns_the_same_background_traffic(cmap, route):
    layouts = []
    for _ in range(2):
        world = FakeWorld(cmap)
        with listening_port() as port_socket:
            sim = CarlaSimulator(
                config(), port=port_socket.getsockname()[1], client_factory=FakeClient(world)
            )
            snap = sim.reset(route, seed=3)
        layouts.append(sorted(map(tuple, snap.actors.xyz[:, :2].round(3).tolist())))
        sim.close()
    assert layouts[0] == layouts[1]


def test_close_destroys_everything_spawned_and_restores_settings(cmap, route):
    world = FakeWorld(cmap)
    client = FakeClient(world)
    with listening_port() as port_socket:
        sim = CarlaSimulator(config(), port=port_socket.getsockname()[1], client_factory=client)
        sim.reset(route, seed=0)
    sim.close()
    assert all(a.destroyed for a in world.actors.values())
    assert not world.settings.synchronous_mode
    assert ("set_synchronous_mode", False) in client.tm.calls


def test_server_crash_mid_route_is_a_clear_error_and_teardown_still_runs(cmap, route):
    # given a server that stops answering at its 120th frame
    world = FakeWorld(cmap, crash_at_frame=110)
    client = FakeClient(world)
    with listening_port() as port_socket:
        sim = CarlaSimulator(config(), port=port_socket.getsockname()[1], client_factory=client)
        sim.reset(route, seed=0)
        # when the route runs into it
        with pytest.raises(ServerCrashedError, match=r"crashed.*episode is discarded"):
            for _ in range(50):
                sim.step(Control(throttle=0.5))
        # then the simulator refuses to go on, and close() does not raise although the server is gone
        with pytest.raises(SimulatorError):
            sim.close()
            sim.step(Control())


def test_step_before_reset_is_a_clear_error():
    with pytest.raises(SimulatorError, match="reset"):
        CarlaSimulator(CarlaConfig()).step(Control())


def test_nothing_listening_is_reported_at_once():
    with listening_port() as s:
        port = s.getsockname()[1]
    # the socket is closed: nothing listens on that port any more
    with pytest.raises(ServerUnreachableError, match=f"no CARLA server at 127.0.0.1:{port}"):
        connect("127.0.0.1", port, timeout_s=1.0, probe_timeout_s=0.5)


def test_a_port_that_is_not_carla_is_a_clear_error():
    # given something that accepts connections but never speaks CARLA's RPC (the real carla.Client)
    with listening_port() as s:
        stop = threading.Event()

        def accept():
            conns = []
            s.settimeout(0.1)
            while not stop.is_set():
                try:
                    conns.append(s.accept()[0])
                except OSError:
                    continue
            for c in conns:
                c.close()

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        try:
            with pytest.raises(ServerUnreachableError, match=r"no CARLA RPC answered within 0\.5 s"):
                connect("127.0.0.1", s.getsockname()[1], timeout_s=0.5, probe_timeout_s=0.5)
        finally:
            stop.set()
            t.join()


def test_reset_on_an_unreachable_server_leaves_nothing_behind(route):
    with listening_port() as s:
        port = s.getsockname()[1]
    sim = CarlaSimulator(config(), port=port)
    with pytest.raises(ServerUnreachableError):
        sim.reset(route, seed=0)
    sim.close()


def test_spawn_helpers_follow_the_route(route, cmap):
    t = spawn_transform(route, 0.5)
    assert t.location.z == pytest.approx(route.dense.xyz[0, 2] + 0.5)
    points = town_spawn_points(cmap, 20.0, 0.5)  # the built-in town has none of its own: lane points
    kept = background_spawn_points(points, route.dense.xyz[:, :2], 50.0, route.dense.xyz[0, :2], 15.0)
    assert kept and len(kept) < len(points)
    for p in kept:
        d_route = ((route.dense.xyz[:, :2] - [p.location.x, p.location.y]) ** 2).sum(1).min() ** 0.5
        assert d_route <= 50.0 and math.hypot(p.location.x - t.location.x, p.location.y - t.location.y) > 15.0
