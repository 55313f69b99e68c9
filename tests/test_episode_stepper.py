"""`EpisodeStepper`: the closed-loop episode one tick at a time, for a loop owned by someone else (the
leaderboard evaluator). Driven by hand it must give exactly what `run_episode` gives, and it refuses
to be driven out of order.

Runs use the built-in Takeover01 town with background traffic off, cut short.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_episode_takeovers import STRAIGHT_ROUTE, Wanderer, cut

from carla_bridge.config import load_config
from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.maps import MapLibrary
from carla_bridge.route import Route
from carla_bridge.route_planner import prepare_routes
from carla_bridge.route_sets import load_route_set
from experts.expert import PDMLiteExpert
from takeover.episode import EpisodeConfig, EpisodeError, EpisodeResult, EpisodeStepper, run_episode
from takeover.monitor import MonitorConfig, TakeoverMonitor, TakeoverReason

NO_TRAFFIC = ["traffic.enabled=false", "walkers.enabled=false"]
SECONDS = 7.5  # the Wanderer's plan drifts from 2 s to 5 s: the expert takes over at 3 s, hands back
TICKS = 150  # SECONDS at 20 Hz


@pytest.fixture(scope="module")
def maps() -> MapLibrary:
    return MapLibrary()


@pytest.fixture(scope="module")
def route(maps: MapLibrary) -> Route:
    planned = prepare_routes(load_route_set("builtin", [STRAIGHT_ROUTE]), maps)[0]
    return cut(planned, 0.0, 150.0)


@pytest.fixture
def sim(maps: MapLibrary) -> EmbeddedSimulator:
    return EmbeddedSimulator(load_config(SimConfig, "sim", NO_TRAFFIC), maps)


def takeover_stepper(route: Route, **kwargs) -> EpisodeStepper:
    config = EpisodeConfig(max_time_s=SECONDS)
    return EpisodeStepper(
        route, 0, Wanderer(), PDMLiteExpert(), TakeoverMonitor(MonitorConfig()), config, **kwargs
    )


def assert_same_episode(a: EpisodeResult, b: EpisodeResult) -> None:
    assert (a.n_ticks, a.expert_ticks, a.distance_m, a.sim_time_s) == (
        b.n_ticks,
        b.expert_ticks,
        b.distance_m,
        b.sim_time_s,
    )
    assert len(a.takeovers) == len(b.takeovers)
    for ta, tb in zip(a.takeovers, b.takeovers, strict=True):
        for name, value in vars(ta).items():
            np.testing.assert_array_equal(value, getattr(tb, name), err_msg=name)
    assert [(c.kind, c.start_frame, c.takeover_index) for c in a.clips] == [
        (c.kind, c.start_frame, c.takeover_index) for c in b.clips
    ]
    for ca, cb in zip(a.clips, b.clips, strict=True):
        assert ca.arrays.keys() == cb.arrays.keys()
        for key in ca.arrays:
            np.testing.assert_array_equal(ca.arrays[key], cb.arrays[key], err_msg=key)
    assert a.record.scores == b.record.scores and a.record.status == b.record.status
    assert a.episode.infractions == b.episode.infractions


def test_a_hand_driven_stepper_gives_what_run_episode_gives(maps, route) -> None:
    # Given the episode run_episode drives (a policy whose plan drifts, so the expert takes over)
    sim = EmbeddedSimulator(load_config(SimConfig, "sim", NO_TRAFFIC), maps)
    expected = run_episode(
        sim, route, 0, Wanderer(), PDMLiteExpert(), TakeoverMonitor(MonitorConfig()),
        EpisodeConfig(max_time_s=SECONDS),
    )  # fmt: skip
    assert expected.takeovers and expected.takeovers[0].reason == TakeoverReason.PLAN_DEVIATION.value
    # When another owner of the loop feeds the stepper the same route tick by tick
    sim = EmbeddedSimulator(load_config(SimConfig, "sim", NO_TRAFFIC), maps)
    stepper = takeover_stepper(route, dt_s=sim.dt)
    snap = sim.reset(route, 0)
    stepper.start(snap, sim.map)
    for _ in range(TICKS):
        snap = sim.step(stepper.tick(snap))
    criteria = sim.criteria
    result = stepper.finish(criteria.record(), criteria.events, final=snap)
    # Then its ticks, takeovers, clips and scores are run_episode's, to the bit
    assert result.n_ticks == TICKS and stepper.finished
    assert_same_episode(result, expected)
    assert result.takeovers[0].handback_frame is not None


def test_finish_without_the_final_snapshot_ends_on_the_last_tick(sim, route) -> None:
    # Given a stepper ticked 10 times (the evaluator ended the route without a further tick)
    snap = sim.reset(route, 0)
    stepper = takeover_stepper(route, cmap=sim.map)
    stepper.start(snap)
    ticked = []
    for _ in range(10):
        ticked.append(snap)
        snap = sim.step(stepper.tick(snap))
    # When it finishes with no final snapshot
    result = stepper.finish(sim.criteria.record(), sim.criteria.events)
    # Then the episode lasts up to the last ticked snapshot and counts only the distance to it
    assert result.n_ticks == 10 and result.episode.n_frames == 10
    assert result.sim_time_s == pytest.approx(ticked[-1].time_s - ticked[0].time_s)
    steps = np.diff(np.array([s.ego.pose.xy for s in ticked]), axis=0)
    assert result.distance_m == pytest.approx(float(np.hypot(steps[:, 0], steps[:, 1]).sum()))


def test_the_stepper_refuses_to_run_out_of_order(sim, route) -> None:
    snap = sim.reset(route, 0)
    stepper = takeover_stepper(route)
    with pytest.raises(EpisodeError, match="before start"):
        stepper.tick(snap)
    with pytest.raises(EpisodeError, match="before start"):
        stepper.finish(sim.criteria.record())
    with pytest.raises(EpisodeError, match="cmap"):
        stepper.start(snap)  # no map given at construction or here
    stepper.start(snap, sim.map)
    with pytest.raises(EpisodeError, match="already started"):
        stepper.start(snap, sim.map)
    stepper.tick(snap)
    stepper.finish(sim.criteria.record())
    with pytest.raises(EpisodeError, match="after finish"):
        stepper.tick(snap)
    with pytest.raises(EpisodeError, match="twice"):
        stepper.finish(sim.criteria.record())


@pytest.mark.parametrize(
    ("mode", "parts", "message"),
    [
        ("takeover", {"monitor": None}, "TakeoverMonitor"),
        ("policy", {"policy": None}, "needs a policy"),
        ("expert", {"expert": None}, "needs an expert"),
        ("takeover", {"dt_s": 0.0}, "dt_s"),
    ],
)
def test_a_stepper_missing_a_part_fails_when_made(route, mode: str, parts: dict, message: str) -> None:
    kwargs = {"policy": Wanderer(), "expert": PDMLiteExpert(), "monitor": TakeoverMonitor(MonitorConfig())}
    dt_s = parts.pop("dt_s", 0.05)
    kwargs.update(parts)
    with pytest.raises(EpisodeError, match=message):
        EpisodeStepper(
            route, 0, kwargs["policy"], kwargs["expert"], kwargs["monitor"], EpisodeConfig(mode=mode),
            dt_s=dt_s,
        )  # fmt: skip
