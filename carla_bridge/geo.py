"""GPS coordinates of CARLA world locations, as the leaderboard computes them.

The leaderboard (route_manipulation._location_to_gps) and CARLA's GNSS use a spherical Mercator
projection around the map's geo reference (lat_ref, lon_ref), with y flipped because CARLA's world
frame is left-handed:

    scale = cos(lat_ref)
    mx0 = scale * R * lon_ref          my0 = scale * R * ln(tan((90 + lat_ref) / 2))   (angles in radians)
    mx = mx0 + x                       my = my0 - y
    lon = mx / (scale * R)             lat = 2 * atan(exp(my / (scale * R))) - 90

with R = 6378137 m (WGS84 equatorial radius). The reference comes from the OpenDRIVE header's
<geoReference> (+lat_0, +lon_0), 42.0 / 2.0 when absent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from carla_bridge.maps import InvalidMapError
from carla_bridge.route import DenseRoute, RoadOption

EARTH_RADIUS_EQUA_M = 6378137.0
DEFAULT_LAT_REF_DEG = 42.0  # leaderboard default when the map has no geo reference
DEFAULT_LON_REF_DEG = 2.0
_GEO_REFERENCE = re.compile(r"<geoReference\s*>(.*?)</geoReference\s*>", re.DOTALL)
_CDATA = re.compile(r"^\s*<!\[CDATA\[(.*)\]\]>\s*$", re.DOTALL)


@dataclass(frozen=True)
class GpsCoordinate:
    lat: float  # degrees
    lon: float  # degrees
    z: float  # metres, unchanged from the world location

    def as_dict(self) -> dict[str, float]:
        """The leaderboard's form: {'lat': ..., 'lon': ..., 'z': ...}."""
        return {"lat": self.lat, "lon": self.lon, "z": self.z}


def geo_reference(xodr_text: str) -> tuple[float, float]:
    """(lat_ref, lon_ref) in degrees from the OpenDRIVE <geoReference> proj string (+lat_0, +lon_0)."""
    lat_ref, lon_ref = DEFAULT_LAT_REF_DEG, DEFAULT_LON_REF_DEG
    match = _GEO_REFERENCE.search(xodr_text)
    if match is None:
        return lat_ref, lon_ref
    text = match.group(1)
    cdata = _CDATA.match(text)
    for item in (cdata.group(1) if cdata else text).split():
        key, _, value = item.partition("=")
        if key not in ("+lat_0", "+lon_0"):
            continue
        try:
            number = float(value)
        except ValueError as exc:
            raise InvalidMapError(
                f"the map's <geoReference> has {key}={value!r}, not a number: fix the OpenDRIVE header"
            ) from exc
        if key == "+lat_0":
            lat_ref = number
        else:
            lon_ref = number
    return lat_ref, lon_ref


def _mercator_origin(lat_ref: float, lon_ref: float) -> tuple[float, float, float]:
    """(scale, mx0, my0) of the projection around the reference."""
    scale = math.cos(math.radians(lat_ref))
    mx0 = scale * math.radians(lon_ref) * EARTH_RADIUS_EQUA_M
    my0 = scale * EARTH_RADIUS_EQUA_M * math.log(math.tan(math.radians(90.0 + lat_ref) / 2.0))
    return scale, mx0, my0


def locations_to_gps(xyz: np.ndarray, lat_ref: float, lon_ref: float) -> np.ndarray:
    """(M, 3) world x, y, z -> (M, 3) lat, lon (degrees), z (see the module docstring)."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    scale, mx0, my0 = _mercator_origin(lat_ref, lon_ref)
    mx = mx0 + xyz[:, 0]
    my = my0 - xyz[:, 1]
    lon = np.degrees(mx / (EARTH_RADIUS_EQUA_M * scale))
    lat = np.degrees(2.0 * np.arctan(np.exp(my / (EARTH_RADIUS_EQUA_M * scale)))) - 90.0
    return np.column_stack([lat, lon, xyz[:, 2]])


def location_to_gps(x: float, y: float, z: float, lat_ref: float, lon_ref: float) -> GpsCoordinate:
    """GPS of one world location (leaderboard `_location_to_gps`)."""
    lat, lon, height = locations_to_gps(np.array([x, y, z]), lat_ref, lon_ref)[0]
    return GpsCoordinate(float(lat), float(lon), float(height))


def gps_to_location(
    lat: float, lon: float, z: float, lat_ref: float, lon_ref: float
) -> tuple[float, float, float]:
    """World (x, y, z) of a GPS coordinate: the inverse of `location_to_gps`.

    mx = scale * R * lon, my = scale * R * ln(tan((90 + lat) / 2)), x = mx - mx0, y = my0 - my.
    """
    scale, mx0, my0 = _mercator_origin(lat_ref, lon_ref)
    mx = scale * math.radians(lon) * EARTH_RADIUS_EQUA_M
    my = scale * EARTH_RADIUS_EQUA_M * math.log(math.tan(math.radians(90.0 + lat) / 2.0))
    return mx - mx0, my0 - my, z


def gps_route(dense: DenseRoute, lat_ref: float, lon_ref: float) -> list[tuple[dict[str, float], RoadOption]]:
    """The leaderboard's `gps_route` for `set_global_plan`: ({'lat', 'lon', 'z'}, RoadOption) per point."""
    coordinates = locations_to_gps(dense.xyz, lat_ref, lon_ref)
    return [
        ({"lat": float(lat), "lon": float(lon), "z": float(z)}, RoadOption(int(command)))
        for (lat, lon, z), command in zip(coordinates, dense.commands, strict=True)
    ]
