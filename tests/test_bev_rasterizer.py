"""BEV rasteriser: geometry of each channel on a tiny real OpenDRIVE road, frames, config errors, RGB."""

from __future__ import annotations

import math
from dataclasses import replace

import carla
import numpy as np
import pytest

from carla_bridge.bev import (
    ALL_CHANNELS,
    BevConfig,
    BevError,
    BevRasterizer,
    get_map_tile,
)
from carla_bridge.geometry import ego_to_world, world_to_ego
from carla_bridge.route import DenseRoute, RoadOption
from carla_bridge.snapshot import (
    ActorKind,
    ActorTable,
    Control,
    EgoState,
    Pose,
    RouteProgress,
    StopLine,
    StopSign,
    TrafficLight,
    TrafficLightState,
    WorldSnapshot,
)

# A 200 m straight two-lane road along +x: lane -1 (y in [0, 3.5], heading +x) and lane 1
# (y in [-3.5, 0], heading -x); broken centre line, solid outer lines.
TINY_XODR = """<?xml version="1.0" standalone="yes"?>
<OpenDRIVE>
  <header revMajor="1" revMinor="4" name="Tiny" version="1.0" north="0" south="0" east="0" west="0">
    <geoReference><![CDATA[+proj=tmerc +lat_0=0 +lon_0=0]]></geoReference>
  </header>
  <road name="straight" length="200.0" id="1" junction="-1">
    <link/>
    <planView><geometry s="0.0" x="0.0" y="0.0" hdg="0.0" length="200.0"><line/></geometry></planView>
    <elevationProfile/><lateralProfile/>
    <lanes>
      <laneSection s="0.0">
        <left><lane id="1" type="driving" level="false"><link/>
          <width sOffset="0.0" a="3.5" b="0.0" c="0.0" d="0.0"/>
          <roadMark sOffset="0.0" type="solid" weight="standard" color="standard" width="0.15"/></lane></left>
        <center><lane id="0" type="none" level="false">
          <roadMark sOffset="0.0" type="broken" weight="standard" color="standard" width="0.15"/></lane></center>
        <right><lane id="-1" type="driving" level="false"><link/>
          <width sOffset="0.0" a="3.5" b="0.0" c="0.0" d="0.0"/>
          <roadMark sOffset="0.0" type="solid" weight="standard" color="standard" width="0.15"/></lane></right>
      </laneSection>
    </lanes>
  </road>
</OpenDRIVE>
"""
LANE_Y = 1.75  # centre of lane -1 in CARLA world y
EXTENT = np.array([2.4, 1.0, 0.8])


@pytest.fixture(scope="module")
def tiny_map() -> carla.Map:
    return carla.Map("Tiny", TINY_XODR)


@pytest.fixture(scope="module")
def rasterizer(tiny_map: carla.Map) -> BevRasterizer:
    return BevRasterizer(BevConfig(channels=list(ALL_CHANNELS)), tiny_map)


def straight_route() -> DenseRoute:
    x = np.arange(0.0, 200.0, 1.0)
    n = len(x)
    return DenseRoute(
        xyz=np.stack([x, np.full(n, LANE_Y), np.zeros(n)], axis=1),
        yaw=np.zeros(n),
        commands=np.full(n, int(RoadOption.LANEFOLLOW), np.int8),
        s=x.copy(),
        road_id=np.ones(n, np.int32),
        lane_id=np.full(n, -1, np.int32),
        in_junction=np.zeros(n, bool),
        speed_limit=np.full(n, 13.9, np.float32),
    )


def actors_at(xy: list[tuple[float, float]], yaw: list[float], kinds: list[ActorKind]) -> ActorTable:
    n = len(xy)
    return ActorTable(
        id=np.arange(1, n + 1, dtype=np.int64),
        kind=np.array([int(k) for k in kinds], np.int8),
        role=np.zeros(n, np.int8),
        xyz=np.array([[x, y, 0.0] for x, y in xy]),
        yaw=np.array(yaw, dtype=np.float64),
        velocity=np.zeros((n, 2)),
        speed=np.zeros(n),
        extent=np.tile(EXTENT, (n, 1)),
        control=np.full((n, 3), np.nan, np.float32),
    )


