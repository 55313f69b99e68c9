"""The expert closed loop in the embedded simulator on built-in routes (slow: whole routes)."""

from __future__ import annotations

import pytest

from carla_bridge.config import load_config
from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.maps import MapLibrary
from carla_bridge.route_planner import prepare_routes
from carla_bridge.route_sets import load_route_set
from experts.config import ExpertConfig
from experts.evaluate import evaluate, format_table

pytestmark = pytest.mark.slow


def test_expert_drives_built_in_routes_without_collisions():
    # a junction left turn with oncoming flow, a pedestrian crossing and a red light
    maps = MapLibrary()
    routes = load_route_set("builtin:eval", ["2002", "2004", "2009"])
    prepare_routes(routes, maps)
    runs = evaluate(lambda: EmbeddedSimulator(SimConfig(scoring=False), maps), routes, [0], ExpertConfig())
    table = format_table(runs)
    assert len(runs) == 3, table
    for run in runs:
        collisions = [
            m for k, msgs in run.record.infractions.items() if k.startswith("collisions") for m in msgs
        ]
        assert not collisions, table
        assert run.record.scores.score_route == pytest.approx(100.0), table
        assert run.driving_score >= 90.0, table
        assert run.plan_ms_median < 20.0, table  # generous: shared CI machines; the benchmark is strict
    assert "mean DS" in table


@pytest.mark.parametrize(
    ("route_id", "seed", "what"),
    [
        ("27870", 0, "an oncoming van turns left across the ego's stopped nose into the ego's exit"),
        ("25538", 1, "an emergency vehicle closes in while the free lane has fast traffic behind"),
    ],
)
def test_expert_dev_route_regressions(route_id, seed, what, dev_routes_file, shared_maps_dir):
    # given a Bench2Drive dev route that once ended in an infraction (what), when the expert drives it
    maps = MapLibrary(extra_dirs=[shared_maps_dir])
    routes = load_route_set(str(dev_routes_file), [route_id])
    prepare_routes(routes, maps)
    sim_config = load_config(SimConfig, "sim")  # what `takeover drive` uses
    runs = evaluate(lambda: EmbeddedSimulator(sim_config, maps), routes, [seed], ExpertConfig())
    # then it finishes with no infraction at all
    record = runs[0].record
    assert record.scores.score_composed == pytest.approx(100.0), (what, format_table(runs))


@pytest.mark.parametrize("route_id", ["1014", "2007"])
def test_expert_keeps_right_past_invading_oncoming_cars_without_stalling(route_id):
    # given a built-in InvadingTurn route: a flow of oncoming cars cuts a quarter lane into the ego's
    maps = MapLibrary()
    set_name = "builtin:train" if route_id.startswith("1") else "builtin:eval"
    routes = load_route_set(set_name, [route_id])
    prepare_routes(routes, maps)
    sim_config = load_config(SimConfig, "sim")
    # when the expert drives it
    runs = evaluate(lambda: EmbeddedSimulator(sim_config, maps), routes, [0], ExpertConfig())
    # then it passes them close by instead of stopping for each (which times the scenario out)
    record = runs[0].record
    assert record.scores.score_composed == pytest.approx(100.0), format_table(runs)
