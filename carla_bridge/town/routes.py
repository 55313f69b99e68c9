"""The built-in Bench2Drive routes of Takeover01: their specification table and the walk that turns each
spec into keypoints.

Routes are specified by lane and turns rather than by coordinates, and walked on the generated map with
carla's own waypoint API, so that they stay on the lanes carla sees when the layout changes. The table
holds every scenario type three times for training (the stop-sign turn twice), each in another place, and
held-out variants for evaluation; `check_route_specs` enforces the split rules (ids, lengths, trigger
leads, ability coverage).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import carla

from carla_bridge.geometry import wrap_angle_pi_inclusive
from carla_bridge.town.geometry import TownBuildError
from carla_bridge.town.layout import Movement, Road, Town, TownConfig

ROUTE_DECIMALS = 1  # Bench2Drive route files use 0.1 m / 0.1 deg

Ability = Literal["overtaking", "merging", "emergency_brake", "give_way", "traffic_signs"]

# Bench2Drive abilities of each scenario type used here (research/bench2drive.md).
SCENARIO_ABILITIES: dict[str, tuple[Ability, ...]] = {
    "Accident": ("overtaking",),
    "AccidentTwoWays": ("overtaking",),
    "ConstructionObstacle": ("overtaking",),
    "ParkedObstacle": ("overtaking",),
    "ParkedObstacleTwoWays": ("overtaking",),
    "SignalizedJunctionLeftTurn": ("merging", "traffic_signs"),
    "SignalizedJunctionRightTurn": ("merging", "traffic_signs"),
    "NonSignalizedJunctionLeftTurn": ("merging", "traffic_signs"),
    "HardBreakRoute": ("emergency_brake",),
    "DynamicObjectCrossing": ("emergency_brake",),
    "PedestrianCrossing": ("emergency_brake", "traffic_signs"),
    "StaticCutIn": ("emergency_brake",),
    "OppositeVehicleRunningRedLight": ("emergency_brake", "traffic_signs"),
    "ControlLoss": ("emergency_brake",),
    "InvadingTurn": ("give_way",),
    "YieldToEmergencyVehicle": ("give_way",),
    "T_Junction": ("traffic_signs",),
    "VanillaSignalizedTurnEncounterRedLight": ("traffic_signs",),
    "VanillaSignalizedTurnEncounterGreenLight": ("traffic_signs",),
    "VanillaNonSignalizedTurnEncounterStopsign": ("traffic_signs",),
}

# carla.WeatherParameters presets written as Bench2Drive <weather> attributes (percent, degrees).
WEATHER_FIELDS: tuple[str, ...] = (
    "cloudiness",
    "precipitation",
    "precipitation_deposits",
    "wetness",
    "wind_intensity",
    "sun_azimuth_angle",
    "sun_altitude_angle",
    "fog_density",
)
# fmt: off
WEATHER_PRESETS: dict[str, tuple[float, ...]] = {
    "clear_noon":     (5.0,  0.0,  0.0,  0.0,  10.0, -1.0,  45.0,  2.0),
    "cloudy_sunset":  (60.0, 0.0,  0.0,  0.0,  10.0, 180.0, 15.0,  2.0),
    "wet_noon":       (20.0, 0.0,  50.0, 50.0, 10.0, 90.0,  60.0,  3.0),
    "soft_rain_noon": (70.0, 15.0, 50.0, 50.0, 35.0, 0.0,   50.0,  5.0),
    "clear_night":    (10.0, 0.0,  0.0,  0.0,  10.0, 0.0,   -80.0, 5.0),
}
# fmt: on


@dataclass(frozen=True)
class RouteSpec:
    """A built-in route: where it starts, which way it turns, its scenario.

    `start` is (road id, lane id, distance in metres from the lane's entry along its travel
    direction); `turns` names the movement at each junction met, in order ("straight", "left",
    "right", with ":<lane id>" to pick the exit lane where a move splits into several lanes).
    """

    id: int
    split: Literal["train", "eval"]
    scenario: str
    start: tuple[int, int, float]
    turns: tuple[str, ...]
    length_m: float
    trigger_lead_m: float  # route start to trigger point
    weather: str
    parameters: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()


def _p(**tags: str | tuple[str, str]) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """Scenario parameters: value=... for strings, (from, to) for intervals."""
    out = []
    for tag, v in tags.items():
        out.append((tag, (("from", v[0]), ("to", v[1])) if isinstance(v, tuple) else (("value", v),)))
    return tuple(out)


TRAIN_ROUTE_ID_BASE = 1000
EVAL_ROUTE_ID_BASE = 2000
ROUTE_ID_BLOCK = 1000  # ids of a split lie in [base, base + block)


def _route(
    route_id: int,
    scenario: str,
    start: tuple[int, int, float],
    turns: str,
    length_m: float,
    lead_m: float,
    weather: str,
    **parameters: str | tuple[str, str],
) -> RouteSpec:
    """A RouteSpec from one table row; `turns` is space-separated, ids 1000.. train, 2000.. eval."""
    split: Literal["train", "eval"] = "train" if route_id < EVAL_ROUTE_ID_BASE else "eval"
    return RouteSpec(
        route_id, split, scenario, start, tuple(turns.split()), length_m, lead_m, weather, _p(**parameters)
    )


VENDING = "static.prop.vendingmachine"
FLOW_2W = ("50", "150")  # m between oncoming vehicles (Bench2Drive `frequency` from/to)
PARKED_FLOW_2W = ("60", "180")
SIG_FLOW = ("20", "30")  # m between flow vehicles (Bench2Drive `source_dist_interval` from/to)

# start = (road, lane, metres along the lane from its entry); road and junction ids as in the sketch.
# fmt: off
ROUTE_SPECS: tuple[RouteSpec, ...] = (
    # training: every scenario type once
    _route(1000, "Accident",                 (1, -2, 10.0),  "straight", 250, 40, "clear_noon",
           distance="70", direction="right", speed="50"),
    _route(1001, "AccidentTwoWays",          (5, -1, 10.0),  "straight", 240, 40, "cloudy_sunset",
           distance="50", frequency=FLOW_2W),
    _route(1002, "ConstructionObstacle",     (3, -2, 10.0),  "right",    250, 45, "wet_noon",
           distance="60", direction="right", speed="50"),
    _route(1003, "ParkedObstacle",           (2, -2, 20.0),  "straight", 230, 40, "soft_rain_noon",
           distance="60", direction="right", speed="50"),
    _route(1004, "ParkedObstacleTwoWays",    (6, 1, 10.0),   "left",     250, 40, "clear_night",
           distance="55", frequency=PARKED_FLOW_2W),
    _route(1005, "SignalizedJunctionLeftTurn",  (6, -1, 103.0), "left",  200, 40, "clear_noon",
           flow_speed="12", source_dist_interval=SIG_FLOW),
    _route(1006, "SignalizedJunctionRightTurn", (2, 2, 133.0),  "right", 200, 40, "cloudy_sunset",
           flow_speed="13", source_dist_interval=("21", "34")),
    _route(1007, "NonSignalizedJunctionLeftTurn", (5, -1, 133.0), "left", 200, 40, "wet_noon",
           flow_speed="10", source_dist_interval=("25", "35")),
    _route(1008, "HardBreakRoute",           (4, -2, 10.0),  "straight", 230, 40, "soft_rain_noon"),
    _route(1009, "DynamicObjectCrossing",    (12, -1, 10.0), "",         200, 40, "clear_night",
           distance="45", direction="right", blocker_model=VENDING, crossing_angle="0"),
    _route(1010, "PedestrianCrossing",       (2, -1, 128.0), "straight", 180, 40, "clear_noon"),
    _route(1011, "StaticCutIn",              (3, 1, 10.0),   "straight", 230, 40, "cloudy_sunset",
           distance="60", direction="right"),
    _route(1012, "OppositeVehicleRunningRedLight", (1, -1, 133.0), "straight", 200, 40, "wet_noon",
           direction="right"),
    _route(1013, "ControlLoss",              (11, -1, 10.0), "",         220, 45, "soft_rain_noon"),
    _route(1014, "InvadingTurn",             (13, -1, 80.0), "",         200, 40, "clear_noon",
           distance="100", offset="0.3"),
    _route(1015, "YieldToEmergencyVehicle",  (4, -1, 10.0),  "straight", 240, 45, "cloudy_sunset",
           distance="30"),
    _route(1016, "T_Junction",               (10, 1, 320.0), "left",     200, 40, "wet_noon"),
    _route(1017, "VanillaSignalizedTurnEncounterRedLight",    (11, -1, 320.0), "right", 200, 40, "clear_night"),
    _route(1018, "VanillaSignalizedTurnEncounterGreenLight",  (13, 1, 320.0),  "left",  200, 40, "clear_noon"),
    _route(1019, "VanillaNonSignalizedTurnEncounterStopsign", (8, -1, 103.0),  "right", 200, 40, "soft_rain_noon"),
    # training: two more instances of every scenario type on other roads, approaches and weathers, so
    # that the policy meets each scenario in more than one place (the stop-sign turn once more: its other
    # approach is the held-out route's)
    _route(1020, "Accident",                  (2, 2, 10.0),   "straight", 250, 40, "wet_noon",
           distance="70", direction="right", speed="50"),
    _route(1021, "Accident",                  (3, 2, 10.0),   "straight", 250, 45, "clear_night",
           distance="60", direction="right", speed="50"),
    _route(1022, "AccidentTwoWays",           (6, -1, 10.0),  "straight", 240, 40, "clear_noon",
           distance="50", frequency=FLOW_2W),
    _route(1023, "AccidentTwoWays",           (8, 1, 10.0),   "left",    240, 45, "soft_rain_noon",
           distance="55", frequency=FLOW_2W),
    _route(1024, "ConstructionObstacle",      (2, 2, 20.0),   "straight", 250, 40, "cloudy_sunset",
           distance="60", direction="right", speed="50"),
    _route(1025, "ConstructionObstacle",      (1, -2, 20.0),  "right",   250, 45, "clear_noon",
           distance="65", direction="right", speed="50"),
    _route(1026, "ParkedObstacle",            (1, -2, 10.0),  "straight", 230, 40, "wet_noon",
           distance="55", direction="right", speed="50"),
    _route(1027, "ParkedObstacle",            (3, 2, 20.0),   "straight", 230, 45, "clear_night",
           distance="60", direction="right", speed="50"),
    _route(1028, "ParkedObstacleTwoWays",     (12, -1, 10.0), "",        230, 40, "cloudy_sunset",
           distance="50", frequency=PARKED_FLOW_2W),
    _route(1029, "ParkedObstacleTwoWays",     (8, -1, 10.0),  "straight", 240, 45, "clear_noon",
           distance="55", frequency=PARKED_FLOW_2W),
    _route(1030, "SignalizedJunctionLeftTurn", (1, -1, 133.0), "left",    200, 40, "cloudy_sunset",
           flow_speed="12", source_dist_interval=SIG_FLOW),
    _route(1031, "SignalizedJunctionLeftTurn", (2, 1, 133.0),  "left",    200, 40, "clear_night",
           flow_speed="11", source_dist_interval=("22", "32")),
    _route(1032, "SignalizedJunctionRightTurn", (1, -2, 133.0), "right",   200, 40, "wet_noon",
           flow_speed="13", source_dist_interval=SIG_FLOW),
    _route(1033, "SignalizedJunctionRightTurn", (3, -2, 133.0), "right",   200, 40, "soft_rain_noon",
           flow_speed="12", source_dist_interval=("21", "34")),
    _route(1034, "NonSignalizedJunctionLeftTurn", (2, -1, 133.0), "left",    200, 40, "clear_noon",
           flow_speed="10", source_dist_interval=("25", "35")),
    _route(1035, "NonSignalizedJunctionLeftTurn", (3, 1, 133.0),  "left",    200, 40, "cloudy_sunset",
           flow_speed="11", source_dist_interval=("25", "35")),
    _route(1036, "HardBreakRoute",            (3, 1, 20.0),   "straight", 230, 40, "clear_noon"),
    _route(1037, "HardBreakRoute",            (2, 1, 10.0),   "straight", 230, 45, "clear_night"),
    _route(1038, "DynamicObjectCrossing",     (11, -1, 10.0), "",        200, 40, "cloudy_sunset",
           distance="50", direction="right", blocker_model=VENDING, crossing_angle="0"),
    _route(1039, "DynamicObjectCrossing",     (13, 1, 10.0),  "",        200, 45, "wet_noon",
           distance="45", direction="right", blocker_model=VENDING, crossing_angle="0"),
    _route(1040, "PedestrianCrossing",        (1, -1, 128.0), "straight", 180, 40, "cloudy_sunset"),
    _route(1041, "PedestrianCrossing",        (2, 1, 128.0),  "straight", 180, 40, "clear_night"),
    _route(1042, "StaticCutIn",               (1, -1, 10.0),  "straight", 230, 40, "clear_noon",
           distance="60", direction="right"),
    _route(1043, "StaticCutIn",               (2, 1, 10.0),   "straight", 230, 45, "soft_rain_noon",
           distance="55", direction="right"),
    _route(1044, "OppositeVehicleRunningRedLight", (2, 1, 133.0),  "straight", 200, 40, "clear_noon",
           direction="right"),
    _route(1045, "OppositeVehicleRunningRedLight", (6, -1, 103.0), "straight", 200, 40, "soft_rain_noon",
           direction="right"),
    _route(1046, "ControlLoss",               (10, -1, 10.0), "",        220, 45, "clear_night"),
    _route(1047, "ControlLoss",               (13, 1, 150.0), "",        220, 40, "wet_noon"),
    _route(1048, "InvadingTurn",              (10, 1, 80.0),  "",        200, 40, "cloudy_sunset",
           distance="100", offset="0.3"),
    _route(1049, "InvadingTurn",              (10, -1, 100.0),"",        200, 40, "wet_noon",
           distance="100", offset="0.3"),
    _route(1050, "YieldToEmergencyVehicle",   (3, -2, 10.0),  "right",   240, 40, "clear_noon",
           distance="30"),
    _route(1051, "YieldToEmergencyVehicle",   (2, 2, 10.0),   "straight", 240, 45, "soft_rain_noon",
           distance="35"),
    _route(1052, "T_Junction",                (12, -1, 320.0),"right",   200, 40, "clear_night"),
    _route(1053, "T_Junction",                (13, -1, 320.0),"right",   200, 40, "cloudy_sunset"),
    _route(1054, "VanillaSignalizedTurnEncounterRedLight", (3, -2, 133.0), "right",   200, 40, "clear_noon"),
    _route(1055, "VanillaSignalizedTurnEncounterRedLight", (6, 1, 103.0),  "left",    200, 40, "wet_noon"),
    _route(1056, "VanillaSignalizedTurnEncounterGreenLight", (2, 1, 133.0),  "left",    200, 40, "cloudy_sunset"),
    _route(1057, "VanillaSignalizedTurnEncounterGreenLight", (6, 1, 103.0),  "right",   200, 40, "soft_rain_noon"),
    _route(1058, "VanillaNonSignalizedTurnEncounterStopsign", (8, -1, 103.0), "left",    200, 40, "clear_night"),
    # evaluation: other roads, directions and junction approaches
    _route(2000, "Accident",                 (1, 2, 10.0),   "right",    250, 50, "cloudy_sunset",
           distance="60", direction="right", speed="50"),
    _route(2001, "ParkedObstacleTwoWays",    (9, -1, 10.0),  "right",    230, 50, "wet_noon",
           distance="50", frequency=PARKED_FLOW_2W),
    _route(2002, "SignalizedJunctionLeftTurn", (12, 1, 320.0), "left",   200, 40, "soft_rain_noon",
           flow_speed="12", source_dist_interval=SIG_FLOW),
    _route(2003, "NonSignalizedJunctionLeftTurn", (11, 1, 320.0), "left", 200, 40, "clear_noon",
           flow_speed="10", source_dist_interval=("25", "35")),
    _route(2004, "DynamicObjectCrossing",    (10, 1, 10.0),  "",         200, 45, "clear_night",
           distance="50", direction="right", blocker_model=VENDING, crossing_angle="0"),
    _route(2005, "OppositeVehicleRunningRedLight", (5, 1, 133.0), "straight", 200, 40, "cloudy_sunset",
           direction="right"),
    _route(2006, "YieldToEmergencyVehicle",  (1, 1, 10.0),   "left",     240, 40, "wet_noon",
           distance="35"),
    _route(2007, "InvadingTurn",             (12, 1, 80.0),  "",         200, 40, "soft_rain_noon",
           distance="100", offset="0.3"),
    _route(2008, "VanillaNonSignalizedTurnEncounterStopsign", (9, 1, 103.0), "left", 200, 40, "clear_noon"),
    _route(2009, "VanillaSignalizedTurnEncounterRedLight",    (7, 1, 103.0), "left", 200, 40, "cloudy_sunset"),
)
# fmt: on


@dataclass(frozen=True)
class BuiltRoute:
    spec: RouteSpec
    keypoints: list[tuple[float, float, float]]  # CARLA world metres
    trigger: tuple[float, float, float, float]  # x, y, z, yaw (deg)
    road_ids: tuple[int, ...]  # roads visited, in order (connecting roads included)


def _lane_start_s(road: Road, lane_id: int, distance_m: float) -> float:
    """Reference-line s of a point `distance_m` along a lane's travel direction."""
    return distance_m if lane_id < 0 else road.length_m - distance_m


