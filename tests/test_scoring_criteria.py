"""Scoring criteria against hand-computed cases on a tiny hand-written OpenDRIVE road (and Town01).

The tiny map: one straight 200 m road along +x. In CARLA's frame the driving lane -1 (direction +x)
has its centre at y = +1.75, the opposite lane 1 at y = -1.75 (direction -x), a parking lane -2 at
y = +4.75 and sidewalks beyond both. The route runs along lane -1 from x = 0 to x = 200 every 1 m.
"""

from __future__ import annotations

import math
from dataclasses import replace

import carla
import numpy as np
import pytest

from carla_bridge.errors import RouteError
from carla_bridge.geometry import oriented_boxes_overlap, segments_intersect
from carla_bridge.route import DenseRoute, RoadOption, Route, ScenarioSpec, TriggerPoint
from carla_bridge.scoring import RouteCriteria, ScoringConfig
from carla_bridge.scoring.collision import CollisionCriterion
from carla_bridge.scoring.config import CollisionConfig, EfficiencyConfig, load_scoring_config
from carla_bridge.scoring.efficiency import EfficiencyTracker, efficiency_ratio
from carla_bridge.scoring.errors import ScoringConfigError
from carla_bridge.scoring.leaderboard import (
    STATUS_BLOCKED,
    STATUS_DEVIATED,
    STATUS_PERFECT,
    STATUS_STARTED,
    STATUS_TICK_LIMIT,
    STATUS_TIMED_OUT,
)
from carla_bridge.scoring.route_end import route_timeout_s
from carla_bridge.snapshot import (
    ActorKind,
    ActorRole,
    ActorTable,
    Control,
    EgoState,
    InfractionKind,
    Pose,
    RouteProgress,
    ScenarioInfo,
    StopLine,
    StopSign,
    TrafficLight,
    TrafficLightState,
    WorldSnapshot,
)

DT = 0.05
LANE_Y = 1.75  # centre of the route lane (-1) in CARLA coordinates
OPPOSITE_Y = -1.75  # centre of the opposite lane (1)
EGO_EXTENT = np.array([2.45, 1.0, 0.75])

TINY_XODR = """<?xml version="1.0" standalone="yes"?>
<OpenDRIVE>
  <header revMajor="1" revMinor="4" name="tiny" version="1.00" north="0" south="0" east="0" west="0"/>
  <road name="r0" length="200.0" id="0" junction="-1">
    <link/>
    <planView><geometry s="0.0" x="0.0" y="0.0" hdg="0.0" length="200.0"><line/></geometry></planView>
    <elevationProfile/><lateralProfile/>
    <lanes>
      <laneSection s="0.0">
        <left>
          <lane id="2" type="sidewalk" level="false"><link/><width sOffset="0.0" a="2.0" b="0" c="0" d="0"/></lane>
          <lane id="1" type="driving" level="false"><link/><width sOffset="0.0" a="3.5" b="0" c="0" d="0"/></lane>
        </left>
        <center><lane id="0" type="none" level="false"><link/></lane></center>
        <right>
          <lane id="-1" type="driving" level="false"><link/><width sOffset="0.0" a="3.5" b="0" c="0" d="0"/></lane>
          <lane id="-2" type="parking" level="false"><link/><width sOffset="0.0" a="2.5" b="0" c="0" d="0"/></lane>
          <lane id="-3" type="sidewalk" level="false"><link/><width sOffset="0.0" a="2.0" b="0" c="0" d="0"/></lane>
        </right>
      </laneSection>
    </lanes>
  </road>
</OpenDRIVE>
"""


# ---- builders --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_map() -> carla.Map:
    return carla.Map("tiny", TINY_XODR)


def straight_dense(length_m: int = 200, speed_limit: float = 8.333) -> DenseRoute:
    x = np.arange(0.0, length_m + 1.0)
    n = x.shape[0]
    return DenseRoute(
        xyz=np.stack([x, np.full(n, LANE_Y), np.zeros(n)], axis=1),
        yaw=np.zeros(n),
        commands=np.full(n, int(RoadOption.LANEFOLLOW), np.int8),
        s=x.copy(),
        road_id=np.zeros(n, np.int32),
        lane_id=np.full(n, -1, np.int32),
        in_junction=np.zeros(n, bool),
        speed_limit=np.full(n, speed_limit, np.float32),
    )


