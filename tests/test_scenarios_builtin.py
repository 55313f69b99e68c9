"""Bench2Drive scenario types on the built-in town's routes: actors appear where they should when the
ego reaches the trigger, behave as scripted, and the status goes pending -> running -> done.

The ego is moved "on rails" along the dense route (teleported at a set speed every tick) so each test
controls exactly where the ego is; traffic and walkers are off unless a test needs them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.embedded.scenarios.control_loss import NOISE_DURATION_S, SPOT_DISTANCE_RANGES_M
from carla_bridge.embedded.scenarios.emergency import EV_BLOCKED_LIMIT_S
from carla_bridge.embedded.scenarios.invading_turn import (
    INVASION_RAMP_M,
    MIN_SPAWN_AHEAD_OF_EGO_M,
    invasion_shift,
)
from carla_bridge.embedded.scenarios.junctions import ADVERSARY_SPEED_MPS, GREEN_LIGHT_DELAY_S, RED_HOLD_S
from carla_bridge.maps import MapLibrary
from carla_bridge.route import Route, ScenarioSpec
from carla_bridge.route_planner import prepare_routes
from carla_bridge.route_sets import load_route_set
from carla_bridge.snapshot import ActorKind, ActorRole, Control, TrafficLightState, WorldSnapshot

DT = 0.05


@pytest.fixture(scope="module")
def maps() -> MapLibrary:
    return MapLibrary(use_carla_root=False)


@pytest.fixture(scope="module")
def routes(maps) -> dict[str, Route]:
    return {r.id: r for r in prepare_routes(load_route_set("builtin"), maps)}


def make_sim(maps, traffic: int = 0) -> EmbeddedSimulator:
    cfg = SimConfig()
    cfg.scoring = False
    cfg.walkers.enabled = False
    cfg.traffic.count = traffic
    return EmbeddedSimulator(cfg, maps)


class Rail:
    """Drives the ego along the dense route at a set speed by teleporting it every tick."""

    def __init__(self, sim: EmbeddedSimulator, route: Route, seed: int = 0) -> None:
        self.sim = sim
        self.route = route
        self.snap: WorldSnapshot = sim.reset(route, seed)
        self.w = sim.world
        self.s = 0.0

    @property
    def trigger_s(self) -> float:
        tp = self.route.scenarios[0].trigger_point
        return float(self.w.dense.s[self.w.route_index_near((tp.x, tp.y))])

    def place(self, s: float, speed: float, right_m: float = 0.0) -> None:
        """Ego at route arc length `s` (interpolated between dense points), `right_m` to its right."""
        d = self.w.dense
        s = min(max(s, 0.0), float(d.s[-1]))
        yaw = float(np.interp(s, d.s, np.unwrap(d.yaw)))
        x = float(np.interp(s, d.s, d.xyz[:, 0])) - math.sin(yaw) * right_m
        y = float(np.interp(s, d.s, d.xyz[:, 1])) + math.cos(yaw) * right_m
        self.w.set_ego_state(x, y, yaw, speed)
        self.s = s

    def ticks(self, ticks: int, speed: float, right_m: float = 0.0, stop_s: float = math.inf):
        """Advance tick by tick (a generator: the world is live at each yielded snapshot)."""
        for _ in range(ticks):
            s = min(self.s + speed * DT, stop_s, float(self.w.dense.s[-1]))
            self.s = s
            self.place(s, speed if s < stop_s else 0.0, right_m)
            self.snap = self.sim.step(Control())
            yield self.snap

    def run(
        self, ticks: int, speed: float, right_m: float = 0.0, stop_s: float = math.inf
    ) -> list[WorldSnapshot]:
        return list(self.ticks(ticks, speed, right_m, stop_s))

    def info(self):
        return self.snap.scenarios[0]

    def scenario_actors(self) -> np.ndarray:
        """Row mask of the scenario's listed actors present in the snapshot."""
        return np.isin(self.snap.actors.id, self.info().actor_ids)