def _lane_end(wp: carla.Waypoint) -> carla.Waypoint:
    ahead = wp.next_until_lane_end(1.0)
    return ahead[-1] if ahead else wp


def _junction_move(wp_in: carla.Waypoint, candidate: carla.Waypoint, threshold_deg: float) -> Movement:
    """Movement of a connecting lane: heading change from entering it to its end (CARLA yaw grows
    clockwise seen from above, so a right turn is a positive change)."""
    end = _lane_end(candidate)
    delta = wrap_angle_pi_inclusive(math.radians(end.transform.rotation.yaw - wp_in.transform.rotation.yaw))
    if abs(math.degrees(delta)) < threshold_deg:
        return "straight"
    return "right" if delta > 0 else "left"


def build_route(carla_map: carla.Map, town: Town, spec: RouteSpec) -> BuiltRoute:
    """Walk the lane centre in `keypoint_spacing_m` steps with carla's waypoint.next from the start,
    taking the named movement at each junction, until `length_m`."""
    cfg = town.config
    road_id, lane_id, distance = spec.start
    road = town.road(road_id)
    wp = carla_map.get_waypoint_xodr(road_id, lane_id, _lane_start_s(road, lane_id, distance))
    if wp is None:
        raise TownBuildError(f"route {spec.id}: no lane {lane_id} on road {road_id}")
    step = cfg.keypoint_spacing_m
    turns = list(spec.turns)
    points = [wp]
    n_points = round(spec.length_m / step) + 1
    while len(points) < n_points:
        options = wp.next(step)
        if not options:
            raise TownBuildError(f"route {spec.id}: dead end at road {wp.road_id} lane {wp.lane_id}")
        entering = [o for o in options if o.is_junction and o.road_id != wp.road_id]
        if len(options) > 1 or (entering and not wp.is_junction):
            if not turns:
                raise TownBuildError(
                    f"route {spec.id}: reaches junction {entering[0].junction_id} with no turn left"
                )
            want = turns.pop(0)
            move, _, exit_lane = want.partition(":")
            chosen = [o for o in options if _junction_move(wp, o, cfg.turn_threshold_deg) == move]
            if exit_lane:
                chosen = [o for o in chosen if _lane_end(o).next(1.0)[0].lane_id == int(exit_lane)]
            if len(chosen) != 1:
                raise TownBuildError(
                    f"route {spec.id}: movement '{want}' matches {len(chosen)} lanes at junction "
                    f"{options[0].junction_id}: name the exit lane as '{move}:<lane id>'"
                )
            wp = chosen[0]
        else:
            wp = options[0]
        points.append(wp)
    if turns:
        raise TownBuildError(f"route {spec.id}: ends before using the turns {turns}")
    keypoints = [
        (
            round(p.transform.location.x, ROUTE_DECIMALS) + 0.0,
            round(p.transform.location.y, ROUTE_DECIMALS) + 0.0,
            round(p.transform.location.z, ROUTE_DECIMALS) + 0.0,
        )
        for p in points
    ]
    trig = points[round(spec.trigger_lead_m / step)]
    yaw = round(trig.transform.rotation.yaw, ROUTE_DECIMALS) + 0.0
    trigger = (*keypoints[round(spec.trigger_lead_m / step)], yaw)
    visited: list[int] = []
    for p in points:
        if not visited or visited[-1] != p.road_id:
            visited.append(p.road_id)
    return BuiltRoute(spec, keypoints, trigger, tuple(visited))