def tiny_route(scenarios: list[ScenarioSpec] | None = None) -> Route:
    dense = straight_dense()
    return Route(id="7", town="tiny", keypoints=dense.xyz[[0, -1]], scenarios=scenarios or [], dense=dense)


def actor_table(rows: list[dict]) -> ActorTable:
    """Rows: id, kind, x, y, optional yaw, extent (3,), velocity (2,), role, type_id."""
    if not rows:
        return ActorTable.empty()
    n = len(rows)
    velocity = np.array([r.get("velocity", (0.0, 0.0)) for r in rows], dtype=float)
    return ActorTable(
        id=np.array([r["id"] for r in rows], np.int64),
        kind=np.array([int(r["kind"]) for r in rows], np.int8),
        role=np.array([int(r.get("role", ActorRole.BACKGROUND)) for r in rows], np.int8),
        xyz=np.array([(r["x"], r["y"], 0.0) for r in rows], dtype=float),
        yaw=np.array([r.get("yaw", 0.0) for r in rows], dtype=float),
        velocity=velocity,
        speed=np.linalg.norm(velocity, axis=1),
        extent=np.array([r.get("extent", (2.2, 0.9, 0.7)) for r in rows], dtype=float),
        control=np.full((n, 3), np.nan, np.float32),
        type_id=tuple(r.get("type_id", "") for r in rows) if any("type_id" in r for r in rows) else (),
    )


def make_snapshot(
    frame: int,
    x: float,
    y: float = LANE_Y,
    *,
    yaw: float = 0.0,
    speed: float = 5.0,
    time_s: float | None = None,
    accel: tuple[float, float] = (0.0, 0.0),
    yaw_rate: float = 0.0,
    actors: ActorTable | None = None,
    lights: tuple[TrafficLight, ...] = (),
    stops: tuple[StopSign, ...] = (),
    scenarios: tuple[ScenarioInfo, ...] = (),
    route_length_m: float = 200.0,
) -> WorldSnapshot:
    """One tick with the ego at (x, y); route progress = the dense index under x (1 m spacing)."""
    index = int(np.clip(math.floor(x), 0, route_length_m))
    return WorldSnapshot(
        frame=frame,
        time_s=frame * DT if time_s is None else time_s,
        town="tiny",
        ego=EgoState(
            pose=Pose(x, y, 0.0, yaw),
            velocity=np.array([speed * math.cos(yaw), speed * math.sin(yaw)]),
            speed=speed,
            acceleration=np.array(accel, dtype=float),
            yaw_rate=yaw_rate,
            extent=EGO_EXTENT,
            control=Control(),
        ),
        actors=actors if actors is not None else ActorTable.empty(),
        traffic_lights=lights,
        stop_signs=stops,
        route=RouteProgress(
            index=index,
            completed_m=float(index),
            total_m=route_length_m,
            distance_to_route=abs(y - LANE_Y),
            command=int(RoadOption.LANEFOLLOW),
        ),
        scenarios=scenarios,
    )


def drive(
    criteria: RouteCriteria, xs: np.ndarray, start_frame: int = 0, **kwargs
) -> list[list[InfractionKind]]:
    """Feed one snapshot per x; the infraction kinds raised on each tick."""
    kinds = []
    for k, x in enumerate(xs):
        events = criteria.update(make_snapshot(start_frame + k, float(x), **kwargs))
        kinds.append([e.kind for e in events])
    return kinds


def flat(kinds: list[list[InfractionKind]]) -> list[InfractionKind]:
    return [k for tick in kinds for k in tick]


# ---- geometry --------------------------------------------------------------------------------------
def test_given_box_rotated_45_deg_off_the_corner_when_checked_then_sat_separates_it_but_aabb_would_not():
    ego_half = np.array([2.0, 1.0])
    # A 1 m square rotated 45 deg whose centre is diagonal to the ego's corner (2, 1): its axis-aligned
    # bound (half size 0.707) reaches x = 2.6 - 0.707 < 2, so an AABB test would overlap.
    centre = np.array([[2.6, 1.6]])
    assert not oriented_boxes_overlap(
        np.zeros(2), 0.0, ego_half, centre, np.array([math.pi / 4]), np.array([[0.5, 0.5]])
    )[0]
    moved_in = np.array([[2.3, 1.3]])
    assert oriented_boxes_overlap(
        np.zeros(2), 0.0, ego_half, moved_in, np.array([math.pi / 4]), np.array([[0.5, 0.5]])
    )[0]


