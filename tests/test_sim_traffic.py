"""Background traffic on real CARLA roads: IDM following, lights, stop signs, junction choices, density."""

from __future__ import annotations

import numpy as np
import pytest

from carla_bridge.embedded import traffic_kernel
from carla_bridge.embedded.catalogue import blueprint
from carla_bridge.embedded.config import (
    IDMConfig,
    SignalConfig,
    SimConfig,
    SimConfigError,
    TrafficConfig,
    VehicleParams,
)
from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.embedded.signals import ENTRY_LIGHT, ENTRY_STOP, SignalState, signal_layout_for
from carla_bridge.embedded.traffic import Obstacles, TrafficModel
from carla_bridge.maps import MapLibrary
from carla_bridge.snapshot import ActorRole, TrafficLightState

DT = 0.05
CAR = blueprint("vehicle.lincoln.mkz_2020")
NO_SEGMENTS = np.zeros(0, np.int64)


@pytest.fixture(scope="module")
def maps(shared_maps_dir):
    return MapLibrary([shared_maps_dir], use_carla_root=False)


@pytest.fixture(params=["numpy", "numba"])
def backend(request) -> str:
    """Every behaviour test runs on both implementations of the traffic tick."""
    if request.param == "numba" and not traffic_kernel.AVAILABLE:
        pytest.skip("numba is not installed")
    return request.param


def world_parts(maps, town: str, backend: str, seed: int = 0):
    cmap = maps.load(town)
    graph = LaneGraph.for_map(cmap)
    layout = signal_layout_for(cmap, graph, SignalConfig())
    rng = np.random.default_rng(seed)
    signals = SignalState(layout, SignalConfig(), rng)
    model = TrafficModel(graph, layout, TrafficConfig(backend=backend), IDMConfig(), VehicleParams(), rng)
    return graph, layout, signals, model


def step(model: TrafficModel, signals: SignalState, t: float) -> None:
    signals.update(t)
    model.step(DT, t, signals, Obstacles.empty(), NO_SEGMENTS)


def node_before_entry(graph: LaneGraph, seg: int, distance_m: float) -> int:
    """Node of entry segment `seg` about `distance_m` before its stop line."""
    first = int(graph.seg_start[seg])
    nodes = np.arange(first, first + int(graph.seg_count[seg]))
    return int(nodes[np.argmin(np.abs(graph.entry_dist[nodes] - distance_m))])


def front_gap(graph: LaneGraph, model: TrafficModel, i: int) -> float:
    node = model.node[i]
    return float(graph.entry_dist[node] - model.frac[i] * graph.edge_len[node] - model.extent[i, 0])


def test_vehicle_stops_at_red_light_and_goes_on_green(maps, backend):
    graph, layout, signals, model = world_parts(maps, "Town01", backend)
    seg = next(s for s in np.flatnonzero(layout.entry_kind == ENTRY_LIGHT) if graph.seg_length[s] > 60)
    light = int(layout.light_ids[layout.entry_signal[seg]])
    signals.force(light, TrafficLightState.RED, 40.0, 0.0)
    model.add(1, node_before_entry(graph, int(seg), 50.0), CAR, 8.0)
    gaps, t = [], 0.0
    for _ in range(400):  # 20 s of red
        t += DT
        step(model, signals, t)
        gaps.append(front_gap(graph, model, 0))
    # then it stopped before the line, close to it, and stood still
    assert min(gaps) >= 0.0
    assert gaps[-1] < 2.5
    assert model.v[0] == 0.0
    # when the light turns green, it crosses
    signals.force(light, TrafficLightState.GREEN, 40.0, t)
    for _ in range(200):
        t += DT
        step(model, signals, t)
    assert graph.seg[model.node[0]] != seg


def test_vehicle_makes_a_full_stop_at_a_stop_sign(maps, backend):
    graph, layout, signals, model = world_parts(maps, "Town07", backend)
    seg = next(s for s in np.flatnonzero(layout.entry_kind == ENTRY_STOP) if graph.seg_length[s] > 40)
    model.add(1, node_before_entry(graph, int(seg), 30.0), CAR, 7.0)
    t = 0.0
    min_speed_before_line = np.inf
    crossed = False
    for _ in range(600):
        t += DT
        step(model, signals, t)
        on_entry = graph.seg[model.node[0]] == seg
        gap = front_gap(graph, model, 0) if on_entry else -1.0
        if on_entry and gap > 0.0:
            min_speed_before_line = min(min_speed_before_line, float(model.v[0]))
        if not on_entry:
            crossed = True
            break
    # then it came to a standstill before the line, and went on afterwards (no other traffic)
    assert min_speed_before_line <= TrafficConfig().stopped_speed_mps
    assert crossed


