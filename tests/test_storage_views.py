"""The documented SQL views answer users' questions with exact numbers, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from postgres import *  # noqa: F403  (fixtures: db_url, store, clip_root, ...)
from postgres import make_episode
from sqlalchemy import text
from sqlalchemy.engine import URL

from storage.query import run_read_only_query
from storage.records import CheckpointRecord, RouteRecord
from storage.store import Store
from takeover.monitor import DEVIATION_EXPLAINED

PARKING = RouteRecord("100", "Town01", "dev", ("ParkingExit",), 300.0)
ACCIDENT = RouteRecord("200", "Town04", "dev", ("Accident", "ParkingExit"), 500.0)
SHA = "c" * 64
RED_LIGHT_ABOVE_30_KMH = (
    "SELECT takeover_id, town, speed_kmh FROM disengagements "
    "WHERE reason = 'red_light' AND speed_kmh > 30 ORDER BY speed_kmh"
)


@pytest.fixture
def populated(store: Store) -> Store:
    """Iteration 0: two ParkingExit episodes (1.0 km + 0.5 km) with 2 red lights and 2 collisions.
    Iteration 1: one ParkingExit episode (2.0 km, 1 red light) and one Accident episode (1.0 km, none).
    The expert drove 0.2 km of the first, 0.5 km of the third and none of the fourth; the second was
    stored without the expert's distance (as before session 14)."""
    store.record_checkpoint(CheckpointRecord(path="ckpt/v0.pt", sha256=SHA))
    store.ingest_episode(
        *make_episode(1, route=PARKING, distance_m=1000.0, n_takeovers=3, checkpoint_sha256=SHA,
                      reasons=("red_light", "red_light", "predicted_collision"), speeds_mps=(5.0, 9.0, 4.0),
                      expert_distance_m=200.0)
    )  # fmt: skip
    # ... the collision of episode 2 fired as a plan deviation the collision explains (monitor severity)
    episode, takeovers, clips = make_episode(2, route=PARKING, distance_m=500.0, n_takeovers=1,
                                             checkpoint_sha256=SHA, reasons=("predicted_collision",),
                                             speeds_mps=(3.0,))  # fmt: skip
    explained = dataclasses.replace(
        takeovers[0], severity={**takeovers[0].severity, DEVIATION_EXPLAINED: 1.0}
    )
    store.ingest_episode(episode, [explained], clips)
    store.ingest_episode(
        *make_episode(3, route=PARKING, distance_m=2000.0, n_takeovers=1, iteration=1,
                      reasons=("red_light",), speeds_mps=(12.0,), expert_distance_m=500.0)
    )  # fmt: skip
    store.ingest_episode(
        *make_episode(4, route=ACCIDENT, distance_m=1000.0, n_takeovers=0, iteration=1, expert_distance_m=0.0)
    )
    return store


def _rows(store: Store, sql: str) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def test_disengagements_has_one_row_per_takeover_with_its_context(populated: Store) -> None:
    rows = _rows(
        populated,
        "SELECT run, iteration, checkpoint_path, route_id, town, scenario_type, reason, frame "
        "FROM disengagements ORDER BY takeover_id",
    )
    assert len(rows) == 5
    assert rows[0][:6] == ("run-a", 0, "ckpt/v0.pt", "100", "Town01", "ParkingExit")
    assert rows[4][:4] == ("run-a", 1, None, "100")  # iteration 1 ran without a recorded checkpoint
    assert [r[6] for r in rows] == [
        "red_light",
        "red_light",
        "predicted_collision",
        "predicted_collision",
        "red_light",
    ]


def test_red_light_takeovers_above_30_kmh(populated: Store) -> None:
    # 5 m/s = 18 km/h is below; 9 m/s = 32.4 km/h and 12 m/s = 43.2 km/h are above
    rows = _rows(populated, RED_LIGHT_ABOVE_30_KMH)
    assert [(town, round(kmh, 1)) for _, town, kmh in rows] == [("Town01", 32.4), ("Town01", 43.2)]