def route_frame(w, xy: np.ndarray) -> tuple[float, float]:
    """(arc length, lateral to the right) of a point w.r.t. the dense route."""
    i = w.route_index_near(xy)
    yaw = float(w.dense.yaw[i])
    d = np.asarray(xy) - w.dense.xyz[i, :2]
    return float(w.dense.s[i]), float(-d[0] * math.sin(yaw) + d[1] * math.cos(yaw))


def statuses(snaps: list[WorldSnapshot]) -> list[str]:
    return [s.scenarios[0].status for s in snaps]


def with_scenario(route: Route, type_name: str, **params: str) -> Route:
    """A copy of `route` whose only scenario is `type_name` at the same trigger point."""
    spec = route.scenarios[0]
    parameters = {k: {"value": v} for k, v in params.items()}
    new = ScenarioSpec(f"{type_name}_1", type_name, spec.trigger_point, parameters)
    return Route(route.id, route.town, route.keypoints, [new], route.weathers, route.attributes, route.dense)


# ---------------------------------------------------------------------- overtaking
def test_accident_blocks_the_ego_lane_ahead_and_clears_once_passed(maps, routes):
    rail = Rail(make_sim(maps, traffic=20), routes["1000"])
    w, spec = rail.w, routes["1000"].scenarios[0]
    assert rail.info().status == "pending" and len(rail.info().actor_ids) == 3
    a = rail.snap.actors
    rows = rail.scenario_actors()
    assert (a.role[rows] == int(ActorRole.PARKED)).all()
    assert "vehicle.dodge.charger_police_2020" in [a.type_id[i] for i in np.flatnonzero(rows)]
    frames = [route_frame(w, xy) for xy in a.xyz[rows, :2]]
    s_first = rail.trigger_s + spec.value("distance")
    for s, lat in frames:  # in the ego's lane, shifted right, 0-16 m past `distance`
        assert s_first - 1.5 <= s <= s_first + 17.5
        assert 0.9 < lat < 1.75
    rail.place(rail.trigger_s - 5.0, 8.0)
    snaps = rail.run(40, 8.0)
    assert statuses(snaps)[-1] == "running"
    # background traffic is kept off the blocked stretch of the ego's lane
    t = rail.w.traffic
    bg = t.role == int(ActorRole.BACKGROUND)
    stretch = set(
        rail.w.route_nodes[
            rail.w.route_index_at_s(s_first - 40.0) : rail.w.route_index_at_s(s_first + 36.0)
        ].tolist()
    )
    assert not any(int(n) in stretch for n in t.node[bg])
    rail.place(max(s for s, _ in frames) + 20.0, 8.0)
    rail.run(2, 8.0)
    assert rail.info().status == "done"
    assert not np.isin(rail.snap.actors.id, rail.info().actor_ids).any()  # removed


def test_accident_two_ways_runs_an_oncoming_flow_on_the_opposite_lane(maps, routes):
    route = routes["1001"]
    rail = Rail(make_sim(maps), route)
    rail.place(rail.trigger_s - 15.0, 0.0)
    snaps = rail.run(200, 0.0)
    assert statuses(snaps)[-1] == "running"
    a = rail.snap.actors
    flow = (a.role == int(ActorRole.SCENARIO)) & (a.kind == int(ActorKind.VEHICLE))
    assert flow.sum() >= 2
    ego_yaw = rail.snap.ego.pose.yaw
    assert (np.cos(a.yaw[flow] - ego_yaw) < -0.9).all()  # driving towards the ego
    lats = [route_frame(rail.w, xy)[1] for xy in a.xyz[flow, :2]]
    assert all(-5.0 < lat < -2.0 for lat in lats)  # one lane to the left of the route
    assert (a.speed[flow] > 1.0).any()


