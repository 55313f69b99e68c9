"""Intelligent driver model (Treiber et al.), vectorised over hazards.

Every hazard the expert stops or follows behind (leading vehicle, red light, stop sign, walker,
obstacle) is one row: a bumper-to-bumper gap along the route, the hazard's speed along the route, and
its own (s0, T). The expert takes the smallest resulting acceleration.
"""

from __future__ import annotations

import numpy as np

MIN_GAP_M = 0.1  # the IDM interaction term diverges at zero gap; gaps are floored here


def idm_acceleration(
    v: float,
    v0: float,
    gap_m: np.ndarray | float,
    v_lead: np.ndarray | float,
    min_gap_m: np.ndarray | float,
    headway_s: np.ndarray | float,
    max_accel: float,
    comfort_decel: float,
    exponent: float = 4.0,
) -> np.ndarray:
    """IDM acceleration for each hazard row.

        s*    = s0 + v T + v (v - v_lead) / (2 sqrt(a b))
        dv/dt = a [1 - (v / v0)^delta - (s* / s)^2],   s = max(0.1, gap)

    s* is floored at 0 (a much faster leader does not pull the ego forward). With no hazard rows pass
    an infinite gap: the result is the free-road term a [1 - (v / v0)^delta].
    """
    gap = np.maximum(np.asarray(gap_m, dtype=float), MIN_GAP_M)
    v_lead = np.asarray(v_lead, dtype=float)
    s_star = np.maximum(
        0.0,
        np.asarray(min_gap_m, dtype=float)
        + v * np.asarray(headway_s, dtype=float)
        + v * (v - v_lead) / (2.0 * np.sqrt(max_accel * comfort_decel)),
    )
    free = 1.0 - (max(v, 0.0) / max(v0, 1e-3)) ** exponent if v0 > 0.0 else -1.0
    return max_accel * (free - (s_star / gap) ** 2)


def comfort_decel_for_speed(v: float, fast: float, slow: float, switch_speed: float) -> float:
    """b of the IDM: gentler at speed (comfort), firmer when slow (stop precisely in traffic)."""
    return fast if v > switch_speed else slow


def target_speed_from_accel(v: float, accel: np.ndarray | float, horizon_s: float) -> np.ndarray:
    """Target speed that a tracker with time constant `horizon_s` turns into `accel`: max(0, v + a h)."""
    return np.maximum(0.0, v + np.asarray(accel, dtype=float) * horizon_s)


def stopping_distance(v: float, decel: float) -> float:
    """Distance to stop from v at constant deceleration: v^2 / (2 b)."""
    return v * v / (2.0 * max(decel, 1e-6))


def required_decel(v: float, distance_m: float) -> float:
    """Constant deceleration that stops from v within `distance_m`: v^2 / (2 d) (inf when d <= 0)."""
    if distance_m <= 0.0:
        return float("inf") if v > 0.0 else 0.0
    return v * v / (2.0 * distance_m)


def closing_acceleration(
    v: float,
    gap_m: np.ndarray | float,
    v_lead: np.ndarray | float,
    min_gap_m: np.ndarray | float,
    engage_decel: float = 0.0,
) -> np.ndarray:
    """Constant deceleration that matches the hazard's speed exactly when the gap has shrunk to s0:

        b_req = (v - v_lead)^2 / (2 max(gap - s0, 0.1))   while closing (v > v_lead)
        a = -b_req once b_req >= engage_decel, else +inf (no constraint).

    The IDM reaches its s0 only asymptotically and, from speed, overshoots it by metres; taking the
    smaller of both stops at s0. Engaging only from a comfortable deceleration on leaves the early,
    gentle part of the approach to the IDM.
    """
    closing = np.maximum(v - np.asarray(v_lead, dtype=float), 0.0)
    room = np.maximum(np.asarray(gap_m, dtype=float) - np.asarray(min_gap_m, dtype=float), MIN_GAP_M)
    b_req = closing**2 / (2.0 * room)
    return np.where((closing > 0.0) & (b_req >= engage_decel), -b_req, np.inf)