def test_disengagement_rates_per_km_by_iteration_scenario_and_reason(populated: Store) -> None:
    rows = _rows(
        populated,
        "SELECT iteration, scenario_type, reason, takeovers, episodes, distance_km, takeovers_per_km "
        "FROM disengagement_rates ORDER BY iteration, scenario_type, reason",
    )
    expected = [
        (0, "ParkingExit", "predicted_collision", 2, 2, 1.5, 2 / 1.5),
        (0, "ParkingExit", "red_light", 2, 2, 1.5, 2 / 1.5),
        (1, "ParkingExit", "red_light", 1, 1, 2.0, 0.5),
    ]
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        assert row[:5] == want[:5]
        assert row[5] == pytest.approx(want[5]) and row[6] == pytest.approx(want[6])


def test_scenario_rates_include_scenarios_without_takeovers(populated: Store) -> None:
    rows = _rows(
        populated,
        "SELECT iteration, scenario_type, episodes, distance_km, takeovers, takeovers_per_km, mean_driving_score "
        "FROM scenario_rates ORDER BY iteration, scenario_type",
    )
    assert [r[:5] for r in rows] == [
        (0, "ParkingExit", 2, pytest.approx(1.5), 4),
        (1, "Accident", 1, pytest.approx(1.0), 0),
        (1, "ParkingExit", 1, pytest.approx(2.0), 1),
    ]
    assert [r[5] for r in rows] == [pytest.approx(4 / 1.5), pytest.approx(0.0), pytest.approx(0.5)]
    assert rows[0][6] == pytest.approx((61.0 + 62.0) / 2)  # make_episode scores 60 + seed % 10


def test_which_scenario_type_disengages_most_per_km(populated: Store) -> None:
    rows = _rows(
        populated,
        "SELECT scenario_type, SUM(takeovers) * 1.0 / SUM(distance_km) AS per_km FROM scenario_rates "
        "GROUP BY scenario_type ORDER BY per_km DESC",
    )
    assert rows[0][0] == "ParkingExit" and rows[0][1] == pytest.approx(5 / 3.5)
    assert rows[1] == ("Accident", pytest.approx(0.0))


def _readme_queries() -> list[str]:
    readme = Path(__file__).resolve().parents[1] / "storage" / "README.md"
    return re.findall(r"```sql\n(.*?)```", readme.read_text(), flags=re.DOTALL)


def test_readme_has_example_queries() -> None:
    assert len(_readme_queries()) >= 5


@pytest.mark.parametrize("index", range(8))
def test_readme_example_queries_run_read_only(populated: Store, db_url: URL, index: int) -> None:
    queries = _readme_queries()
    if index >= len(queries):
        pytest.skip("fewer examples in the README")
    result = run_read_only_query(db_url, queries[index])
    assert result.columns and result.rows, queries[index]


def test_readme_query_counts_disengagements_per_km_the_policy_drove(populated: Store, db_url: URL) -> None:
    # Given the populated runs, where the expert drove 0.2 km of iteration 0's first episode (the second
    # has no expert distance stored) and 0.5 km of iteration 1's 3 km
    query = next(q for q in _readme_queries() if "expert_distance_m" in q)
    # When the README's query runs, then iteration 0 counts only the episode that knows its split
    rows = {r[1]: tuple(r[2:]) for r in run_read_only_query(db_url, query).rows}
    assert rows[0] == (3, pytest.approx(3 / 0.8))
    assert rows[1] == (1, pytest.approx(1 / 2.5))


def test_readme_query_finds_deviations_reported_as_their_hazard(populated: Store, db_url: URL) -> None:
    # Given the populated runs, where one predicted_collision fired as an explained plan deviation
    query = next(q for q in _readme_queries() if DEVIATION_EXPLAINED in q)
    # When the README's query runs, then it finds exactly that takeover
    rows = [tuple(r) for r in run_read_only_query(db_url, query).rows]
    assert rows == [("predicted_collision", 1)]