def test_hazard_at_side_lane_bicycles_ride_slowly_at_the_right_edge(maps, routes):
    route = with_scenario(routes["1000"], "HazardAtSideLane", distance="40", bicycle_speed="10")
    rail = Rail(make_sim(maps), route)
    rail.place(rail.trigger_s - 10.0, 0.0)
    rail.run(100, 0.0)
    a = rail.snap.actors
    rows = rail.scenario_actors()
    assert (a.kind[rows] == int(ActorKind.BICYCLE)).sum() == 2
    assert np.allclose(a.speed[rows], 10.0 / 3.6, atol=0.05)
    for xy in a.xyz[rows, :2]:
        s, lat = route_frame(rail.w, xy)
        assert 0.7 < lat < 1.3 and s > rail.trigger_s + 40.0
    rail.place(rail.trigger_s + 200.0, 8.0)
    rail.run(2, 8.0)
    assert rail.info().status == "done"


# ---------------------------------------------------------------------- crossings
def test_pedestrian_crossing_group_walks_across_the_road_in_front_of_the_ego(maps, routes):
    rail = Rail(make_sim(maps), routes["1010"])
    rows = rail.scenario_actors()
    a = rail.snap.actors
    assert rows.sum() == 3 and (a.kind[rows] == int(ActorKind.WALKER)).all()
    start_lat = [route_frame(rail.w, xy)[1] for xy in a.xyz[rows, :2]]
    assert all(lat > 2.0 for lat in start_lat)  # on the right sidewalk
    ids = list(rail.info().actor_ids)
    rail.place(rail.trigger_s - 10.0, 8.0)
    crossing_s = None
    sides: dict[int, list[float]] = {i: [] for i in ids}
    for snap in rail.run(400, 8.0, stop_s=rail.trigger_s + 20.0):
        for i in ids:
            hit = snap.actors.id == i
            if hit.any():
                s, lat = route_frame(rail.w, snap.actors.xyz[hit, :2][0])
                sides[i].append(lat)
                crossing_s = s
    for lats in sides.values():
        assert min(lats) < -2.0  # every walker reached the far side of the route
    assert crossing_s is not None and crossing_s > rail.trigger_s
    rail.run(60, 8.0)
    assert rail.info().status == "done"


def test_dynamic_object_crossing_walker_emerges_from_behind_the_blocker(maps, routes):
    route = routes["1009"]
    rail = Rail(make_sim(maps), route)
    a = rail.snap.actors
    rows = rail.scenario_actors()
    kinds = sorted(a.kind[rows].tolist())
    assert kinds == sorted([int(ActorKind.STATIC), int(ActorKind.WALKER)])
    blocker = a.xyz[rows & (a.kind == int(ActorKind.STATIC)), :2][0]
    walker_id = int(a.id[rows & (a.kind == int(ActorKind.WALKER))][0])
    s_b, lat_b = route_frame(rail.w, blocker)
    s_w, lat_w = route_frame(rail.w, a.xyz[a.id == walker_id, :2][0])
    assert lat_b > 2.0 and s_w > s_b and abs(lat_w - lat_b) < 0.5  # hidden just beyond it
    rail.place(rail.trigger_s - 10.0, 8.0)
    lats, ego_gap = [], []
    for snap in rail.run(300, 8.0, stop_s=s_w - 8.0):
        hit = snap.actors.id == walker_id
        if hit.any():
            lats.append(route_frame(rail.w, snap.actors.xyz[hit, :2][0])[1])
            ego_gap.append(s_w - rail.s)
    moving = np.flatnonzero(np.diff(lats) < -1e-3)
    assert moving.size > 0 and ego_gap[moving[0]] < 2.1 * 8.0 + 2.0  # it started late, close ahead
    assert min(lats) < 0.0  # it crossed the ego's lane centre
    rail.run(80, 8.0)
    assert rail.info().status == "done"
    assert not rail.scenario_actors().any()


