"""`RouteCriteria`: every leaderboard criterion of one route, fed one `WorldSnapshot` per tick.

Both simulator backends call it the same way:

    criteria = RouteCriteria(route, cmap)          # route.dense must be planned
    for each tick: events = criteria.update(snapshot)   # put them in the snapshot's `events`
    if criteria.done: stop driving
    record = criteria.record(index=i)

Everything is derived from the snapshots, the dense route and the map (research/bench2drive.md).
"""

from __future__ import annotations

import time

import carla

from carla_bridge.errors import RouteError
from carla_bridge.route import Route
from carla_bridge.scoring.collision import CollisionCriterion
from carla_bridge.scoring.comfort import ComfortLog
from carla_bridge.scoring.config import ScoringConfig, load_scoring_config, validate_scoring_config
from carla_bridge.scoring.efficiency import EfficiencyTracker
from carla_bridge.scoring.leaderboard import (
    STATUS_BLOCKED,
    STATUS_DEVIATED,
    STATUS_STARTED,
    STATUS_TICK_LIMIT,
    STATUS_TIMED_OUT,
)
from carla_bridge.scoring.outside_lanes import OutsideLanesCriterion
from carla_bridge.scoring.record import RouteRecord, build_route_record, infraction_penalty, route_status
from carla_bridge.scoring.red_light import RedLightCriterion
from carla_bridge.scoring.route_end import AgentBlocked, RouteCompletion, RouteDeviation, RouteTimeout
from carla_bridge.scoring.scenario_outcomes import ScenarioOutcomeCriterion
from carla_bridge.scoring.stop_sign import StopSignCriterion
from carla_bridge.snapshot import InfractionEvent, WorldSnapshot