def test_given_crossing_and_parallel_segments_when_tested_then_only_the_crossing_ones_intersect():
    assert segments_intersect((0, 0), (2, 0), (1, -1), (1, 1))
    assert not segments_intersect((0, 0), (2, 0), (3, -1), (3, 1))
    assert not segments_intersect((0, 0), (2, 0), (0, 1), (2, 1))
    assert segments_intersect((0, 0), (2, 0), (2, 0), (2, 5))  # touching end point counts


# ---- collisions ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (ActorKind.VEHICLE, InfractionKind.COLLISION_VEHICLE),
        (ActorKind.WALKER, InfractionKind.COLLISION_PEDESTRIAN),
        (ActorKind.BICYCLE, InfractionKind.COLLISION_VEHICLE),
        (ActorKind.STATIC, InfractionKind.COLLISION_STATIC),
    ],
)
def test_given_actor_kind_when_ego_box_touches_it_then_leaderboard_collision_kind(kind, expected):
    crit = CollisionCriterion(CollisionConfig())
    actors = actor_table([{"id": 11, "kind": kind, "x": 54.0, "y": LANE_Y, "extent": (0.4, 0.4, 0.9)}])
    events = crit.update(make_snapshot(0, 50.0, actors=actors))  # ego front at 52.45, actor from 53.6
    assert events == []
    events = crit.update(make_snapshot(1, 51.5, actors=actors))  # ego front 53.95 > 53.6
    assert [e.kind for e in events] == [expected]
    assert events[0].actor_id == 11
    assert "id=11 at (x=51.5, y=1.75, z=0.0)" in events[0].message


def test_given_contact_lasting_several_ticks_when_updated_then_one_event_only():
    crit = CollisionCriterion(CollisionConfig())
    actors = actor_table(
        [{"id": 3, "kind": ActorKind.VEHICLE, "x": 55.0, "y": LANE_Y, "type_id": "vehicle.audi.tt"}]
    )
    events = [e for k in range(40) for e in crit.update(make_snapshot(k, 51.0 + 0.01 * k, actors=actors))]
    assert len(events) == 1
    assert events[0].message.startswith("Agent collided against object with type=vehicle.audi.tt and id=3")


def hit(actor_id: int, ego_x: float) -> ActorTable:
    """An actor whose box overlaps the ego's front when the ego stands at ego_x."""
    return actor_table([{"id": actor_id, "kind": ActorKind.VEHICLE, "x": ego_x + 4.0, "y": LANE_Y}])


def test_given_same_actor_hit_again_within_5_s_when_far_from_the_first_place_then_not_counted():
    crit = CollisionCriterion(CollisionConfig())  # 3 m area, 5 m forget, 5 s same-actor memory
    assert len(crit.update(make_snapshot(0, 50.0, actors=hit(9, 50.0)))) == 1
    crit.update(make_snapshot(20, 60.0))  # t = 1 s, 10 m away: the place is forgotten
    assert crit.update(make_snapshot(40, 60.0, actors=hit(9, 60.0))) == []  # t = 2 s: same actor
    assert len(crit.update(make_snapshot(60, 61.0, actors=hit(10, 61.0)))) == 1  # another actor counts


def test_given_other_actor_hit_near_the_first_place_when_memory_expired_then_not_counted_until_5_m_away():
    crit = CollisionCriterion(CollisionConfig())
    assert len(crit.update(make_snapshot(0, 50.0, actors=hit(9, 50.0)))) == 1
    assert crit.update(make_snapshot(120, 52.5, actors=hit(10, 52.5))) == []  # t = 6 s, 2.5 m from the place
    crit.update(make_snapshot(140, 56.0))  # 6 m away: the place is forgotten
    assert len(crit.update(make_snapshot(160, 56.0, actors=hit(9, 56.0)))) == 1  # t = 8 s: counted again


