"""Infractions a scenario reports about itself: scenario timeouts, failing to yield to an emergency vehicle.

The simulator decides these (it runs the scenario); scoring reads them from `ScenarioInfo.status`:
"timed_out" -> one SCENARIO_TIMEOUT per scenario; a YieldToEmergencyVehicle scenario with status
"failed" -> one YIELD_TO_EMERGENCY_VEHICLE.
"""

from __future__ import annotations

from carla_bridge.scoring.events import ego_location, make_event
from carla_bridge.snapshot import InfractionEvent, InfractionKind, WorldSnapshot

STATUS_TIMED_OUT = "timed_out"
STATUS_FAILED = "failed"
YIELD_SCENARIO_TYPE = "YieldToEmergencyVehicle"


class ScenarioOutcomeCriterion:
    """One event per scenario that timed out, and per emergency vehicle not yielded to."""

    def __init__(self) -> None:
        self._reported: set[tuple[str, InfractionKind]] = set()

    def update(self, snapshot: WorldSnapshot) -> list[InfractionEvent]:
        events: list[InfractionEvent] = []
        for scenario in snapshot.scenarios:
            if scenario.status == STATUS_TIMED_OUT:
                kind = InfractionKind.SCENARIO_TIMEOUT
                message = f"Agent timed out a scenario ({scenario.name}) at {ego_location(snapshot)}"
            elif scenario.status == STATUS_FAILED and scenario.type == YIELD_SCENARIO_TYPE:
                kind = InfractionKind.YIELD_TO_EMERGENCY_VEHICLE
                message = f"Agent failed to yield to an emergency vehicle at {ego_location(snapshot)}"
            else:
                continue
            if (scenario.name, kind) in self._reported:
                continue
            self._reported.add((scenario.name, kind))
            actor_id = scenario.actor_ids[0] if scenario.actor_ids else -1
            events.append(make_event(kind, snapshot, message, actor_id=actor_id))
        return events