def _fmt_route(v: float) -> str:
    text = f"{v:.{ROUTE_DECIMALS}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def routes_to_xml(town_name: str, routes: Sequence[BuiltRoute]) -> str:
    """Bench2Drive route XML (the layout of routes_dev.xml)."""
    root = ET.Element("routes")
    for route in routes:
        spec = route.spec
        rel = ET.SubElement(root, "route", {"id": str(spec.id), "town": town_name})
        wps = ET.SubElement(rel, "waypoints")
        for x, y, z in route.keypoints:
            ET.SubElement(wps, "position", {"x": _fmt_route(x), "y": _fmt_route(y), "z": _fmt_route(z)})
        scenarios = ET.SubElement(rel, "scenarios")
        sc = ET.SubElement(scenarios, "scenario", {"name": f"{spec.scenario}_1", "type": spec.scenario})
        x, y, z, yaw = route.trigger
        ET.SubElement(
            sc,
            "trigger_point",
            {"x": _fmt_route(x), "y": _fmt_route(y), "z": _fmt_route(z), "yaw": _fmt_route(yaw)},
        )
        for tag, attrs in spec.parameters:
            ET.SubElement(sc, tag, dict(attrs))
        weathers = ET.SubElement(rel, "weathers")
        for pct in ("0", "100"):
            attrs = {"route_percentage": pct}
            attrs.update(
                {k: f"{v:.1f}" for k, v in zip(WEATHER_FIELDS, WEATHER_PRESETS[spec.weather], strict=True)}
            )
            ET.SubElement(weathers, "weather", attrs)
    ET.indent(root, space="  ")
    return "<?xml version='1.0' encoding='utf-8'?>\n" + ET.tostring(root, encoding="unicode") + "\n"