def test_junction_successors_are_chosen_randomly_and_followed(maps, backend):
    graph, layout, signals, model = world_parts(maps, "Town01", backend, seed=7)
    branch = next(s for s in np.flatnonzero(graph.is_entry) if graph.successors(int(s)).size >= 2)
    succ = set(graph.successors(int(branch)).tolist())
    picks = model._choose(np.full(600, branch, np.int64))
    counts = {s: int((picks == s).sum()) for s in succ}
    # then every successor is drawn, roughly uniformly
    assert min(counts.values()) > 600 / len(succ) * 0.7
    # and a vehicle on that lane ends up on the successor it chose
    if layout.entry_kind[branch] == ENTRY_LIGHT:
        signals.force(int(layout.light_ids[layout.entry_signal[branch]]), TrafficLightState.GREEN, 60.0, 0.0)
    model.add(1, node_before_entry(graph, int(branch), 15.0), CAR, 5.0)
    chosen = int(model.choice[0])
    t = 0.0
    visited = set()
    for _ in range(300):
        t += DT
        step(model, signals, t)
        visited.add(int(graph.seg[model.node[0]]))
    assert chosen in visited
    assert not (visited & (succ - {chosen}))


def obb_overlap(xy, yaw, ext, i, j) -> bool:
    """Separating-axis test of two oriented boxes (2D)."""
    axes = []
    for k in (i, j):
        c, s = np.cos(yaw[k]), np.sin(yaw[k])
        axes += [np.array([c, s]), np.array([-s, c])]

    def corners(k):
        c, s = np.cos(yaw[k]), np.sin(yaw[k])
        R = np.array([[c, -s], [s, c]])
        local = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) * ext[k, :2]
        return xy[k] + local @ R.T

    a, b = corners(i), corners(j)
    for ax in axes:
        pa, pb = a @ ax, b @ ax
        if pa.max() < pb.min() or pb.max() < pa.min():
            return False
    return True


def test_background_vehicles_never_collide_and_keep_positive_gaps(maps, backend):
    from carla_bridge.embedded.lane_routes import route_along_lanes
    from carla_bridge.embedded.simulator import EmbeddedSimulator
    from carla_bridge.snapshot import Control

    cfg = SimConfig()
    cfg.scoring = False
    cfg.walkers.enabled = False
    cfg.traffic.count = 45
    cfg.traffic.backend = backend
    sim = EmbeddedSimulator(cfg, maps)
    graph = LaneGraph.for_map(maps.load("Town01"))
    route = route_along_lanes(graph, "Town01", int(graph.seg_start[5]), 300.0)
    sim.reset(route, seed=11)
    traffic = sim.world.traffic
    moved = 0.0
    for tick in range(1600):  # 80 s, the ego parked at the route start
        snap = sim.step(Control(brake=1.0))
        finite = np.isfinite(traffic.last_gap_lead)
        assert (traffic.last_gap_lead[finite] > 0.0).all(), f"tick {tick}"
        moved += float(traffic.v.sum()) * DT
        if tick % 5 == 0:
            a = snap.actors
            bg = np.flatnonzero(a.role == int(ActorRole.BACKGROUND))
            xy, yaw, ext = a.xyz[:, :2], a.yaw, a.extent
            d = np.hypot(*(xy[bg, None] - xy[None, bg]).transpose(2, 0, 1))
            for p, q in zip(*np.nonzero(np.triu(d < 7.0, 1)), strict=True):
                assert not obb_overlap(xy, yaw, ext, bg[p], bg[q]), (
                    f"tick {tick}: {a.id[bg[p]]} hits {a.id[bg[q]]}"
                )
    # and traffic actually flowed (on average well over 1 m/s per vehicle)
    assert moved / (1600 * DT * len(traffic)) > 1.0


