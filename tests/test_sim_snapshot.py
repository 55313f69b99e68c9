"""EmbeddedSimulator end to end: determinism, snapshot invariants, route progress."""

from __future__ import annotations

import numpy as np
import pytest

from carla_bridge.embedded import EmbeddedSimulator, SimConfig, traffic_kernel
from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.embedded.lane_routes import route_along_lanes
from carla_bridge.errors import SimulatorError
from carla_bridge.maps import MapLibrary
from carla_bridge.route_planner import locate_on_route
from carla_bridge.simulator import FIXED_DELTA_S, Simulator
from carla_bridge.snapshot import ActorKind, Control, InfractionKind, Pose, WorldSnapshot


@pytest.fixture(scope="module")
def maps(shared_maps_dir):
    return MapLibrary([shared_maps_dir], use_carla_root=False)


def scripted_control(k: int) -> Control:
    """A deterministic wobbly drive: throttle pulses, slow steering sine, occasional braking."""
    return Control(
        throttle=0.6 if k % 40 < 30 else 0.0,
        steer=0.15 * np.sin(k / 15.0),
        brake=0.5 if k % 40 >= 34 else 0.0,
    )


def make_sim(maps, scoring: bool = True, walkers: bool = True, backend: str = "auto") -> EmbeddedSimulator:
    cfg = SimConfig()
    cfg.traffic.backend = backend
    cfg.scoring = scoring
    cfg.walkers.enabled = walkers
    cfg.traffic.count = 25
    return EmbeddedSimulator(cfg, maps)


def route(maps, town="Town01", length=250.0):
    graph = LaneGraph.for_map(maps.load(town))
    return route_along_lanes(graph, town, int(graph.seg_start[2]), length)


def run(sim: EmbeddedSimulator, r, seed: int, ticks: int) -> list[WorldSnapshot]:
    snaps = [sim.reset(r, seed)]
    for k in range(ticks):
        snaps.append(sim.step(scripted_control(k)))
    return snaps


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_same_seed_same_episode(maps, backend):
    if backend == "numba" and not traffic_kernel.AVAILABLE:
        pytest.skip("numba is not installed")
    r = route(maps)
    a = run(make_sim(maps, backend=backend), r, seed=5, ticks=300)
    b = run(make_sim(maps, backend=backend), r, seed=5, ticks=300)
    for sa, sb in zip(a, b, strict=True):
        assert sa.frame == sb.frame and sa.time_s == sb.time_s
        assert sa.ego.pose == sb.ego.pose
        for f in ("id", "kind", "role", "xyz", "yaw", "velocity", "speed", "extent", "control"):
            np.testing.assert_array_equal(getattr(sa.actors, f), getattr(sb.actors, f))
        assert sa.actors.type_id == sb.actors.type_id
        assert [(t.id, t.state, t.time_in_state) for t in sa.traffic_lights] == [
            (t.id, t.state, t.time_in_state) for t in sb.traffic_lights
        ]
        assert sa.route == sb.route and sa.events == sb.events
    # and a different seed gives a different episode
    c = run(make_sim(maps, backend=backend), r, seed=6, ticks=5)
    assert (
        not np.array_equal(c[-1].actors.xyz, a[5].actors.xyz) or c[-1].actors.type_id != a[5].actors.type_id
    )


def test_snapshot_invariants(maps):
    sim = make_sim(maps)
    snaps = run(sim, route(maps), seed=2, ticks=200)
    assert isinstance(sim, Simulator) and sim.dt == FIXED_DELTA_S
    seen: dict[int, tuple[int, str, tuple]] = {}
    last_index = 0
    for s in snaps:
        a = s.actors
        n = len(a)
        assert a.id.dtype == np.int64 and a.id.shape == (n,) and len(set(a.id.tolist())) == n
        assert a.kind.dtype == np.int8 and a.role.dtype == np.int8
        assert a.xyz.shape == (n, 3) and a.xyz.dtype == np.float64
        assert a.yaw.shape == (n,) and a.velocity.shape == (n, 2) and a.speed.shape == (n,)
        assert a.extent.shape == (n, 3) and (a.extent > 0).all()
        assert a.control.shape == (n, 3) and a.control.dtype == np.float32
        assert len(a.type_id) == n
        assert np.all(np.abs(a.yaw) <= np.pi + 1e-9)
        vehicles = (a.kind == int(ActorKind.VEHICLE)) | (a.kind == int(ActorKind.BICYCLE))
        assert not np.isnan(a.control[vehicles]).any()
        assert np.isnan(a.control[a.kind == int(ActorKind.WALKER)]).all()
        for i in range(n):  # an id keeps its kind, type and box for as long as it lives
            key = (int(a.kind[i]), a.type_id[i], tuple(a.extent[i]))
            assert seen.setdefault(int(a.id[i]), key) == key
        # route progress is monotone, within the route, and consistent with completed metres
        assert s.route.index >= last_index
        last_index = s.route.index
        assert 0.0 <= s.route.completed_m <= s.route.total_m
        # lights in the snapshot are within the configured radius
        ego = np.array([s.ego.pose.x, s.ego.pose.y])
        for tl in s.traffic_lights:
            c = np.mean([[sl.x, sl.y] for sl in tl.stop_lines], axis=0)
            assert np.hypot(*(c - ego)) <= sim.config.signals.snapshot_radius_m
    assert snaps[-1].route.index > 0  # the ego drove along its route
    assert snaps[-1].frame == 200 and snaps[-1].time_s == pytest.approx(200 * FIXED_DELTA_S)
    assert any(len(s.actors) and (s.actors.kind == int(ActorKind.WALKER)).any() for s in snaps)
    assert sim.infractions() == [e for s in snaps for e in s.events]


