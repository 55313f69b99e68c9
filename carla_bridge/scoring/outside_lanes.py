"""OutsideRouteLanesTest: share of the completed route driven off the lanes or against their direction.

Each tick the ego is *outside* when its planar distance to the nearest driving-lane centre (or parking-
lane centre, whichever is nearer) exceeds half that lane's width plus `allowed_out_distance_m`; and
*in a wrong lane* by the leaderboard's rules:

- inside a junction never (lanes are too chaotic there);
- when the ego's (road, lane) changes within the same road, the state toggles whenever the lane id
  changes sign (a lane of the opposite direction; changing back ends it);
- when the road changes (leaving a junction, or a road seam), the lane's direction is compared with
  the ego's yaw: more than `max_vehicle_angle_deg` apart is wrong. The leaderboard uses this only
  after junctions and the sign toggle elsewhere; lane-id signs are not comparable across roads, so
  the heading test is used at every road change.

While a scenario that switches the wrong-direction test off is running (scenario_runner's TwoWays
scenarios call SwitchWrongDirectionTest(False) for their whole behaviour: the ego must use the
opposite lane to pass), driving in a lane of the other direction does not count; driving off the
lanes still does. The simulator tells which scenarios run through `WorldSnapshot.scenarios`.

The distance the route progress advances (RouteProgress.completed_m) during such ticks is "outside";
at the end one event reports it as a percentage of the completed route, and the penalty is
x (1 - pct / 100). Planar distances are used because backends differ in what height the pose has.
"""

from __future__ import annotations

import math

import carla

from carla_bridge.scoring.config import OutsideLanesConfig
from carla_bridge.scoring.events import make_event
from carla_bridge.snapshot import InfractionEvent, InfractionKind, WorldSnapshot

# scenario_runner scenarios whose behaviour runs inside SwitchWrongDirectionTest(False) ... (True)
WRONG_DIRECTION_EXEMPT_SCENARIOS = frozenset(
    {
        "AccidentTwoWays",
        "ConstructionObstacleTwoWays",
        "HazardAtSideLaneTwoWays",
        "ParkedObstacleTwoWays",
        "VehicleOpensDoorTwoWays",
    }
)
SCENARIO_RUNNING = "running"


def outside_lanes_message(distance_m: float, percentage: float) -> str:
    return (
        f"Agent went outside its route lanes for about {round(distance_m, 3)} meters "
        f"({round(percentage, 2)} % of the completed route)"
    )


def wrong_direction_test_active(snapshot: WorldSnapshot) -> bool:
    """False while a scenario of WRONG_DIRECTION_EXEMPT_SCENARIOS is running (it switched the test off)."""
    return not any(
        sc.status == SCENARIO_RUNNING and sc.type in WRONG_DIRECTION_EXEMPT_SCENARIOS
        for sc in snapshot.scenarios
    )


def _planar_distance(location: carla.Location, wp: carla.Waypoint) -> float:
    loc = wp.transform.location
    return math.hypot(location.x - loc.x, location.y - loc.y)


class OutsideLanesCriterion:
    """Accumulates the distance driven outside the route lanes (leaderboard OutsideRouteLanesTest)."""

    def __init__(self, cmap: carla.Map, config: OutsideLanesConfig) -> None:
        self._map = cmap
        self._config = config
        self._last_lane: tuple[int, int] | None = None
        self._outside_active = False
        self._wrong_active = False
        self._wrong_direction_test = True  # False while a TwoWays scenario switched it off
        self._last_completed_m: float | None = None
        self.total_m = 0.0
        self.outside_m = 0.0

    @property
    def active(self) -> bool:
        """The ego is outside its route lanes on the latest tick (a wrong lane only while that test is on)."""
        return self._outside_active or (self._wrong_active and self._wrong_direction_test)

    @property
    def percentage(self) -> float:
        """Outside distance / completed distance x 100 (0 before any progress)."""
        return 100.0 * self.outside_m / self.total_m if self.total_m > 0 else 0.0

    def _within(self, location: carla.Location, wp: carla.Waypoint) -> bool:
        return _planar_distance(location, wp) <= wp.lane_width / 2.0 + self._config.allowed_out_distance_m

    def _is_outside_driving_lanes(self, location: carla.Location, driving: carla.Waypoint | None) -> bool:
        """The leaderboard tests the nearer of the driving and parking lane centres.

        The parking look-up (slow on maps without parking lanes) is made only when the driving lane
        alone says outside: a point inside its driving lane is nearer that lane's centre than any
        parking lane's, except in degenerate geometry.
        """
        if driving is not None and self._within(location, driving):
            return False
        parking = self._map.get_waypoint(location, project_to_road=True, lane_type=carla.LaneType.Parking)
        candidates = [wp for wp in (driving, parking) if wp is not None]
        if not candidates:
            return True
        nearest = min(candidates, key=lambda wp: _planar_distance(location, wp))
        return not self._within(location, nearest)

    def _update_wrong_lane(self, driving: carla.Waypoint | None, ego_yaw_rad: float) -> None:
        if driving is None:
            return
        lane = (driving.road_id, driving.lane_id)
        if driving.is_junction:
            self._wrong_active = False
        elif lane != self._last_lane:
            if self._last_lane is not None and self._last_lane[0] == driving.road_id:
                if self._last_lane[1] * driving.lane_id < 0:
                    self._wrong_active = not self._wrong_active
            else:
                angle = (driving.transform.rotation.yaw - math.degrees(ego_yaw_rad)) % 360.0
                limit = self._config.max_vehicle_angle_deg
                self._wrong_active = not (angle < limit or angle > 360.0 - limit)
        self._last_lane = lane

    def update(self, snapshot: WorldSnapshot) -> list[InfractionEvent]:
        pose = snapshot.ego.pose
        location = carla.Location(x=pose.x, y=pose.y, z=pose.z)
        driving = self._map.get_waypoint(location, project_to_road=True, lane_type=carla.LaneType.Driving)
        self._outside_active = self._is_outside_driving_lanes(location, driving)
        self._update_wrong_lane(driving, pose.yaw)  # tracked even while switched off, like the leaderboard
        self._wrong_direction_test = wrong_direction_test_active(snapshot)

        completed = snapshot.route.completed_m
        if self._last_completed_m is not None:
            advance = max(completed - self._last_completed_m, 0.0)
            self.total_m += advance
            if self.active:
                self.outside_m += advance
        self._last_completed_m = (
            completed if self._last_completed_m is None else max(completed, self._last_completed_m)
        )
        return []

    def final_event(self, snapshot: WorldSnapshot) -> InfractionEvent | None:
        """The route's one OUTSIDE_ROUTE_LANES event (value = percentage), or None when always inside."""
        if self.outside_m <= 0.0:
            return None
        pct = self.percentage
        return make_event(
            InfractionKind.OUTSIDE_ROUTE_LANES,
            snapshot,
            outside_lanes_message(self.outside_m, pct),
            value=pct,
        )
