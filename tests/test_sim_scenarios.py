"""Scenario framework: registry, trigger, statuses, and the built-in example scenarios on a dev route."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.embedded.scenarios import RUNNING, Scenario, register, registered_types
from carla_bridge.embedded.scenarios import runner as scenario_runner
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


def test_unimplemented_type_is_skipped_with_one_warning(maps, dev_routes, caplog, monkeypatch):
    # The warning is once per process: start from a process that has not warned yet.
    monkeypatch.setattr(scenario_runner, "_WARNED", set())
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


def test_keep_out_zone_removes_background_vehicles_but_not_scenario_ones_until_lifted(maps, dev_routes):
    route = first_of(dev_routes, "ParkedObstacleTwoWays")
    sim = sim_for(maps)
    sim.reset(route, 0)
    w = sim.world
    lane = w.graph.path_nodes(int(w.route_nodes[w.route_nodes >= 0][0]), 60.0)
    before = w.keep_out[lane].copy()  # the scenario's own zone may overlap
    bg = w.spawn_lane_vehicle(int(lane[10]), None, 0.0, ActorRole.BACKGROUND)
    own = w.spawn_lane_vehicle(int(lane[40]), None, 0.0, ActorRole.SCENARIO)
    zone = w.keep_out_background(lane)
    assert w.traffic.index_of(bg) < 0 and w.traffic.index_of(own) >= 0
    w.allow_background(zone)
    assert (w.keep_out[lane] == before).all()
    free = int(lane[np.flatnonzero(before == 0)[0]])
    again = w.spawn_lane_vehicle(free, None, 0.0, ActorRole.BACKGROUND)
    sim.step(Control(brake=1.0))
    assert w.traffic.index_of(again) >= 0  # lifted: background traffic may use the lane again


@pytest.mark.parametrize("type_name", ["ParkedObstacleTwoWays", "AccidentTwoWays"])
def test_two_ways_scenario_keeps_background_off_its_lanes_while_running(maps, dev_routes, type_name):
    route = first_of(dev_routes, type_name)
    sim = sim_for(maps, traffic=120)
    sim.reset(route, 0)
    w = sim.world
    tp = route.scenarios[0].trigger_point
    w.set_ego_state(tp.x, tp.y, np.radians(tp.yaw_deg), 0.0)
    zone_nodes = 0
    for _ in range(200):
        snap = sim.step(Control(brake=1.0))
        t = w.traffic
        background = t.role == int(ActorRole.BACKGROUND)
        assert not (w.keep_out[t.node[background]] > 0).any()
        zone_nodes = max(zone_nodes, int(np.count_nonzero(w.keep_out)))
    assert snap.scenarios[0].status == "running"
    assert zone_nodes > 100  # the ego lane before the obstacle and the opposite lane (0.5-1 m nodes)
    sim._scenarios.slots[0].plugin.cleanup(w)  # the scenario ends: its zones are lifted
    assert not w.keep_out.any()


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
