"""Kinematic bicycle and constant-velocity forecasts (experts/forecast.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experts.config import EgoModelConfig, LateralConfig
from experts.forecast import (
    bicycle_step,
    distances_from_speeds,
    forecast_vehicles,
    forecast_walkers,
    resample_by_distance,
    rollout_ego_on_path,
    slip_angle,
    speed_profiles,
)

MODEL = EgoModelConfig()


def test_straight_bicycle_moves_along_heading():
    x, y, yaw = bicycle_step(0.0, 0.0, math.pi / 2, 10.0, 0.0, 0.1, MODEL)
    assert (x, y, yaw) == pytest.approx((0.0, 1.0, math.pi / 2), abs=1e-12)


def test_positive_steer_turns_right_with_the_fitted_radius():
    # given full right steer held, when integrating a full circle at 5 m/s in small steps
    beta = float(slip_angle(1.0, MODEL))
    radius = MODEL.rear_axle_m / math.sin(beta)
    x = y = yaw = 0.0
    dt = 0.001
    steps = int(2 * math.pi * radius / 5.0 / dt)
    far = 0.0
    for _ in range(steps):
        x, y, yaw = bicycle_step(x, y, yaw, 5.0, 1.0, dt, MODEL)
        far = max(far, math.hypot(x, y))
    # then yaw grew (right turn in CARLA's frame), the farthest point is one diameter away and it closes
    assert yaw == pytest.approx(2 * math.pi, rel=1e-2)
    assert far == pytest.approx(2 * radius, rel=1e-2)
    assert math.hypot(x, y) < 0.05 * radius


def test_vehicle_forecast_matches_stepwise_bicycle():
    # given a steering vehicle, when forecasting vectorised, then it equals explicit Euler steps
    steer, v, dt, steps = 0.4, 6.0, 0.1, 20
    beta = float(slip_angle(steer, MODEL))
    tr = forecast_vehicles(
        np.array([1.0]),
        np.array([2.0]),
        np.array([0.3]),
        np.array([v]),
        np.array([math.sin(beta) / MODEL.rear_axle_m]),
        np.array([beta]),
        np.array([0.0]),
        dt,
        steps,
    )
    x, y, yaw = 1.0, 2.0, 0.3
    for k in range(steps):
        x, y, yaw = bicycle_step(x, y, yaw, v, steer, dt, MODEL)
        assert (tr.x[0, k], tr.y[0, k], tr.yaw[0, k]) == pytest.approx((x, y, yaw), abs=1e-9)


def test_vehicle_forecast_brakes_to_a_stop_and_stays():
    tr = forecast_vehicles(
        np.zeros(1),
        np.zeros(1),
        np.zeros(1),
        np.array([4.0]),
        np.zeros(1),
        np.zeros(1),
        np.array([-8.0]),
        0.1,
        20,
    )
    assert tr.v[0, -1] == 0.0
    stop = tr.x[0, -1]
    assert stop == pytest.approx(tr.x[0, 10]) and 0.5 < stop < 1.5  # v^2 / 2a = 1 m (Euler on a 0.1 s grid)


def test_standing_walker_is_assumed_to_start_walking_along_its_heading():
    tr = forecast_walkers(
        np.zeros(2),
        np.zeros(2),
        np.array([0.0, math.pi / 2]),
        np.array([[0.0, 0.0], [0.0, 1.4]]),
        0.5,
        0.5,
        4,
    )
    assert tr.x[0, -1] == pytest.approx(1.0) and tr.y[0, -1] == pytest.approx(0.0)
    assert tr.x[1, -1] == pytest.approx(0.0, abs=1e-12) and tr.y[1, -1] == pytest.approx(2.8)


def test_speed_profiles_clamp_at_their_stop_speed_and_zero():
    v = speed_profiles(5.0, np.array([2.0, -4.0, -1.0]), np.array([6.0, 0.0, 4.0]), 0.5, 4)
    assert v[0].tolist() == pytest.approx([6.0, 6.0, 6.0, 6.0])
    assert v[1].tolist() == pytest.approx([3.0, 1.0, 0.0, 0.0])
    assert v[2].tolist() == pytest.approx([4.5, 4.0, 4.0, 4.0])
    d = distances_from_speeds(5.0, v[1:2], 0.5)
    assert d[0].tolist() == pytest.approx([2.0, 3.0, 3.25, 3.25])


def test_ego_rollout_follows_a_curved_path_and_resamples_by_distance():
    # given a quarter circle of radius 20 m (turning right), when the ego rolls along it at 6 m/s
    r = 20.0
    theta = np.arange(0.0, math.pi / 2 + 0.3, 0.1 / r)
    path = np.stack([r * np.sin(theta), r - r * np.cos(theta)], axis=1)
    speeds = np.full(30, 6.0)
    poses, travelled = rollout_ego_on_path(
        0.0, 0.0, 0.0, path, 0.0, 0.1, 0.0, speeds, 0.1, LateralConfig(), MODEL
    )
    # then it stays within 0.5 m of the arc and turned right by about the travelled angle
    radial = np.hypot(poses[:, 0], poses[:, 1] - r)
    assert np.abs(radial - r).max() < 0.5
    assert poses[-1, 2] == pytest.approx(travelled[-1] / r, abs=0.15)
    half = resample_by_distance(poses, travelled, np.array([[travelled[-1] / 2]]))
    assert half.shape == (1, 1, 3)
    assert np.hypot(half[0, 0, 0], half[0, 0, 1] - r) == pytest.approx(r, abs=0.5)