@pytest.mark.parametrize("town", ["Town01", "Town04"])
def test_density_count_and_per_100m(maps, town):
    from carla_bridge.embedded.lane_routes import route_along_lanes
    from carla_bridge.embedded.simulator import EmbeddedSimulator

    graph = LaneGraph.for_map(maps.load(town))
    route = route_along_lanes(graph, town, int(graph.seg_start[3]), 200.0)
    cfg = SimConfig()
    cfg.scoring = False
    cfg.walkers.enabled = False
    cfg.traffic.count = 20
    sim = EmbeddedSimulator(cfg, maps)
    snap = sim.reset(route, seed=1)
    ego = np.array([snap.ego.pose.x, snap.ego.pose.y])
    bg = snap.actors.role == int(ActorRole.BACKGROUND)
    # count mode: exactly the count, all within the radius, none inside the bubble
    assert int(bg.sum()) == 20
    d = np.hypot(*(snap.actors.xyz[bg, :2] - ego).T)
    assert d.max() <= cfg.traffic.spawn_radius_m and d.min() >= cfg.traffic.ego_bubble_m
    # density mode: about density x lane length / 100 (some candidate spots are too crowded)
    cfg.traffic.density_per_100m = 3.0
    sim = EmbeddedSimulator(cfg, maps)
    snap = sim.reset(route, seed=1)
    cand = sim.world._spawn_ring(ego, cfg.traffic.spawn_radius_m)
    target = sim.world.target_vehicle_count(cand)
    n = int((snap.actors.role == int(ActorRole.BACKGROUND)).sum())
    assert target > 10
    assert 0.85 * target <= n <= target


def test_vehicles_stop_behind_the_ego_and_yield_to_it(maps, backend):
    from carla_bridge.embedded.lane_routes import route_along_lanes
    from carla_bridge.embedded.simulator import EmbeddedSimulator
    from carla_bridge.snapshot import Control

    cfg = SimConfig()
    cfg.scoring = False
    cfg.walkers.enabled = False
    cfg.traffic.enabled = False
    cfg.traffic.backend = backend
    sim = EmbeddedSimulator(cfg, maps)
    graph = LaneGraph.for_map(maps.load("Town01"))
    seg = int(np.argmax(graph.seg_length * (graph.seg_junction < 0)))
    start = int(graph.seg_start[seg]) + 40
    route = route_along_lanes(graph, "Town01", start, 100.0)
    sim.reset(route, seed=0)
    w = sim.world
    # given a vehicle 35 m behind the parked ego, driving at 8 m/s in the ego's lane
    follower = w.spawn_lane_vehicle(start - 35, "vehicle.tesla.model3", 8.0, ActorRole.BACKGROUND)
    for _ in range(300):
        snap = sim.step(Control(brake=1.0))
        i = np.flatnonzero(snap.actors.id == follower)[0]
        ego = np.array([snap.ego.pose.x, snap.ego.pose.y])
        centre_gap = np.hypot(*(snap.actors.xyz[i, :2] - ego))
        bumper_gap = centre_gap - snap.ego.extent[0] - snap.actors.extent[i, 0]
        assert bumper_gap > 0.0
    # then it waits behind the ego at about the IDM standstill gap
    assert snap.actors.speed[i] == 0.0
    assert bumper_gap < cfg.idm.min_gap_m + 2.0


def crossing_entries(graph: LaneGraph, layout) -> tuple[int, int, list[tuple[int, int]]]:
    """(entry A, its junction lane a, [(entry B, lane b), (entry C, lane c)]): b and c both conflict
    with a but not with each other, so two streams on them can keep a busy all the time. Entries
    have no stop sign (lights are forced green) and room for a 40 m run-up."""
    entries = [int(s) for s in np.flatnonzero(graph.is_entry) if layout.entry_kind[s] != ENTRY_STOP]
    entries = [s for s in entries if graph.seg_length[s] >= 45.0]
    for ea in entries:
        for a in graph.successors(ea).tolist():
            conf = set(graph.conflicts(a).tolist())
            pairs = [
                (eb, b) for eb in entries if eb != ea for b in graph.successors(eb).tolist() if b in conf
            ]
            for k, (eb, b) in enumerate(pairs):
                for ec, c in pairs[k + 1 :]:
                    if ec != eb and c not in set(graph.conflicts(b).tolist()):
                        return ea, a, [(eb, b), (ec, c)]
    raise AssertionError("no such crossing on this map")


ARRIVE_S = 8.0  # the waiting vehicle arrives once the streams run
STREAM_PERIOD_S = 3.0  # per stream; the two streams are half a period apart


def hold_pick(model: TrafficModel, row: int, entry: int, lane: int) -> None:
    model.entry_of_pick[row] = entry
    model.entry_pick[row] = lane
    model.choice[row] = lane


