"""The leaderboard's result *format*: record keys, penalty coefficients, status strings, labels.

These mirror the CARLA leaderboard 2.0 statistics manager (research/bench2drive.md) and are not
tunables: changing one makes results incomparable with published numbers.
"""

from __future__ import annotations

from carla_bridge.snapshot import InfractionKind

# Record key of each infraction kind (leaderboard PENALTY_NAME_DICT plus "route_timeout").
INFRACTION_KEYS: dict[InfractionKind, str] = {
    InfractionKind.COLLISION_PEDESTRIAN: "collisions_pedestrian",
    InfractionKind.COLLISION_VEHICLE: "collisions_vehicle",
    InfractionKind.COLLISION_STATIC: "collisions_layout",
    InfractionKind.RED_LIGHT: "red_light",
    InfractionKind.STOP_SIGN: "stop_infraction",
    InfractionKind.OUTSIDE_ROUTE_LANES: "outside_route_lanes",
    InfractionKind.ROUTE_DEVIATION: "route_dev",
    InfractionKind.AGENT_BLOCKED: "vehicle_blocked",
    InfractionKind.ROUTE_TIMEOUT: "route_timeout",
    InfractionKind.SCENARIO_TIMEOUT: "scenario_timeouts",
    InfractionKind.YIELD_TO_EMERGENCY_VEHICLE: "yield_emergency_vehicle_infractions",
    InfractionKind.MIN_SPEED: "min_speed_infractions",
}
KIND_OF_KEY: dict[str, InfractionKind] = {key: kind for kind, key in INFRACTION_KEYS.items()}

# Order of the keys in a route record (as Bench2Drive's result files list them).
RECORD_INFRACTION_ORDER: tuple[str, ...] = (
    "collisions_layout",
    "collisions_pedestrian",
    "collisions_vehicle",
    "red_light",
    "stop_infraction",
    "outside_route_lanes",
    "min_speed_infractions",
    "yield_emergency_vehicle_infractions",
    "scenario_timeouts",
    "route_dev",
    "vehicle_blocked",
    "route_timeout",
)

# Multiplicative penalty per event (PENALTY_VALUE_DICT).
PENALTY_COEFFICIENTS: dict[InfractionKind, float] = {
    InfractionKind.COLLISION_PEDESTRIAN: 0.5,
    InfractionKind.COLLISION_VEHICLE: 0.6,
    InfractionKind.COLLISION_STATIC: 0.65,
    InfractionKind.RED_LIGHT: 0.7,
    InfractionKind.STOP_SIGN: 0.8,
    InfractionKind.SCENARIO_TIMEOUT: 0.7,
    InfractionKind.YIELD_TO_EMERGENCY_VEHICLE: 0.7,
}
# Percentage-based penalties (PENALTY_PERC_DICT): factor = 1 - (1 - coefficient) x pct / 100.
# Outside route lanes has coefficient 0: the share of the route driven outside is lost entirely.
OUTSIDE_LANES_COEFFICIENT = 0.0
# Kinds that never change the penalty: they end the route (status) or are unused by Bench2Drive.
NON_PENALTY_KINDS: frozenset[InfractionKind] = frozenset(
    {
        InfractionKind.ROUTE_DEVIATION,
        InfractionKind.AGENT_BLOCKED,
        InfractionKind.ROUTE_TIMEOUT,
        InfractionKind.MIN_SPEED,
    }
)
# The one kind a route may have and still count as a success (Bench2Drive merge_route_json.py).
SUCCESS_IGNORED_KEYS: frozenset[str] = frozenset({"min_speed_infractions"})

# Route status strings.
STATUS_STARTED = "Started"
STATUS_COMPLETED = "Completed"
STATUS_PERFECT = "Perfect"
STATUS_FAILED = "Failed"
STATUS_DEVIATED = "Failed - Agent deviated from the route"
STATUS_BLOCKED = "Failed - Agent got blocked"
STATUS_TIMED_OUT = "Failed - Agent timed out"
STATUS_TICK_LIMIT = "Failed - TickRuntime"  # Bench2Drive's 4000-tick stop
SUCCESS_STATUSES: frozenset[str] = frozenset({STATUS_COMPLETED, STATUS_PERFECT})

# Leaderboard rounding of record numbers.
ROUND_DIGITS = 3
ROUND_DIGITS_SCORE = 6

# Entry status of a results file and whether it is eligible (ENTRY_STATUS_VALUES / ELIGIBLE_VALUES).
ELIGIBLE_VALUES: dict[str, bool] = {
    "Started": False,
    "Finished": True,
    "Rejected": False,
    "Crashed": False,
    "Invalid": False,
}

# `values` / `labels` of a results file: (label, source) with source "score:<key>" or an infraction key.
GLOBAL_VALUE_LABELS: tuple[tuple[str, str], ...] = (
    ("Avg. driving score", "score:score_composed"),
    ("Avg. route completion", "score:score_route"),
    ("Avg. infraction penalty", "score:score_penalty"),
    ("Collisions with pedestrians", "collisions_pedestrian"),
    ("Collisions with vehicles", "collisions_vehicle"),
    ("Collisions with layout", "collisions_layout"),
    ("Red lights infractions", "red_light"),
    ("Stop sign infractions", "stop_infraction"),
    ("Off-road infractions", "outside_route_lanes"),
    ("Route deviations", "route_dev"),
    ("Route timeouts", "route_timeout"),
    ("Agent blocked", "vehicle_blocked"),
    ("Yield emergency vehicles infractions", "yield_emergency_vehicle_infractions"),
    ("Scenario timeouts", "scenario_timeouts"),
    ("Min speed infractions", "min_speed_infractions"),
)


def location_text(x: float, y: float, z: float) -> str:
    """Leaderboard location suffix, coordinates rounded to mm: ``(x=1.0, y=2.0, z=0.0)``."""
    return f"(x={round(x, ROUND_DIGITS)}, y={round(y, ROUND_DIGITS)}, z={round(z, ROUND_DIGITS)})"
