"""Lane graph and signals built from real CARLA towns."""

from __future__ import annotations

import numpy as np
import pytest

from carla_bridge.embedded.config import SignalConfig
from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.embedded.signals import ENTRY_LIGHT, ENTRY_STOP, SignalState, signal_layout_for
from carla_bridge.geometry import wrap_angle
from carla_bridge.maps import MapLibrary
from carla_bridge.snapshot import TrafficLightState


@pytest.fixture(scope="module")
def maps(shared_maps_dir):
    return MapLibrary([shared_maps_dir], use_carla_root=False)


@pytest.mark.parametrize("town", ["Town01", "Town04", "Town07"])
def test_lane_graph_is_continuous_and_consistent(maps, town):
    g = LaneGraph.for_map(maps.load(town))
    assert LaneGraph.for_map(maps.load(town)) is g  # cached per map
    nxt = g.next_node
    ok = nxt >= 0
    # consecutive nodes (also across lane ends) are about one spacing apart and share a heading
    jump = np.hypot(*(g.xy[nxt[ok]] - g.xy[ok]).T)
    assert jump.max() < 2.0 * g.spacing_m
    assert np.abs(wrap_angle(g.yaw[nxt[ok]] - g.yaw[ok])).max() < 0.6
    assert np.allclose(jump, g.edge_len[ok], atol=0.35)
    # every successor starts where its predecessor lane ends
    for s in range(g.num_segments):
        for t in g.successors(s):
            assert np.hypot(*(g.xy[g.seg_start[t]] - g.seg_end_xy[s])) < 0.5
            assert s in g.predecessors(int(t))
    # conflicts are symmetric and only between junction lanes of one junction
    for s in np.flatnonzero(g.seg_junction >= 0):
        for t in g.conflicts(int(s)):
            assert int(s) in g.conflicts(int(t))
            assert g.seg_junction[t] == g.seg_junction[s]
    # a node is found from its own position and heading
    rng = np.random.default_rng(0)
    for n in rng.integers(0, g.num_nodes, 50):
        assert g.nearest_node(g.xy[n], float(g.yaw[n]), 0.5) == n


def test_entry_distance_counts_down_to_the_stop_line(maps):
    g = LaneGraph.for_map(maps.load("Town01"))
    e = int(np.flatnonzero(g.is_entry)[0])
    nodes = np.arange(g.seg_start[e], g.seg_start[e] + g.seg_count[e])
    d = g.entry_dist[nodes]
    near = np.isfinite(d)
    # finite within the horizon, counting down to the lane end; unknown (inf, no entry) beyond it
    assert ((g.seg_length[e] - g.node_s[nodes] <= 80.0) == near).all()
    assert (np.diff(d[near]) < 0).all() and (g.entry_seg[nodes[near]] == e).all()
    assert (g.entry_seg[nodes[~near]] == -1).all()
    assert d[-1] == pytest.approx(g.edge_len[nodes[-1]])


def test_lights_cycle_one_green_axis_per_junction(maps):
    cmap = maps.load("Town01")
    g = LaneGraph.for_map(cmap)
    cfg = SignalConfig()
    layout = signal_layout_for(cmap, g, cfg)
    assert layout.num_lights > 0 and (layout.entry_kind == ENTRY_LIGHT).sum() >= layout.num_lights
    st = SignalState(layout, cfg, np.random.default_rng(0))
    slot = cfg.green_s + cfg.yellow_s + cfg.all_red_s
    greens_seen = {}
    for t in np.arange(0.0, 3 * 2 * slot, 0.5):
        st.update(float(t))
        for j in set(layout.light_junction.tolist()):
            members = np.flatnonzero(layout.light_junction == j)
            green_groups = set(
                layout.light_group[members][st.state[members] == int(TrafficLightState.GREEN)].tolist()
            )
            assert len(green_groups) <= 1  # never two axes green at once
            for m in members[st.state[members] == int(TrafficLightState.GREEN)]:
                greens_seen[int(m)] = True
    assert len(greens_seen) == layout.num_lights  # every light gets its green
    # opposite approaches share a group: their stop-line headings are (anti)parallel
    for j in set(layout.light_junction.tolist()):
        members = np.flatnonzero(layout.light_junction == j)
        for a in members:
            for b in members:
                if layout.light_group[a] == layout.light_group[b]:
                    ya, yb = layout.light_stop_lines[a][0].yaw, layout.light_stop_lines[b][0].yaw
                    d = abs(float(wrap_angle(ya - yb)))
                    assert min(d, np.pi - d) < np.radians(cfg.approach_group_tolerance_deg) + 1e-6