class RouteCriteria:
    """Leaderboard / Bench2Drive criteria of one route run.

    `update` returns the infractions raised on that tick (collisions, red lights, stop signs, scenario
    timeouts, emergency vehicles; route deviation, blocked and route timeout on the tick that ends the
    route; the outside-route-lanes summary on the ending tick). After the route ends further updates
    are ignored.
    """

    def __init__(self, route: Route, cmap: carla.Map, config: ScoringConfig | None = None) -> None:
        dense = route.dense
        if dense is None or len(dense) < 2:
            raise RouteError(
                route.id, "has no dense route to score against; interpolate it on the map before scoring"
            )
        self.route = route
        self.config = validate_scoring_config(config) if config is not None else load_scoring_config()
        cfg = self.config
        self._collision = CollisionCriterion(cfg.collision)
        self._red_light = RedLightCriterion(cmap, cfg.red_light)
        self._stop_sign = StopSignCriterion(cmap, cfg.stop_sign)
        self._outside = OutsideLanesCriterion(cmap, cfg.outside_lanes)
        self._scenarios = ScenarioOutcomeCriterion()
        self._completion = RouteCompletion(dense, cfg.route_end)
        self._deviation = RouteDeviation(dense, cfg.route_end)
        self._blocked = AgentBlocked(cfg.route_end)
        self._timeout = RouteTimeout(dense, cfg.route_end)
        self._efficiency = EfficiencyTracker(cfg.efficiency)
        self._comfort = ComfortLog(cfg.comfort)

        self._events: list[InfractionEvent] = []
        self._failure_status: str | None = None
        self._done = False
        self._outside_reported = False
        self._first_frame: int | None = None
        self._first_time_s = 0.0
        self._last: WorldSnapshot | None = None
        self._wall_start_s: float | None = None
        self._wall_last_s = 0.0

    # ---- state --------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The route has ended: destination reached, deviated, blocked, timed out or Bench2Drive's tick cap."""
        return self._done

    @property
    def status(self) -> str:
        """Leaderboard status: "Started" while running, then "Perfect", "Completed" or "Failed - ..."."""
        if not self._done:
            return STATUS_STARTED
        return route_status(self._completion.reached, self._failure_status, len(self._all_events()))

    @property
    def events(self) -> tuple[InfractionEvent, ...]:
        """Every infraction raised so far."""
        return tuple(self._events)

    @property
    def route_completion(self) -> float:
        """Route completion RC in percent (100 once the destination is reached)."""
        return self._completion.completion_pct

    @property
    def infraction_penalty(self) -> float:
        """Current penalty, including the outside-route-lanes share driven so far."""
        return infraction_penalty(self._all_events())

    @property
    def driving_score(self) -> float:
        """Current DS = RC x penalty."""
        return self.route_completion * self.infraction_penalty

    @property
    def timeout_s(self) -> float:
        """The route timeout T in game seconds."""
        return self._timeout.timeout_s

    @property
    def ticks(self) -> int:
        """Ticks since the first snapshot (frame difference)."""
        if self._last is None or self._first_frame is None:
            return 0
        return self._last.frame - self._first_frame

    # ---- per tick -----------------------------------------------------------------------------
    def update(self, snapshot: WorldSnapshot) -> list[InfractionEvent]:
        """Run every criterion on the newest snapshot; the infractions raised on this tick."""
        if self._done:
            return []
        now = time.perf_counter()
        if self._first_frame is None:
            self._first_frame = snapshot.frame
            self._first_time_s = snapshot.time_s
            self._wall_start_s = now
        self._wall_last_s = now
        self._last = snapshot

        events: list[InfractionEvent] = []
        events += self._collision.update(snapshot)
        events += self._red_light.update(snapshot)
        events += self._stop_sign.update(snapshot)
        events += self._outside.update(snapshot)
        events += self._scenarios.update(snapshot)

        reached = self._completion.update(snapshot)
        self._efficiency.update(snapshot, self._completion.completion_pct)
        self._comfort.update(snapshot)

        if reached:
            self._done = True
        else:
            ending = self._ending_event(snapshot)
            if ending is not None:
                event, status = ending
                if event is not None:
                    events.append(event)
                self._failure_status = status
                self._done = True

        if self._done:
            final = self._outside.final_event(snapshot)
            if final is not None:
                events.append(final)
            self._outside_reported = True
        self._events += events
        return events

    def _ending_event(self, snapshot: WorldSnapshot) -> tuple[InfractionEvent | None, str] | None:
        """(event, failure status) of the first route-ending criterion that fires, else None."""
        deviation = self._deviation.update(snapshot)
        if deviation is not None:
            return deviation, STATUS_DEVIATED
        blocked = self._blocked.update(snapshot)
        if blocked is not None:
            return blocked, STATUS_BLOCKED
        timeout = self._timeout.update(snapshot, snapshot.time_s - self._first_time_s)
        if timeout is not None:
            return timeout, STATUS_TIMED_OUT
        if snapshot.frame - (self._first_frame or 0) >= self.config.route_end.max_ticks:
            return None, STATUS_TICK_LIMIT
        return None

    def _all_events(self) -> list[InfractionEvent]:
        """Events so far plus, while the route runs, the outside-lanes summary it would end with."""
        if self._outside_reported or self._last is None:
            return list(self._events)
        final = self._outside.final_event(self._last)
        return [*self._events, final] if final is not None else list(self._events)

    # ---- result -------------------------------------------------------------------------------
    def record(self, index: int = 0, duration_system_s: float | None = None) -> RouteRecord:
        """The route's RouteRecord. Before `done` (a run stopped from outside) the status is "Failed".

        duration_system_s defaults to the wall time between the first and the last update.
        """
        last = self._last
        duration_game = 0.0 if last is None else last.time_s - self._first_time_s
        if duration_system_s is None:
            duration_system_s = 0.0 if self._wall_start_s is None else self._wall_last_s - self._wall_start_s
        dense = self.route.dense
        assert dense is not None  # checked in __init__
        return build_route_record(
            route_id=self.route.name,
            index=index,
            events=self._all_events(),
            completion_pct=self._completion.completion_pct,
            reached=self._completion.reached,
            failure_status=self._failure_status,
            route_length_m=dense.length_m,
            duration_game_s=duration_game,
            duration_system_s=duration_system_s,
            efficiency=self._efficiency.score,
            comfort=self._comfort.score,
            scenario_types=tuple(s.type for s in self.route.scenarios),
            town=self.route.town,
        )
