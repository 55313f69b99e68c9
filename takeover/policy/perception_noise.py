"""Imperfect perception, applied to a snapshot before the policy rasterises it.

Per tick, independently and seeded: each actor is missed with probability p; kept actors get
x, y += N(0, sigma_pos^2) and yaw += N(0, sigma_yaw^2); traffic lights report the state they had
`light_delay_ticks` ticks earlier (a slow light classifier). The privileged expert never sees this:
the noise models what the learned policy would perceive, so takeovers caused by it are real ones.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import numpy as np

from carla_bridge.snapshot import ActorTable, TrafficLight, WorldSnapshot
from takeover.policy.config import PerceptionNoiseConfig

# Mixed into the episode seed so that noise streams differ from other seeded parts of an episode.
_NOISE_STREAM = 0x5EED_B0E1


class PerceptionNoise:
    """Stateful (light delay buffer, random stream): one per episode, `reset(seed)` at its start."""

    def __init__(self, config: PerceptionNoiseConfig, seed: int = 0) -> None:
        self.config = config
        self._lights: deque[dict[int, TrafficLight]] = deque(maxlen=config.light_delay_ticks + 1)
        self._rng = np.random.default_rng(0)
        self.reset(seed)

    @property
    def active(self) -> bool:
        c = self.config
        return c.enabled and (
            c.miss_probability > 0 or c.position_sigma_m > 0 or c.yaw_sigma_rad > 0 or c.light_delay_ticks > 0
        )

    def reset(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng([_NOISE_STREAM, self.config.seed, int(seed)])
        self._lights.clear()

    def apply(self, snapshot: WorldSnapshot) -> WorldSnapshot:
        """The snapshot as perceived; unchanged (the same object) when the noise is off."""
        if not self.active:
            return snapshot
        return replace(
            snapshot,
            actors=self._perturb_actors(snapshot.actors),
            traffic_lights=self._delay_lights(snapshot.traffic_lights),
        )

    def _perturb_actors(self, actors: ActorTable) -> ActorTable:
        c = self.config
        n = len(actors)
        # Draw every stream on every tick so that the sequence does not depend on which options are on.
        keep = self._rng.random(n) >= c.miss_probability
        pos_noise = self._rng.normal(0.0, 1.0, (n, 2)) * c.position_sigma_m
        yaw_noise = self._rng.normal(0.0, 1.0, n) * c.yaw_sigma_rad
        xyz = actors.xyz.copy()
        xyz[:, :2] += pos_noise
        noisy = replace(actors, xyz=xyz, yaw=actors.yaw + yaw_noise)
        return noisy.select(keep)

    def _delay_lights(self, lights: tuple[TrafficLight, ...]) -> tuple[TrafficLight, ...]:
        if self.config.light_delay_ticks == 0:
            return lights
        self._lights.append({light.id: light for light in lights})
        oldest = self._lights[0]
        out = []
        for light in lights:
            past = oldest.get(light.id)
            if past is None or past.state == light.state:
                out.append(light)
            else:
                out.append(replace(light, state=past.state, time_in_state=past.time_in_state))
        return tuple(out)