def check_route_specs(specs: Sequence[RouteSpec], cfg: TownConfig) -> None:
    """The built-in route set rules: unique ids, lengths and trigger leads in range, every eval
    scenario type trained on, all five Bench2Drive abilities covered by each split."""
    ids = [s.id for s in specs]
    if len(ids) != len(set(ids)):
        raise TownBuildError(f"duplicate built-in route ids: {sorted(i for i in ids if ids.count(i) > 1)}")
    for s in specs:
        base = TRAIN_ROUTE_ID_BASE if s.split == "train" else EVAL_ROUTE_ID_BASE
        if not base <= s.id < base + ROUTE_ID_BLOCK:
            raise TownBuildError(
                f"route {s.id}: {s.split} route ids lie in [{base}, {base + ROUTE_ID_BLOCK})"
            )
        if s.scenario not in SCENARIO_ABILITIES:
            raise TownBuildError(
                f"route {s.id}: scenario type {s.scenario} has no ability in SCENARIO_ABILITIES"
            )
        if not cfg.min_route_length_m <= s.length_m <= cfg.max_route_length_m:
            raise TownBuildError(f"route {s.id}: length {s.length_m} m is outside the built-in range")
        if not cfg.min_trigger_lead_m <= s.trigger_lead_m <= cfg.max_trigger_lead_m:
            raise TownBuildError(
                f"route {s.id}: trigger lead {s.trigger_lead_m} m is outside the built-in range"
            )
        if s.weather not in WEATHER_PRESETS:
            raise TownBuildError(f"route {s.id}: unknown weather preset {s.weather}")
    train = {s.scenario for s in specs if s.split == "train"}
    untrained = {s.scenario for s in specs if s.split == "eval"} - train
    if untrained:
        raise TownBuildError(f"evaluation scenario types never trained on: {sorted(untrained)}")
    all_abilities = set(Ability.__args__)  # type: ignore[attr-defined]
    for split in ("train", "eval"):
        covered = {a for s in specs if s.split == split for a in SCENARIO_ABILITIES[s.scenario]}
        if covered != all_abilities:
            raise TownBuildError(f"{split} routes miss the abilities {sorted(all_abilities - covered)}")


def build_routes(carla_map: carla.Map, town: Town, specs: Sequence[RouteSpec]) -> list[BuiltRoute]:
    """Every route of `specs` walked on `carla_map`; trigger points and route ends lie outside junctions."""
    check_route_specs(specs, town.config)
    routes = []
    for spec in specs:
        route = build_route(carla_map, town, spec)
        for label, (x, y, z) in (("trigger point", route.trigger[:3]), ("end", route.keypoints[-1])):
            wp = carla_map.get_waypoint(carla.Location(x=x, y=y, z=z))
            if wp.is_junction:
                raise TownBuildError(f"route {spec.id}: its {label} lies inside junction {wp.junction_id}")
        routes.append(route)
    return routes
