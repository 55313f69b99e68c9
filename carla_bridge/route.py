"""The `Route` contract: a leaderboard / Bench2Drive route and its dense interpolation.

Units: metres, seconds, yaw in degrees where it mirrors the XML (trigger points), radians in dense routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class RoadOption(IntEnum):
    """High-level navigation command of CARLA's global route planner (values as in CARLA)."""

    VOID = -1
    LEFT = 1
    RIGHT = 2
    STRAIGHT = 3
    LANEFOLLOW = 4
    CHANGELANELEFT = 5
    CHANGELANERIGHT = 6


# Leaderboard default when a route has no <weathers>: sun altitude 70 deg, cloudiness 50 %.
DEFAULT_WEATHER_ATTRIBUTES: dict[str, float] = {"sun_altitude_angle": 70.0, "cloudiness": 50.0}


@dataclass(frozen=True)
class Weather:
    """One `<weather>` keyframe: `route_percentage` plus carla.WeatherParameters fields."""

    route_percentage: float
    parameters: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TriggerPoint:
    x: float
    y: float
    z: float
    yaw_deg: float


@dataclass(frozen=True)
class ScenarioSpec:
    """One `<scenario>` of a route with every child tag kept.

    `parameters` maps each non-actor child tag to its attributes (e.g. ``{"distance": {"value": "40"}}``);
    `other_actors` keeps `<other_actor .../>` entries in file order.
    """

    name: str
    type: str
    trigger_point: TriggerPoint
    parameters: dict[str, dict[str, str]] = field(default_factory=dict)
    other_actors: tuple[dict[str, str], ...] = ()

    def value(self, tag: str, default: float | None = None, attribute: str = "value") -> float | None:
        """Numeric parameter `tag.attribute` (e.g. ``distance`` -> 40.0), or `default` when absent."""
        attrs = self.parameters.get(tag)
        if attrs is None or attribute not in attrs:
            return default
        return float(attrs[attribute])

    def text(self, tag: str, default: str | None = None, attribute: str = "value") -> str | None:
        attrs = self.parameters.get(tag)
        return default if attrs is None else attrs.get(attribute, default)


@dataclass
class DenseRoute:
    """The route interpolated at ~1 m by route planning over the lane graph.

    Arrays have one row per dense point. `commands` holds RoadOption values; `s` is the cumulative
    arc length in metres; `road_id`/`lane_id`/`in_junction` describe the lane under each point.
    """

    xyz: np.ndarray  # (M, 3) float64, world metres
    yaw: np.ndarray  # (M,) float64, radians
    commands: np.ndarray  # (M,) int8 RoadOption
    s: np.ndarray  # (M,) float64, metres from the first point
    road_id: np.ndarray  # (M,) int32
    lane_id: np.ndarray  # (M,) int32
    in_junction: np.ndarray  # (M,) bool
    speed_limit: np.ndarray  # (M,) float32, m/s (from the map's speed signals; town default otherwise)

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def length_m(self) -> float:
        return float(self.s[-1]) if len(self) else 0.0


@dataclass
class Route:
    """A leaderboard route: what the XML says, plus the dense route once planned."""

    id: str
    town: str
    keypoints: np.ndarray  # (K, 3) float64
    scenarios: list[ScenarioSpec] = field(default_factory=list)
    weathers: list[Weather] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)  # extra <route> attributes, e.g. road_id
    dense: DenseRoute | None = None

    @property
    def name(self) -> str:
        """Leaderboard record name of this route (repetition 0)."""
        return f"RouteScenario_{self.id}_rep0"
