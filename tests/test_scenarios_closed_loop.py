"""Closed loop (slow): every built-in and dev route with its scenario runs to an end status with the
autopilot and with the PDM-Lite expert (the agents of `takeover drive`), without exceptions.

Run with `pytest tests/test_scenarios_closed_loop.py -m slow`. Driving quality is not asserted here
(the expert is tuned elsewhere); `takeover drive` prints the scores.
"""

from __future__ import annotations

import pytest

from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.maps import MapLibrary
from carla_bridge.route import Route
from carla_bridge.route_planner import prepare_routes
from carla_bridge.route_sets import load_route_set
from carla_bridge.route_xml import parse_routes

MAX_TICKS = 4400  # Bench2Drive stops a route after 4000 ticks; the criteria end it by then
STATUSES = {"pending", "running", "done", "failed", "timed_out", "skipped"}
BUILTIN_IDS = [r.id for r in load_route_set("builtin")]

pytestmark = pytest.mark.slow


def make_agent(name: str):
    from takeover.agents import make_agent as make

    return make(name)


def drive(maps: MapLibrary, route: Route, agent_name: str) -> tuple[bool, list[str]]:
    sim = EmbeddedSimulator(SimConfig(), maps)
    agent = make_agent(agent_name)
    snap = sim.reset(route, 0)
    agent.reset(route, sim.map)
    for _ in range(MAX_TICKS):
        if sim.done:
            break
        snap = sim.step(agent.run_step(snap))
    return sim.done, [s.status for s in snap.scenarios]


@pytest.fixture(scope="module")
def builtin_routes() -> dict[str, Route]:
    maps = MapLibrary(use_carla_root=False)
    return {r.id: r for r in prepare_routes(load_route_set("builtin"), maps)}


@pytest.mark.parametrize("agent_name", ["autopilot", "expert"])
@pytest.mark.parametrize("route_id", BUILTIN_IDS)
def test_builtin_route_runs_to_an_end(builtin_routes, route_id, agent_name):
    done, statuses = drive(MapLibrary(use_carla_root=False), builtin_routes[route_id], agent_name)
    assert done
    assert set(statuses) <= STATUSES


@pytest.mark.parametrize("agent_name", ["autopilot", "expert"])
def test_dev_routes_run_to_an_end(shared_maps_dir, dev_routes_file, agent_name):
    maps = MapLibrary([shared_maps_dir], use_carla_root=False)
    for route in prepare_routes(parse_routes(dev_routes_file), maps):
        done, statuses = drive(maps, route, agent_name)
        assert done, route.id
        assert set(statuses) <= STATUSES, route.id
