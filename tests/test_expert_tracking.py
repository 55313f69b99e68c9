"""Per-actor memory (experts/tracking.py) and the route frame of actors (experts/scene.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from carla_bridge.snapshot import ActorKind
from experts.config import ExpertConfig
from experts.route_prep import prepare_route
from experts.scene import project_actors
from experts.synthetic import ActorSpec, actor_table, point_on_route, straight_route
from experts.tracking import ActorHistory


def test_yaw_rate_acceleration_and_standing_time_are_measured_across_ticks():
    # given a turning, accelerating car and a standing one over ticks of 0.05 s
    hist = ActorHistory(standing_speed_mps=0.3)
    first = hist.update(
        actor_table([ActorSpec(1, ActorKind.VEHICLE, 0, 0, 0.0, 5.0), ActorSpec(2, ActorKind.VEHICLE, 9, 9)]),
        0.0,
    )
    assert not first.known.any() and first.yaw_rate.tolist() == [0.0, 0.0]
    kin = None
    for k in range(1, 11):
        t = 0.05 * k
        specs = [
            ActorSpec(1, ActorKind.VEHICLE, 0, 0, 0.2 * t, 5.0 + 1.0 * t),
            ActorSpec(2, ActorKind.VEHICLE, 9, 9),
        ]
        kin = hist.update(actor_table(specs), t)
    # then the smoothed rates converge to the true ones and the standing car has stood 0.5 s
    assert kin.known.all()
    assert kin.yaw_rate[0] == pytest.approx(0.2, rel=0.01)
    assert kin.accel[0] == pytest.approx(1.0, rel=0.01)
    assert kin.standing_s.tolist() == pytest.approx([0.0, 0.5])


def test_a_yaw_jump_across_the_seam_is_not_a_spin():
    hist = ActorHistory(0.3)
    hist.update(actor_table([ActorSpec(1, ActorKind.VEHICLE, 0, 0, math.pi - 0.01, 5.0)]), 0.0)
    kin = hist.update(actor_table([ActorSpec(1, ActorKind.VEHICLE, 0, 0, -math.pi + 0.01, 5.0)]), 0.05)
    assert kin.yaw_rate[0] == pytest.approx(0.5 * 0.02 / 0.05, rel=1e-6)  # half-weight smoothing of 0.4 rad/s


def test_actors_in_the_route_frame():
    cfg = ExpertConfig()
    route = straight_route(100.0)

    class NoMap:
        def get_waypoint(self, *a, **k):
            return None

    prepared = prepare_route(route, NoMap(), cfg.route)  # type: ignore[arg-type]
    x, y, _ = point_on_route(route, 30.0, lateral_m=2.0)
    oncoming = ActorSpec(7, ActorKind.VEHICLE, x, y, math.pi, 4.0)
    far = ActorSpec(8, ActorKind.VEHICLE, 30.0, 40.0, 0.0, 0.0)
    below = ActorSpec(9, ActorKind.VEHICLE, 50.0, 0.0, 0.0, 0.0, z=-8.0)
    table = actor_table([oncoming, far, below])
    frame, same_level = project_actors(
        prepared, table, np.arange(3), np.zeros(3), 0, len(prepared), 12.0, 3.0
    )
    assert frame.id.tolist() == [7]
    assert same_level.tolist() == [0, 1]
    assert frame.s[0] == pytest.approx(30.0, abs=0.05) and frame.d[0] == pytest.approx(2.0, abs=1e-6)
    assert frame.v_along[0] == pytest.approx(-4.0) and abs(frame.rel_yaw[0]) == pytest.approx(math.pi)
    assert frame.half_along[0] == pytest.approx(2.3) and frame.half_across[0] == pytest.approx(1.0)
    assert frame.lateral_overlap(0.0, 1.1).tolist() == [True]
    assert frame.lateral_overlap(-1.0, 0.5).tolist() == [False]
