"""Perception noise: seeded, drops and jitters actors, delays traffic-light states."""

from __future__ import annotations

import numpy as np
import pytest

from carla_bridge.snapshot import (
    ActorTable,
    Control,
    EgoState,
    Pose,
    RouteProgress,
    TrafficLight,
    TrafficLightState,
    WorldSnapshot,
)
from takeover.policy.config import PerceptionNoiseConfig
from takeover.policy.perception_noise import PerceptionNoise


def world(n_actors: int, light_state: TrafficLightState = TrafficLightState.RED) -> WorldSnapshot:
    actors = ActorTable(
        id=np.arange(n_actors, dtype=np.int64),
        kind=np.zeros(n_actors, np.int8),
        role=np.zeros(n_actors, np.int8),
        xyz=np.zeros((n_actors, 3)),
        yaw=np.zeros(n_actors),
        velocity=np.zeros((n_actors, 2)),
        speed=np.zeros(n_actors),
        extent=np.ones((n_actors, 3)),
        control=np.full((n_actors, 3), np.nan, np.float32),
    )
    ego = EgoState(Pose(0, 0, 0, 0), np.zeros(2), 0.0, np.zeros(2), 0.0, np.ones(3), Control())
    light = TrafficLight(1, light_state, Pose(0, 0, 0, 0), ())
    return WorldSnapshot(0, 0.0, "Town01", ego, actors, (light,), (), RouteProgress(0, 0, 1, 0, 4))


def test_disabled_noise_returns_the_snapshot_itself():
    snap = world(5)
    assert PerceptionNoise(PerceptionNoiseConfig(enabled=False, miss_probability=1.0)).apply(snap) is snap


def test_missed_actors_and_position_noise_statistics():
    # Given 4000 actors at the origin, 10 % misses and 0.5 m position noise
    noise = PerceptionNoise(
        PerceptionNoiseConfig(enabled=True, miss_probability=0.1, position_sigma_m=0.5), seed=3
    )
    out = noise.apply(world(4000))
    # Then about 10 % are gone and the rest are scattered with std 0.5 m, the source untouched
    assert 3500 < len(out.actors) < 3700
    assert out.actors.xyz[:, :2].std() == pytest.approx(0.5, rel=0.05)
    assert np.allclose(out.actors.xyz[:, 2], 0.0)
    assert (
        PerceptionNoise(PerceptionNoiseConfig(enabled=True, miss_probability=1.0))
        .apply(world(10))
        .actors.id.size
        == 0
    )


def test_noise_is_deterministic_per_seed():
    cfg = PerceptionNoiseConfig(enabled=True, miss_probability=0.3, position_sigma_m=1.0)
    a = PerceptionNoise(cfg, seed=7).apply(world(50))
    b = PerceptionNoise(cfg, seed=7).apply(world(50))
    c = PerceptionNoise(cfg, seed=8).apply(world(50))
    assert np.array_equal(a.actors.id, b.actors.id) and np.array_equal(a.actors.xyz, b.actors.xyz)
    assert not (np.array_equal(a.actors.id, c.actors.id) and np.array_equal(a.actors.xyz, c.actors.xyz))
    noise = PerceptionNoise(cfg, seed=7)
    first = noise.apply(world(50))
    noise.reset(7)
    assert np.array_equal(noise.apply(world(50)).actors.xyz, first.actors.xyz)


def test_light_state_is_seen_late():
    # Given a light that turns green at tick 2 and a 2-tick perception delay
    noise = PerceptionNoise(PerceptionNoiseConfig(enabled=True, light_delay_ticks=2))
    truth = [TrafficLightState.RED] * 2 + [TrafficLightState.GREEN] * 3 + [TrafficLightState.RED]
    # When each tick is perceived
    seen = [noise.apply(world(0, s)).traffic_lights[0].state for s in truth]
    # Then the change shows two ticks late
    R, G = TrafficLightState.RED, TrafficLightState.GREEN
    assert seen == [R, R, R, R, G, G]
