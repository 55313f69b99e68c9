"""Scenario framework: registry, trigger, statuses, and the built-in example scenarios on a dev route."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.embedded.scenarios import RUNNING, Scenario, register, registered_types
from carla_bridge.embedded.scenarios.base import _REGISTRY
from carla_bridge.maps import MapLibrary
from carla_bridge.route import ScenarioSpec, TriggerPoint
from carla_bridge.route_xml import parse_routes
from carla_bridge.snapshot import ActorKind, ActorRole, Control


@pytest.fixture(scope="module")
def maps(shared_maps_dir):
    return MapLibrary([shared_maps_dir], use_carla_root=False)


@pytest.fixture(scope="module")
def dev_routes(dev_routes_file):
    return {r.id: r for r in parse_routes(dev_routes_file)}


def sim_for(maps, traffic: int = 0) -> EmbeddedSimulator:
    cfg = SimConfig()
    cfg.scoring = False
    cfg.walkers.enabled = False
    cfg.traffic.count = traffic
    return EmbeddedSimulator(cfg, maps)


def first_of(routes, type_name):
    return next(r for r in routes.values() if r.scenarios and r.scenarios[0].type == type_name)


def test_builtin_types_are_registered():
    for name in ("HardBreakRoute", "ConstructionObstacle", "ParkedObstacleTwoWays"):
        assert name in registered_types()


def test_unimplemented_type_is_skipped_with_one_warning(maps, dev_routes, caplog):
    route = first_of(dev_routes, "AccidentTwoWays")
    spec = route.scenarios[0]
    fake = ScenarioSpec("NoSuch_1", "NoSuchScenarioType", spec.trigger_point)
    route.scenarios = [fake, ScenarioSpec("NoSuch_2", "NoSuchScenarioType", spec.trigger_point)]
    sim = sim_for(maps)
    with caplog.at_level(logging.WARNING):
        snap = sim.reset(route, 0)
        snap = sim.reset(route, 0)
    assert [s.status for s in snap.scenarios] == ["skipped", "skipped"]
    assert sum("NoSuchScenarioType" in r.message for r in caplog.records) == 1
    route.scenarios = [spec]


def test_construction_obstacle_blocks_the_route_lane_ahead(maps, dev_routes):
    route = first_of(dev_routes, "ConstructionObstacle")
    sim = sim_for(maps, traffic=20)
    snap = sim.reset(route, 0)
    info = snap.scenarios[0]
    assert info.status == "pending" and len(info.actor_ids) >= 5
    a = snap.actors
    props = np.isin(a.id, info.actor_ids)
    assert (a.kind[props] == int(ActorKind.STATIC)).all()
    # the props sit on the dense route about `distance` past the trigger point
    w = sim.world
    tp = route.scenarios[0].trigger_point
    s_trig = float(w.dense.s[w.route_index_near((tp.x, tp.y))])
    s_props = [float(w.dense.s[w.route_index_near(xy)]) for xy in a.xyz[props, :2]]
    dist = route.scenarios[0].value("distance", 100.0)
    assert s_trig + dist - 25.0 < np.median(s_props) < s_trig + dist + 10.0
    # and no background vehicle sits in the closed stretch
    bg = a.role == int(ActorRole.BACKGROUND)
    d = np.hypot(*(a.xyz[bg, None, :2] - a.xyz[None, props, :2]).transpose(2, 0, 1))
    assert d.size == 0 or d.min() > 5.0


def test_hard_break_route_triggers_brakes_and_finishes(maps, dev_routes):
    route = first_of(dev_routes, "HardBreakRoute")
    sim = sim_for(maps)
    snap = sim.reset(route, 0)
    assert snap.scenarios[0].status == "pending"
    w = sim.world
    tp = route.scenarios[0].trigger_point
    w.set_ego_state(tp.x, tp.y, np.radians(tp.yaw_deg), 6.0)
    statuses, lead_speeds = [], []
    for _ in range(400):
        snap = sim.step(Control(brake=1.0))
        statuses.append(snap.scenarios[0].status)
        ids = snap.scenarios[0].actor_ids
        if ids:
            lead_speeds.append(float(snap.actors.speed[snap.actors.id == ids[0]][0]))
    assert "running" in statuses and statuses[-1] == "done"
    # the lead drove, was braked to a standstill, then drove on
    peak = max(lead_speeds)
    assert peak > 3.0 and min(lead_speeds[20:]) == 0.0 and lead_speeds[-1] > 1.0


def test_parked_obstacle_two_ways_runs_an_oncoming_flow(maps, dev_routes):
    route = first_of(dev_routes, "ParkedObstacleTwoWays")
    sim = sim_for(maps)
    snap = sim.reset(route, 0)
    parked = snap.scenarios[0].actor_ids[0]
    assert snap.actors.role[snap.actors.id == parked][0] == int(ActorRole.PARKED)
    w = sim.world
    tp = route.scenarios[0].trigger_point
    w.set_ego_state(tp.x, tp.y, np.radians(tp.yaw_deg), 0.0)
    flow_seen = set()
    for _ in range(300):
        snap = sim.step(Control(brake=1.0))
        scen = snap.actors.role == int(ActorRole.SCENARIO)
        flow_seen |= set(snap.actors.id[scen].tolist())
    assert snap.scenarios[0].status == "running"
    assert len(flow_seen) >= 2  # oncoming vehicles kept coming
    # they drive against the ego's heading
    scen = snap.actors.role == int(ActorRole.SCENARIO)
    yaw_diff = np.cos(snap.actors.yaw[scen] - np.radians(tp.yaw_deg))
    assert (yaw_diff < -0.5).all()


def test_custom_scenario_times_out(maps, dev_routes):
    @register("TestNeverEnds")
    class NeverEnds(Scenario):
        trigger_distance_m = 1000.0
        timeout_s = 1.0

        def tick(self, world):
            return RUNNING

    try:
        route = first_of(dev_routes, "HardBreakRoute")
        keep = route.scenarios
        tp = keep[0].trigger_point
        route.scenarios = [ScenarioSpec("T_1", "TestNeverEnds", TriggerPoint(tp.x, tp.y, tp.z, tp.yaw_deg))]
        sim = sim_for(maps)
        sim.reset(route, 0)
        statuses = [sim.step(Control(brake=1.0)).scenarios[0].status for _ in range(40)]
        assert statuses[0] == "running" and statuses[-1] == "timed_out"
    finally:
        _REGISTRY.pop("TestNeverEnds", None)
        route.scenarios = keep