def snapshot(
    pose: Pose,
    actors: ActorTable | None = None,
    lights: tuple[TrafficLight, ...] = (),
    signs: tuple[StopSign, ...] = (),
    route_index: int = 50,
    town: str = "Tiny",
) -> WorldSnapshot:
    ego = EgoState(pose, np.zeros(2), 0.0, np.zeros(2), 0.0, EXTENT.copy(), Control())
    return WorldSnapshot(
        frame=0,
        time_s=0.0,
        town=town,
        ego=ego,
        actors=actors if actors is not None else ActorTable.empty(),
        traffic_lights=lights,
        stop_signs=signs,
        route=RouteProgress(route_index, float(route_index), 200.0, 0.0, int(RoadOption.LANEFOLLOW)),
    )


def channel(r: BevRasterizer, raster: np.ndarray, name: str) -> np.ndarray:
    return raster[r.index[name]]


def filled_centroid(mask: np.ndarray) -> tuple[float, float]:
    v, u = np.nonzero(mask)
    return float(u.mean()), float(v.mean())


def test_world_to_ego_round_trip_and_known_values():
    # Given random points and a rotated, shifted ego
    rng = np.random.default_rng(0)
    pose = Pose(12.0, -7.0, 0.0, 2.1)
    pts = rng.uniform(-100, 100, (50, 2))
    # When mapped to the ego frame and back
    back = ego_to_world(world_to_ego(pts, pose), pose)
    # Then the points come back, and a point straight ahead / to the right lands on +x / +y
    np.testing.assert_allclose(back, pts, atol=1e-9)
    ego90 = Pose(0.0, 0.0, 0.0, math.pi / 2)  # facing +y (down the CARLA map); its right is -x
    np.testing.assert_allclose(world_to_ego(np.array([0.0, 5.0]), ego90), [5.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(world_to_ego(np.array([-3.0, 0.0]), ego90), [0.0, 3.0], atol=1e-12)


@pytest.mark.parametrize("yaw", [0.0, 0.7, -2.5])
def test_vehicle_box_is_drawn_where_it_is(rasterizer: BevRasterizer, yaw: float):
    # Given an ego at any heading and a vehicle 10 m ahead, 3.5 m to its right, parallel to it
    pose = Pose(50.0, LANE_Y, 0.0, yaw)
    vxy = ego_to_world(np.array([10.0, 3.5]), pose)
    snap = snapshot(pose, actors_at([tuple(vxy)], [yaw], [ActorKind.VEHICLE]))
    # When rasterised
    raster = rasterizer.rasterize(snap, straight_route())
    vehicles = channel(rasterizer, raster, "vehicles")
    # Then the filled pixels are centred at the ego-frame position and cover the box's area
    u_exp, v_exp = rasterizer.ego_to_pixel(np.array([10.0, 3.5]))
    u, v = filled_centroid(vehicles > 0)
    assert abs(u - u_exp) < 0.6 and abs(v - v_exp) < 0.6
    area_px = (2 * EXTENT[0]) * (2 * EXTENT[1]) / rasterizer.res**2
    assert 0.8 * area_px < np.count_nonzero(vehicles) < 1.3 * area_px
    # And the box is long along the image's vertical (the ego's forward) axis
    rows, cols = np.nonzero(vehicles)
    assert np.ptp(rows) > 2 * np.ptp(cols)
    # And nothing else is in the other actor channels
    for other in ("walkers", "bicycles", "static"):
        assert not channel(rasterizer, raster, other).any()


def test_actor_kinds_go_to_their_channels(rasterizer: BevRasterizer):
    pose = Pose(50.0, LANE_Y, 0.0, 0.0)
    kinds = [ActorKind.WALKER, ActorKind.BICYCLE, ActorKind.STATIC]
    xy = [(60.0, LANE_Y), (70.0, LANE_Y), (80.0, LANE_Y)]
    raster = rasterizer.rasterize(snapshot(pose, actors_at(xy, [0.0] * 3, kinds)))
    for kind, (x, y), name in zip(kinds, xy, ("walkers", "bicycles", "static"), strict=True):
        u, v = filled_centroid(channel(rasterizer, raster, name) > 0)
        u_exp, v_exp = rasterizer.ego_to_pixel(world_to_ego(np.array([x, y]), pose))
        assert abs(u - u_exp) < 0.6 and abs(v - v_exp) < 0.6, kind
    assert not channel(rasterizer, raster, "vehicles").any()


def test_far_actors_are_not_drawn(rasterizer: BevRasterizer):
    pose = Pose(50.0, LANE_Y, 0.0, 0.0)
    raster = rasterizer.rasterize(snapshot(pose, actors_at([(150.0, LANE_Y)], [0.0], [ActorKind.VEHICLE])))
    assert not channel(rasterizer, raster, "vehicles").any()


@pytest.mark.parametrize(("heading", "walker_sideways"), [(0.0, False), (math.pi / 2, False), (0.0, True)])
def test_motion_channel_sweeps_moving_actors_along_their_velocity(
    rasterizer: BevRasterizer, heading: float, walker_sideways: bool
):
    # Given a vehicle moving at 8 m/s (or a walker stepping sideways to its yaw) and a parked vehicle
    pose = Pose(50.0, LANE_Y, 0.0, 0.0)
    kind = ActorKind.WALKER if walker_sideways else ActorKind.VEHICLE
    actors = actors_at([(60.0, LANE_Y), (75.0, LANE_Y)], [heading - walker_sideways * math.pi / 2, 0.0],
                       [kind, ActorKind.VEHICLE])  # fmt: skip
    speed = 8.0
    actors.velocity[0] = speed * np.array([math.cos(heading), math.sin(heading)])
    actors.speed[0] = speed
    # When rasterised (motion horizon 1 s)
    motion = channel(rasterizer, rasterizer.rasterize(snapshot(pose, actors)), "actor_motion") > 0
    # Then the moving box is swept from where it is to where it will be in 1 s, and nothing else is drawn
    tau = rasterizer.config.motion_horizon_s
    end = np.array([60.0, LANE_Y]) + speed * tau * np.array([math.cos(heading), math.sin(heading)])
    centre = 0.5 * (np.array([60.0, LANE_Y]) + end)
    u_exp, v_exp = rasterizer.ego_to_pixel(world_to_ego(centre, pose))
    u, v = filled_centroid(motion)
    assert abs(u - u_exp) < 0.6 and abs(v - v_exp) < 0.6
    along, across = (EXTENT[1], EXTENT[0]) if walker_sideways else (EXTENT[0], EXTENT[1])
    area_px = (2 * along + speed * tau) * (2 * across) / rasterizer.res**2
    assert 0.8 * area_px < np.count_nonzero(motion) < 1.3 * area_px
    parked_u, parked_v = rasterizer.ego_to_pixel(world_to_ego(np.array([75.0, LANE_Y]), pose))
    assert not motion[round(parked_v), round(parked_u)]


def test_route_channel_shows_the_route_ahead_only(rasterizer: BevRasterizer):
    # Given the ego on the route at dense index 50 (x = 50 m)
    pose = Pose(50.0, LANE_Y, 0.0, 0.0)
    raster = rasterizer.rasterize(snapshot(pose, route_index=50), straight_route())
    route = channel(rasterizer, raster, "route")
    # Then route pixels lie ahead of the ego on its lane centre, none behind the progress point
    u, v = np.round(rasterizer.ego_to_pixel(np.array([20.0, 0.0]))).astype(int)
    assert route[v, u] == 255
    u, v = np.round(rasterizer.ego_to_pixel(np.array([-8.0, 0.0]))).astype(int)
    assert route[v, u] == 0
    u, v = np.round(rasterizer.ego_to_pixel(np.array([20.0, 4.0]))).astype(int)
    assert route[v, u] == 0


def test_red_light_stop_line_goes_to_the_red_channel(rasterizer: BevRasterizer):
    # Given a red light whose stop line crosses the ego's lane 20 m ahead
    pose = Pose(50.0, LANE_Y, 0.0, 0.0)
    line = StopLine(70.0, LANE_Y, 0.0, road_id=1, lane_id=-1, width=3.5)
    red = TrafficLight(7, TrafficLightState.RED, Pose(70.0, 5.0, 0.0, 0.0), (line,))
    # When rasterised
    raster = rasterizer.rasterize(snapshot(pose, lights=(red,)))
    red_ch = channel(rasterizer, raster, "tl_red")
    # Then the red channel holds a lateral line at 20 m, lane wide, and the other light channels are empty
    rows, cols = np.nonzero(red_ch)
    _, v_exp = rasterizer.ego_to_pixel(np.array([20.0, 0.0]))
    assert abs(rows.mean() - v_exp) < 1.0
    assert np.ptp(cols) * rasterizer.res == pytest.approx(3.5, abs=1.0)
    assert (
        not channel(rasterizer, raster, "tl_green").any()
        and not channel(rasterizer, raster, "tl_yellow").any()
    )
    # And the same light when green moves to the green channel
    raster = rasterizer.rasterize(snapshot(pose, lights=(replace(red, state=TrafficLightState.GREEN),)))
    assert not channel(rasterizer, raster, "tl_red").any()
    assert np.array_equal(channel(rasterizer, raster, "tl_green"), red_ch)


def test_stop_sign_line_and_ego_box(rasterizer: BevRasterizer):
    pose = Pose(50.0, LANE_Y, 0.0, 0.0)
    sign = StopSign(3, Pose(60.0, 4.0, 0.0, 0.0), (StopLine(60.0, LANE_Y, 0.0, 1, -1, 3.5),))
    raster = rasterizer.rasterize(snapshot(pose, signs=(sign,)))
    rows, _ = np.nonzero(channel(rasterizer, raster, "stop_signs"))
    assert abs(rows.mean() - rasterizer.ego_to_pixel(np.array([10.0, 0.0]))[1]) < 1.0
    u, v = filled_centroid(channel(rasterizer, raster, "ego") > 0)
    assert abs(u - rasterizer.u0) < 0.6 and abs(v - rasterizer.v0) < 0.6


def test_drivable_area_and_markings_follow_the_road(rasterizer: BevRasterizer):
    # Given the ego on lane -1 of the 7 m wide road (road edges 1.75 m right and 5.25 m left of it)
    pose = Pose(50.0, LANE_Y, 0.0, 0.0)
    raster = rasterizer.rasterize(snapshot(pose))
    drivable = channel(rasterizer, raster, "drivable")
    markings = channel(rasterizer, raster, "lane_markings")

    def at(x_e: float, y_e: float, ch: np.ndarray) -> int:
        u, v = np.round(rasterizer.ego_to_pixel(np.array([x_e, y_e]))).astype(int)
        return int(ch[v, u])

    # Then the ego's lane and the opposite lane are drivable, 8 m right and 12 m left are not
    assert at(0.0, 0.0, drivable) == 255
    assert at(5.0, -3.5, drivable) == 255
    assert at(0.0, 8.0, drivable) == 0
    assert at(0.0, -12.0, drivable) == 0
    # And the solid outer line (1.75 m right) is brighter than the broken centre line (1.75 m left)
    row = round(rasterizer.v0) - 10
    u_solid, _ = rasterizer.ego_to_pixel(np.array([0.0, 1.75]))
    u_broken, _ = rasterizer.ego_to_pixel(np.array([0.0, -1.75]))
    solid = markings[row, int(u_solid) - 1 : int(u_solid) + 3].max()
    broken = markings[row, int(u_broken) - 1 : int(u_broken) + 3].max()
    assert solid > broken > 0
    assert markings[row, int(rasterizer.u0)] == 0  # lane centre is unmarked


@pytest.mark.parametrize("yaw", [0.7, 1.5707963, 2.0, -1.2])
def test_drivable_area_is_warped_with_the_ego_heading(rasterizer: BevRasterizer, yaw: float):
    # Given the ego on the road at an arbitrary heading
    pose = Pose(100.0, LANE_Y, 0.0, yaw)
    drivable = channel(rasterizer, rasterizer.rasterize(snapshot(pose)), "drivable")
    # When every pixel is mapped back to the world
    v, u = np.mgrid[0 : rasterizer.size, 0 : rasterizer.size]
    world = ego_to_world(rasterizer.pixel_to_ego(np.stack([u, v], axis=-1).astype(float)), pose)
    # Then pixels well inside the 7 m road are drivable and those well outside are not
    inside = (np.abs(world[..., 1]) < 3.5 - 0.75) & (world[..., 0] > 1.0) & (world[..., 0] < 199.0)
    outside = np.abs(world[..., 1]) > 3.5 + 0.75
    assert inside.sum() > 100 and outside.sum() > 100
    assert (drivable[inside] == 255).all()
    assert (drivable[outside] == 0).all()


def test_ego_history_channel(rasterizer: BevRasterizer):
    pose = Pose(50.0, LANE_Y, 0.0, 0.0)
    history = np.array([[40.0, LANE_Y], [45.0, LANE_Y], [50.0, LANE_Y]])
    raster = rasterizer.rasterize(snapshot(pose), ego_history_xy=history)
    u, v = np.round(rasterizer.ego_to_pixel(np.array([-5.0, 0.0]))).astype(int)
    assert channel(rasterizer, raster, "ego_history")[v, u] == 255
    assert not channel(rasterizer, rasterizer.rasterize(snapshot(pose)), "ego_history").any()


def test_raster_shape_dtype_and_channel_subset(tiny_map: carla.Map):
    r = BevRasterizer(
        BevConfig(size_px=64, ego_forward_offset_m=8.0, channels=["vehicles", "drivable"]), tiny_map
    )
    raster = r.rasterize(snapshot(Pose(50.0, LANE_Y, 0.0, 0.0)))
    assert raster.shape == (2, 64, 64) and raster.dtype == np.uint8
    assert raster[1].any() and not raster[0].any()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"channels": ["vehicles", "cars"]}, "unknown bev.channels"),
        ({"channels": []}, "empty"),
        ({"size_px": 4}, "too small"),
        ({"ego_forward_offset_m": 40.0}, "outside"),
        ({"interpolation": "cubic"}, "interpolation"),
        ({"route_width_m": 0.0}, "route_width_m"),
        ({"motion_horizon_s": 0.0}, "motion_horizon_s"),
        ({"motion_min_speed_mps": -1.0}, "motion_min_speed_mps"),
    ],
)
def test_bad_config_is_one_clear_error(tiny_map: carla.Map, change: dict, needle: str):
    with pytest.raises(BevError, match=needle):
        BevRasterizer(BevConfig(**change), tiny_map)


