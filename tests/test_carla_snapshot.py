"""Snapshot building from CARLA actors: fake actors holding real carla.Transform/Vector3D/BoundingBox
values, stop lines from real carla.Map waypoints (the built-in town, offline)."""

from __future__ import annotations

import math

import carla
import numpy as np
import pytest
from test_carla_fakes import FakeActor, FakeStopSign, FakeTrafficLight, FakeVehicle, transform, vehicle_box

from carla_bridge.carla_client.actors import actor_table, box_pose, classify_actor, ego_state
from carla_bridge.carla_client.config import SnapshotConfig
from carla_bridge.carla_client.signals import SignalIndex, trigger_stop_waypoints
from carla_bridge.carla_client.snapshot_builder import RouteTracker, SnapshotBuilder
from carla_bridge.embedded.config import LaneGraphConfig, SignalConfig
from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.embedded.signals import build_signal_layout
from carla_bridge.errors import SimulatorError
from carla_bridge.maps import MapLibrary
from carla_bridge.route_planner import plan_route
from carla_bridge.route_sets import load_route_set
from carla_bridge.snapshot import ActorKind, ActorRole, Control, TrafficLightState

CFG = SnapshotConfig()


@pytest.fixture(scope="module")
def cmap() -> carla.Map:
    return MapLibrary().load("Takeover01")


@pytest.fixture(scope="module")
def route(cmap):
    route = load_route_set("builtin:eval")[0]
    route.dense = plan_route(route, cmap)
    return route


def hero(x=10.0, y=5.0, yaw_deg=30.0, speed=4.0) -> FakeVehicle:
    yaw = math.radians(yaw_deg)
    return FakeVehicle(
        1,
        "vehicle.lincoln.mkz_2020",
        transform(x, y, 0.0, yaw_deg),
        carla.BoundingBox(carla.Location(0.1, 0.0, 0.7), carla.Vector3D(2.44, 1.06, 0.76)),
        velocity=carla.Vector3D(speed * math.cos(yaw), speed * math.sin(yaw), 0.0),
        acceleration=carla.Vector3D(1.0, 0.0, 0.0),
        angular_velocity=carla.Vector3D(0.0, 0.0, 10.0),
        attributes={"role_name": "hero", "base_type": "car", "number_of_wheels": "4"},
        control=carla.VehicleControl(throttle=0.4, steer=-0.1),
    )


def test_ego_state_converts_degrees_and_uses_the_box_centre():
    # given a hero whose box centre sits 0.1 m ahead of its origin, heading 30 deg
    actor = hero()
    # when the ego state is built
    ego = ego_state(actor)
    # then yaw is in radians, the pose is the box centre, speed is along the heading
    assert ego.pose.yaw == pytest.approx(math.radians(30.0))
    assert ego.pose.x == pytest.approx(10.0 + 0.1 * math.cos(math.radians(30)))
    assert ego.pose.y == pytest.approx(5.0 + 0.1 * math.sin(math.radians(30)))
    assert ego.pose.z == pytest.approx(0.7)
    assert ego.speed == pytest.approx(4.0)
    assert ego.yaw_rate == pytest.approx(math.radians(10.0))
    np.testing.assert_allclose(ego.extent, [2.44, 1.06, 0.76], rtol=1e-6)
    assert ego.control == Control(throttle=pytest.approx(0.4), steer=pytest.approx(-0.1))


def test_reversing_vehicle_has_negative_speed():
    actor = hero(speed=-2.0)
    assert ego_state(actor).speed == pytest.approx(-2.0)


