"""GPS conversion as the leaderboard does it (route_manipulation._location_to_gps / _get_latlon_ref)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from carla_bridge.geo import (
    DEFAULT_LAT_REF_DEG,
    DEFAULT_LON_REF_DEG,
    geo_reference,
    gps_route,
    gps_to_location,
    location_to_gps,
    locations_to_gps,
)
from carla_bridge.maps import InvalidMapError
from carla_bridge.route import DenseRoute, RoadOption


def leaderboard_location_to_gps(lat_ref: float, lon_ref: float, x: float, y: float, z: float) -> dict:
    """The leaderboard's function, verbatim apart from names: the reference our version must match."""
    earth_radius_equa = 6378137.0
    scale = math.cos(lat_ref * math.pi / 180.0)
    mx = scale * lon_ref * math.pi * earth_radius_equa / 180.0
    my = scale * earth_radius_equa * math.log(math.tan((90.0 + lat_ref) * math.pi / 360.0))
    mx += x
    my -= y
    lon = mx * 180.0 / (math.pi * earth_radius_equa * scale)
    lat = 360.0 * math.atan(math.exp(my / (earth_radius_equa * scale))) / math.pi - 90.0
    return {"lat": lat, "lon": lon, "z": z}


POINTS = [(0.0, 0.0, 0.0), (123.4, -56.7, 1.5), (-400.0, 250.0, 10.0), (1000.0, 1000.0, -2.0)]
REFERENCES = [(0.0, 0.0), (42.0, 2.0), (49.0, 8.0), (-33.9, 151.2)]


@pytest.mark.parametrize("lat_ref, lon_ref", REFERENCES)
def test_given_world_points_then_gps_matches_the_leaderboard_formula(lat_ref: float, lon_ref: float) -> None:
    for x, y, z in POINTS:
        expected = leaderboard_location_to_gps(lat_ref, lon_ref, x, y, z)

        got = location_to_gps(x, y, z, lat_ref, lon_ref)

        assert got.as_dict() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("lat_ref, lon_ref", REFERENCES)
def test_given_gps_when_converted_back_then_the_world_point_returns(lat_ref: float, lon_ref: float) -> None:
    for x, y, z in POINTS:
        gps = location_to_gps(x, y, z, lat_ref, lon_ref)

        assert gps_to_location(gps.lat, gps.lon, gps.z, lat_ref, lon_ref) == pytest.approx(
            (x, y, z), abs=1e-6
        )


def test_given_the_origin_then_gps_is_the_reference_and_north_is_minus_y() -> None:
    origin = location_to_gps(0.0, 0.0, 0.0, 42.0, 2.0)
    north = location_to_gps(0.0, -100.0, 0.0, 42.0, 2.0)
    east = location_to_gps(100.0, 0.0, 0.0, 42.0, 2.0)

    assert (origin.lat, origin.lon) == pytest.approx((42.0, 2.0))
    assert north.lat > 42.0 and north.lon == pytest.approx(2.0)
    assert east.lon > 2.0 and east.lat == pytest.approx(42.0)


def test_given_a_dense_route_then_the_gps_route_has_one_entry_per_point_with_its_command() -> None:
    xyz = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 1.0, 0.5]])
    dense = DenseRoute(
        xyz=xyz,
        yaw=np.zeros(3),
        commands=np.array([4, 4, 1], dtype=np.int8),
        s=np.array([0.0, 1.0, 2.41]),
        road_id=np.zeros(3, dtype=np.int32),
        lane_id=-np.ones(3, dtype=np.int32),
        in_junction=np.array([False, False, True]),
        speed_limit=np.full(3, 8.0, dtype=np.float32),
    )

    route = gps_route(dense, 0.0, 0.0)

    assert [command for _, command in route] == [
        RoadOption.LANEFOLLOW,
        RoadOption.LANEFOLLOW,
        RoadOption.LEFT,
    ]
    assert route[2][0] == pytest.approx(leaderboard_location_to_gps(0.0, 0.0, 2.0, 1.0, 0.5))
    np.testing.assert_allclose(locations_to_gps(xyz, 0.0, 0.0)[:, 2], xyz[:, 2])


def test_given_an_xodr_header_then_the_geo_reference_is_read() -> None:
    cdata = (
        "<header><geoReference><![CDATA[+proj=tmerc +lat_0=4.9e+1 +lon_0=8 +k=1]]></geoReference></header>"
    )
    plain = "<header><geoReference>+proj=tmerc +lon_0=-3.5</geoReference></header>"

    assert geo_reference(cdata) == (49.0, 8.0)
    assert geo_reference(plain) == (DEFAULT_LAT_REF_DEG, -3.5)
    assert geo_reference("<OpenDRIVE><header/></OpenDRIVE>") == (DEFAULT_LAT_REF_DEG, DEFAULT_LON_REF_DEG)


def test_given_a_bad_geo_reference_then_a_clear_error_names_it() -> None:
    with pytest.raises(InvalidMapError, match=r"\+lat_0='north'"):
        geo_reference("<geoReference>+proj=tmerc +lat_0=north</geoReference>")


def test_given_the_shared_towns_then_their_geo_reference_is_lat0_lon0(shared_maps_dir: Path) -> None:
    for town in ("Town01", "Town04", "Town10HD"):
        assert geo_reference((shared_maps_dir / f"{town}.xodr").read_text()) == (0.0, 0.0)
