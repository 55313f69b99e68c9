"""Route records, penalties, global statistics, abilities, comfortness and the results JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from omegaconf import OmegaConf

from carla_bridge.config import CONF_DIR
from carla_bridge.scoring import (
    ResultsFileError,
    RouteRecord,
    ScoringConfig,
    ScoringError,
    abilities_of,
    build_route_record,
    merge_results,
    read_results,
    results_json,
    summarise,
    write_results,
)
from carla_bridge.scoring.abilities import SCENARIO_TYPES, ability_mean, ability_scores
from carla_bridge.scoring.comfort import comfort_score, comfortable_segments
from carla_bridge.scoring.config import ComfortConfig
from carla_bridge.scoring.leaderboard import (
    GLOBAL_VALUE_LABELS,
    INFRACTION_KEYS,
    NON_PENALTY_KINDS,
    PENALTY_COEFFICIENTS,
    RECORD_INFRACTION_ORDER,
)
from carla_bridge.scoring.outside_lanes import outside_lanes_message
from carla_bridge.scoring.record import infraction_penalty
from carla_bridge.snapshot import InfractionEvent, InfractionKind


def event(kind: InfractionKind, message: str = "m", value: float = 0.0) -> InfractionEvent:
    return InfractionEvent(kind=kind, frame=1, time_s=0.05, x=0.0, y=0.0, message=message, value=value)


def record(
    route_id: str = "1",
    events: list[InfractionEvent] | None = None,
    completion: float = 100.0,
    reached: bool = True,
    failure: str | None = None,
    length: float = 500.0,
    types: tuple[str, ...] = (),
    efficiency: float | None = None,
    comfort: float | None = None,
    index: int = 0,
) -> RouteRecord:
    return build_route_record(
        route_id=f"RouteScenario_{route_id}_rep0",
        index=index,
        events=events or [],
        completion_pct=completion,
        reached=reached,
        failure_status=failure,
        route_length_m=length,
        duration_game_s=30.0,
        duration_system_s=12.5,
        efficiency=efficiency,
        comfort=comfort,
        scenario_types=types,
        town="Town01",
    )


# ---- penalty, driving score, status, success -------------------------------------------------------
def test_given_vehicle_collision_red_light_and_20pct_outside_when_scored_then_product_of_coefficients():
    events = [
        event(InfractionKind.COLLISION_VEHICLE),
        event(InfractionKind.RED_LIGHT),
        event(InfractionKind.OUTSIDE_ROUTE_LANES, value=20.0),
        event(InfractionKind.MIN_SPEED),  # unused by Bench2Drive: no factor
    ]
    assert infraction_penalty(events) == pytest.approx(0.6 * 0.7 * 0.8)
    rec = record(events=events, completion=80.0, reached=False, failure="Failed - Agent got blocked")
    assert rec.scores.score_route == 80.0
    assert rec.scores.score_penalty == pytest.approx(0.336)
    assert rec.scores.score_composed == pytest.approx(26.88)
    assert rec.status == "Failed - Agent got blocked"
    assert rec.num_infractions == 4
    assert not rec.success


@pytest.mark.parametrize(
    ("kind", "factor"),
    [
        (InfractionKind.COLLISION_PEDESTRIAN, 0.5),
        (InfractionKind.COLLISION_VEHICLE, 0.6),
        (InfractionKind.COLLISION_STATIC, 0.65),
        (InfractionKind.RED_LIGHT, 0.7),
        (InfractionKind.STOP_SIGN, 0.8),
        (InfractionKind.SCENARIO_TIMEOUT, 0.7),
        (InfractionKind.YIELD_TO_EMERGENCY_VEHICLE, 0.7),
        (InfractionKind.ROUTE_DEVIATION, 1.0),
        (InfractionKind.AGENT_BLOCKED, 1.0),
        (InfractionKind.ROUTE_TIMEOUT, 1.0),
    ],
)
def test_given_one_event_of_each_kind_when_scored_then_leaderboard_coefficient(kind, factor):
    assert infraction_penalty([event(kind), event(kind)]) == pytest.approx(factor * factor)


def test_given_every_infraction_kind_when_looked_up_then_it_has_a_record_key_and_a_penalty_rule():
    for kind in InfractionKind:
        assert INFRACTION_KEYS[kind] in RECORD_INFRACTION_ORDER
        rules = (
            (kind in PENALTY_COEFFICIENTS)
            + (kind in NON_PENALTY_KINDS)
            + (kind == InfractionKind.OUTSIDE_ROUTE_LANES)
        )
        assert rules == 1, kind


def test_given_reached_route_when_no_infraction_then_perfect_success_else_completed():
    assert record().status == "Perfect" and record().success
    with_stop = record(
        events=[event(InfractionKind.STOP_SIGN, "Agent ran a stop with id=1 at (x=1, y=2, z=0)")]
    )
    assert with_stop.status == "Completed"
    assert with_stop.infractions["stop_infraction"] == ["Agent ran a stop with id=1 at (x=1, y=2, z=0)"]
    assert not with_stop.success
    assert with_stop.scores.score_composed == pytest.approx(80.0)
    min_speed_only = record(events=[event(InfractionKind.MIN_SPEED)])
    assert min_speed_only.status == "Completed" and min_speed_only.success


def test_given_record_when_serialised_then_leaderboard_keys_in_order():
    data = record().to_dict()
    assert list(data)[:7] == [
        "index",
        "route_id",
        "status",
        "num_infractions",
        "infractions",
        "scores",
        "meta",
    ]
    assert list(data["infractions"]) == list(RECORD_INFRACTION_ORDER)
    assert data["scores"] == {"score_route": 100.0, "score_penalty": 1.0, "score_composed": 100.0}
    assert data["meta"] == {"route_length": 500.0, "duration_game": 30.0, "duration_system": 12.5}


# ---- global statistics ---------------------------------------------------------------------------
def test_given_three_routes_of_five_when_summarised_then_missing_count_zero_and_per_km_rates():
    records = [
        record("1", length=1000.0, efficiency=80.0, comfort=1.0),
        record(
            "2",
            events=[event(InfractionKind.COLLISION_VEHICLE), event(InfractionKind.ROUTE_DEVIATION)],
            completion=50.0,
            reached=False,
            failure="Failed - Agent deviated from the route",
            length=1000.0,
            efficiency=120.0,
            comfort=0.5,
            index=1,
        ),
        record(
            "3",
            events=[event(InfractionKind.OUTSIDE_ROUTE_LANES, outside_lanes_message(250.0, 25.0), 25.0)],
            length=1000.0,
            index=2,
        ),
    ]
    g = summarise(records, total_routes=5)
    # DS: 100, 50 x 0.6 = 30, 100 x 0.75 = 75 -> 205 / 5
    assert g.driving_score == pytest.approx(41.0)
    assert g.scores_mean.score_route == pytest.approx(250.0 / 5)
    assert g.scores_mean.score_penalty == pytest.approx((1.0 + 0.6 + 0.75) / 5)
    assert g.success_rate == pytest.approx(1 / 5)
    assert g.status == "Failed"
    assert g.exceptions == [("RouteScenario_2_rep0", 1, "Failed - Agent deviated from the route")]
    # km driven = 1 + 0.5 + 1 = 2.5
    assert g.infractions["collisions_vehicle"] == pytest.approx(0.4)
    assert g.infractions["route_dev"] == pytest.approx(0.4)
    assert g.infractions["outside_route_lanes"] == pytest.approx(0.25 / 2.5)
    assert g.infractions["red_light"] == 0.0
    assert g.total_length == 3000.0 and g.eval_num == 3 and g.total_routes == 5
    assert g.efficiency == pytest.approx(100.0)
    assert g.comfort == pytest.approx(0.75)
    mean = 41.0
    expected_std = math.sqrt(((100 - mean) ** 2 + (30 - mean) ** 2 + (75 - mean) ** 2) / 4)
    assert g.scores_std_dev.score_composed == pytest.approx(expected_std, abs=1e-6)


def test_given_only_completed_and_perfect_routes_when_summarised_then_status_completed():
    g = summarise([record("1"), record("2", events=[event(InfractionKind.STOP_SIGN)])])
    assert g.status == "Completed" and g.exceptions == []
    assert summarise([record("1")]).status == "Perfect"


def test_given_fewer_total_routes_than_records_when_summarised_then_scoring_error():
    with pytest.raises(ScoringError, match="total_routes=1"):
        summarise([record("1"), record("2")], total_routes=1)


# ---- abilities -------------------------------------------------------------------------------------
def test_given_bench2drive_table_when_counted_then_44_types_and_dual_membership():
    assert len(SCENARIO_TYPES) == 44
    assert abilities_of(["PedestrianCrossing"]) == ["Emergency_Brake", "Traffic_Signs"]
    assert abilities_of(["EnterActorFlow"]) == ["Merging", "Traffic_Signs"]
    assert abilities_of(["YieldToEmergencyVehicle"]) == ["Give_Way"]
    assert abilities_of(["T_Junction"]) == ["Traffic_Signs"]
    assert abilities_of(["NotAScenario"]) == []


def test_given_routes_with_types_when_ability_scored_then_successes_over_routes():
    routes = [
        (("Accident",), True),
        (("ParkedObstacle",), False),
        (("PedestrianCrossing",), True),
        (("PedestrianCrossing",), False),
        (("InvadingTurn",), True),
    ]
    scores = ability_scores(routes)
    assert scores == {
        "Overtaking": 0.5,
        "Merging": None,
        "Emergency_Brake": 0.5,
        "Give_Way": 1.0,
        "Traffic_Signs": 0.5,
    }
    assert ability_mean(scores) == pytest.approx((0.5 + 0.5 + 1.0 + 0.5) / 4)


def test_given_records_without_types_when_route_types_given_then_abilities_use_them():
    records = [record("11"), record("12", events=[event(InfractionKind.RED_LIGHT)])]
    g = summarise(records, route_types={"11": ["HighwayExit"], "RouteScenario_12_rep0": ["HighwayCutIn"]})
    assert g.abilities["Merging"] == pytest.approx(0.5)


# ---- comfortness -----------------------------------------------------------------------------------
def kinematics(accel_lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return accel_lon, np.zeros_like(accel_lon), np.zeros_like(accel_lon)


def test_given_smooth_acceleration_when_scored_then_every_segment_comfortable():
    t = np.arange(200) * 0.05
    lon = 1.0 * np.sin(2 * np.pi * t / 8.0)  # 1 m/s2, 8 s period
    assert comfortable_segments(*kinematics(lon), ComfortConfig()).tolist() == [True] * 10
    assert comfort_score(*kinematics(lon), ComfortConfig()) == 1.0


def test_given_brake_pumping_when_scored_then_those_segments_uncomfortable():
    lon = np.zeros(200)
    lon[100:140] = np.where(np.arange(40) % 4 < 2, -3.0, 1.0)  # 2.5 Hz pumping between -3 and +1 m/s2
    flags = comfortable_segments(*kinematics(lon), ComfortConfig())
    assert flags.tolist() == [True] * 5 + [False, False] + [True] * 3
    assert comfort_score(*kinematics(lon), ComfortConfig()) == pytest.approx(0.8)


def test_given_steady_hard_braking_or_fast_yaw_when_scored_then_uncomfortable():
    hard = np.full(40, -5.0)  # below -4.05 m/s2
    assert comfort_score(*kinematics(hard), ComfortConfig()) == 0.0
    yaw = np.full(40, 1.2)  # rad/s above 0.95
    assert comfort_score(np.zeros(40), np.zeros(40), yaw, ComfortConfig()) == 0.0


def test_given_less_than_one_segment_when_scored_then_none_and_partial_tail_dropped():
    assert comfort_score(*kinematics(np.zeros(19)), ComfortConfig()) is None
    assert comfortable_segments(*kinematics(np.zeros(45)), ComfortConfig()).shape == (2,)


# ---- results JSON ----------------------------------------------------------------------------------
def sample_records() -> list[RouteRecord]:
    return [
        record("3", types=("Accident",), efficiency=90.0, comfort=0.9),
        record(
            "4",
            events=[
                event(
                    InfractionKind.COLLISION_PEDESTRIAN,
                    "Agent collided against object with type=walker.pedestrian.0001 and id=12 at (x=1.0, y=2.0, z=0.0)",
                )
            ],
            completion=42.123456,
            reached=False,
            failure="Failed - Agent got blocked",
            types=("PedestrianCrossing",),
            index=1,
        ),
    ]


def test_given_records_when_written_and_read_back_then_identical(tmp_path):
    records = sample_records()
    path = write_results(tmp_path / "out" / "results.json", records, total_routes=3, sensors=["carla_camera"])
    back = read_results(path)
    assert back.records == records
    assert back.global_record == summarise(records, 3)
    assert back.progress == (2, 3)
    assert back.entry_status == "Started" and back.eligible is False
    assert back.sensors == ["carla_camera"]


def test_given_records_when_results_json_built_then_leaderboard_and_bench2drive_keys():
    data = results_json(sample_records())
    assert set(data) >= {"_checkpoint", "entry_status", "eligible", "sensors", "values", "labels"}
    assert set(data["_checkpoint"]) == {"global_record", "progress", "records"}
    assert data["entry_status"] == "Finished" and data["eligible"] is True
    assert data["labels"][0] == "Avg. driving score" and len(data["values"]) == len(GLOBAL_VALUE_LABELS)
    # DS = (100 + 42.123456 x 0.5) / 2
    assert data["driving score"] == pytest.approx((100 + 21.061728) / 2)
    assert data["values"][0] == f"{(100 + 21.061728) / 2:.3f}"
    assert data["success rate"] == 0.5 and data["eval num"] == 2
    assert data["ability"]["Overtaking"] == 1.0 and data["ability"]["Emergency_Brake"] == 0.0
    json.dumps(data)  # serialisable as is


def test_given_bench2drive_merged_file_when_read_then_records_and_scores_recomputed(tmp_path):
    merged = {
        "_checkpoint": {
            "records": [
                {
                    "route_id": "RouteScenario_1711_rep0",
                    "status": "Completed",
                    "num_infractions": 1,
                    "infractions": {
                        "red_light": ["Agent ran a red light 5 at (x=1, y=2, z=0)"],
                        "min_speed_infractions": [],
                    },
                    "scores": {"score_route": 100.0, "score_penalty": 0.7, "score_composed": 70.0},
                    "meta": {"route_length": 96.9, "duration_game": 27.25, "duration_system": 63.1},
                },
                {
                    "route_id": "RouteScenario_2084_rep0",
                    "status": "Perfect",
                    "infractions": {},
                    "scores": {"score_route": 100.0, "score_penalty": 1.0, "score_composed": 100.0},
                    "meta": {"route_length": 120.0, "duration_game": 30.0, "duration_system": 70.0},
                },
            ]
        },
        "driving score": 85.0,
        "success rate": 0.5,
        "eval num": 2,
    }
    path = tmp_path / "merged.json"
    path.write_text(json.dumps(merged))
    back = read_results(path, total_routes=4, route_types={"1711": ["Accident"], "2084": ["HighwayExit"]})
    assert [r.index for r in back.records] == [0, 1]
    assert (
        back.records[0].infractions["red_light"] and back.records[0].infractions["collisions_vehicle"] == []
    )
    assert back.global_record.driving_score == pytest.approx(170.0 / 4)
    assert back.global_record.success_rate == pytest.approx(0.25)
    assert back.global_record.abilities["Overtaking"] == 0.0
    assert back.global_record.abilities["Merging"] == 1.0


def test_given_per_route_files_when_merged_then_records_reindexed_and_duplicates_rejected(tmp_path):
    first, second = sample_records()
    a = write_results(tmp_path / "a.json", [first])
    b = write_results(tmp_path / "b.json", [second])
    merged = merge_results([a, b])
    assert [r.route_id for r in merged] == ["RouteScenario_3_rep0", "RouteScenario_4_rep0"]
    assert [r.index for r in merged] == [0, 1]
    with pytest.raises(ResultsFileError, match="RouteScenario_3_rep0 is in both"):
        merge_results([a, b, a])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ('{"records": []}', "no _checkpoint.records"),
        ('{"_checkpoint": {"records": [{"route_id": "r", "status": "Perfect"}]}}', "lacks or mangles"),
    ],
)
def test_given_bad_results_file_when_read_then_one_clear_error(tmp_path, content, match):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsFileError, match=match):
        read_results(path)


# ---- configuration ---------------------------------------------------------------------------------
def test_given_scoring_yaml_when_compared_with_schema_then_same_keys_and_defaults():
    yaml = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "scoring.yaml"))
    assert yaml == asdict(ScoringConfig())