@pytest.mark.parametrize(
    ("type_id", "attributes", "lights", "expected"),
    [
        ("walker.pedestrian.0001", {}, None, (ActorKind.WALKER, ActorRole.BACKGROUND)),
        ("vehicle.bh.crossbike", {"base_type": "bicycle", "number_of_wheels": "2"}, None, (ActorKind.BICYCLE, ActorRole.BACKGROUND)),
        ("vehicle.yamaha.yzf", {"base_type": "motorcycle", "number_of_wheels": "2"}, None, (ActorKind.VEHICLE, ActorRole.BACKGROUND)),
        ("vehicle.old.bike", {"number_of_wheels": "2"}, None, (ActorKind.BICYCLE, ActorRole.BACKGROUND)),
        ("vehicle.audi.a2", {"role_name": "scenario"}, None, (ActorKind.VEHICLE, ActorRole.SCENARIO)),
        ("vehicle.audi.a2", {"role_name": "parked"}, None, (ActorKind.VEHICLE, ActorRole.PARKED)),
        ("vehicle.audi.a2", {"role_name": "autopilot"}, None, (ActorKind.VEHICLE, ActorRole.BACKGROUND)),
        ("static.prop.trafficcone01", {"role_name": "scenario"}, None, (ActorKind.STATIC, ActorRole.SCENARIO)),
        ("static.prop.warningaccident", {}, None, (ActorKind.STATIC, ActorRole.BACKGROUND)),
        ("vehicle.ford.ambulance", {"role_name": "scenario"}, carla.VehicleLightState.Special1, (ActorKind.VEHICLE, ActorRole.EMERGENCY)),
        ("vehicle.ford.ambulance", {}, carla.VehicleLightState.NONE, (ActorKind.VEHICLE, ActorRole.BACKGROUND)),
        ("vehicle.any.car", {"special_type": "emergency"}, carla.VehicleLightState.Special2, (ActorKind.VEHICLE, ActorRole.EMERGENCY)),
    ],
)  # fmt: skip
def test_classification_by_type_attributes_and_sirens(type_id, attributes, lights, expected):
    actor = FakeVehicle(7, type_id, transform(0, 0), vehicle_box(), attributes=attributes, light_state=lights)
    cls = classify_actor(actor, CFG)
    assert (cls.kind, cls.role) == expected


@pytest.mark.parametrize(
    "type_id", ["sensor.other.collision", "controller.ai.walker", "spectator", "traffic.traffic_light"]
)
def test_non_participants_are_left_out(type_id):
    assert classify_actor(FakeActor(3, type_id, transform(0, 0), carla.BoundingBox()), CFG) is None


def test_actor_table_rows_hold_poses_speeds_controls_and_skip_the_hero_and_far_actors():
    # given a hero, a car ahead, a walker, a sensor and a car 500 m away
    car = FakeVehicle(
        20, "vehicle.audi.a2", transform(30.0, 5.0, 0.0, 180.0), vehicle_box(),
        velocity=carla.Vector3D(-3.0, 0.0, 0.0), control=carla.VehicleControl(throttle=0.3, brake=0.0, steer=0.2),
    )  # fmt: skip
    walker = FakeActor(
        21, "walker.pedestrian.0002", transform(12.0, 9.0, 0.0, 90.0),
        carla.BoundingBox(carla.Location(0, 0, 0.9), carla.Vector3D(0.3, 0.3, 0.9)), velocity=carla.Vector3D(0, 1.2, 0),
    )  # fmt: skip
    sensor = FakeActor(22, "sensor.other.collision", transform(10, 5), carla.BoundingBox())
    far = FakeVehicle(23, "vehicle.audi.a2", transform(600.0, 5.0), vehicle_box())
    # when the table is built around the hero
    table = actor_table([hero(), car, walker, sensor, far], CFG, center_xy=(10.0, 5.0))
    # then only the car and the walker are in it, with the snapshot's conventions
    assert table.id.tolist() == [20, 21]
    assert table.kind.tolist() == [ActorKind.VEHICLE, ActorKind.WALKER]
    assert table.yaw[0] == pytest.approx(math.pi)
    assert table.speed[0] == pytest.approx(3.0)  # driving forward, heading west
    assert table.speed[1] == pytest.approx(1.2)
    np.testing.assert_allclose(table.control[0], [0.3, 0.2, 0.0], atol=1e-6)
    assert np.isnan(table.control[1]).all()
    assert table.xyz[1, 2] == pytest.approx(0.9)
    assert table.type_id == ("vehicle.audi.a2", "walker.pedestrian.0002")
    assert table.get(0).control == Control(throttle=pytest.approx(0.3), steer=pytest.approx(0.2), brake=0.0)


