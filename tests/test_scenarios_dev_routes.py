"""Bench2Drive scenario types on the real dev routes (CARLA towns): layout and behaviour at the trigger.

Skips cleanly without ../shared (conftest fixtures). The ego moves on rails (see test_scenarios_builtin).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_scenarios_builtin import Rail, light_state, make_sim, route_frame, statuses

from carla_bridge.embedded.scenarios.control_loss import NOISE_DURATION_S, SPOT_DISTANCE_RANGES_M
from carla_bridge.embedded.scenarios.emergency import EV_BLOCKED_LIMIT_S
from carla_bridge.embedded.scenarios.junctions import GREEN_LIGHT_DELAY_S
from carla_bridge.maps import MapLibrary
from carla_bridge.route import Route
from carla_bridge.route_planner import prepare_routes
from carla_bridge.route_xml import parse_routes
from carla_bridge.snapshot import ActorRole, TrafficLightState

DT = 0.05


@pytest.fixture(scope="module")
def maps(shared_maps_dir) -> MapLibrary:
    return MapLibrary([shared_maps_dir], use_carla_root=False)


@pytest.fixture(scope="module")
def dev(maps, dev_routes_file) -> dict[str, Route]:
    return {r.id: r for r in prepare_routes(parse_routes(dev_routes_file), maps)}


def test_accident_two_ways_on_town04_blocks_the_route_lane(maps, dev):
    route = dev["25727"]
    rail = Rail(make_sim(maps, traffic=20), route)
    rows = rail.scenario_actors()
    assert rows.sum() == 3
    s_block = rail.trigger_s + route.scenarios[0].value("distance")
    for xy in rail.snap.actors.xyz[rows, :2]:
        s, lat = route_frame(rail.w, xy)
        assert s_block - 1.5 <= s <= s_block + 17.5 and 0.9 < lat < 1.75
    rail.place(rail.trigger_s - 5.0, 10.0)
    assert statuses(rail.run(3, 10.0))[-1] == "running"
    rail.place(s_block + 40.0, 10.0)
    assert statuses(rail.run(2, 10.0))[-1] == "done"


def test_yield_to_emergency_vehicle_on_the_highway(maps, dev):
    route = dev["25538"]
    rail = Rail(make_sim(maps), route)
    rail.place(rail.trigger_s - 2.0, 8.0)
    snaps = rail.run(10, 8.0)
    ev = snaps[-1].scenarios[0].actor_ids[0]
    a = snaps[-1].actors
    assert a.role[a.id == ev][0] == int(ActorRole.EMERGENCY)
    g, t = rail.w.graph, rail.w.traffic
    ev_node = int(t.node[t.index_of(ev)])
    ego_node = int(rail.w.route_nodes[rail.w.route_index])
    assert g.lane_id[ev_node] == g.lane_id[ego_node]  # in the ego's lane (the highway curves here)
    assert np.hypot(*(a.xyz[a.id == ev, :2][0] - rail.w.ego_xy)) > 15.0  # some way behind
    # the ego moves one lane to the left (lane 5 beside lane 6) and lets it pass
    snaps = rail.run(int(30.0 / DT), 5.0, right_m=-3.5)
    sts = statuses(snaps)
    assert "failed" not in sts and sts[-1] == "done"
    assert rail.sim._scenarios.slots[0].plugin.blocked_s < EV_BLOCKED_LIMIT_S


@pytest.mark.parametrize(
    ("route_id", "side", "into_exit"),
    [("334", "opposite", False), ("28147", "right", True), ("24948", "left", True)],
)
def test_junction_flows_come_from_the_scenario_side(maps, dev, route_id, side, into_exit):
    route = dev[route_id]
    rail = Rail(make_sim(maps), route)
    plugin = rail.sim._scenarios.slots[0].plugin
    j = plugin.junction
    assert plugin.source.side == side
    g = rail.w.graph
    ego_light = j.ego_approach.light_index
    rail.place(max(rail.trigger_s - 15.0, 0.0), 0.0)
    seen, on_exit_road, crossed = set(), set(), set()
    conflicts = set(g.conflicts(j.ego_connector).tolist()) | {j.ego_connector}
    first_state = None
    for snap in rail.ticks(int((GREEN_LIGHT_DELAY_S + 10.0) / DT), 0.0):
        if ego_light >= 0 and first_state is None and snap.scenarios[0].status == "running":
            first_state = light_state(snap, int(rail.w.signals.layout.light_ids[ego_light]))
        t = rail.w.traffic
        for row in np.flatnonzero(t.role == int(ActorRole.SCENARIO)):
            seg = int(g.seg[t.node[row]])
            seen.add(int(t.id[row]))
            if seg in conflicts or seg == plugin.connector:
                crossed.add(int(t.id[row]))
            if int(g.seg_road[seg]) == int(g.seg_road[j.ego_exit_seg]):
                on_exit_road.add(int(t.id[row]))
    assert len(seen) >= 3 and len(crossed) >= 2
    assert (len(on_exit_road) >= 2) == into_exit
    if ego_light >= 0:
        lid = int(rail.w.signals.layout.light_ids[ego_light])
        assert first_state == TrafficLightState.RED
        assert light_state(rail.snap, lid) == TrafficLightState.GREEN


def test_merger_into_slow_traffic_flow_runs_between_its_locations(maps, dev):
    route = dev["26023"]
    spec = route.scenarios[0]
    rail = Rail(make_sim(maps), route)
    plugin = rail.sim._scenarios.slots[0].plugin
    g = rail.w.graph
    start = np.array(
        [spec.value("start_actor_flow", attribute="x"), spec.value("start_actor_flow", attribute="y")]
    )
    end = np.array([spec.value("end_actor_flow", attribute="x"), spec.value("end_actor_flow", attribute="y")])
    assert np.hypot(*(g.xy[plugin.nodes[0]] - start)) < 3.0
    assert np.hypot(*(g.xy[plugin.nodes[-1]] - end)) < 3.0
    rail.place(rail.trigger_s - 5.0, 0.0)
    speeds = []
    for snap in rail.ticks(200, 0.0):
        a = snap.actors
        speeds += a.speed[a.role == int(ActorRole.SCENARIO)].tolist()
    assert len(speeds) > 0 and np.median(speeds) == pytest.approx(spec.value("flow_speed"), abs=1.5)
    rail.place(plugin.end_s + 5.0, 5.0)
    assert statuses(rail.run(2, 5.0))[-1] == "done"
    assert not (rail.snap.actors.role == int(ActorRole.SCENARIO)).any()


@pytest.mark.parametrize("route_id", ["27870", "25051", "24944", "25134"])
def test_turns_with_cross_traffic_on_carla_towns(maps, dev, route_id):
    rail = Rail(make_sim(maps), dev[route_id])
    plugin = rail.sim._scenarios.slots[0].plugin
    g = rail.w.graph
    if plugin.cross is None:
        pytest.skip(f"route {route_id}: no lane crosses the ego's way at this junction")
    conflicts = set(g.conflicts(plugin.junction.ego_connector).tolist())
    rail.place(max(rail.trigger_s - 15.0, 0.0), 0.0)
    crossed = set()
    for _ in rail.ticks(int(60.0 / DT), 0.0):  # a whole light cycle: the platoon obeys the lights
        t = rail.w.traffic
        for row in np.flatnonzero(t.role == int(ActorRole.SCENARIO)):
            if int(g.seg[t.node[row]]) in conflicts:
                crossed.add(int(t.id[row]))
    assert len(crossed) >= 2
    rail.place(float(rail.w.dense.s[plugin.junction.exit_index]) + 25.0, 5.0)
    assert statuses(rail.run(2, 5.0))[-1] == "done"


def test_sequential_lane_change_puts_platoons_in_the_target_lanes(maps, dev):
    route = dev["24207"]
    rail = Rail(make_sim(maps), route)
    plugin = rail.sim._scenarios.slots[0].plugin
    assert len(plugin.targets) == 2  # the route changes lanes twice
    rail.place(rail.trigger_s, 6.0)
    rail.run(20, 6.0)
    a = rail.snap.actors
    flow = a.role == int(ActorRole.SCENARIO)
    assert flow.sum() == 6
    lats = sorted(route_frame(rail.w, xy)[1] for xy in a.xyz[flow, :2])
    assert lats[0] < -2.5  # in lanes left of the ego's current one
    rail.place(plugin.end_s + 5.0, 6.0)
    assert statuses(rail.run(2, 6.0))[-1] == "done"


def test_control_loss_on_town07_perturbs_three_times(maps, dev):
    route = dev["24758"]
    rail = Rail(make_sim(maps), route)
    rail.place(rail.trigger_s - 2.0, 8.0)
    snaps = rail.run(int(15.0 / DT), 8.0)
    plugin = rail.sim._scenarios.slots[0].plugin
    expected = len(SPOT_DISTANCE_RANGES_M) * NOISE_DURATION_S / DT
    assert plugin.perturbed_ticks == pytest.approx(expected, abs=3)
    assert statuses(snaps)[-1] == "done"
