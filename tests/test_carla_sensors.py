"""Route weather, collision-sensor events with the leaderboard's de-duplication, leaderboard sensor lists."""

from __future__ import annotations

import dataclasses

import carla
import pytest

from carla_bridge.carla_client.config import AgentConfig, CameraConfig
from carla_bridge.carla_client.sensors import (
    CollisionFilter,
    EventQueue,
    SensorCollision,
    SensorSpecError,
    collision_kind,
    leaderboard_sensors,
    on_collision,
    validate_sensor_specs,
)
from carla_bridge.carla_client.weather import carla_weather, weather_at
from carla_bridge.errors import RouteError
from carla_bridge.route import Weather
from carla_bridge.scoring.config import CollisionConfig
from carla_bridge.snapshot import InfractionKind


def test_weather_interpolates_between_keyframes_by_route_completion():
    weathers = [
        Weather(0.0, {"cloudiness": 0.0, "sun_altitude_angle": 70.0}),
        Weather(100.0, {"cloudiness": 80.0, "sun_altitude_angle": 10.0, "precipitation": 40.0}),
    ]
    mid = weather_at(weathers, 25.0)
    assert mid["cloudiness"] == pytest.approx(20.0)
    assert mid["sun_altitude_angle"] == pytest.approx(55.0)
    assert mid["precipitation"] == pytest.approx(10.0)  # 0 (CARLA default) -> 40
    assert weather_at(weathers, 150.0)["cloudiness"] == pytest.approx(80.0)
    assert weather_at(weathers, -5.0)["cloudiness"] == pytest.approx(0.0)


def test_route_without_weather_gets_the_leaderboard_default():
    params = weather_at([], 50.0)
    weather = carla_weather(params)
    assert isinstance(weather, carla.WeatherParameters)
    assert weather.sun_altitude_angle == pytest.approx(70.0) and weather.cloudiness == pytest.approx(50.0)


def test_unknown_weather_attribute_is_one_clear_error():
    with pytest.raises(RouteError, match=r"unknown attribute.*sunshine"):
        weather_at([Weather(0.0, {"sunshine": 1.0})], 0.0, "r7")


@pytest.mark.parametrize(
    ("type_id", "kind"),
    [
        ("vehicle.audi.a2", InfractionKind.COLLISION_VEHICLE),
        ("vehicle.bh.crossbike", InfractionKind.COLLISION_VEHICLE),
        ("walker.pedestrian.0001", InfractionKind.COLLISION_PEDESTRIAN),
        ("static.prop.trafficcone01", InfractionKind.COLLISION_STATIC),
        ("static.building", InfractionKind.COLLISION_STATIC),
        ("traffic.traffic_light", InfractionKind.COLLISION_STATIC),
        ("static.sidewalk", None),
        ("sensor.other.collision", None),
    ],
)
def test_collision_kinds_follow_the_leaderboard(type_id, kind):
    assert collision_kind(type_id) == kind


def test_collision_filter_counts_a_contact_once():
    # given the leaderboard's de-duplication settings
    f = CollisionFilter(CollisionConfig())
    hit = SensorCollision(frame=10, other_id=0, other_type_id="static.building")
    # when the same wall is reported on consecutive ticks at nearly the same place
    first = f.update([hit], 10, 0.5, (0.0, 0.0, 0.0))
    again = f.update([hit], 11, 0.55, (0.2, 0.0, 0.0))
    # then one event; and a pole 4 m further counts again once the memory of the wall id expired
    assert [e.kind for e in first] == [InfractionKind.COLLISION_STATIC] and again == []
    pole = SensorCollision(frame=300, other_id=44, other_type_id="static.pole")
    later = f.update([pole], 300, 15.0, (4.0, 0.0, 0.0))
    assert len(later) == 1 and later[0].actor_id == 44 and "static.pole" in later[0].message


def test_collision_filter_ignores_a_second_actor_hit_at_the_same_place():
    f = CollisionFilter(CollisionConfig())
    hits = [SensorCollision(5, 1, "vehicle.audi.a2"), SensorCollision(5, 2, "walker.pedestrian.0001")]
    events = f.update(hits, 5, 0.25, (1.0, 1.0, 0.0))
    assert [e.actor_id for e in events] == [1]


def test_sensor_callback_feeds_the_queue():
    queue = EventQueue()

    class Event:  # carla.CollisionEvent's fields
        frame = 12
        other_actor = dataclasses.make_dataclass("A", [("id", int), ("type_id", str)])(3, "vehicle.audi.a2")

    on_collision(queue)(Event())
    assert queue.drain() == [SensorCollision(12, 3, "vehicle.audi.a2")] and queue.drain() == []


def test_leaderboard_sensors_hold_speed_imu_gps_and_cameras():
    config = AgentConfig(cameras=[CameraConfig(id="rgb_front", width_px=320, height_px=160)])
    sensors = leaderboard_sensors(config)
    assert [s["id"] for s in sensors] == ["speed", "imu", "gps", "rgb_front"]
    assert sensors[0]["type"] == "sensor.speedometer" and sensors[3]["width"] == 320


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        ([{"type": "sensor.other.gnss", "id": "gps"}], "lacks"),
        ([{"type": "sensor.other.collision", "id": "c", "x": 0, "y": 0, "z": 0, "roll": 0, "pitch": 0, "yaw": 0}], "not allowed"),
        ([{"type": "sensor.speedometer", "id": "s"}, {"type": "sensor.speedometer", "id": "s"}], "twice"),
        ([{"type": "sensor.other.imu", "id": "imu", "x": 3.0, "y": 1.0, "z": 1.0, "roll": 0, "pitch": 0, "yaw": 0}], "at most 3"),
    ],
)  # fmt: skip
def test_sensor_lists_the_leaderboard_refuses_are_clear_errors(specs, match):
    with pytest.raises(SensorSpecError, match=match):
        validate_sensor_specs(specs)