def test_route_locator_agrees_with_the_route_planner(maps):
    from carla_bridge.embedded.route_progress import locate_compiled, locate_on_dense

    dense = route(maps).dense
    rng = np.random.default_rng(0)
    for _ in range(200):
        i = int(rng.integers(0, len(dense) - 40))
        xy = dense.xyz[i + int(rng.integers(0, 20)), :2] + rng.normal(0.0, 1.5, 2)
        got = locate_on_dense(dense, xy, i, 30.0)
        n = int(np.searchsorted(dense.s, dense.s[i] + 30.0, side="right")) - i
        ref = locate_on_route(dense, xy, i, n)
        assert got[0] == ref[0] and got[1] == pytest.approx(ref[1])
        fast = locate_compiled(dense, xy, i, 30.0)
        assert fast[0] == ref[0] and fast[1] == pytest.approx(ref[1])


def test_step_before_reset_is_a_clear_error(maps):
    sim = make_sim(maps)
    with pytest.raises(SimulatorError, match="reset"):
        sim.step(Control())


def test_walkers_stay_on_sidewalks_at_walking_speed(maps):
    sim = make_sim(maps, scoring=False)
    snaps = run(sim, route(maps), seed=4, ticks=100)
    net = sim.world.walkers.net
    lo, hi = sim.config.walkers.speed_range_mps
    for s in snaps[::10]:
        w = s.actors.kind == int(ActorKind.WALKER)
        assert w.sum() > 0
        assert ((s.actors.speed[w] >= lo) & (s.actors.speed[w] <= hi)).all()
        d = np.hypot(*(s.actors.xyz[w, None, :2] - net.xy[None]).transpose(2, 0, 1)).min(axis=1)
        assert (d <= net.width.max() / 2.0 + 0.5).all()  # within the sidewalk (points are its centre line)


def test_bad_config_is_one_clear_error(maps):
    from carla_bridge.embedded.config import SimConfigError
    from carla_bridge.errors import TakeoverError

    cfg = SimConfig()
    cfg.traffic.backend = "gpu"
    with pytest.raises(SimConfigError, match=r"traffic\.backend"):
        EmbeddedSimulator(cfg, maps)
    cfg = SimConfig()
    cfg.traffic.spawn_radius_m = 5.0
    with pytest.raises(TakeoverError, match="spawn_radius_m"):
        EmbeddedSimulator(cfg, maps)


COLLISIONS = (InfractionKind.COLLISION_VEHICLE, InfractionKind.COLLISION_STATIC)


@pytest.mark.parametrize(("crash_stops_ego", "van_above_m"), [(True, 0.0), (False, 0.0), (True, 10.0)])
def test_a_crash_stops_the_ego_instead_of_driving_through(maps, crash_stops_ego, van_above_m):
    # given an empty town and a parked van 30 m ahead on the ego's lane (or on a bridge above it)
    cfg = SimConfig()
    cfg.traffic.count = 0
    cfg.traffic.density_per_100m = 0.0
    cfg.walkers.enabled = False
    cfg.crash_stops_ego = crash_stops_ego
    sim = EmbeddedSimulator(cfg, maps)
    r = route(maps)
    snap = sim.reset(r, seed=0)
    p = snap.ego.pose
    ahead = Pose(p.x + 30.0 * np.cos(p.yaw), p.y + 30.0 * np.sin(p.yaw), p.z + van_above_m, p.yaw)
    sim.world.spawn_static(ahead, "vehicle.mercedes.sprinter", (2.96, 0.99, 1.28))
    # when the ego drives into it at full throttle for 10 s
    collisions, past = 0, False
    for _ in range(200):
        snap = sim.step(Control(throttle=1.0))
        collisions += sum(e.kind in COLLISIONS for e in snap.events)
        d = np.array([snap.ego.pose.x - ahead.x, snap.ego.pose.y - ahead.y])
        past |= float(d @ [np.cos(p.yaw), np.sin(p.yaw)]) > 6.0
    # then it is stopped at the van and scored once; without the contact model, or under a van on a
    # bridge, it drives on
    if crash_stops_ego and not van_above_m:
        assert collisions == 1 and not past and snap.ego.speed == pytest.approx(0.0, abs=1e-6)
    else:
        assert past
