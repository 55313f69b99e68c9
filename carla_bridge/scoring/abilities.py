"""Bench2Drive's five driving abilities and which of the 44 scenario types exercise each.

A route counts towards every ability one of its scenario types belongs to (some types are in two).
Ability score = successful routes of that ability / routes of that ability; the ability mean averages
the abilities that have at least one route (Bench2Drive's 220 routes cover all five).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

OVERTAKING = "Overtaking"
MERGING = "Merging"
EMERGENCY_BRAKE = "Emergency_Brake"
GIVE_WAY = "Give_Way"
TRAFFIC_SIGNS = "Traffic_Signs"

ABILITIES: dict[str, frozenset[str]] = {
    OVERTAKING: frozenset(
        {
            "Accident",
            "AccidentTwoWays",
            "ConstructionObstacle",
            "ConstructionObstacleTwoWays",
            "HazardAtSideLane",
            "HazardAtSideLaneTwoWays",
            "ParkedObstacle",
            "ParkedObstacleTwoWays",
            "VehicleOpensDoorTwoWays",
        }
    ),
    MERGING: frozenset(
        {
            "CrossingBicycleFlow",
            "EnterActorFlow",
            "HighwayExit",
            "InterurbanActorFlow",
            "HighwayCutIn",
            "InterurbanAdvancedActorFlow",
            "MergerIntoSlowTraffic",
            "MergerIntoSlowTrafficV2",
            "NonSignalizedJunctionLeftTurn",
            "NonSignalizedJunctionRightTurn",
            "NonSignalizedJunctionLeftTurnEnterFlow",
            "ParkingExit",
            "SequentialLaneChange",
            "LaneChange",  # Bench2Drive's tool spells the lane-change type this way
            "SignalizedJunctionLeftTurn",
            "SignalizedJunctionRightTurn",
            "SignalizedJunctionLeftTurnEnterFlow",
        }
    ),
    EMERGENCY_BRAKE: frozenset(
        {
            "BlockedIntersection",
            "DynamicObjectCrossing",
            "HardBreakRoute",
            "OppositeVehicleTakingPriority",
            "OppositeVehicleRunningRedLight",
            "ParkingCutIn",
            "PedestrianCrossing",
            "ParkingCrossingPedestrian",
            "StaticCutIn",
            "VehicleTurningRoute",
            "VehicleTurningRoutePedestrian",
            "ControlLoss",
        }
    ),
    GIVE_WAY: frozenset({"InvadingTurn", "YieldToEmergencyVehicle"}),
    TRAFFIC_SIGNS: frozenset(
        {
            "BlockedIntersection",
            "OppositeVehicleTakingPriority",
            "OppositeVehicleRunningRedLight",
            "PedestrianCrossing",
            "VehicleTurningRoute",
            "VehicleTurningRoutePedestrian",
            "EnterActorFlow",
            "CrossingBicycleFlow",
            "NonSignalizedJunctionLeftTurn",
            "NonSignalizedJunctionRightTurn",
            "NonSignalizedJunctionLeftTurnEnterFlow",
            "T_Junction",
            "VanillaNonSignalizedTurn",
            "VanillaSignalizedTurnEncounterGreenLight",
            "VanillaSignalizedTurnEncounterRedLight",
            "VanillaNonSignalizedTurnEncounterStopsign",
            "SignalizedJunctionLeftTurn",
            "SignalizedJunctionRightTurn",
            "SignalizedJunctionLeftTurnEnterFlow",
        }
    ),
}

SCENARIO_TYPES: frozenset[str] = frozenset().union(*ABILITIES.values()) - {"LaneChange"}


def abilities_of(scenario_types: Iterable[str]) -> list[str]:
    """Abilities exercised by a route with these scenario types, in ABILITIES order."""
    types = set(scenario_types)
    return [name for name, members in ABILITIES.items() if types & members]


def ability_scores(routes: Sequence[tuple[Sequence[str], bool]]) -> dict[str, float | None]:
    """{ability: successes / routes of it (None when no route has it)} from (scenario types, success) pairs."""
    totals = dict.fromkeys(ABILITIES, 0)
    successes = dict.fromkeys(ABILITIES, 0)
    for types, success in routes:
        for name in abilities_of(types):
            totals[name] += 1
            successes[name] += int(success)
    return {name: (successes[name] / totals[name] if totals[name] else None) for name in ABILITIES}


def ability_mean(scores: dict[str, float | None]) -> float | None:
    """Mean of the abilities that have routes, None when none has."""
    values = [v for v in scores.values() if v is not None]
    return sum(values) / len(values) if values else None