@pytest.mark.parametrize("patience_s", [4.0, np.inf])
def test_waiting_vehicle_is_not_starved_by_cross_streams_and_nobody_collides(maps, backend, patience_s):
    # given two steady streams on junction lanes that conflict with a waiting vehicle's lane
    cmap = maps.load("Town01")
    graph = LaneGraph.for_map(cmap)
    layout = signal_layout_for(cmap, graph, SignalConfig())
    rng = np.random.default_rng(0)
    signals = SignalState(layout, SignalConfig(), rng)
    cfg = TrafficConfig(backend=backend, reservation_patience_s=float(patience_s))
    model = TrafficModel(graph, layout, cfg, IDMConfig(), VehicleParams(), rng)
    ea, a, streams = crossing_entries(graph, layout)
    for seg in [ea] + [e for e, _ in streams]:
        if layout.entry_kind[seg] == ENTRY_LIGHT:
            signals.force(int(layout.light_ids[layout.entry_signal[seg]]), TrafficLightState.GREEN, 1e3, 0.0)
    entries = {ea} | {e for e, _ in streams}
    next_id, t, entered_at = 2, 0.0, None
    period = int(STREAM_PERIOD_S / DT)
    for k in range(int(45.0 / DT)):
        t += DT
        if k == int(ARRIVE_S / DT):
            row = model.add(1, node_before_entry(graph, ea, 4.0), CAR, 0.0)
            hold_pick(model, row, ea, a)
        for j, (eb, b) in enumerate(streams):  # one vehicle 40 m before the line at 8 m/s per period
            if k % period == j * period // 2:
                row = model.add(next_id, node_before_entry(graph, eb, 40.0), CAR, 8.0)
                hold_pick(model, row, eb, b)
                next_id += 1
        signals.update(t)
        model.step(DT, t, signals, Obstacles.empty(), NO_SEGMENTS)
        segs = graph.seg[model.node]
        # no two vehicles ever inside conflicting junction lanes at once
        inside = [int(s) for s in segs if graph.seg_junction[s] >= 0]
        for i, s in enumerate(inside):
            assert not set(inside[i + 1 :]) & set(graph.conflicts(s).tolist())
        waiting = model.index_of(1)
        if entered_at is None and waiting >= 0 and graph.seg[model.node[waiting]] == a:
            entered_at = t - ARRIVE_S
        model.keep(np.isin(segs, list(entries)) | (graph.seg_junction[segs] >= 0))  # gone past the box
    # then with patience the waiting vehicle gets in soon after it; without, the streams starve it
    if np.isfinite(patience_s):
        assert entered_at is not None and entered_at < patience_s + 8.0
    else:
        assert entered_at is None


@pytest.mark.parametrize(
    ("leader_speed", "role", "flows_in"),
    [
        (8.0, ActorRole.SCENARIO, True),  # a scenario flow moves through as a queue
        (0.0, ActorRole.SCENARIO, False),  # but never stops inside the box behind a standing leader
        (8.0, ActorRole.BACKGROUND, False),  # background traffic keeps "don't block the box"
    ],
)
def test_flow_follower_enters_a_junction_behind_a_moving_leader_but_not_behind_a_stopped_one(
    maps, backend, leader_speed, role, flows_in
):
    # given a leader on a long junction lane (driving on, or standing) and a follower nearing its entry
    graph, layout, signals, model = world_parts(maps, "Town01", backend)
    entry, lane = next(
        (int(e), int(c))
        for e in np.flatnonzero(graph.is_entry)
        if layout.entry_kind[e] != ENTRY_STOP and graph.seg_length[e] >= 30.0
        for c in graph.successors(int(e)).tolist()
        if graph.seg_length[c] >= 15.0 and graph.seg_junction[c] >= 0
    )
    if layout.entry_kind[entry] == ENTRY_LIGHT:
        signals.force(int(layout.light_ids[layout.entry_signal[entry]]), TrafficLightState.GREEN, 1e3, 0.0)
    lead = model.add(1, int(graph.seg_start[lane]) + 3, CAR, leader_speed, role)
    hold_pick(model, lead, entry, lane)
    model.forced_brake[lead] = leader_speed == 0.0
    follower = model.add(2, node_before_entry(graph, entry, 12.0), CAR, 6.0, role)
    hold_pick(model, follower, entry, lane)
    # when they drive for 3 s
    t, both_inside = 0.0, False
    for _ in range(int(3.0 / DT)):
        t += DT
        step(model, signals, t)
        segs = graph.seg[model.node]
        both_inside |= bool((segs == lane).all())
    # then the follower flows in behind the moving leader, but waits before the box behind a standing one
    assert both_inside == flows_in