def test_box_pose_rotates_the_box_offset_with_the_actor():
    pose = box_pose(
        transform(0.0, 0.0, 0.0, 90.0), carla.BoundingBox(carla.Location(1.0, 0, 0), carla.Vector3D(1, 1, 1))
    )
    assert (pose.x, pose.y) == (pytest.approx(0.0, abs=1e-6), pytest.approx(1.0))


def _light_landmarks(cmap):
    return [lm for lm in cmap.get_all_landmarks() if lm.type == "1000001"]


def _approach_waypoint(cmap, lm) -> carla.Waypoint:
    """A waypoint 6 m before the junction on a lane the landmark controls."""
    for lane_from, lane_to in lm.get_lane_validities():
        for lane in range(lane_from, lane_to + 1):
            if lane == 0:
                continue
            wp = cmap.get_waypoint_xodr(lm.road_id, lane, lm.s)
            if wp is not None and wp.lane_type == carla.LaneType.Driving:
                previous = wp.previous(6.0)
                return previous[0] if previous else wp
    raise AssertionError("landmark controls no driving lane")


def test_light_stop_lines_from_the_trigger_volume_match_the_embedded_simulators(cmap):
    # given a CARLA light whose trigger volume lies across the approach lane (no get_stop_waypoints)
    graph = LaneGraph.for_map(cmap, LaneGraphConfig())
    layout = build_signal_layout(cmap, graph, SignalConfig(generate_missing_lights=False))
    lm = _light_landmarks(cmap)[0]
    wp = _approach_waypoint(cmap, lm)
    across = wp.transform.rotation.yaw + 90.0  # the volume's x axis spans the lane (leaderboard)
    light = FakeTrafficLight(
        int(lm.id),
        transform(wp.transform.location.x, wp.transform.location.y, 0.0, across),
        carla.BoundingBox(carla.Location(0, 0, 0), carla.Vector3D(0.5 * wp.lane_width, 1.0, 1.0)),
        state=carla.TrafficLightState.Red,
        elapsed_s=2.5,
    )
    # when the snapshot's lights are built
    (snap_light,) = SignalIndex(cmap, CFG).traffic_lights([light])
    # then the stop line is the lane's junction entry, where the embedded simulator puts it too
    k = int(np.flatnonzero(layout.light_ids == int(lm.id))[0])
    embedded = {(s.road_id, s.lane_id): s for s in layout.light_stop_lines[k]}
    (line,) = snap_light.stop_lines
    assert (line.road_id, line.lane_id) in embedded
    ref = embedded[(line.road_id, line.lane_id)]
    assert math.hypot(line.x - ref.x, line.y - ref.y) < 1.0
    assert abs(math.remainder(line.yaw - ref.yaw, math.tau)) < math.radians(5)
    assert snap_light.state is TrafficLightState.RED and snap_light.time_in_state == 2.5
    assert snap_light.junction_id >= 0 and snap_light.junction_id == layout.light_junction[k]


def test_light_stop_waypoints_are_used_when_the_server_gives_them(cmap):
    wp = cmap.get_waypoint(carla.Location(x=213.5, y=-198.25))
    light = FakeTrafficLight(
        9, transform(0, 0), carla.BoundingBox(), state=carla.TrafficLightState.Green, stop_waypoints=[wp]
    )
    (snap_light,) = SignalIndex(cmap, CFG).traffic_lights([light])
    (line,) = snap_light.stop_lines
    assert (line.x, line.y) == (
        pytest.approx(wp.transform.location.x),
        pytest.approx(wp.transform.location.y),
    )
    assert line.yaw == pytest.approx(math.radians(wp.transform.rotation.yaw))
    assert line.width == pytest.approx(wp.lane_width)
    assert snap_light.state is TrafficLightState.GREEN


