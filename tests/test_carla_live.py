"""Against a live CARLA server: run only when CARLA_HOST is set and its port answers (docker/README.md).

CARLA_HOST=127.0.0.1 CARLA_PORT=2000 pytest tests/test_carla_live.py -q
"""

from __future__ import annotations

import math
import os

import pytest

from carla_bridge.carla_client.backend import CarlaSimulator
from carla_bridge.carla_client.config import load_carla_config
from carla_bridge.carla_client.connection import port_open
from carla_bridge.route_xml import parse_routes
from carla_bridge.snapshot import Control

HOST = os.environ.get("CARLA_HOST", "")
PORT = int(os.environ.get("CARLA_PORT", "2000"))
PROBE_TIMEOUT_S = 2.0

pytestmark = [
    pytest.mark.carla_server,
    pytest.mark.skipif(not HOST, reason="CARLA_HOST is not set (no live CARLA server)"),
    pytest.mark.skipif(
        bool(HOST) and not port_open(HOST, PORT, PROBE_TIMEOUT_S), reason=f"{HOST}:{PORT} does not answer"
    ),
]


@pytest.fixture
def route(dev_routes_file):
    return next(r for r in parse_routes(dev_routes_file) if r.town == "Town01")


@pytest.fixture
def sim():
    cfg = load_carla_config(["traffic.vehicles=10", f"client.host={HOST}", f"client.port={PORT}"])
    simulator = CarlaSimulator(cfg)
    yield simulator
    simulator.close()


def test_a_route_starts_synchronous_and_the_ego_drives(sim, route):
    snap = sim.reset(route, seed=0)
    assert snap.town == "Town01" and snap.frame == 0
    assert math.hypot(snap.ego.pose.x - route.dense.xyz[0, 0], snap.ego.pose.y - route.dense.xyz[0, 1]) < 2.0
    for _ in range(60):
        snap = sim.step(Control(throttle=0.6))
    assert snap.frame == 60 and snap.time_s == pytest.approx(3.0)
    assert snap.ego.speed > 1.0 and snap.route.completed_m > 0.0
    assert len(snap.actors) > 0


def test_lights_near_the_ego_have_stop_lines(sim, route):
    snap = sim.reset(route, seed=0)
    for light in snap.traffic_lights:
        assert light.stop_lines, f"light {light.id} has no stop line"


def test_close_leaves_no_hero_behind(sim, route):
    sim.reset(route, seed=0)
    sim.close()
    import carla

    client = carla.Client(HOST, PORT)
    client.set_timeout(10.0)
    heroes = [a for a in client.get_world().get_actors() if a.attributes.get("role_name") == "hero"]
    assert heroes == [] and not client.get_world().get_settings().synchronous_mode
