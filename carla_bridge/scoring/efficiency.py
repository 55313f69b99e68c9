"""Bench2Drive efficiency: how fast the ego drives compared with the traffic around it.

At `checkpoints` (20) points along the route, when the route completion first reaches k x 100 / 20 %,
one ratio is taken:  r_k = 100 x mean(|v_ego|) / mean(|v_traffic|), both means over the ticks since
the previous checkpoint, |v_traffic| on a tick being the mean speed of the background vehicles
(ActorKind.VEHICLE, ActorRole.BACKGROUND) within `radius_m` of the ego. A checkpoint without such
traffic, or with traffic slower than `min_traffic_speed_mps`, gives no ratio (nor do checkpoints
passed on the same tick as another: one ratio per tick); ratios above
`max_ratio_pct` (1000, near-standing traffic) are dropped as in Bench2Drive. The route's efficiency is
the mean of its ratios (None when it has none); the benchmark's is the mean over routes with a value.
"""

from __future__ import annotations

import math

import numpy as np

from carla_bridge.scoring.config import EfficiencyConfig
from carla_bridge.snapshot import ActorKind, ActorRole, WorldSnapshot


def surrounding_traffic_speed(snapshot: WorldSnapshot, radius_m: float) -> float | None:
    """Mean |velocity| of background vehicles within `radius_m` of the ego, None if there are none."""
    actors = snapshot.actors
    if len(actors) == 0:
        return None
    d = actors.xyz[:, :2] - np.array([snapshot.ego.pose.x, snapshot.ego.pose.y])
    near = np.einsum("ij,ij->i", d, d) <= radius_m * radius_m
    mask = near & (actors.kind == ActorKind.VEHICLE) & (actors.role == ActorRole.BACKGROUND)
    if not mask.any():
        return None
    v = actors.velocity[mask]
    return float(np.mean(np.sqrt(np.einsum("ij,ij->i", v, v))))


def efficiency_ratio(
    ego_speed_mps: float, traffic_speed_mps: float | None, config: EfficiencyConfig
) -> float | None:
    """r = 100 x ego / traffic in percent; None without traffic, for too slow traffic, or when r > cap."""
    if traffic_speed_mps is None or traffic_speed_mps < config.min_traffic_speed_mps:
        return None
    ratio = 100.0 * ego_speed_mps / traffic_speed_mps
    return ratio if ratio <= config.max_ratio_pct else None


def mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


class EfficiencyTracker:
    """Collects the checkpoint ratios of one route."""

    def __init__(self, config: EfficiencyConfig) -> None:
        self._config = config
        self._next_checkpoint = 1
        self._ego_speeds: list[float] = []
        self._traffic_speeds: list[float] = []
        self.ratios: list[float] = []

    @property
    def score(self) -> float | None:
        """Mean checkpoint ratio in percent (100 = as fast as the surrounding traffic)."""
        return mean_or_none(self.ratios)

    def update(self, snapshot: WorldSnapshot, completion_pct: float) -> None:
        self._ego_speeds.append(math.hypot(*snapshot.ego.velocity[:2]))
        traffic = surrounding_traffic_speed(snapshot, self._config.radius_m)
        if traffic is not None:
            self._traffic_speeds.append(traffic)
        n = self._config.checkpoints
        crossed = False
        while self._next_checkpoint <= n and completion_pct >= self._next_checkpoint * 100.0 / n:
            self._next_checkpoint += 1
            crossed = True
        if not crossed:
            return
        ego_mean = float(np.mean(self._ego_speeds))
        ratio = efficiency_ratio(ego_mean, mean_or_none(self._traffic_speeds), self._config)
        if ratio is not None:
            self.ratios.append(ratio)
        self._ego_speeds.clear()
        self._traffic_speeds.clear()