def test_stop_sign_zone_gives_a_stop_line_at_the_junction_entry(cmap):
    lm = next(lm for lm in cmap.get_all_landmarks() if lm.type == "206")
    wp = _approach_waypoint(cmap, lm)
    sign = FakeStopSign(
        int(lm.id),
        transform(wp.transform.location.x, wp.transform.location.y, 0.0, wp.transform.rotation.yaw + 90.0),
        carla.BoundingBox(carla.Location(0, 0, 0), carla.Vector3D(0.5 * wp.lane_width, 1.0, 1.0)),
    )
    (stop,) = SignalIndex(cmap, CFG).stop_signs(
        [sign], ego_xy=(wp.transform.location.x, wp.transform.location.y)
    )
    (line,) = stop.stop_lines
    end = cmap.get_waypoint(carla.Location(x=line.x, y=line.y))
    assert not end.is_junction
    assert end.next(1.0)[0].is_junction  # the last lane point before the junction
    # and a sign far from the ego is left out
    assert SignalIndex(cmap, CFG).stop_signs([sign], ego_xy=(1e4, 1e4)) == ()


def test_trigger_volume_over_two_lanes_gives_two_stop_lines(cmap):
    wp = next(
        w for w in cmap.generate_waypoints(5.0)
        if not w.is_junction and w.get_left_lane() is not None
        and w.get_left_lane().lane_type == carla.LaneType.Driving and w.get_left_lane().lane_id * w.lane_id > 0
    )  # fmt: skip
    left = wp.get_left_lane().transform.location
    mid = carla.Location(x=(wp.transform.location.x + left.x) / 2, y=(wp.transform.location.y + left.y) / 2)
    volume = carla.BoundingBox(carla.Location(0, 0, 0), carla.Vector3D(wp.lane_width, 1.0, 1.0))
    stops = trigger_stop_waypoints(
        transform(mid.x, mid.y, 0.0, wp.transform.rotation.yaw + 90.0), volume, cmap, CFG
    )
    assert len({(s.road_id, s.lane_id) for s in stops}) == 2


def test_snapshot_builder_sorts_actors_and_tracks_the_route(cmap, route):
    # given the hero on the route's 30th point, a light and a car
    d = route.dense
    i = 30
    ego = hero(float(d.xyz[i, 0]), float(d.xyz[i, 1]), math.degrees(d.yaw[i]))
    ego.bounding_box = carla.BoundingBox(carla.Location(0, 0, 0.7), carla.Vector3D(2.4, 1.0, 0.7))
    car = FakeVehicle(
        5, "vehicle.audi.a2", transform(float(d.xyz[i + 15, 0]), float(d.xyz[i + 15, 1])), vehicle_box()
    )
    builder = SnapshotBuilder(cmap, route.town, d, CFG)
    # when two ticks are built
    first = builder.build(0, 0.0, [car, ego], Control(throttle=0.5))
    second = builder.build(1, 0.05, [ego, car], Control(throttle=0.5))
    # then the ego is the hero, the car is in the table, the progress index is on the route
    assert first.ego.control.throttle == 0.5 and first.actors.id.tolist() == [5]
    assert abs(first.route.index - i) <= 1 and first.route.distance_to_route < 0.5
    assert second.route.index >= first.route.index
    assert first.route.total_m == pytest.approx(d.length_m)


def test_snapshot_without_a_hero_is_a_clear_error(cmap, route):
    builder = SnapshotBuilder(cmap, route.town, route.dense, CFG)
    with pytest.raises(SimulatorError, match="role_name 'hero'"):
        builder.build(0, 0.0, [FakeVehicle(5, "vehicle.audi.a2", transform(0, 0), vehicle_box())])


def test_route_progress_never_goes_back(route):
    tracker = RouteTracker(route.dense, 50)
    d = route.dense
    ahead = tracker.update(float(d.xyz[40, 0]), float(d.xyz[40, 1]))
    back = tracker.update(float(d.xyz[10, 0]), float(d.xyz[10, 1]))
    assert back.index == ahead.index >= 39