# ---------------------------------------------------------------------- cut-ins
def test_static_cut_in_adversary_pulls_into_the_ego_lane_ahead(maps, routes):
    route = routes["1011"]
    rail = Rail(make_sim(maps), route)
    rows = rail.scenario_actors()
    assert rows.sum() == 6
    lats = [route_frame(rail.w, xy)[1] for xy in rail.snap.actors.xyz[rows, :2]]
    assert all(2.5 < lat < 4.5 for lat in lats)  # a queue in the right neighbour lane
    plugin = rail.sim._scenarios.slots[0].plugin
    rail.place(rail.trigger_s - 10.0, 9.0)
    adversary = None
    for snap in rail.run(300, 9.0, stop_s=plugin.adversary_s - 10.0):  # the ego brakes before it
        a = snap.actors
        for i in np.flatnonzero(np.isin(a.id, snap.scenarios[0].actor_ids)):
            s, lat = route_frame(rail.w, a.xyz[i, :2])
            if abs(lat) < 0.5 and a.speed[i] > 1.0:
                adversary = (s - rail.s, a.speed[i])
        if adversary:
            break
    assert adversary is not None and adversary[0] > 0.0  # in the ego's lane, ahead of it


# ---------------------------------------------------------------------- junctions
def light_state(snap: WorldSnapshot, light_id: int) -> TrafficLightState | None:
    return next((lt.state for lt in snap.traffic_lights if lt.id == light_id), None)


def test_signalized_left_turn_oncoming_flow_crosses_the_ego_path_and_lights_freeze(maps, routes):
    from carla_bridge.embedded.scenarios.junction_layout import crossing_point

    route = routes["1005"]
    rail = Rail(make_sim(maps), route)
    plugin = rail.sim._scenarios.slots[0].plugin
    j = plugin.junction
    assert j.turn == "left" and plugin.source.side == "opposite"
    ego_light = int(rail.w.signals.layout.light_ids[j.ego_approach.light_index])
    cross = crossing_point(rail.w.graph, j.ego_connector, plugin.connector)
    rail.place(rail.trigger_s - 15.0, 0.0)
    rail.run(5, 0.0)
    assert rail.info().status == "running"
    assert light_state(rail.snap, ego_light) == TrafficLightState.RED
    near_cross = 0
    ego_yaw = rail.snap.ego.pose.yaw
    for snap in rail.run(int((GREEN_LIGHT_DELAY_S + 10.0) / DT), 0.0):
        a = snap.actors
        flow = a.role == int(ActorRole.SCENARIO)
        near_cross += int((np.hypot(*(a.xyz[flow, :2] - cross).T) < 2.0).any())
    assert light_state(rail.snap, ego_light) == TrafficLightState.GREEN
    assert near_cross > 0  # flow vehicles drove over the ego's left-turn path
    a = rail.snap.actors
    upstream = (a.role == int(ActorRole.SCENARIO)) & (np.cos(a.yaw - ego_yaw) < -0.9)
    assert upstream.any()  # and more keep coming from the opposite side
    flow_ids = set(a.id[a.role == int(ActorRole.SCENARIO)].tolist())
    assert flow_ids == set(rail.info().actor_ids)  # ScenarioInfo lists the live flow vehicles
    rail.place(float(rail.w.dense.s[j.exit_index]) + 25.0, 8.0)
    rail.run(2, 8.0)
    assert rail.info().status == "done"
    assert not (rail.snap.actors.role == int(ActorRole.SCENARIO)).any()
    assert not rail.w.signals._forced_state[rail.w.signals.index_of(ego_light)] >= 0


def test_signalized_right_turn_flow_comes_from_the_left_into_the_ego_exit(maps, routes):
    route = routes["1006"]
    rail = Rail(make_sim(maps), route)
    plugin = rail.sim._scenarios.slots[0].plugin
    j = plugin.junction
    assert j.turn == "right" and plugin.source.side == "left"
    g = rail.w.graph
    exit_road = int(g.seg_road[j.ego_exit_seg])
    rail.place(rail.trigger_s - 15.0, 0.0)
    reached_exit = set()
    for snap in rail.ticks(300, 0.0):
        a = snap.actors
        for i in np.flatnonzero(a.role == int(ActorRole.SCENARIO)):
            row = rail.w.traffic.index_of(int(a.id[i]))
            if row >= 0 and int(g.seg_road[g.seg[rail.w.traffic.node[row]]]) == exit_road:
                reached_exit.add(int(a.id[i]))
    assert len(reached_exit) >= 2