def test_forced_light_state_holds_then_resumes(maps):
    cmap = maps.load("Town01")
    g = LaneGraph.for_map(cmap)
    layout = signal_layout_for(cmap, g, SignalConfig())
    st = SignalState(layout, SignalConfig(), np.random.default_rng(0))
    lid = int(layout.light_ids[0])
    st.force(lid, TrafficLightState.RED, 5.0, 1.0)
    for t in np.arange(1.0, 6.0, 0.25):
        st.update(float(t))
        assert st.state[0] == int(TrafficLightState.RED)
    st.update(1.0 + 2.0)
    assert st.time_in_state[0] == pytest.approx(2.0)
    with pytest.raises(KeyError):
        st.force(-12345, TrafficLightState.GREEN, 1.0, 0.0)


def test_stop_signs_from_landmarks(maps):
    cmap = maps.load("Town07")
    g = LaneGraph.for_map(cmap)
    layout = signal_layout_for(cmap, g, SignalConfig())
    assert layout.stop_ids.size > 5
    assert (layout.entry_kind == ENTRY_STOP).sum() >= layout.stop_ids.size
    for lines in layout.stop_stop_lines:
        for sl in lines:
            seg = g.key_to_seg.get((sl.road_id, 0, sl.lane_id))
            assert sl.width > 2.0 and np.isfinite(sl.x) and (seg is None or seg >= 0)


def test_snapshot_lights_equal_regular_dataclasses(maps):
    from carla_bridge.snapshot import TrafficLight

    cmap = maps.load("Town01")
    g = LaneGraph.for_map(cmap)
    layout = signal_layout_for(cmap, g, SignalConfig())
    st = SignalState(layout, SignalConfig(), np.random.default_rng(0))
    st.update(12.5)
    lights = st.snapshot_lights(layout.light_center[0])
    assert lights
    for tl in lights:
        k = st.index_of(tl.id)
        ref = TrafficLight(
            id=int(layout.light_ids[k]),
            state=TrafficLightState(int(st.state[k])),
            pose=layout.light_pose[k],
            stop_lines=layout.light_stop_lines[k],
            junction_id=int(layout.light_junction[k]),
            time_in_state=float(st.time_in_state[k]),
        )
        assert tl == ref and isinstance(tl.state, TrafficLightState)
        with pytest.raises(AttributeError):
            tl.state = TrafficLightState.GREEN  # still frozen


def test_missing_lights_are_generated_for_uncontrolled_four_way_junctions(maps):
    from carla_bridge.embedded.signals import SYNTHETIC_LIGHT_ID_BASE, build_signal_layout

    cmap = maps.load("Town04")
    g = LaneGraph.for_map(cmap)
    plain = build_signal_layout(cmap, g, SignalConfig())
    gen = build_signal_layout(cmap, g, SignalConfig(generate_missing_lights=True))
    synthetic = np.flatnonzero(gen.light_ids >= SYNTHETIC_LIGHT_ID_BASE)
    assert synthetic.size == gen.num_lights - plain.num_lights > 0
    for j in set(gen.light_junction[synthetic].tolist()):
        members = synthetic[gen.light_junction[synthetic] == j]
        assert members.size == 4  # one light per approach of a 4-way junction
        assert sorted(set(gen.light_group[members].tolist())) == [0, 1]  # two axes take turns
    # landmark lights are untouched
    assert np.array_equal(gen.light_ids[: plain.num_lights], plain.light_ids)
