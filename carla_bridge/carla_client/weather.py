"""Route weather -> carla.WeatherParameters, interpolated along the route like leaderboard 2.0.

A route has keyframes (route_percentage p_k, parameters w_k). At completion p the weather is, per
attribute, the linear interpolation between the keyframes around p:

    w(p) = w_k + (w_{k+1} - w_k) (p - p_k) / (p_{k+1} - p_k),   p_k <= p <= p_{k+1}

clamped to the first / last keyframe outside their range. An attribute a keyframe leaves out takes
the carla.WeatherParameters() default. A route without keyframes gets the leaderboard default
(sun altitude 70 deg, cloudiness 50 %).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import carla

from carla_bridge.errors import RouteError
from carla_bridge.route import DEFAULT_WEATHER_ATTRIBUTES, Weather

WEATHER_FIELDS: tuple[str, ...] = tuple(
    name
    for name in dir(carla.WeatherParameters)
    if not name.startswith("_") and isinstance(getattr(carla.WeatherParameters(), name, None), float)
)


def _defaults() -> dict[str, float]:
    base = carla.WeatherParameters()
    return {name: float(getattr(base, name)) for name in WEATHER_FIELDS}


def weather_at(weathers: Sequence[Weather], route_pct: float, route_id: str = "?") -> dict[str, float]:
    """Every WeatherParameters attribute at route completion `route_pct` (module docstring)."""
    defaults = _defaults()
    if not weathers:
        return {**defaults, **DEFAULT_WEATHER_ATTRIBUTES}
    for w in weathers:
        unknown = sorted(set(w.parameters) - set(WEATHER_FIELDS))
        if unknown:
            raise RouteError(
                route_id,
                f"weather at {w.route_percentage}% has unknown attribute(s) {unknown}: use "
                f"carla.WeatherParameters fields ({', '.join(WEATHER_FIELDS)})",
            )
    frames = sorted(weathers, key=lambda w: w.route_percentage)
    full = [
        (w.route_percentage, {**defaults, **{k: float(v) for k, v in w.parameters.items()}}) for w in frames
    ]
    if route_pct <= full[0][0]:
        return dict(full[0][1])
    if route_pct >= full[-1][0]:
        return dict(full[-1][1])
    for (p0, w0), (p1, w1) in itertools.pairwise(full):
        if p0 <= route_pct <= p1:
            t = 0.0 if p1 == p0 else (route_pct - p0) / (p1 - p0)
            return {name: w0[name] + (w1[name] - w0[name]) * t for name in WEATHER_FIELDS}
    return dict(full[-1][1])  # unreachable: the keyframes cover [first, last]


def carla_weather(parameters: Mapping[str, float]) -> carla.WeatherParameters:
    """A carla.WeatherParameters with the given attributes (the rest at CARLA's defaults)."""
    weather = carla.WeatherParameters()
    for name, value in parameters.items():
        setattr(weather, name, float(value))
    return weather
