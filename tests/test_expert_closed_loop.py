"""The expert closed loop in the embedded simulator on built-in routes (slow: whole routes)."""

from __future__ import annotations

import pytest

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