def test_opposite_vehicle_running_red_light_crosses_fast_when_the_ego_comes(maps, routes):
    route = routes["1012"]
    rail = Rail(make_sim(maps), route)
    plugin = rail.sim._scenarios.slots[0].plugin
    rail.place(rail.trigger_s - 15.0, 8.0)
    rail.run(3, 8.0)
    adv = rail.info().actor_ids[0]
    a = rail.snap.actors
    assert a.role[a.id == adv][0] == int(ActorRole.EMERGENCY)
    src_light = int(rail.w.signals.layout.light_ids[plugin.source.light_index])
    assert light_state(rail.snap, src_light) == TrafficLightState.RED
    speeds, dmin = [], math.inf
    # the ego stops 12 m before the crossing point: inside the 2.2 s trigger reach, out of the way
    stop = float(rail.w.dense.s[rail.w.route_index_near(plugin.collision_xy)]) - 12.0
    for snap in rail.run(200, 8.0, stop_s=stop):
        hit = snap.actors.id == adv
        if hit.any():
            speeds.append(float(snap.actors.speed[hit][0]))
            dmin = min(dmin, float(np.hypot(*(snap.actors.xyz[hit, :2][0] - plugin.collision_xy))))
    assert max(speeds) == pytest.approx(ADVERSARY_SPEED_MPS, abs=0.01)
    assert speeds[0] == 0.0  # it waited for the ego
    assert dmin < 1.5  # and drove through the ego's crossing point
    assert not (rail.snap.actors.id == adv).any()  # gone at the end of its path


def test_encounter_red_light_turns_the_ego_light_red_then_green(maps, routes):
    route = routes["1017"]
    rail = Rail(make_sim(maps), route)
    plugin = rail.sim._scenarios.slots[0].plugin
    ego_light = int(rail.w.signals.layout.light_ids[plugin.junction.ego_approach.light_index])
    rail.place(rail.trigger_s - 15.0, 0.0)
    snaps = rail.run(int((RED_HOLD_S + 2.0) / DT), 0.0)
    assert statuses(snaps)[0] == "running"  # triggered on the first tick
    states = [light_state(s, ego_light) for s in snaps]
    assert states[0] == TrafficLightState.RED
    red_ticks = sum(1 for s in states if s == TrafficLightState.RED)
    assert red_ticks == pytest.approx(RED_HOLD_S / DT, abs=3)
    assert states[-1] == TrafficLightState.GREEN


def test_encounter_green_light_holds_the_ego_light_green(maps, routes):
    route = routes["1018"]
    rail = Rail(make_sim(maps), route)
    plugin = rail.sim._scenarios.slots[0].plugin
    ego_light = int(rail.w.signals.layout.light_ids[plugin.junction.ego_approach.light_index])
    rail.place(rail.trigger_s - 15.0, 0.0)
    states = [light_state(s, ego_light) for s in rail.run(600, 0.0)]
    assert all(s == TrafficLightState.GREEN for s in states)


@pytest.mark.parametrize("route_id", ["1016", "1019"])
def test_cross_traffic_turns_send_a_platoon_across_the_ego_path(maps, routes, route_id):
    rail = Rail(make_sim(maps), routes[route_id])
    plugin = rail.sim._scenarios.slots[0].plugin
    assert plugin.cross is not None and plugin.cross.side in ("left", "right")
    conflicts = set(rail.w.graph.conflicts(plugin.junction.ego_connector).tolist())
    rail.place(rail.trigger_s - 15.0, 0.0)
    crossed, seen = set(), set()
    for _ in rail.ticks(500, 0.0):
        t = rail.w.traffic
        for row in np.flatnonzero(t.role == int(ActorRole.SCENARIO)):
            seen.add(int(t.id[row]))
            if int(rail.w.graph.seg[t.node[row]]) in conflicts:
                crossed.add(int(t.id[row]))
    assert 2 <= len(seen) <= 4 and len(crossed) >= 2