def test_vehicle_with_path_segments_keeps_to_its_path_through_branches(maps, backend):
    # given a lane that branches at a junction, and a three-segment path through each branch
    graph, layout, signals, model = world_parts(maps, "Town01", backend, seed=3)
    branch = next(
        int(s)
        for s in np.flatnonzero(graph.is_entry)
        if graph.successors(int(s)).size >= 2 and graph.seg_length[s] >= 20.0
    )
    if layout.entry_kind[branch] == ENTRY_LIGHT:
        signals.force(int(layout.light_ids[layout.entry_signal[branch]]), TrafficLightState.GREEN, 1e3, 0.0)
    for lane in graph.successors(branch).tolist():
        after = int(graph.successors(lane)[0])
        model.keep(np.zeros(len(model), bool))
        model.add(1, node_before_entry(graph, branch, 15.0), CAR, 5.0)
        model.set_path_segments(1, [branch, lane, after])
        # when it drives through the junction (the model would pick successors at random)
        visited, t = set(), 0.0
        for _ in range(int(8.0 / DT)):
            t += DT
            step(model, signals, t)
            visited.add(int(graph.seg[model.node[0]]))
        # then it took exactly the path's junction lane
        assert lane in visited and after in visited
        assert not visited & (set(graph.successors(branch).tolist()) - {lane})


def test_path_segments_that_are_not_consecutive_lanes_are_rejected(maps):
    graph, _, _, model = world_parts(maps, "Town01", "numpy")
    seg = int(np.flatnonzero(graph.is_entry)[0])
    stranger = next(
        s for s in range(graph.num_segments) if s not in graph.successors(seg).tolist() and s != seg
    )
    model.add(1, int(graph.seg_start[seg]), CAR, 0.0)
    with pytest.raises(SimConfigError, match="not consecutive"):
        model.set_path_segments(1, [seg, stranger])


class TestLaneFootprintCover:
    """traffic_kernel.covers_lane_node: does an obstacle box meet a lane node's swept footprint?"""

    HL, HW, HALF_SPACING = 2.44, 1.06, 0.5

    def covers(self, lx, ly, phi_deg, footprint):
        from carla_bridge.embedded.traffic_kernel import covers_lane_node

        return bool(
            covers_lane_node(lx, ly, np.radians(phi_deg), self.HL, self.HW, self.HALF_SPACING, footprint)
        )

    def test_parallel_lane_is_the_box_grown_by_the_footprint(self):
        # given a lane parallel to the obstacle, then a node covers iff it lies in the grown box
        assert self.covers(self.HL + 0.45, 0.0, 0.0, 1.0)
        assert not self.covers(self.HL + 0.55, 0.0, 0.0, 1.0)
        assert self.covers(0.0, self.HW + 0.95, 0.0, 1.0)
        assert not self.covers(0.0, self.HW + 1.05, 0.0, 1.0)

    def test_crossing_lane_reaches_past_the_front_by_its_footprint(self):
        # given a lane crossing 1.36 m past a stopped car's nose (a turning van's path)
        lx = self.HL + 1.36
        # then a straight lane's 1 m footprint misses it, a curved node's widened footprint does not
        assert not self.covers(lx, 1.1, 90.0, 1.0)
        assert self.covers(lx, 1.1, 90.0, 1.0 + 0.5 * 0.17 * 3.0**2)

    def test_curved_nodes_get_a_wider_footprint(self, maps, backend):
        # given the traffic model of a real town
        from carla_bridge.embedded.traffic import FOOTPRINT_HALF_WIDTH_M, MAX_SWEEP_M

        graph, _, _, model = world_parts(maps, "Town01", backend)
        straight = np.abs(graph.curvature) < 1e-4
        tight = np.abs(graph.curvature) > 0.1
        # then straight lane nodes keep the plain footprint, junction turns get a wider, capped one
        assert np.allclose(model._footprint[straight], FOOTPRINT_HALF_WIDTH_M, atol=1e-3)
        assert tight.any() and np.all(model._footprint[tight] > FOOTPRINT_HALF_WIDTH_M + 0.4)
        assert model._footprint.max() <= FOOTPRINT_HALF_WIDTH_M + MAX_SWEEP_M