def test_snapshot_of_another_town_is_rejected(rasterizer: BevRasterizer):
    with pytest.raises(BevError, match="Town01"):
        rasterizer.rasterize(snapshot(Pose(50.0, LANE_Y, 0.0, 0.0), town="Town01"))


def test_render_rgb_draws_plans_in_their_colours(rasterizer: BevRasterizer):
    # Given an empty raster and a policy plan straight ahead, an expert plan 4 m to the right
    raster = np.zeros(rasterizer.shape, np.uint8)
    plans = {"policy": np.array([[5.0, 0.0], [10.0, 0.0]]), "expert": np.array([[5.0, 4.0], [10.0, 4.0]])}
    # When rendered
    rgb = rasterizer.render_rgb(raster, plans, text="t=1.0s")
    # Then the plan waypoints are red and green pixels where they are
    assert rgb.shape == (rasterizer.size, rasterizer.size, 3) and rgb.dtype == np.uint8
    u, v = np.round(rasterizer.ego_to_pixel(np.array([10.0, 0.0]))).astype(int)
    r, g, _ = (int(c) for c in rgb[v, u])
    assert r > 200 and g < 100
    u, v = np.round(rasterizer.ego_to_pixel(np.array([10.0, 4.0]))).astype(int)
    r, g, _ = (int(c) for c in rgb[v, u])
    assert g > 200 and r < 100
    assert rgb[:12].any()  # the text line
    with pytest.raises(BevError, match="shape"):
        rasterizer.render_rgb(np.zeros((2, 8, 8), np.uint8))