def test_given_actor_on_a_bridge_above_when_boxes_overlap_in_plan_then_no_collision():
    crit = CollisionCriterion(CollisionConfig())
    actors = actor_table([{"id": 1, "kind": ActorKind.VEHICLE, "x": 52.0, "y": LANE_Y}])
    actors.xyz[:, 2] = 6.0
    assert crit.update(make_snapshot(0, 50.0, actors=actors)) == []


# ---- red lights ------------------------------------------------------------------------------------
def light(state: TrafficLightState, line_x: float = 100.0, light_id: int = 42) -> TrafficLight:
    line = StopLine(x=line_x, y=LANE_Y, yaw=0.0, road_id=0, lane_id=-1, width=3.5)
    return TrafficLight(
        id=light_id, state=state, pose=Pose(line_x + 2.0, 6.0, 3.0, math.pi), stop_lines=(line,)
    )


def test_given_red_light_when_ego_drives_through_then_one_red_light_event_at_the_light(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    kinds = drive(criteria, np.arange(90.0, 115.0, 0.25), lights=(light(TrafficLightState.RED),))
    assert flat(kinds) == [InfractionKind.RED_LIGHT]
    event = criteria.events[0]
    assert (event.x, event.y) == (102.0, 6.0)  # located at the light
    assert event.message == "Agent ran a red light 42 at (x=102.0, y=6.0, z=3.0)"
    # the tail (x - 0.8 x 2.45 .. x - 3.45) covers the line at x = 100 for x in [101.96, 103.45]
    tick = next(i for i, k in enumerate(kinds) if k)
    assert 101.96 <= 90.0 + 0.25 * tick <= 103.45


def test_given_red_light_when_ego_stops_with_its_nose_over_the_line_then_no_infraction(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    xs = np.concatenate([np.arange(90.0, 101.5, 0.25), np.full(40, 101.5)])  # tail never reaches 100
    assert flat(drive(criteria, xs, lights=(light(TrafficLightState.RED),))) == []


def test_given_yellow_or_green_light_when_ego_drives_through_then_no_infraction(tiny_map):
    for state in (TrafficLightState.YELLOW, TrafficLightState.GREEN):
        criteria = RouteCriteria(tiny_route(), tiny_map)
        assert flat(drive(criteria, np.arange(90.0, 115.0, 0.25), lights=(light(state),))) == []


def test_given_fast_ego_when_it_jumps_over_the_line_between_ticks_then_the_sweep_still_counts(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    kinds = drive(criteria, np.array([98.0, 100.5, 105.5, 110.0]), lights=(light(TrafficLightState.RED),))
    assert flat(kinds) == [InfractionKind.RED_LIGHT]


def test_given_red_light_of_the_other_direction_when_ego_passes_then_no_infraction(tiny_map):
    other = StopLine(x=100.0, y=OPPOSITE_Y, yaw=math.pi, road_id=0, lane_id=1, width=3.5)
    red = TrafficLight(
        id=5, state=TrafficLightState.RED, pose=Pose(98.0, -6.0, 3.0, 0.0), stop_lines=(other,)
    )
    criteria = RouteCriteria(tiny_route(), tiny_map)
    assert flat(drive(criteria, np.arange(90.0, 115.0, 0.25), lights=(red,))) == []


# ---- stop signs ------------------------------------------------------------------------------------
def stop_sign() -> StopSign:
    line = StopLine(x=100.0, y=LANE_Y, yaw=0.0, road_id=0, lane_id=-1, width=3.5)
    return StopSign(id=77, pose=Pose(100.0, 5.0, 1.0, 0.0), stop_lines=(line,))


def test_given_stop_sign_when_ego_rolls_through_at_3_mps_then_one_stop_infraction(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    kinds = drive(criteria, np.arange(85.0, 110.0, 0.15), stops=(stop_sign(),), speed=3.0)
    assert flat(kinds) == [InfractionKind.STOP_SIGN]
    assert criteria.events[0].message == "Agent ran a stop with id=77 at (x=100.0, y=5.0, z=1.0)"


def test_given_stop_sign_when_ego_stops_before_the_line_then_goes_then_no_infraction(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    stops = (stop_sign(),)
    frame = 0
    for x in np.arange(85.0, 97.5, 0.15):
        assert criteria.update(make_snapshot(frame, float(x), stops=stops, speed=3.0)) == []
        frame += 1
    for _ in range(10):  # centre 2.5 m before the line, standing
        assert criteria.update(make_snapshot(frame, 97.5, stops=stops, speed=0.05)) == []
        frame += 1
    for x in np.arange(97.5, 110.0, 0.15):
        assert criteria.update(make_snapshot(frame, float(x), stops=stops, speed=3.0)) == []
        frame += 1


def test_given_stop_sign_when_ego_stops_too_early_then_it_still_ran_it(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    stops = (stop_sign(),)
    xs = np.arange(80.0, 110.0, 0.25)
    events = []
    for i, x in enumerate(xs):
        speed = 0.0 if 88.0 <= x < 89.0 else 3.0  # stands 12 m before the line, then rolls through
        events += criteria.update(make_snapshot(i, float(x), stops=stops, speed=speed))
    assert [e.kind for e in events] == [InfractionKind.STOP_SIGN]


# ---- outside route lanes ---------------------------------------------------------------------------
def test_given_20_m_in_the_opposite_lane_when_route_ends_then_outside_share_is_20_of_199_m(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    for frame, x in enumerate(np.arange(0.0, 200.5, 0.5)):
        y = OPPOSITE_Y if 100.0 <= x < 120.0 else LANE_Y
        criteria.update(make_snapshot(frame, float(x), y))
    assert criteria.done and criteria.route_completion == 100.0
    outside = [e for e in criteria.events if e.kind == InfractionKind.OUTSIDE_ROUTE_LANES]
    assert len(outside) == 1
    # progress is floor(x): ticks at x in [100, 120) advance it from 99 to 119 (20 m); the route ends
    # at x = 199 (99.5 % > 99 %, 1 m from the end) after 199 m of progress
    assert outside[0].value == pytest.approx(100.0 * 20.0 / 199.0)
    assert outside[0].message == (
        "Agent went outside its route lanes for about 20.0 meters (10.05 % of the completed route)"
    )
    record = criteria.record()
    assert record.scores.score_penalty == pytest.approx(1.0 - 20.0 / 199.0, abs=1e-6)
    assert record.scores.score_composed == pytest.approx(100.0 * (1.0 - 20.0 / 199.0), abs=1e-4)
    assert record.status == "Completed"
    assert not record.success


def _two_ways(status: str, type_name: str = "ParkedObstacleTwoWays") -> tuple[ScenarioInfo, ...]:
    return (ScenarioInfo(name=f"{type_name}_1", type=type_name, status=status, trigger_xy=(90.0, LANE_Y)),)


@pytest.mark.parametrize(
    ("scenarios", "expected_m"),
    [
        (_two_ways("running"), 0.0),  # SwitchWrongDirectionTest(False): the opposite lane is allowed
        (_two_ways("done"), 20.0),  # the scenario ended: the test is back on
        (_two_ways("pending"), 20.0),
        (_two_ways("running", "ParkedObstacle"), 20.0),  # one-way variant: no switch
    ],
)
def test_given_20_m_in_the_opposite_lane_when_a_two_ways_scenario_runs_then_only_running_two_ways_exempts(
    tiny_map, scenarios, expected_m
):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    for frame, x in enumerate(np.arange(0.0, 150.0, 0.5)):
        y = OPPOSITE_Y if 100.0 <= x < 120.0 else LANE_Y
        criteria.update(make_snapshot(frame, float(x), y, scenarios=scenarios))
    assert criteria._outside.outside_m == pytest.approx(expected_m)


def test_given_running_two_ways_scenario_when_ego_is_on_the_sidewalk_then_it_still_counts_as_outside(
    tiny_map,
):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    for frame, x in enumerate(np.arange(0.0, 50.0, 0.5)):
        criteria.update(make_snapshot(frame, float(x), 7.0, scenarios=_two_ways("running")))
    assert criteria._outside.percentage == pytest.approx(100.0)


def test_given_ego_in_the_parking_lane_or_on_the_sidewalk_when_driving_then_only_the_sidewalk_is_outside(
    tiny_map,
):
    on_parking = RouteCriteria(tiny_route(), tiny_map)
    for k, x in enumerate(np.arange(0.0, 50.0, 0.5)):
        on_parking.update(make_snapshot(k, float(x), 4.75))
    assert on_parking._outside.outside_m == 0.0

    on_sidewalk = RouteCriteria(tiny_route(), tiny_map)
    for k, x in enumerate(np.arange(0.0, 50.0, 0.5)):
        on_sidewalk.update(make_snapshot(k, float(x), 7.0))  # sidewalk centre, 2.25 m past the parking edge
    assert on_sidewalk._outside.percentage == pytest.approx(100.0)
    assert on_sidewalk.infraction_penalty == pytest.approx(0.0)


# ---- route end -------------------------------------------------------------------------------------
def test_given_ego_on_route_when_it_reaches_the_end_then_perfect_rc_100_ds_100(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    frame = 0
    for x in np.arange(0.0, 198.0, 0.5):
        criteria.update(make_snapshot(frame, float(x)))
        frame += 1
        assert not criteria.done
        assert criteria.status == STATUS_STARTED
    criteria.update(make_snapshot(frame, 198.5))  # 99.0 % -> not above 99 yet
    assert not criteria.done
    criteria.update(make_snapshot(frame + 1, 199.0))  # 99.5 %, 1 m from the end
    assert criteria.done
    record = criteria.record(index=3)
    assert record.status == STATUS_PERFECT
    assert (record.scores.score_route, record.scores.score_penalty, record.scores.score_composed) == (
        100.0,
        1.0,
        100.0,
    )
    assert record.route_id == "RouteScenario_7_rep0" and record.index == 3
    assert record.meta.route_length == 200.0
    assert record.meta.duration_game == pytest.approx((frame + 1) * DT)
    assert record.success
    assert criteria.update(make_snapshot(frame + 2, 199.5)) == []  # ignored once done


def test_given_ego_35_m_off_route_when_updated_then_route_ends_with_deviation(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    drive(criteria, np.arange(0.0, 50.0, 0.5))
    # progress index 50: nearest of route points 50..55 is (50, 1.75), 33.25 m away
    events = criteria.update(make_snapshot(100, 50.0, 35.0))
    assert [e.kind for e in events] == [InfractionKind.ROUTE_DEVIATION, InfractionKind.OUTSIDE_ROUTE_LANES]
    assert criteria.done and criteria.status == STATUS_DEVIATED
    record = criteria.record()
    assert record.infractions["route_dev"] == ["Agent deviated from the route at (x=50.0, y=35.0, z=0.0)"]
    assert record.scores.score_route == pytest.approx(25.0)


def test_given_ego_25_m_off_route_when_updated_then_no_deviation(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    drive(criteria, np.arange(0.0, 50.0, 0.5))
    criteria.update(make_snapshot(100, 50.0, 26.0))  # 24.25 m from (50, 1.75)
    assert not criteria.done


def test_given_ego_standing_when_60_s_pass_then_blocked_only_after_60_s(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    criteria.update(make_snapshot(0, 20.0, speed=5.0))  # last tick moving at t = 0
    for second in range(1, 61):  # standing at t = 1 .. 60 s (frames 20 apart)
        criteria.update(make_snapshot(second * 20, 20.0, speed=0.0, time_s=float(second)))
    assert not criteria.done  # 60 s exactly is not "more than 60 s"
    events = criteria.update(make_snapshot(61 * 20 + 1, 20.0, speed=0.05, time_s=60.05))
    assert [e.kind for e in events] == [InfractionKind.AGENT_BLOCKED]
    assert criteria.status == STATUS_BLOCKED
    assert criteria.record().infractions["vehicle_blocked"] == [
        "Agent got blocked at (x=20.0, y=1.75, z=0.0)"
    ]


def test_given_route_timeout_formula_when_computed_then_base_plus_length_over_tenth_of_limit():
    dense = straight_dense(200, speed_limit=8.0)
    assert route_timeout_s(dense, ScoringConfig().route_end) == pytest.approx(300.0 + 200.0 / 0.8)
    dense.speed_limit[:100] = 10.0  # first 100 m at 10 m/s, rest at 8 m/s
    assert route_timeout_s(dense, ScoringConfig().route_end) == pytest.approx(
        300.0 + 100.0 / 1.0 + 100.0 / 0.8
    )
    dense.speed_limit[:] = 0.0  # unknown limits fall back to 30 km/h
    assert route_timeout_s(dense, ScoringConfig().route_end) == pytest.approx(300.0 + 200.0 / 0.8333)


def test_given_slow_ego_when_game_time_passes_the_timeout_then_route_timed_out(tiny_map):
    config = load_scoring_config(["route_end.max_ticks=1000000"])
    criteria = RouteCriteria(tiny_route(), tiny_map, config)
    assert criteria.timeout_s == pytest.approx(300.0 + 200.0 / 0.8333)
    criteria.update(make_snapshot(0, 10.0, speed=0.5, time_s=0.0))
    criteria.update(make_snapshot(10_000, 20.0, speed=0.5, time_s=criteria.timeout_s))
    assert not criteria.done
    events = criteria.update(make_snapshot(10_001, 20.0, speed=0.5, time_s=criteria.timeout_s + 0.05))
    assert [e.kind for e in events] == [InfractionKind.ROUTE_TIMEOUT]
    assert criteria.status == STATUS_TIMED_OUT
    assert criteria.record().infractions["route_timeout"] == ["Route timeout."]


def test_given_4000_ticks_when_route_not_finished_then_bench2drive_stops_it(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    criteria.update(make_snapshot(0, 10.0, speed=1.0))
    criteria.update(make_snapshot(3999, 80.0, speed=1.0))
    assert not criteria.done
    assert criteria.update(make_snapshot(4000, 80.5, speed=1.0)) == []
    assert criteria.done and criteria.status == STATUS_TICK_LIMIT
    record = criteria.record()
    assert record.num_infractions == 0 and not record.success
    assert record.scores.score_route == pytest.approx(40.0)


def test_given_run_stopped_from_outside_when_recorded_then_failed_with_partial_rc(tiny_map):
    criteria = RouteCriteria(tiny_route(), tiny_map)
    drive(criteria, np.arange(0.0, 101.0, 0.5))
    record = criteria.record()
    assert record.status == "Failed"
    assert record.scores.score_route == pytest.approx(50.0)
    assert record.scores.score_composed == pytest.approx(50.0)


def test_given_route_without_dense_points_when_criteria_built_then_route_error(tiny_map):
    route = replace(tiny_route(), dense=None)
    with pytest.raises(RouteError, match="no dense route"):
        RouteCriteria(route, tiny_map)


def test_given_even_savgol_window_when_config_loaded_then_scoring_config_error():
    with pytest.raises(ScoringConfigError, match="savgol_window"):
        load_scoring_config(["comfort.savgol_window=6"])


# ---- scenario outcomes -----------------------------------------------------------------------------
def test_given_scenario_statuses_when_reported_then_timeout_and_yield_counted_once_each(tiny_map):
    yield_spec = ScenarioSpec(
        "YieldToEmergencyVehicle_1", "YieldToEmergencyVehicle", TriggerPoint(10, LANE_Y, 0, 0)
    )
    criteria = RouteCriteria(tiny_route([yield_spec]), tiny_map)
    timed_out = ScenarioInfo("Accident_1", "Accident", "timed_out", (30.0, LANE_Y))
    failed_yield = ScenarioInfo(
        "YieldToEmergencyVehicle_1", "YieldToEmergencyVehicle", "failed", (10.0, LANE_Y), (501,)
    )
    failed_other = ScenarioInfo("ControlLoss_1", "ControlLoss", "failed", (50.0, LANE_Y))
    kinds = drive(criteria, np.arange(10.0, 20.0, 0.5), scenarios=(timed_out, failed_yield, failed_other))
    assert sorted(flat(kinds)) == [InfractionKind.SCENARIO_TIMEOUT, InfractionKind.YIELD_TO_EMERGENCY_VEHICLE]
    record = criteria.record()
    assert record.scores.score_penalty == pytest.approx(0.49)
    assert record.scenario_types == ("YieldToEmergencyVehicle",)


# ---- efficiency ------------------------------------------------------------------------------------
def test_given_traffic_at_8_mps_when_ego_drives_4_mps_then_efficiency_50_pct():
    config = EfficiencyConfig(checkpoints=4, radius_m=50.0)
    tracker = EfficiencyTracker(config)
    traffic = actor_table(
        [
            {"id": 1, "kind": ActorKind.VEHICLE, "x": 30.0, "y": OPPOSITE_Y, "velocity": (-6.0, 0.0)},
            {"id": 2, "kind": ActorKind.VEHICLE, "x": 40.0, "y": LANE_Y, "velocity": (10.0, 0.0)},
            # ignored: parked, far away, a walker
            {"id": 3, "kind": ActorKind.VEHICLE, "x": 30.0, "y": 5.0, "role": ActorRole.PARKED},
            {"id": 4, "kind": ActorKind.VEHICLE, "x": 300.0, "y": LANE_Y, "velocity": (20.0, 0.0)},
            {"id": 5, "kind": ActorKind.WALKER, "x": 25.0, "y": 7.0, "velocity": (1.0, 0.0)},
        ]
    )
    for k, completion in enumerate(np.linspace(0.0, 100.0, 41)):
        tracker.update(make_snapshot(k, 20.0, speed=4.0, actors=traffic), float(completion))
    assert tracker.ratios == pytest.approx([50.0] * 4)
    assert tracker.score == pytest.approx(50.0)


def test_given_standing_or_no_traffic_when_ratio_taken_then_dropped():
    config = EfficiencyConfig()
    assert efficiency_ratio(5.0, None, config) is None
    assert efficiency_ratio(5.0, 0.05, config) is None  # below min traffic speed
    assert efficiency_ratio(5.0, 0.4, config) is None  # 1250 % > 1000 %
    assert efficiency_ratio(5.0, 1.0, config) == pytest.approx(500.0)


# ---- a real town ---------------------------------------------------------------------------------
def test_given_town01_lane_when_ego_follows_then_strays_into_the_opposite_lane_then_outside_share_matches(
    shared_maps_dir,
):
    cmap = carla.Map("Town01", (shared_maps_dir / "Town01.xodr").read_text())

    def lane_run(start: carla.Waypoint, count: int) -> list[carla.Waypoint] | None:
        """count waypoints 1 m apart on start's road, no junction, or None."""
        run = [start]
        while len(run) < count:
            following = run[-1].next(1.0)
            if not following or following[0].is_junction or following[0].road_id != start.road_id:
                return None
            run.append(following[0])
        return run

    wps = next(
        run
        for w in cmap.generate_waypoints(5.0)
        if not w.is_junction and (run := lane_run(w, 80)) is not None
    )
    xyz = np.array([[w.transform.location.x, w.transform.location.y, 0.0] for w in wps])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xyz[:, :2], axis=0), axis=1))])
    yaw = np.deg2rad([w.transform.rotation.yaw for w in wps])
    n = len(wps)
    dense = DenseRoute(
        xyz=xyz,
        yaw=yaw,
        commands=np.full(n, 4, np.int8),
        s=s,
        road_id=np.array([w.road_id for w in wps], np.int32),
        lane_id=np.array([w.lane_id for w in wps], np.int32),
        in_junction=np.array([w.is_junction for w in wps]),
        speed_limit=np.full(n, 8.333, np.float32),
    )
    route = Route(id="t1", town="Town01", keypoints=xyz[[0, -1]], dense=dense)
    criteria = RouteCriteria(route, cmap)
    total = float(s[-1])
    for i, w in enumerate(wps):
        pose = w.transform.location
        if 20 <= i < 40:
            opposite = w.get_left_lane()
            assert opposite is not None and opposite.lane_id * w.lane_id < 0
            pose = opposite.transform.location
        snapshot = make_snapshot(i, pose.x, pose.y, yaw=float(yaw[i]), route_length_m=total)
        snapshot = replace(
            snapshot,
            town="Town01",
            route=RouteProgress(i, float(s[i]), total, 0.0, 4),
        )
        criteria.update(snapshot)
    assert criteria.done and criteria.status == "Completed"
    outside = [e for e in criteria.events if e.kind == InfractionKind.OUTSIDE_ROUTE_LANES]
    # ticks 20..39 in the opposite lane: progress from s[19] to s[39] counts as outside
    expected = 100.0 * (s[39] - s[19]) / total
    assert outside and outside[0].value == pytest.approx(expected, rel=1e-6)