# ---------------------------------------------------------------------- give way
def test_yield_to_emergency_vehicle_fails_when_the_ego_keeps_blocking(maps, routes):
    rail = Rail(make_sim(maps), routes["1015"])
    rail.place(rail.trigger_s - 3.0, 6.0)
    snaps = rail.run(int((EV_BLOCKED_LIMIT_S + 20.0) / DT), 6.0)
    ev = snaps[5].scenarios[0].actor_ids[0]
    a = snaps[5].actors
    assert a.role[a.id == ev][0] == int(ActorRole.EMERGENCY)
    s_ev, lat_ev = route_frame(rail.w, a.xyz[a.id == ev, :2][0])
    assert abs(lat_ev) < 0.5 and 20.0 < snaps[5].route.completed_m - s_ev < 40.0  # `distance` behind
    assert "failed" in statuses(snaps)


def test_yield_to_emergency_vehicle_done_when_the_ego_moves_aside(maps, routes):
    rail = Rail(make_sim(maps), routes["1015"])
    rail.place(rail.trigger_s - 3.0, 6.0)
    rail.run(20, 6.0)
    snaps = rail.run(int(40.0 / DT), 4.0, right_m=3.5)  # one lane to the right, slower
    sts = statuses(snaps)
    assert "failed" not in sts and sts[-1] == "done"
    plugin = rail.sim._scenarios.slots[0].plugin
    assert plugin.blocked_s < EV_BLOCKED_LIMIT_S


def test_invading_turn_oncoming_cars_cut_into_the_ego_lane_by_the_offset(maps, routes):
    route = routes["1014"]
    spec = route.scenarios[0]
    rail = Rail(make_sim(maps), route)
    rail.place(rail.trigger_s - 15.0, 0.0)
    rail.run(60, 0.0)
    a = rail.snap.actors
    rows = rail.scenario_actors()
    assert rows.sum() >= 1
    width = float(rail.w.graph.width[rail.w.route_nodes[rail.w.route_index]])
    offset = spec.value("offset")
    plugin = rail.sim._scenarios.slots[0].plugin
    checked = 0
    for i in np.flatnonzero(rows):
        s, lat = route_frame(rail.w, a.xyz[i, :2])
        if s > plugin.source_s - INVASION_RAMP_M - 5.0:
            continue  # still steering into its invading line near the source
        checked += 1
        # from the ego's lane centre: the opposite lane centre is one width left, shifted back by `shift`
        shift = invasion_shift(width, float(a.extent[i, 1]), offset)
        assert lat == pytest.approx(-width + shift, abs=0.25)
        invasion = width / 2.0 - (abs(lat) - float(a.extent[i, 1]))
        assert invasion == pytest.approx(offset * width, abs=0.25)
    assert checked >= 1


def test_invading_cars_stop_for_an_ego_in_the_lane_centre_but_pass_a_ego_keeping_right(maps, routes):
    route = routes["1014"]
    results = {}
    # offset 0.3 of a 3.5 m lane: the invaders' near sides reach 0.7 m left of the ego lane centre,
    # so an ego (half width 1.06 m) 0.65 m right of the centre clears them and stays in its lane
    for right in (0.0, 0.65):
        rail = Rail(make_sim(maps), route)
        rail.place(rail.trigger_s + 10.0, 0.0, right_m=right)
        rail.run(400, 0.0, right_m=right, stop_s=rail.trigger_s + 10.0)
        a = rail.snap.actors
        rows = rail.scenario_actors()
        results[right] = float(a.speed[rows].min()) if rows.any() else math.inf
    assert results[0.0] == 0.0  # an invader waits in front of the centred ego
    assert results[0.65] > 1.0  # they all keep driving past the ego at the right edge