def test_render_rgb_colours_channels(rasterizer: BevRasterizer):
    pose = Pose(50.0, LANE_Y, 0.0, 0.0)
    snap = snapshot(pose, actors_at([(60.0, LANE_Y)], [0.0], [ActorKind.VEHICLE]))
    rgb = rasterizer.render_rgb(rasterizer.rasterize(snap, straight_route()))
    u, v = np.round(rasterizer.ego_to_pixel(np.array([10.0, 0.0]))).astype(int)
    assert tuple(rgb[v, u]) == (0, 140, 255)  # vehicles paint over road and route
    assert tuple(rgb[0, 0]) == (0, 0, 0)  # off-road, nothing


def test_real_town_tile_is_cached_and_ego_lane_is_drivable(shared_maps_dir):
    # Given Town01 and an ego standing on one of its lanes
    cmap = carla.Map("Town01", (shared_maps_dir / "Town01.xodr").read_text())
    wp = cmap.generate_waypoints(20.0)[123]
    loc, yaw = wp.transform.location, math.radians(wp.transform.rotation.yaw)
    config = BevConfig()
    r = BevRasterizer(config, cmap)
    # When rasterised
    raster = r.rasterize(snapshot(Pose(loc.x, loc.y, 0.0, yaw), town="Town01"))
    # Then the ego's pixel is drivable, markings exist, and a second rasteriser reuses the cached tile
    drivable = raster[r.index["drivable"]]
    assert drivable[int(r.v0), int(r.u0)] == 255
    assert raster[r.index["lane_markings"]].any()
    assert 0.05 < np.count_nonzero(drivable) / drivable.size < 0.9
    assert get_map_tile(cmap, config) is get_map_tile(cmap, replace(config, channels=["drivable"]))
