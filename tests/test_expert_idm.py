"""IDM maths of the expert (experts/idm.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experts.idm import (
    closing_acceleration,
    idm_acceleration,
    required_decel,
    stopping_distance,
    target_speed_from_accel,
)

A, B = 2.0, 3.0


def test_free_road_accelerates_from_standstill_at_max_accel():
    # given no hazard (infinite gap) and a standing ego, when computing the IDM acceleration
    a = float(idm_acceleration(0.0, 10.0, math.inf, 0.0, 4.0, 1.0, A, B))
    # then it is the maximum acceleration
    assert a == pytest.approx(A)


def test_free_road_at_desired_speed_holds_speed():
    a = float(idm_acceleration(10.0, 10.0, math.inf, 0.0, 4.0, 1.0, A, B))
    assert a == pytest.approx(0.0, abs=1e-9)


def test_closing_on_standing_leader_brakes_harder_when_closer():
    # given a standing leader at several gaps, when computing the IDM acceleration at 8 m/s
    gaps = np.array([40.0, 20.0, 10.0])
    a = idm_acceleration(8.0, 10.0, gaps, 0.0, 4.0, 1.0, A, B)
    # then braking grows monotonically as the gap shrinks and is negative when close
    assert a[0] > a[1] > a[2]
    assert a[2] < -B


def test_equilibrium_gap_behind_standing_leader_is_s0():
    # given a standing ego exactly s0 behind a standing leader: no acceleration beyond the free term
    a = float(idm_acceleration(0.0, 10.0, 4.0, 0.0, 4.0, 1.0, A, B))
    assert a == pytest.approx(0.0, abs=1e-9)


def test_faster_leader_does_not_pull_the_ego():
    # given a leader much faster than the ego, s* is floored at 0: result equals the free-road term
    a = float(idm_acceleration(5.0, 10.0, 2.0, 30.0, 0.0, 0.0, A, B))
    free = float(idm_acceleration(5.0, 10.0, math.inf, 0.0, 0.0, 0.0, A, B))
    assert a == pytest.approx(free)


def test_vectorised_rows_use_their_own_parameters():
    a = idm_acceleration(
        5.0,
        10.0,
        np.array([10.0, 10.0]),
        np.array([0.0, 0.0]),
        np.array([1.0, 6.0]),
        np.array([0.1, 0.1]),
        A,
        B,
    )
    assert a[1] < a[0]


def test_zero_gap_is_floored_not_infinite():
    a = float(idm_acceleration(5.0, 10.0, 0.0, 0.0, 2.0, 0.1, A, B))
    assert np.isfinite(a) and a < -100.0


def test_target_speed_and_stopping_helpers():
    assert float(target_speed_from_accel(5.0, -20.0, 0.5)) == 0.0
    assert float(target_speed_from_accel(5.0, 2.0, 0.5)) == pytest.approx(6.0)
    assert stopping_distance(10.0, 5.0) == pytest.approx(10.0)
    assert required_decel(10.0, 10.0) == pytest.approx(5.0)
    assert required_decel(1.0, 0.0) == math.inf
    assert required_decel(0.0, -1.0) == 0.0


def test_closing_acceleration_stops_exactly_at_s0():
    # given 10 m/s toward a standing hazard with 27 m of room beyond s0 = 2 m
    a = float(closing_acceleration(10.0, 29.0, 0.0, 2.0))
    assert a == pytest.approx(-100.0 / 54.0)
    # integrating that constant deceleration ends at the s0 gap
    v, gap, dt = 10.0, 29.0, 0.001
    while v > 0.0:
        v += a * dt
        gap -= max(v, 0.0) * dt
    assert gap == pytest.approx(2.0, abs=0.05)


def test_closing_acceleration_is_idle_when_opening_or_gentle():
    assert np.isinf(closing_acceleration(5.0, 10.0, 8.0, 2.0))  # leader faster: no constraint
    assert np.isinf(closing_acceleration(5.0, 100.0, 0.0, 2.0, engage_decel=2.0))  # needs only 0.13 m/s2
    assert float(closing_acceleration(5.0, 4.0, 0.0, 2.0, engage_decel=2.0)) < -2.0