def test_invading_turn_spawns_invaders_far_ahead_and_keeps_background_off_both_lanes(maps, routes):
    # given background traffic and an ego that drives up to 30 m before the flow's source and waits
    rail = Rail(make_sim(maps, traffic=60), routes["1014"])
    plugin = rail.sim._scenarios.slots[0].plugin
    rail.place(rail.trigger_s - 25.0, 0.0)
    first_seen: dict[int, float] = {}
    w = rail.w
    for snap in rail.ticks(int(40.0 / DT), 6.0, stop_s=plugin.source_s - 30.0):
        if snap.scenarios[0].status != "running":
            continue
        a = snap.actors
        for i in np.flatnonzero(np.isin(a.id, snap.scenarios[0].actor_ids)):
            first_seen.setdefault(int(a.id[i]), float(np.hypot(*(a.xyz[i, :2] - w.ego_xy))))
        # then no background vehicle ever drives in the scenario's lanes while it runs
        t = w.traffic
        bg = t.role == int(ActorRole.BACKGROUND)
        assert not (w.keep_out[t.node[bg]] > 0).any()
    assert rail.info().status == "running" and len(first_seen) >= 2
    # and every invader appears far ahead of the ego (none pops up in front of it)
    assert min(first_seen.values()) >= MIN_SPAWN_AHEAD_OF_EGO_M - 5.0


# ---------------------------------------------------------------------- control loss
def test_control_loss_perturbs_the_applied_control_at_three_spots(maps, routes):
    route = routes["1013"]
    yaws = {}
    for kind in ("ControlLoss", "NoSuchScenarioType"):
        r = with_scenario(route, kind)
        sim = make_sim(maps)
        snap = sim.reset(r, 0)
        w = sim.world
        tp = r.scenarios[0].trigger_point
        i = w.route_index_near((tp.x, tp.y))
        w.set_ego_state(float(w.dense.xyz[i, 0]), float(w.dense.xyz[i, 1]), float(w.dense.yaw[i]), 8.0)
        y = []
        for _ in range(int(12.0 / DT)):
            snap = sim.step(Control(throttle=0.12))
            y.append(snap.ego.pose.yaw)
        yaws[kind] = np.asarray(y)
        if kind == "ControlLoss":
            plugin = sim._scenarios.slots[0].plugin
            assert plugin.perturbed_ticks == pytest.approx(
                len(SPOT_DISTANCE_RANGES_M) * NOISE_DURATION_S / DT, abs=3
            )
            assert plugin.next_spot == len(SPOT_DISTANCE_RANGES_M)
    assert np.ptp(yaws["NoSuchScenarioType"]) < 1e-6  # a straight road, no steering: straight on
    assert np.ptp(yaws["ControlLoss"]) > 0.02  # the steer noise turned the ego


def test_unknown_scenario_type_is_skipped_and_the_route_runs(maps, routes):
    rail = Rail(make_sim(maps), with_scenario(routes["1000"], "NoSuchScenarioType"))
    snaps = rail.run(20, 8.0)
    assert set(statuses(snaps)) == {"skipped"}


def test_scenarios_are_deterministic_for_the_episode_seed(maps, routes):
    def positions(seed: int) -> np.ndarray:
        rail = Rail(make_sim(maps, traffic=10), routes["1005"], seed)
        rail.place(rail.trigger_s - 15.0, 0.0)
        snaps = rail.run(200, 0.0)
        a = snaps[-1].actors
        return np.column_stack([a.id, a.xyz[:, :2]])

    first, again, other = positions(3), positions(3), positions(4)
    assert np.array_equal(first, again)
    assert first.shape != other.shape or not np.allclose(first, other)
